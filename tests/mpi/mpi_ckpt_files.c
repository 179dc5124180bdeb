// Checkpoint files that must not load: every bad input gives MOED_ERR_DATA with the expected
// one-line message on every rank, whichever rank finds it; and the choice of the file to
// resume from (LATEST, and the fallback to the newest valid file).
// moed-test-ranks: 1 2 4
#define _GNU_SOURCE
#include "tests/common/ckpt_test.h"

static char g_valid[1100]; // a valid file of the test config, saved at P with fill(100)

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

int main(int argc, char** argv) {
    cfg_t c;
    ckpt_test_begin(&argc, &argv, &c);
    save_valid(&c, "valid", g_valid, sizeof g_valid);
    run("bad inputs", test_bad_inputs, &c);
    run("LATEST and the fallback", test_latest, &c);
    return ckpt_test_end("mpi_ckpt_files");
}
