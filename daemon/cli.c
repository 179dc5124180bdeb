#include "daemon/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compute/kernels/kernels.h"
#include "config/status.h"

static void prefix_err(char* err, const char* prefix) {
    char tmp[CLI_ERRLEN];
    snprintf(tmp, sizeof tmp, "%s: %s", prefix, err);
    memcpy(err, tmp, CLI_ERRLEN);
}

int cli_load_config(cfg_t* c, int argc, char** argv, int i, int nranks, char* err) {
    cfg_defaults(c);
    if (i >= argc || argv[i][0] == '-') {
        snprintf(err, CLI_ERRLEN, "missing CONFIG file (moed --help)");
        return MOED_ERR_CONFIG;
    }
    const char* file = argv[i++];
    int rc = cfg_load_file(c, file, err, CLI_ERRLEN);
    for (; rc == 0 && i < argc; i++) {
        if (strcmp(argv[i], "--set") == 0 && i + 1 < argc)
            rc = cfg_set(c, argv[++i], err, CLI_ERRLEN);
        else if (strncmp(argv[i], "--set=", 6) == 0)
            rc = cfg_set(c, argv[i] + 6, err, CLI_ERRLEN);
        else {
            snprintf(err, CLI_ERRLEN, "unexpected argument '%s' (moed --help)", argv[i]);
            rc = MOED_ERR_CONFIG;
        }
    }
    const char* isa = getenv("MOED_ISA");
    if (rc == 0 && isa && *isa) {
        char set[64];
        snprintf(set, sizeof set, "compute.isa=%.40s", isa);
        if ((rc = cfg_set(c, set, err, CLI_ERRLEN))) prefix_err(err, "MOED_ISA");
    }
    if (rc == 0 && (rc = cfg_validate(c, nranks, err, CLI_ERRLEN))) prefix_err(err, file);
    return rc;
}

int cli_check_launch(const cfg_t* c, int nranks, char* err) {
    const char* want = getenv("MOED_EXPECT_RANKS");
    if (want && *want) {
        char* end;
        long n = strtol(want, &end, 10);
        if (*end || n < 1) {
            snprintf(err, CLI_ERRLEN, "MOED_EXPECT_RANKS = '%.40s': not a positive integer", want);
            return MOED_ERR_CONFIG;
        }
        if (n != nranks) {
            snprintf(err, CLI_ERRLEN,
                     "MOED_EXPECT_RANKS = %ld but the MPI world has %d rank%s: the launcher did "
                     "not connect the ranks (srun --mpi=pmi2 with MPICH, or mpiexec.mpich)",
                     n, nranks, nranks > 1 ? "s" : "");
            return MOED_ERR_CONFIG;
        }
    }
#ifndef _OPENMP
    if (c->compute.threads > 1) {
        snprintf(err, CLI_ERRLEN,
                 "compute.threads = %d: this moed was built without OpenMP (MOED_OPENMP=OFF); "
                 "use 1 and more ranks",
                 c->compute.threads);
        return MOED_ERR_CONFIG;
    }
#else
    (void)c;
#endif
    return MOED_OK;
}

int cli_max_isa(char* err) {
    const char* cap = getenv("MOED_MAX_ISA");
    if (!cap || !*cap) return MOED_OK;
    int isa = kern_isa_by_name(cap);
    if (isa < 0) {
        snprintf(err, CLI_ERRLEN, "MOED_MAX_ISA = '%.40s': not one of ref, avx2, avx512", cap);
        return MOED_ERR_CONFIG;
    }
    kern_set_max_isa((kern_isa_t)isa);
    return MOED_OK;
}

int cli_select_isa(const cfg_t* c, char* err) {
    static const int map[] = {[CFG_ISA_AUTO] = -1,
                              [CFG_ISA_REF] = KERN_REF,
                              [CFG_ISA_AVX2] = KERN_AVX2,
                              [CFG_ISA_AVX512] = KERN_AVX512};
    static const char* names[] = {"auto", "ref", "avx2", "avx512"};
    int rc = cli_max_isa(err);
    if (rc) return rc;
    int want = map[c->compute.isa];
    if (kern_select(want) != 0) {
        if (want > (int)kern_max_isa())
            snprintf(err, CLI_ERRLEN,
                     "compute.isa = %s: MOED_MAX_ISA = %s holds moed below it (unset it, or use "
                     "auto)",
                     names[c->compute.isa], kern_isa_name(kern_max_isa()));
        else
            snprintf(err, CLI_ERRLEN,
                     "compute.isa = %s: this CPU or this build cannot run it (use auto, or ref)",
                     names[c->compute.isa]);
        return MOED_ERR_CONFIG;
    }
    if (kern_init(c->compute.threads) != 0) {
        snprintf(err, CLI_ERRLEN, "out of memory for the kernels' pack buffers");
        return MOED_ERR_OTHER;
    }
    return MOED_OK;
}

int cli_agree(int status, const char* msg, int rank, MPI_Comm comm) {
    int worst = status, first = status ? rank : 1 << 30;
    MPI_Allreduce(MPI_IN_PLACE, &worst, 1, MPI_INT, MPI_MAX, comm);
    MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPI_INT, MPI_MIN, comm);
    if (worst && rank == first) {
        if (rank == 0)
            fprintf(stderr, "moed: error: %s\n", msg);
        else
            fprintf(stderr, "moed: error: rank %d: %s\n", rank, msg);
        fflush(stderr);
    }
    return worst;
}
