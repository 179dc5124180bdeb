// Checkpoint test helper (tests/golden/test_ckpt_h5py.py, tests/e2e/ckpt_kill.sh): trains a
// few real steps and saves checkpoints through ckpt_save, probes a file, or finds the file
// to resume from, without needing `moed run`.
//
//   ckpt_dump save DIR CONFIG [--steps N] [--keep K] [--pause-last S] [--set sec.key=v]...
//       N training steps (default 2), a checkpoint after each; prints "saved PATH" per save.
//       --pause-last S sets MOED_TEST_CKPT_PAUSE=S for the last save only.
//   ckpt_dump probe FILE CONFIG [--set ...]
//       prints "ok: step=N ranks_at_save=P n_history=H" or the error; exits with the status.
//   ckpt_dump resume DIR CONFIG [--set ...]
//       prints "found PATH" or "fresh", then "note: ..." when there is one.
//
// Training data is the helper's own (x ~ N(0,1) keyed by global token, y = tanh(x)), so the
// run is P-independent: the same config gives bit-identical files at every rank count.
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compute/rng.h"
#include "config/config.h"
#include "config/status.h"
#include "daemon/ckpt.h"
#include "daemon/train.h"
#include "tests/common/testutil.h"

typedef struct {
    const char* mode;
    const char* target; // DIR or FILE
    long steps;
    int keep;
    const char* pause_last;
} args_t;

static int usage(void) {
    fprintf(stderr, "usage: ckpt_dump save DIR CONFIG [--steps N] [--keep K] [--pause-last S] "
                    "[--set k=v]... | probe FILE CONFIG [--set k=v]... | resume DIR CONFIG\n");
    return MOED_ERR_CONFIG;
}

static int parse(int argc, char** argv, int nranks, args_t* a, cfg_t* c, char* err) {
    if (argc < 4) return usage();
    a->mode = argv[1], a->target = argv[2], a->steps = 2, a->keep = 10, a->pause_last = NULL;
    cfg_defaults(c);
    int rc = cfg_load_file(c, argv[3], err, CFG_ERRLEN);
    for (int i = 4; rc == 0 && i < argc; i++) {
        if (i + 1 >= argc) return usage();
        if (!strcmp(argv[i], "--set"))
            rc = cfg_set(c, argv[++i], err, CFG_ERRLEN);
        else if (!strcmp(argv[i], "--steps"))
            a->steps = atol(argv[++i]);
        else if (!strcmp(argv[i], "--keep"))
            a->keep = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--pause-last"))
            a->pause_last = argv[++i];
        else
            return usage();
    }
    if (rc == 0) rc = cfg_validate(c, nranks, err, CFG_ERRLEN);
    return rc;
}

// This rank's batch of step `step`: tokens [t0, t0 + Tl) of the global batch.
static void batch(const train_t* tr, long step, float* x, float* y) {
    int d = tr->model.d;
    for (int t = 0; t < tr->Tl; t++)
        for (int j = 0; j < d; j++) {
            long i = (long)t * d + j;
            x[i] = rng_normal(777, 0xda7a, (uint32_t)(tr->t0 + t), (uint64_t)(step * d + j));
            y[i] = tanhf(x[i]);
        }
}

static int do_save(const args_t* a, const cfg_t* c, MPI_Comm comm) {
    static train_t tr;
    static arena_t arena, harena;
    static history_t h;
    if (tu_train_new(&tr, &arena, c, comm) != 0) return MOED_ERR_OTHER;
    arena_begin_count(&harena);
    history_layout(&h, a->steps, c->model.n_layers, c->model.n_experts, &harena);
    if (arena_reserve(&harena) != 0) return MOED_ERR_OTHER;
    history_layout(&h, a->steps, c->model.n_layers, c->model.n_experts, &harena);
    long n = (long)tr.Tl * tr.model.d;
    float* x = malloc(sizeof(float) * n);
    float* y = malloc(sizeof(float) * n);
    static char ini[CFG_INI_MAX];
    cfg_write_ini(c, ini, sizeof ini);

    int rc = MOED_OK;
    for (long s = 0; s < a->steps && rc == MOED_OK; s++) {
        step_stats_t st;
        batch(&tr, s, x, y);
        if ((rc = train_step(&tr, x, y, c->train.lr, &st))) break;
        history_record(&h, &tr, &st);
        if (s == a->steps - 1 && a->pause_last) setenv("MOED_TEST_CKPT_PAUSE", a->pause_last, 1);
        char path[1200], err[1024];
        rc = ckpt_save(a->target, a->keep, &tr, &h, ini, path, sizeof path, err, sizeof err);
        if (tr.rank == 0) {
            if (rc)
                fprintf(stderr, "ckpt_dump: error: %s\n", err);
            else
                printf("saved %s\n", path);
            fflush(stdout);
        }
    }
    free(x);
    free(y);
    tu_train_free(&tr, &arena);
    arena_free(&harena);
    return rc;
}

static int do_probe(const args_t* a, const cfg_t* c, MPI_Comm comm, int rank) {
    static ckpt_info_t info;
    char err[1024];
    int rc = ckpt_probe(a->target, c, comm, &info, err, sizeof err);
    if (rank == 0) {
        if (rc)
            printf("error: %s\n", err);
        else
            printf("ok: step=%ld ranks_at_save=%d n_history=%ld\n", info.step, info.ranks_at_save,
                   info.n_history);
    }
    return rc;
}

static int do_resume(const args_t* a, const cfg_t* c, MPI_Comm comm, int rank) {
    int found;
    char path[1200], note[1024], err[1024];
    int rc = ckpt_find_resume(a->target, c, comm, &found, path, sizeof path, note, sizeof note, err,
                              sizeof err);
    if (rank == 0) {
        if (rc)
            printf("error: %s\n", err);
        else
            printf("%s%s\n", found ? "found " : "fresh", found ? path : "");
        if (rc == 0 && note[0]) printf("note: %s\n", note);
    }
    return rc;
}

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    int rank, nranks;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    args_t a = {0};
    static cfg_t c;
    char err[CFG_ERRLEN] = "";
    int rc = parse(argc, argv, nranks, &a, &c, err);
    if (rc && rank == 0 && err[0]) fprintf(stderr, "ckpt_dump: error: %s\n", err);
    if (rc == 0) {
        if (!strcmp(a.mode, "save"))
            rc = do_save(&a, &c, MPI_COMM_WORLD);
        else if (!strcmp(a.mode, "probe"))
            rc = do_probe(&a, &c, MPI_COMM_WORLD, rank);
        else if (!strcmp(a.mode, "resume"))
            rc = do_resume(&a, &c, MPI_COMM_WORLD, rank);
        else
            rc = usage();
    }
    MPI_Finalize();
    return rc;
}
