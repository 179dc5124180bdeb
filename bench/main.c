// moed-bench SUBCOMMAND [options]: the dispatcher. Each subcommand lives in its own file and
// is one line in the table below.
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/bench.h"
#include "daemon/cli.h"

static const struct {
    const char* name;
    bench_fn fn;
    const char* help;
} subcommands[] = {
    {"peak", bench_peak, "measured FMA peak per core and for all threads, per ISA [--threads N]"},
    {"gemm", bench_gemm,
     "grouped GEMM shapes of the MoE layer, even and uneven groups, vs OpenBLAS and oneDNN "
     "[--quick] [--uneven-only] [--check] [--reps N] [--isa NAME|all] [--threads N] "
     "[--set small|big] [--shape 0..3] [--no-peers] [--no-ffn] [--ffn-only]"},
    {"gmm", bench_gemm, "the same as gemm (the grouped matmuls' name in compute/gmm.c)"},
    {"layer", bench_layer,
     "one MoE layer's training step [--threads N] [--reps N] [--isa NAME] [--quick]"},
    {"comm", bench_comm,
     "dispatch+combine per strategy vs raw MPI_Alltoallv, and full steps (overlap); run "
     "under mpiexec.mpich -n P [--quick] [--iters N] [--steps-only] [--progress test|thread|auto] "
     "[--tokens N] [--ff F] [--reps N] [--alltoallv-only] [--prepack off|forward|all]"},
    {"ckpt", bench_ckpt,
     "checkpoint save/load bandwidth vs dd [--gib X] [--reps N] [--dir DIR] [--fadvise-only]"},
};
enum { N_SUBCOMMANDS = sizeof subcommands / sizeof subcommands[0] };

static void usage(FILE* f) {
    fprintf(f, "usage: moed-bench SUBCOMMAND [options]\n\nsubcommands:\n");
    for (int i = 0; i < N_SUBCOMMANDS; i++)
        fprintf(f, "  %-8s %s\n", subcommands[i].name, subcommands[i].help);
}

int bench_int_arg(const char* cmd, const char* opt, const char* val, long lo, long hi, int* out) {
    char* end;
    errno = 0;
    long v = strtol(val, &end, 10);
    if (errno || end == val || *end || v < lo || v > hi) {
        fprintf(stderr, "moed-bench %s: %s takes a whole number in [%ld, %ld], not '%s'\n", cmd,
                opt, lo, hi, val);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int bench_double_arg(const char* cmd, const char* opt, const char* val, double lo, double hi,
                     double* out) {
    char* end;
    errno = 0;
    double v = strtod(val, &end);
    if (errno || end == val || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "moed-bench %s: %s takes a number in [%g, %g], not '%s'\n", cmd, opt, lo,
                hi, val);
        return -1;
    }
    *out = v;
    return 0;
}

int bench_unknown(const char* cmd, const char* opt) {
    fprintf(stderr, "moed-bench %s: unknown option '%s' (moed-bench --help lists the options)\n",
            cmd, opt);
    return 2;
}

double bench_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

double bench_median(double* x, int n) {
    for (int i = 1; i < n; i++) // insertion sort: n is a handful of repetitions
        for (int j = i; j > 0 && x[j - 1] > x[j]; j--) {
            double t = x[j];
            x[j] = x[j - 1];
            x[j - 1] = t;
        }
    if (n <= 0) return 0;
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

int main(int argc, char** argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    // MOED_MAX_ISA caps our kernels here as in moed (the peers have their own variables).
    char err[CLI_ERRLEN];
    if (cli_max_isa(err)) {
        fprintf(stderr, "moed-bench: %s\n", err);
        return 2;
    }
    for (int i = 0; i < N_SUBCOMMANDS; i++)
        if (!strcmp(argv[1], subcommands[i].name)) return subcommands[i].fn(argc - 2, argv + 2);
    fprintf(stderr, "moed-bench: unknown subcommand '%s' (moed-bench --help lists them)\n",
            argv[1]);
    return 2;
}
