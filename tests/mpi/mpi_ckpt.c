// Checkpoints: save/load round trip bit for bit; experts stored by global index (the file
// holds what a P = 1 initialisation gives, and files written by a sub-communicator of Q
// ranks load at P and the other way round); every bad input gives MOED_ERR_DATA with the
// expected one-line message on every rank; LATEST fallback; checkpoint.keep; no *.tmp left.
// moed-test-ranks: 1 2 4
#define _GNU_SOURCE
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
static void test_cfg(cfg_t* c) {
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

static void state_new(state_t* s, const cfg_t* c, MPI_Comm comm) {
    memset(s, 0, sizeof *s);
    CHECK(tu_train_new(&s->tr, &s->arena, c, comm) == 0, "tu_train_new");
    arena_begin_count(&s->harena);
    history_layout(&s->h, 16, c->model.n_layers, c->model.n_experts, &s->harena);
    CHECK(arena_reserve(&s->harena) == 0, "history arena");
    history_layout(&s->h, 16, c->model.n_layers, c->model.n_experts, &s->harena);
}

static void state_free(state_t* s) {
    tu_train_free(&s->tr, &s->arena);
    arena_free(&s->harena);
}

// A value that depends on (salt, tensor, global expert, element) only, never on P.
static float value(uint32_t salt, int param, long ge, long j) {
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
static void fill(state_t* s, uint32_t salt, long nsteps) {
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

static int same_bits_f(float a, float b) { return memcmp(&a, &b, sizeof a) == 0; }

// Every local value equals what fill(salt) puts there (bit for bit), the history too.
static void expect_fill(const state_t* s, uint32_t salt, long nsteps, int moments) {
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

static void mkpath(char* buf, size_t n, const char* sub) { snprintf(buf, n, "%s/%s", g_root, sub); }

static void no_tmp_left(const char* dir) {
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

static void save(state_t* s, const char* dir, int keep, char* path, size_t n) {
    char err[1024];
    int rc =
        ckpt_save(dir, keep, &s->tr, &s->h, "[model]\nd_model = 8\n", path, n, err, sizeof err);
    CHECK(rc == MOED_OK, "save: %s", err);
    no_tmp_left(dir);
}

static void copy_file(const char* from, const char* to) {
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    CHECK(a && b, "copy %s -> %s", from, to);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, a)) > 0) CHECK(fwrite(buf, 1, n, b) == n, "write");
    fclose(a);
    CHECK(fclose(b) == 0, "close %s", to);
}

static void write_text(const char* path, const char* text) {
    FILE* fp = fopen(path, "w");
    CHECK(fp && fputs(text, fp) >= 0 && fclose(fp) == 0, "write %s", path);
}

// ---------------------------------------------------------------------------------------
// round trip at P

static char g_valid[1100]; // a valid file of the test config, saved at P with fill(100)

static void test_roundtrip(const cfg_t* c) {
    char dir[512], path[1100];
    mkpath(dir, sizeof dir, "rt");
    state_t a, b;
    state_new(&a, c, MPI_COMM_WORLD);
    fill(&a, 100, 5);
    save(&a, dir, 10, path, sizeof path);
    snprintf(g_valid, sizeof g_valid, "%s/step_00000005.h5", dir);
    CHECK(!strcmp(path, g_valid), "path %s", path);

    state_new(&b, c, MPI_COMM_WORLD);
    char err[1024];
    CHECK(ckpt_load(path, &b.tr, &b.h, 0, err, sizeof err) == MOED_OK, "load: %s", err);
    const model_t *ma = &a.tr.model, *mb = &b.tr.model;
    size_t bytes = sizeof(float) * ma->n_local;
    CHECK(!memcmp(ma->w, mb->w, bytes) && !memcmp(ma->m, mb->m, bytes) &&
              !memcmp(ma->v, mb->v, bytes),
          "w/m/v differ after the round trip");
    CHECK(!memcmp(ma->bias, mb->bias, sizeof(float) * ma->L * ma->E), "bias differs");
    CHECK(b.tr.step == 5 && b.h.n == 5, "step %ld n %ld", b.tr.step, b.h.n);
    CHECK(!memcmp(a.h.loss, b.h.loss, 5 * sizeof(double)) &&
              !memcmp(a.h.aux, b.h.aux, 5 * sizeof(double)) &&
              !memcmp(a.h.load, b.h.load, 5 * sizeof(int64_t) * ma->L * ma->E),
          "history differs");
    expect_fill(&b, 100, 5, 1);
    state_free(&b);
    state_free(&a);
}

// ---------------------------------------------------------------------------------------
// resharding: ranks [0, Q) save, all P load; all P's file loads at Q

static void test_reshard(const cfg_t* c, int q) {
    char dir[512], path[1100], err[1024];
    char name[32];
    snprintf(name, sizeof name, "reshard_q%d", q);
    mkpath(dir, sizeof dir, name);
    MPI_Comm sub;
    MPI_Comm_split(MPI_COMM_WORLD, g_rank < q ? 0 : MPI_UNDEFINED, g_rank, &sub);
    if (g_rank < q) {
        state_t s;
        state_new(&s, c, sub);
        fill(&s, 200 + q, 3);
        CHECK(ckpt_save(dir, 2, &s.tr, &s.h, "", path, sizeof path, err, sizeof err) == 0,
              "save at Q=%d: %s", q, err);
        CHECK(s.tr.nranks == q, "nranks");
        state_free(&s);
    }
    MPI_Bcast(path, sizeof path, MPI_CHAR, 0, MPI_COMM_WORLD);

    state_t s;
    state_new(&s, c, MPI_COMM_WORLD);
    CHECK(ckpt_load(path, &s.tr, &s.h, 0, err, sizeof err) == 0, "load at P: %s", err);
    expect_fill(&s, 200 + q, 3, 1);
    state_free(&s);

    if (g_rank < q) { // the file written at P, read at Q
        state_new(&s, c, sub);
        CHECK(ckpt_load(g_valid, &s.tr, &s.h, 0, err, sizeof err) == 0, "load at Q: %s", err);
        expect_fill(&s, 100, 5, 1);
        state_free(&s);
        MPI_Comm_free(&sub);
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

// ---------------------------------------------------------------------------------------
// bad inputs

// rc must be MOED_ERR_DATA with a message containing `want`, the same on every rank.
static void expect_data_err(int rc, const char* err, const char* want, const char* what) {
    CHECK(rc == MOED_ERR_DATA, "%s: rc %d (%s)", what, rc, err);
    CHECK(strstr(err, want), "%s: message \"%s\" lacks \"%s\"", what, err, want);
    CHECK(!strchr(err, '\n'), "%s: not one line", what);
    char r0[1024];
    snprintf(r0, sizeof r0, "%s", err);
    MPI_Bcast(r0, sizeof r0, MPI_CHAR, 0, MPI_COMM_WORLD);
    CHECK(!strcmp(r0, err), "%s: rank 0 says \"%s\", this rank \"%s\"", what, r0, err);
    if (g_rank == 0) printf("ok: %s -> %s\n", what, err);
}

static void probe_expect(const char* path, const cfg_t* c, const char* want, const char* what) {
    char err[1024] = "";
    ckpt_info_t info;
    int rc = ckpt_probe(path, c, MPI_COMM_WORLD, &info, err, sizeof err);
    expect_data_err(rc, err, want, what);
}

// A copy of the valid file, changed by `edit` in a serial HDF5 session on rank 0.
static void edited_copy(const char* name, void (*edit)(hid_t f), char* out, size_t n) {
    snprintf(out, n, "%s/bad/%s", g_root, name);
    if (g_rank == 0) {
        copy_file(g_valid, out);
        if (edit) {
            hid_t f = H5Fopen(out, H5F_ACC_RDWR, H5P_DEFAULT);
            CHECK(f >= 0, "open %s", out);
            edit(f);
            CHECK(H5Fclose(f) >= 0, "close");
        }
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

static void edit_missing(hid_t f) {
    CHECK(H5Ldelete(f, "/optimizer/v/layers/0/experts/wo", H5P_DEFAULT) >= 0, "delete");
}

static void replace_dataset(hid_t f, const char* path, hid_t type, int ndim, const hsize_t* dims) {
    CHECK(H5Ldelete(f, path, H5P_DEFAULT) >= 0, "delete");
    hid_t sp = H5Screate_simple(ndim, dims, NULL);
    hid_t d = H5Dcreate2(f, path, type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(d >= 0, "create");
    H5Dclose(d);
    H5Sclose(sp);
}

static void edit_shape(hid_t f) {
    hsize_t dims[2] = {9, 4}; // d + 1 rows
    replace_dataset(f, "/layers/0/router/weight", H5T_IEEE_F32LE, 2, dims);
}

static void edit_type(hid_t f) {
    hsize_t dims[1] = {5};
    replace_dataset(f, "/metrics/loss", H5T_STD_I32LE, 1, dims);
}

static void edit_format(hid_t f) { CHECK(H5Adelete(f, "format") >= 0, "delete attr"); }

static void edit_version(hid_t f) {
    CHECK(H5Adelete(f, "format_version") >= 0, "delete attr");
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, "format_version", H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    long long v = 2;
    CHECK(a >= 0 && H5Awrite(a, H5T_NATIVE_LLONG, &v) >= 0, "write attr");
    H5Aclose(a);
    H5Sclose(sp);
}

// One element of a float32 dataset set to v (by global index).
static void poke(hid_t f, const char* path, int ndim, const hsize_t* at, float v) {
    hid_t d = H5Dopen2(f, path, H5P_DEFAULT), sp = H5Dget_space(d);
    hsize_t one[3] = {1, 1, 1}, n = 1;
    H5Sselect_hyperslab(sp, H5S_SELECT_SET, at, NULL, one, NULL);
    (void)ndim;
    hid_t ms = H5Screate_simple(1, &n, NULL);
    CHECK(H5Dwrite(d, H5T_NATIVE_FLOAT, ms, sp, H5P_DEFAULT, &v) >= 0, "poke %s", path);
    H5Sclose(ms), H5Sclose(sp), H5Dclose(d);
}

static void edit_nan(hid_t f) {
    hsize_t at[3] = {3, 2, 5}; // the last expert: only the last rank holds it at P > 1
    poke(f, "/layers/0/experts/w1", 3, at, NAN);
}

static void edit_inf_moment(hid_t f) {
    hsize_t at[2] = {1, 2};
    poke(f, "/optimizer/m/layers/0/router/weight", 2, at, INFINITY);
}

static void test_bad_inputs(const cfg_t* c) {
    char bad[512], path[1100], err[1024];
    mkpath(bad, sizeof bad, "bad");
    if (g_rank == 0) CHECK(mkdir(bad, 0777) == 0, "mkdir");
    MPI_Barrier(MPI_COMM_WORLD);

    snprintf(path, sizeof path, "%s/absent.h5", bad);
    probe_expect(path, c, "absent.h5: No such file or directory", "missing file");

    snprintf(path, sizeof path, "%s/garbage.h5", bad);
    if (g_rank == 0) write_text(path, "this is not an HDF5 file\n");
    MPI_Barrier(MPI_COMM_WORLD);
    probe_expect(path, c, "garbage.h5: not an HDF5 file", "garbage");

    edited_copy("trunc.h5", NULL, path, sizeof path);
    if (g_rank == 0) {
        struct stat st;
        CHECK(stat(path, &st) == 0 && truncate(path, st.st_size / 2) == 0, "truncate");
    }
    MPI_Barrier(MPI_COMM_WORLD);
    probe_expect(path, c, "trunc.h5: truncated HDF5 file", "truncated");

    edited_copy("missing.h5", edit_missing, path, sizeof path);
    probe_expect(path, c, "dataset /optimizer/v/layers/0/experts/wo is missing", "missing dataset");
    edited_copy("shape.h5", edit_shape, path, sizeof path);
    probe_expect(path, c, "/layers/0/router/weight has shape [9, 4], expected [8, 4]", "shape");
    edited_copy("type.h5", edit_type, path, sizeof path);
    probe_expect(path, c, "/metrics/loss is int32, expected float64", "type");
    edited_copy("format.h5", edit_format, path, sizeof path);
    probe_expect(path, c, "not a moed checkpoint (no format attribute)", "no format");
    edited_copy("version.h5", edit_version, path, sizeof path);
    probe_expect(path, c, "format_version = 2, this moed reads version 1", "version");

    // Config disagreements, naming the key.
    cfg_t c2 = *c;
    c2.model.n_experts = 8;
    probe_expect(g_valid, &c2, "n_experts = 4 but the config says model.n_experts = 8",
                 "n_experts");
    c2 = *c;
    c2.model.residual = 0;
    probe_expect(g_valid, &c2,
                 "residual = true (has norm scales) but the config says model.residual = false",
                 "residual");
    c2 = *c;
    c2.model.n_shared_experts = 2;
    probe_expect(g_valid, &c2,
                 "n_shared_experts = 1 but the config says model.n_shared_experts = 2",
                 "n_shared_experts");

    // A file of another shape (d_model = 12): probes fine alone, not against this config.
    // Saved by rank 0 alone (a save at P costs many collectives on an oversubscribed host).
    cfg_t c12 = *c;
    c12.model.d_model = 12;
    state_t s;
    char dir[512];
    mkpath(dir, sizeof dir, "d12");
    MPI_Comm solo;
    MPI_Comm_split(MPI_COMM_WORLD, g_rank == 0 ? 0 : MPI_UNDEFINED, 0, &solo);
    if (g_rank == 0) {
        state_new(&s, &c12, solo);
        CHECK(ckpt_save(dir, 1, &s.tr, &s.h, "[model]\nd_model = 12\n", path, sizeof path, err,
                        sizeof err) == 0,
              "save: %s", err);
        state_free(&s);
        MPI_Comm_free(&solo);
    }
    MPI_Bcast(path, sizeof path, MPI_CHAR, 0, MPI_COMM_WORLD);
    ckpt_info_t info;
    CHECK(ckpt_probe(path, NULL, MPI_COMM_WORLD, &info, err, sizeof err) == 0, "%s", err);
    CHECK(info.d_model == 12 && info.residual == 1 && info.n_experts == 4 && info.step == 0 &&
              info.n_layers == 1 && info.d_ff == 16 && info.top_k == 2 && info.ranks_at_save == 1 &&
              info.format_version == 1 && info.n_history == 0 &&
              !strcmp(info.config, "[model]\nd_model = 12\n"),
          "info");
    probe_expect(path, c, "d_model = 12 but the config says model.d_model = 8", "d_model");
    state_new(&s, c, MPI_COMM_WORLD);
    expect_data_err(ckpt_load(path, &s.tr, &s.h, 0, err, sizeof err), err,
                    "d_model = 12 but the config says model.d_model = 8", "load d_model");

    // Non-finite values: found on whichever rank holds them, reported by every rank.
    edited_copy("nan.h5", edit_nan, path, sizeof path);
    CHECK(ckpt_probe(path, c, MPI_COMM_WORLD, &info, err, sizeof err) == 0, "%s", err);
    expect_data_err(ckpt_load(path, &s.tr, &s.h, 1, err, sizeof err), err,
                    "nan.h5: /layers/0/experts/w1 holds NaN (expert 3, element 37)", "NaN");
    edited_copy("inf.h5", edit_inf_moment, path, sizeof path);
    expect_data_err(ckpt_load(path, &s.tr, &s.h, 0, err, sizeof err), err,
                    "/optimizer/m/layers/0/router/weight holds Inf (element 6)", "Inf moment");
    state_free(&s);

    // Weights only: the bad moment is not read; moments and history stay as they were
    // (zero from the initialisation).
    state_new(&s, c, MPI_COMM_WORLD);
    CHECK(ckpt_load(path, &s.tr, &s.h, 1, err, sizeof err) == 0, "weights only: %s", err);
    expect_fill(&s, 100, 5, 0);
    for (long i = 0; i < s.tr.model.n_local; i++)
        CHECK(s.tr.model.m[i] == 0 && s.tr.model.v[i] == 0, "moments loaded");
    CHECK(s.h.n == 0, "history loaded");
    state_free(&s);
}

// ---------------------------------------------------------------------------------------
// LATEST and the fallback

static void resume_expect(const char* dir, const cfg_t* c, int want_found, const char* want_path,
                          const char* want_note) {
    int found = -1;
    char path[1100] = "", note[1024] = "", err[1024] = "";
    int rc = ckpt_find_resume(dir, c, MPI_COMM_WORLD, &found, path, sizeof path, note, sizeof note,
                              err, sizeof err);
    CHECK(rc == MOED_OK, "find_resume: %s", err);
    CHECK(found == want_found, "found %d", found);
    if (want_path) {
        const char* base = strrchr(path, '/');
        CHECK(base && !strcmp(base + 1, want_path), "resume from %s, expected %s", path, want_path);
    }
    if (want_note && !*want_note)
        CHECK(!*note, "unexpected note: %s", note);
    else if (want_note)
        CHECK(strstr(note, want_note), "note \"%s\" lacks \"%s\"", note, want_note);
    if (g_rank == 0 && *note) printf("ok: note: %s\n", note);
}

static void latest_says(const char* dir, const char* text) {
    char p[1100];
    snprintf(p, sizeof p, "%s/LATEST", dir);
    if (g_rank == 0) {
        if (text)
            write_text(p, text);
        else
            unlink(p);
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

static void test_latest(const cfg_t* c) {
    char dir[512], path[1100], p[1100];
    mkpath(dir, sizeof dir, "latest");
    resume_expect(dir, c, 0, NULL, ""); // no directory yet: start fresh
    // Three committed files (copies: saving is tested elsewhere and costs collectives).
    if (g_rank == 0) {
        CHECK(mkdir(dir, 0777) == 0, "mkdir");
        for (int step = 1; step <= 3; step++) {
            snprintf(p, sizeof p, "%s/step_%08d.h5", dir, step);
            copy_file(g_valid, p);
        }
    }
    latest_says(dir, "step_00000003.h5\n");
    resume_expect(dir, c, 1, "step_00000003.h5", "");
    latest_says(dir, "step_00000002.h5\n"); // LATEST wins over a newer file
    resume_expect(dir, c, 1, "step_00000002.h5", "");
    latest_says(dir, "\x01garbage");
    resume_expect(dir, c, 1, "step_00000003.h5", "LATEST does not name a step_<8 digits>.h5 file");
    latest_says(dir, "step_00000009.h5\n");
    resume_expect(dir, c, 1, "step_00000003.h5", "No such file or directory");
    latest_says(dir, NULL);
    resume_expect(dir, c, 1, "step_00000003.h5", "LATEST is missing");

    // The newest file truncated: LATEST names it, the one before is used.
    snprintf(p, sizeof p, "%s/step_00000003.h5", dir);
    if (g_rank == 0) {
        struct stat st;
        CHECK(stat(p, &st) == 0 && truncate(p, st.st_size / 2) == 0, "truncate");
    }
    latest_says(dir, "step_00000003.h5\n");
    resume_expect(dir, c, 1, "step_00000002.h5", "truncated HDF5 file");
    latest_says(dir, "garbage");
    resume_expect(dir, c, 1, "step_00000002.h5", "(newer files are invalid)");

    // A config that no file matches: files exist, none is valid.
    cfg_t c2 = *c;
    c2.model.n_experts = 8;
    int found;
    char note[1024], err[1024];
    int rc = ckpt_find_resume(dir, &c2, MPI_COMM_WORLD, &found, path, sizeof path, note,
                              sizeof note, err, sizeof err);
    expect_data_err(rc, err, "no valid checkpoint among 3 step files", "none valid");
    CHECK(strstr(err, "step_00000003.h5: truncated"), "newest file's reason: %s", err);

    // An empty directory: start fresh.
    mkpath(dir, sizeof dir, "latest_empty");
    if (g_rank == 0) CHECK(mkdir(dir, 0777) == 0, "mkdir");
    MPI_Barrier(MPI_COMM_WORLD);
    resume_expect(dir, c, 0, NULL, "");
}

// ---------------------------------------------------------------------------------------
// checkpoint.keep, and global-index placement: the file holds exactly a P = 1 initialisation

static void expect_keep(const char* dir) {
    if (g_rank == 0) {
        DIR* d = opendir(dir);
        struct dirent* de;
        int n = 0, latest = 0;
        while ((de = readdir(d))) {
            if (de->d_name[0] == '.') continue;
            if (!strcmp(de->d_name, "LATEST")) {
                latest = 1;
                continue;
            }
            CHECK(!strcmp(de->d_name, "step_00000002.h5") ||
                      !strcmp(de->d_name, "step_00000003.h5"),
                  "unexpected %s in %s", de->d_name, dir);
            n++;
        }
        closedir(d);
        CHECK(n == 2 && latest, "%d step files, LATEST %d", n, latest);
        char p[1100], line[64] = "";
        snprintf(p, sizeof p, "%s/LATEST", dir);
        FILE* fp = fopen(p, "r");
        CHECK(fp && fgets(line, sizeof line, fp), "read LATEST");
        fclose(fp);
        CHECK(!strcmp(line, "step_00000003.h5\n"), "LATEST holds %s", line);
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

static void read_all_f32(hid_t f, const char* path, float* out, long n) {
    hid_t d = H5Dopen2(f, path, H5P_DEFAULT);
    CHECK(d >= 0, "open %s", path);
    hid_t sp = H5Dget_space(d);
    CHECK(H5Sget_simple_extent_npoints(sp) == n, "%s size", path);
    CHECK(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) >= 0, "read %s", path);
    H5Sclose(sp);
    H5Dclose(d);
}

// Rank 0 compares every tensor in `path` with a P = 1 model_init of the same seed.
static void expect_p1_init(const cfg_t* c, const char* path) {
    if (g_rank == 0) {
        model_t one;
        arena_t a;
        arena_begin_count(&a);
        model_layout(&one, c, 0, 1, &a);
        CHECK(arena_reserve(&a) == 0, "arena");
        model_layout(&one, c, 0, 1, &a);
        model_init(&one, (uint64_t)c->train.seed);
        static float buf[1 << 16];
        hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
        CHECK(f >= 0, "open %s", path);
        for (int i = 0; i < one.n_params; i++) {
            const param_t* p = &one.params[i];
            char ds[96];
            snprintf(ds, sizeof ds, "/layers/%s", p->name);
            CHECK(p->numel <= (long)(sizeof buf / sizeof buf[0]), "buffer");
            read_all_f32(f, ds, buf, p->numel);
            CHECK(!memcmp(buf, one.w + p->offset, sizeof(float) * p->numel),
                  "%s in the file is not the P = 1 initialisation (saved at P = %d)", ds, g_size);
        }
        H5Fclose(f);
        arena_free(&a);
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

static void test_keep_and_placement(const cfg_t* c) {
    char dir[512], path[1100], p[1100];
    mkpath(dir, sizeof dir, "keep");
    state_t s;
    state_new(&s, c, MPI_COMM_WORLD); // model_init(seed): P-independent values
    for (long step = 1; step <= 3; step++) {
        if (step == 3 && g_rank == 0) { // a leftover of a killed save
            snprintf(p, sizeof p, "%s/step_00000009.h5.tmp", dir);
            write_text(p, "partial");
        }
        s.tr.step = step;
        save(&s, dir, 2, path, sizeof path);
    }
    expect_keep(dir);
    expect_p1_init(c, path);
    state_free(&s);
}

// Q = P/2: 1 <-> 2 at P = 2, 2 <-> 4 at P = 4 (1 <-> 4 costs the same and adds little).
static void test_reshard_half(const cfg_t* c) {
    if (g_size > 1) test_reshard(c, g_size / 2);
}

static void run(const char* name, void (*fn)(const cfg_t*), const cfg_t* c) {
    double t0 = MPI_Wtime();
    fn(c);
    if (g_rank == 0) printf("ok: %s (%.2f s)\n", name, MPI_Wtime() - t0);
}

static int rm_entry(const char* path, const struct stat* st, int flag, struct FTW* ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    if (g_rank == 0) {
        snprintf(g_root, sizeof g_root, "/tmp/moed-ckpt.XXXXXX");
        CHECK(mkdtemp(g_root), "mkdtemp");
    }
    MPI_Bcast(g_root, sizeof g_root, MPI_CHAR, 0, MPI_COMM_WORLD);
    cfg_t c;
    test_cfg(&c);

    run("round trip", test_roundtrip, &c);
    run("checkpoint.keep and global-index placement", test_keep_and_placement, &c);
    run("resharding", test_reshard_half, &c);
    run("bad inputs", test_bad_inputs, &c);
    run("LATEST and the fallback", test_latest, &c);

    MPI_Barrier(MPI_COMM_WORLD);
    if (g_rank == 0) {
        nftw(g_root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        printf("mpi_ckpt: all checks passed at P = %d\n", g_size);
    }
    MPI_Finalize();
    return 0;
}
