// Checkpoints: save/load round trip bit for bit; experts stored by global index (the file
// holds what a P = 1 initialisation gives, and files written by a sub-communicator of Q
// ranks load at P and the other way round); checkpoint.keep; no *.tmp left. Bad inputs and
// LATEST are in mpi_ckpt_files.c.
// moed-test-ranks: 1 2 4
#define _GNU_SOURCE
#include "tests/common/ckpt_test.h"

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

int main(int argc, char** argv) {
    cfg_t c;
    ckpt_test_begin(&argc, &argv, &c);
    run("round trip", test_roundtrip, &c);
    run("checkpoint.keep and global-index placement", test_keep_and_placement, &c);
    run("resharding", test_reshard_half, &c);
    return ckpt_test_end("mpi_ckpt");
}
