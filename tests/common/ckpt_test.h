// Shared by the checkpoint MPI programs (mpi_ckpt.c: round trip, checkpoint.keep, placement
// by global expert index, resharding; mpi_ckpt_files.c: bad inputs, LATEST and the fallback):
// a small test configuration, training states filled with values that depend on the global
// expert index only (never on P), and file helpers. One program includes it once; rank 0
// changes files, everyone waits.
#ifndef MOED_TESTS_CKPT_TEST_H
#define MOED_TESTS_CKPT_TEST_H

#include <dirent.h>
#include <ftw.h>
#include <hdf5.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "compute/rng.h"
#include "config/status.h"
#include "daemon/ckpt.h"
#include "tests/common/mpi_check.h"
#include "tests/common/testutil.h"

static int g_rank, g_size;
static char g_root[128]; // the test's scratch directory

#define CHECK(cond, ...) TU_MPI_CHECK(g_rank, cond, __VA_ARGS__)

// ---------------------------------------------------------------------------------------
// states and their contents

// One layer keeps the dataset count, and so the number of collective calls per save, low:
// four ranks on two cores pay a scheduler time slice for each. Several layers are covered
// by tests/golden/test_ckpt_h5py.py.
static inline void test_cfg(cfg_t* c) {
    cfg_defaults(c);
    c->model.d_model = 8, c->model.d_ff = 16, c->model.n_experts = 4, c->model.top_k = 2;
    c->model.n_layers = 1, c->model.residual = 1, c->model.n_shared_experts = 1;
    c->train.global_batch_tokens = 16, c->train.steps = 10, c->train.warmup_steps = 2;
    c->compute.threads = 1;
    char err[CFG_ERRLEN];
    CHECK(cfg_validate(c, g_size, err, sizeof err) == 0, "%s", err);
}

typedef struct {
    arena_t arena, harena;
    train_t tr;
    history_t h;
} state_t;

static inline void state_new(state_t* s, const cfg_t* c, MPI_Comm comm) {
    memset(s, 0, sizeof *s);
    CHECK(tu_train_new(&s->tr, &s->arena, c, comm) == 0, "tu_train_new");
    arena_begin_count(&s->harena);
    history_layout(&s->h, 16, c->model.n_layers, c->model.n_experts, &s->harena);
    CHECK(arena_reserve(&s->harena) == 0, "history arena");
    history_layout(&s->h, 16, c->model.n_layers, c->model.n_experts, &s->harena);
}

static inline void state_free(state_t* s) {
    tu_train_free(&s->tr, &s->arena);
    arena_free(&s->harena);
}

// A value that depends on (salt, tensor, global expert, element) only, never on P.
static inline float value(uint32_t salt, int param, long ge, long j) {
    return rng_normal(salt, (uint32_t)param, (uint32_t)ge, (uint64_t)j);
}

// Visits every local element of every tensor: f(param index, global expert, element, ptr).
#define FOR_EACH_ELEMENT(m, base, BODY)                                                            \
    for (int pi = 0; pi < (m)->n_params; pi++) {                                                   \
        const param_t* p = &(m)->params[pi];                                                       \
        long per = (long)p->rows * p->cols;                                                        \
        for (int e = 0; e < p->n_mat; e++) {                                                       \
            long ge = p->sharded ? (m)->e0 + e : e;                                                \
            for (long j = 0; j < per; j++) {                                                       \
                float* x = (base) + p->offset + e * per + j;                                       \
                BODY;                                                                              \
            }                                                                                      \
        }                                                                                          \
    }

// Weights, moments, biases, step and `nsteps` recorded history steps from `salt`.
static inline void fill(state_t* s, uint32_t salt, long nsteps) {
    model_t* m = &s->tr.model;
    FOR_EACH_ELEMENT(m, m->w, *x = value(salt, pi, ge, j));
    FOR_EACH_ELEMENT(m, m->m, *x = value(salt + 1, pi, ge, j));
    FOR_EACH_ELEMENT(m, m->v, *x = fabsf(value(salt + 2, pi, ge, j)));
    for (long i = 0; i < (long)m->L * m->E; i++) m->bias[i] = value(salt + 3, 0, 0, i);
    s->h.n = 0;
    for (long step = 1; step <= nsteps; step++) {
        step_stats_t st = {.loss = 1.0 / step + salt, .aux = 0.01 * step};
        for (int l = 0; l < m->L; l++)
            for (int e = 0; e < m->E; e++) s->tr.acts[l].load[e] = salt + step * 100 + l * 10 + e;
        s->tr.step = step;
        history_record(&s->h, &s->tr, &st);
    }
}

static inline int same_bits_f(float a, float b) { return memcmp(&a, &b, sizeof a) == 0; }

// Every local value equals what fill(salt) puts there (bit for bit), the history too.
static inline void expect_fill(const state_t* s, uint32_t salt, long nsteps, int moments) {
    const model_t* m = &s->tr.model;
    FOR_EACH_ELEMENT(
        m, m->w,
        CHECK(same_bits_f(*x, value(salt, pi, ge, j)), "w %s expert %ld elem %ld", p->name, ge, j));
    if (moments) {
        FOR_EACH_ELEMENT(m, m->m,
                         CHECK(same_bits_f(*x, value(salt + 1, pi, ge, j)), "m %s", p->name));
        FOR_EACH_ELEMENT(
            m, m->v, CHECK(same_bits_f(*x, fabsf(value(salt + 2, pi, ge, j))), "v %s", p->name));
    }
    for (long i = 0; i < (long)m->L * m->E; i++)
        CHECK(same_bits_f(m->bias[i], value(salt + 3, 0, 0, i)), "bias %ld", i);
    CHECK(s->tr.step == nsteps, "step %ld != %ld", s->tr.step, nsteps);
    if (!moments) return;
    CHECK(s->h.n == nsteps, "history n %ld", s->h.n);
    for (long step = 1; step <= nsteps; step++) {
        CHECK(s->h.loss[step - 1] == 1.0 / step + salt, "loss %ld", step);
        CHECK(s->h.aux[step - 1] == 0.01 * step, "aux %ld", step);
        for (int l = 0; l < m->L; l++)
            for (int e = 0; e < m->E; e++)
                CHECK(s->h.load[((step - 1) * m->L + l) * m->E + e] ==
                          salt + step * 100 + l * 10 + e,
                      "load");
    }
}

// ---------------------------------------------------------------------------------------
// files (rank 0 changes them, everyone waits)

static inline void mkpath(char* buf, size_t n, const char* sub) {
    snprintf(buf, n, "%s/%s", g_root, sub);
}

static inline void no_tmp_left(const char* dir) {
    if (g_rank == 0) {
        DIR* d = opendir(dir);
        CHECK(d, "opendir %s", dir);
        struct dirent* de;
        while ((de = readdir(d))) {
            size_t n = strlen(de->d_name);
            CHECK(!(n >= 4 && !strcmp(de->d_name + n - 4, ".tmp")), "%s/%s left", dir, de->d_name);
        }
        closedir(d);
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

static inline void save(state_t* s, const char* dir, int keep, char* path, size_t n) {
    char err[1024];
    int rc =
        ckpt_save(dir, keep, &s->tr, &s->h, "[model]\nd_model = 8\n", path, n, err, sizeof err);
    CHECK(rc == MOED_OK, "save: %s", err);
    no_tmp_left(dir);
}

static inline void copy_file(const char* from, const char* to) {
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    CHECK(a && b, "copy %s -> %s", from, to);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, a)) > 0) CHECK(fwrite(buf, 1, n, b) == n, "write");
    fclose(a);
    CHECK(fclose(b) == 0, "close %s", to);
}

static inline void write_text(const char* path, const char* text) {
    FILE* fp = fopen(path, "w");
    CHECK(fp && fputs(text, fp) >= 0 && fclose(fp) == 0, "write %s", path);
}

// ---------------------------------------------------------------------------------------
// a valid file, and running the parts

// Saves fill(100) with 5 history steps at P into <root>/<sub>; its path goes to out.
static inline void save_valid(const cfg_t* c, const char* sub, char* out, size_t n) {
    char dir[512];
    mkpath(dir, sizeof dir, sub);
    state_t a;
    state_new(&a, c, MPI_COMM_WORLD);
    fill(&a, 100, 5);
    save(&a, dir, 10, out, n);
    state_free(&a);
}

static inline void run(const char* name, void (*fn)(const cfg_t*), const cfg_t* c) {
    double t0 = MPI_Wtime();
    fn(c);
    if (g_rank == 0) printf("ok: %s (%.2f s)\n", name, MPI_Wtime() - t0);
}

static inline int rm_entry(const char* path, const struct stat* st, int flag, struct FTW* ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

// MPI_Init, the scratch directory (mkdtemp on rank 0, broadcast) and the test config.
static inline void ckpt_test_begin(int* argc, char*** argv, cfg_t* c) {
    MPI_Init(argc, argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    if (g_rank == 0) {
        snprintf(g_root, sizeof g_root, "/tmp/moed-ckpt.XXXXXX");
        CHECK(mkdtemp(g_root), "mkdtemp");
    }
    MPI_Bcast(g_root, sizeof g_root, MPI_CHAR, 0, MPI_COMM_WORLD);
    test_cfg(c);
}

// Removes the scratch directory and finalizes MPI.
static inline int ckpt_test_end(const char* program) {
    MPI_Barrier(MPI_COMM_WORLD);
    if (g_rank == 0) {
        nftw(g_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        printf("%s: all checks passed at P = %d\n", program, g_size);
    }
    MPI_Finalize();
    return 0;
}

#endif
