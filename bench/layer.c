// moed-bench layer: one MoE layer's full training step (forward, backward, reductions,
// AdamW) on one rank, as a fraction of the machine's measured FMA peak for the same ISA
// and thread count. The issue-2 targets: >= 70% for d=512 f=1024 E=8 k=2 T=4096, >= 50% for
// the fine-grained d=256 f=512 E=64 k=4 T=2048. Each shape runs with the default
// compute.prepack = off (weights packed on the fly) and with prepack = all (weights pre-packed,
// repacked inside AdamW: the repack is in the step's time), alternating, so their ratio is
// paired.
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"
#include "compute/kernels/kernels.h"
#include "compute/omp_compat.h"
#include "compute/rng.h"
#include "config/config.h"
#include "daemon/train.h"

typedef struct {
    const char* name;
    int d, f, E, k, T;
} layer_shape_t;

static const layer_shape_t shapes[] = {
    {"coarse", 512, 1024, 8, 2, 4096},
    {"fine-grained", 256, 512, 64, 4, 2048},
};

// Median seconds of `reps` training steps of one layer (after one warm-up step).
static double time_layer(const layer_shape_t* s, int threads, int prepack, int reps,
                         double* flops) {
    cfg_t c;
    char err[CFG_ERRLEN];
    char set[128];
    cfg_defaults(&c);
    const char* sets[] = {"model.d_model=%d", "model.d_ff=%d", "model.n_experts=%d",
                          "model.top_k=%d", "train.global_batch_tokens=%d"};
    int vals[] = {s->d, s->f, s->E, s->k, s->T};
    for (int i = 0; i < 5; i++) {
        snprintf(set, sizeof set, sets[i], vals[i]);
        if (cfg_set(&c, set, err, sizeof err)) {
            fprintf(stderr, "moed-bench layer: %s\n", err);
            exit(2);
        }
    }
    c.compute.threads = threads;
    c.compute.prepack = prepack;
    static train_t tr;
    arena_t a;
    arena_begin_count(&a);
    train_layout(&tr, &c, 0, 1, &a);
    if (arena_reserve(&a) != 0) {
        fprintf(stderr, "moed-bench layer: out of memory (%.0f MiB)\n", a.used / 1048576.0);
        exit(1);
    }
    train_layout(&tr, &c, 0, 1, &a);
    if (train_setup(&tr, MPI_COMM_SELF) != 0) exit(1);
    long n = (long)s->T * s->d;
    float* x = malloc(sizeof(float) * n); // [T, d]
    float* y = malloc(sizeof(float) * n); // [T, d]
    for (long i = 0; i < n; i++) {
        x[i] = rng_normal(7, RNG_STREAM(RNG_DATA_X, 0), 0, (uint64_t)i);
        y[i] = rng_normal(8, RNG_STREAM(RNG_DATA_X, 0), 0, (uint64_t)i);
    }
    step_stats_t st;
    double t[64];                     // reps <= 64 (bench_layer)
    train_step(&tr, x, y, 1e-4, &st); // warm-up: first touch of every buffer
    for (int r = 0; r < reps; r++) {
        double t0 = bench_now();
        train_step(&tr, x, y, 1e-4, &st);
        t[r] = bench_now() - t0;
    }
    *flops = st.flops;
    free(x), free(y);
    train_free(&tr);
    arena_free(&a);
    return bench_median(t, reps);
}

int bench_layer(int argc, char** argv) {
    int threads = 1, reps = 5, isa = -1, reps_set = 0, quick = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            if (bench_int_arg("layer", "--threads", argv[++i], 1, 4096, &threads)) return 2;
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            if (bench_int_arg("layer", "--reps", argv[++i], 1, 64, &reps)) return 2;
            reps_set = 1;
        } else if (!strcmp(argv[i], "--quick")) {
            quick = 1;
        } else if (!strcmp(argv[i], "--isa") && i + 1 < argc) {
            const char* name = argv[++i];
            for (int t = 0; t < KERN_N_ISA; t++)
                if (kern_table_for((kern_isa_t)t) &&
                    !strcmp(kern_table_for((kern_isa_t)t)->name, name))
                    isa = t;
            if (isa < 0) {
                fprintf(stderr, "moed-bench layer: ISA '%s' is not available here\n", name);
                return 2;
            }
        } else {
            return bench_unknown("layer", argv[i]);
        }
    }
    if (quick && !reps_set) reps = 3;
    int provided;
    MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
    omp_set_num_threads(threads);
    if (kern_select(isa) != 0 || kern_init(threads) != 0) return 1;
    double peak = bench_peak_gflops(kern->isa, threads);
    printf("moed-bench layer: isa %s, %d thread%s, measured FMA peak %.1f GFLOP/s (measured again "
           "after each shape; %% of the most seen)\n",
           kern->name, threads, threads > 1 ? "s" : "", peak);
    printf("%-13s %5s %5s %4s %2s %5s  %9s %9s %8s  %12s %8s\n", "shape", "d", "f", "E", "k", "T",
           "step ms", "GFLOP/s", "of peak", "prepack all", "all/off");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const layer_shape_t* s = &shapes[i];
        // Three alternating rounds per mode; the median round of each, and the median of the
        // paired speed ratios.
        double on[3], off[3], ratio[3], flops = 0;
        for (int r = 0; r < 3; r++) {
            on[r] = time_layer(s, threads, CFG_PREPACK_ALL, reps, &flops);
            off[r] = time_layer(s, threads, CFG_PREPACK_OFF, reps, &flops);
            ratio[r] = off[r] / on[r];
        }
        double sec = bench_median(off, 3), g = flops / sec / 1e9;
        double g_all = flops / bench_median(on, 3) / 1e9;
        peak = bench_peak_remeasure(kern->isa, threads); // the most seen in this run
        printf("%-13s %5d %5d %4d %2d %5d  %9.1f %9.1f %7.1f%%  %11.1f%% %8.2f\n", s->name, s->d,
               s->f, s->E, s->k, s->T, sec * 1e3, g, 100 * g / peak, 100 * g_all / peak,
               bench_median(ratio, 3));
    }
    MPI_Finalize();
    return 0;
}
