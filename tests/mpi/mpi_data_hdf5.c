// The HDF5 data source: every rank reads exactly its own rows of each step, wrapping modulo
// N, for every P; each malformed file gives MOED_ERR_DATA with the expected one-line message,
// the same on every rank.
//
// Rank 0 writes the files serially; values encode (row, column) so a wrong row, a rotated
// wrap or a swapped x/y shows up as a wrong number, not only as a wrong checksum.
// moed-test-ranks: 1 2 4
#include <hdf5.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/status.h"
#include "daemon/data_hdf5.h"
#include "tests/common/mpi_check.h"

static int g_rank;
static int g_checks;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        g_checks++;                                                                                \
        TU_MPI_CHECK(g_rank, cond, __VA_ARGS__);                                                   \
    } while (0)

enum { D = 5, T = 8 }; // T divisible by 1, 2, 4

// Exactly representable in float32 for the sizes used here.
static float xval(long row, int col) { return (float)(row * 100 + col) + 0.25f; }
static float yval(long row, int col) { return -(float)(row * 100 + col) - 0.5f; }

// ---------------------------------------------------------------------------------------------
// Writing test files (rank 0, serial HDF5)

// Writes dataset `name` of `type` with `ndims` dims; the values are xval/yval of the flat index
// (or zeros for non-float types: only the header matters for bad files).
static void write_ds(hid_t file, const char* name, hid_t type, int ndims, const hsize_t* dims,
                     int is_y) {
    hid_t space = H5Screate_simple(ndims, dims, NULL);
    hid_t ds = H5Dcreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(ds >= 0, "cannot create %s", name);
    hsize_t n = 1;
    for (int i = 0; i < ndims; i++) n *= dims[i];
    long cols = ndims == 2 ? (long)dims[1] : 1;
    double* buf = calloc(n + 1, sizeof(double)); // [n] written with conversion to `type`
    CHECK(buf != NULL, "out of memory");
    for (hsize_t i = 0; i < n; i++)
        buf[i] =
            is_y ? yval((long)i / cols, (int)(i % cols)) : xval((long)i / cols, (int)(i % cols));
    if (n > 0)
        CHECK(H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0,
              "cannot write %s", name);
    free(buf);
    H5Dclose(ds);
    H5Sclose(space);
}

// A file with /x and /y as float32 [N, D] (either may be left out with nx/ny < 0).
static void write_good(const char* path, long nx, long ny, int dx_cols, int dy_cols) {
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(f >= 0, "cannot create %s", path);
    hsize_t xd[2] = {(hsize_t)nx, (hsize_t)dx_cols}, yd[2] = {(hsize_t)ny, (hsize_t)dy_cols};
    if (nx >= 0) write_ds(f, "/x", H5T_IEEE_F32LE, 2, xd, 0);
    if (ny >= 0) write_ds(f, "/y", H5T_IEEE_F32LE, 2, yd, 1);
    H5Fclose(f);
}

// A file whose /x has the given type and shape, with a valid /y [N, D].
static void write_bad_x(const char* path, hid_t type, int ndims, const hsize_t* dims) {
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(f >= 0, "cannot create %s", path);
    hsize_t yd[2] = {12, D};
    write_ds(f, "/x", type, ndims, dims, 0);
    write_ds(f, "/y", H5T_IEEE_F32LE, 2, yd, 1);
    H5Fclose(f);
}

// Sets element (row, col) of the float32 dataset `name` of an existing file to v.
static void poke(const char* path, const char* name, long row, int col, float v) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    hid_t fs = H5Dget_space(ds);
    hsize_t at[2] = {(hsize_t)row, (hsize_t)col}, one[2] = {1, 1};
    hid_t ms = H5Screate_simple(2, one, NULL);
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, at, NULL, one, NULL);
    CHECK(f >= 0 && ds >= 0 && H5Dwrite(ds, H5T_NATIVE_FLOAT, ms, fs, H5P_DEFAULT, &v) >= 0,
          "cannot poke %s%s", path, name);
    H5Sclose(ms);
    H5Sclose(fs);
    H5Dclose(ds);
    H5Fclose(f);
}

// ---------------------------------------------------------------------------------------------
// Reading

// Reads steps 0..nsteps-1 (and one far step) and checks every element of this rank's rows.
static void check_reads(const char* path, long N, int rank, int nranks) {
    data_hdf5_t dh;
    char err[1024] = "";
    int rc = data_hdf5_open(&dh, path, D, T, rank, nranks, MPI_COMM_WORLD, err, sizeof err);
    CHECK(rc == MOED_OK, "open %s: rc %d: %s", path, rc, err);
    CHECK(dh.N == N, "N = %ld, want %ld", dh.N, N);
    long Tl = T / nranks;
    float* x = malloc(sizeof(float) * Tl * D); // [Tl, D]
    float* y = malloc(sizeof(float) * Tl * D); // [Tl, D]
    CHECK(x && y, "out of memory");
    const long steps[] = {0, 1, 2, 3, 123456789};
    for (int si = 0; si < (int)(sizeof steps / sizeof *steps); si++) {
        long s = steps[si];
        for (long i = 0; i < Tl * D; i++) x[i] = y[i] = -12345.0f;
        rc = data_hdf5_batch(&dh, s, x, y, err, sizeof err);
        CHECK(rc == MOED_OK, "batch step %ld: rc %d: %s", s, rc, err);
        // The reads really were collective (HDF5 silently falls back to independent I/O).
        H5D_mpio_actual_io_mode_t mode;
        CHECK(H5Pget_mpio_actual_io_mode(dh.dxpl, &mode) >= 0 && mode != H5D_MPIO_NO_COLLECTIVE,
              "step %ld: the last read was not collective (mode %d)", s, (int)mode);
        for (long i = 0; i < Tl; i++) {
            long row = (s * T + (long)rank * Tl + i) % N;
            for (int c = 0; c < D; c++) {
                CHECK(x[i * D + c] == xval(row, c),
                      "N=%ld step %ld local row %ld col %d: x = %g, want %g (file row %ld)", N, s,
                      i, c, x[i * D + c], xval(row, c), row);
                CHECK(y[i * D + c] == yval(row, c),
                      "N=%ld step %ld local row %ld col %d: y = %g, want %g (file row %ld)", N, s,
                      i, c, y[i * D + c], yval(row, c), row);
            }
        }
    }
    free(x);
    free(y);
    data_hdf5_close(&dh);
    data_hdf5_close(&dh); // a second close is harmless, and so is closing a zeroed handle
    data_hdf5_t zero = {0};
    data_hdf5_close(&zero);
}

// Opening `path` fails with MOED_ERR_DATA, a message naming the file and containing `want`,
// and the same message on every rank.
static void check_bad(const char* path, const char* want, int rank, int nranks) {
    data_hdf5_t dh;
    char err[1024] = "";
    int rc = data_hdf5_open(&dh, path, D, T, rank, nranks, MPI_COMM_WORLD, err, sizeof err);
    CHECK(rc == MOED_ERR_DATA, "%s: rc = %d, want %d (MOED_ERR_DATA); message '%s'", path, rc,
          MOED_ERR_DATA, err);
    CHECK(strstr(err, path) != NULL, "message does not name the file: '%s'", err);
    CHECK(strstr(err, want) != NULL, "message '%s' lacks '%s'", err, want);
    CHECK(strchr(err, '\n') == NULL, "message is not one line: '%s'", err);
    CHECK(dh.file <= 0 && dh.dx <= 0 && dh.dy <= 0, "handles left open after a failed open");
    char first[1024];
    memcpy(first, err, sizeof first);
    MPI_Bcast(first, sizeof first, MPI_CHAR, 0, MPI_COMM_WORLD);
    CHECK(strcmp(first, err) == 0, "rank 0 says '%s', this rank '%s'", first, err);
    if (rank == 0) printf("  ok: %s\n", err);
}

// The batch of `step` fails with MOED_ERR_DATA and the same one-line message on every rank,
// naming the file and containing `want`.
static void check_bad_batch(const char* path, long step, const char* want, int rank, int nranks) {
    data_hdf5_t dh;
    char err[1024] = "";
    int rc = data_hdf5_open(&dh, path, D, T, rank, nranks, MPI_COMM_WORLD, err, sizeof err);
    CHECK(rc == MOED_OK, "open %s: rc %d: %s", path, rc, err);
    float x[T * D], y[T * D]; // [T / nranks, D] each
    rc = data_hdf5_batch(&dh, step, x, y, err, sizeof err);
    CHECK(rc == MOED_ERR_DATA, "%s step %ld: rc = %d, want %d (MOED_ERR_DATA)", path, step, rc,
          MOED_ERR_DATA);
    CHECK(strstr(err, path) != NULL, "message does not name the file: '%s'", err);
    CHECK(strstr(err, want) != NULL, "message '%s' lacks '%s'", err, want);
    CHECK(strchr(err, '\n') == NULL, "message is not one line: '%s'", err);
    char first[1024];
    memcpy(first, err, sizeof first);
    MPI_Bcast(first, sizeof first, MPI_CHAR, 0, MPI_COMM_WORLD);
    CHECK(strcmp(first, err) == 0, "rank 0 says '%s', this rank '%s'", first, err);
    if (rank == 0) printf("  ok: step %ld: %s\n", step, err);
    data_hdf5_close(&dh);
}

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    int rank, nranks;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    g_rank = rank;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);

    char dir[512] = "";
    if (rank == 0) {
        const char* tmp = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/moed_data_hdf5_XXXXXX", tmp && *tmp ? tmp : "/tmp");
        CHECK(mkdtemp(dir) != NULL, "mkdtemp %s", dir);
    }
    MPI_Bcast(dir, sizeof dir, MPI_CHAR, 0, MPI_COMM_WORLD);

    enum { NFILES = 15 };
    char path[NFILES][600];
    const char* names[NFILES] = {"good.h5",  "short.h5",  "garbage.h5",  "missing.h5",
                                 "nox.h5",   "noy.h5",    "x3d.h5",      "x1d.h5",
                                 "xf64.h5",  "xi32.h5",   "ywidth.h5",   "nmismatch.h5",
                                 "empty.h5", "xgroup.h5", "nonfinite.h5"};
    for (int i = 0; i < NFILES; i++) snprintf(path[i], sizeof path[i], "%s/%s", dir, names[i]);

    if (rank == 0) {
        write_good(path[0], 3 * T / 2, 3 * T / 2, D, D); // N = 12: batches wrap
        write_good(path[1], 3, 3, D, D);                 // N = 3 < T/P: rows repeat
        FILE* g = fopen(path[2], "w");
        CHECK(g != NULL, "cannot write %s", path[2]);
        fputs("this is not an HDF5 file\n", g);
        fclose(g);
        // path[3] is never created
        write_good(path[4], -1, 12, D, D);
        write_good(path[5], 12, -1, D, D);
        hsize_t d3[3] = {12, D, 1}, d1[1] = {12}, d2[2] = {12, D};
        write_bad_x(path[6], H5T_IEEE_F32LE, 3, d3);
        write_bad_x(path[7], H5T_IEEE_F32LE, 1, d1);
        write_bad_x(path[8], H5T_IEEE_F64LE, 2, d2);
        write_bad_x(path[9], H5T_STD_I32LE, 2, d2);
        write_good(path[10], 12, 12, D, D - 1);
        write_good(path[11], 12, 11, D, D);
        write_good(path[12], 0, 0, D, D);
        hid_t f = H5Fcreate(path[13], H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
        H5Gclose(H5Gcreate2(f, "/x", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
        write_ds(f, "/y", H5T_IEEE_F32LE, 2, d2, 1);
        H5Fclose(f);
        write_good(path[14], 12, 12, D, D);
        poke(path[14], "/x", 10, 2, NAN);
        poke(path[14], "/y", 5, 4, -INFINITY);
    }
    MPI_Barrier(MPI_COMM_WORLD);

    if (rank == 0) printf("P = %d: reading steps of N = %d and N = 3 rows\n", nranks, 3 * T / 2);
    check_reads(path[0], 3 * T / 2, rank, nranks);
    check_reads(path[1], 3, rank, nranks);

    if (rank == 0) printf("P = %d: bad files\n", nranks);
    check_bad(path[2], "not an HDF5 file", rank, nranks);
    check_bad(path[3], "cannot open data file", rank, nranks);
    check_bad(path[4], "dataset /x not found", rank, nranks);
    check_bad(path[5], "dataset /y not found", rank, nranks);
    check_bad(path[6], "dataset /x is 3-D, expected 2-D", rank, nranks);
    check_bad(path[7], "dataset /x is 1-D, expected 2-D", rank, nranks);
    check_bad(path[8], "dataset /x is float64, expected float32", rank, nranks);
    check_bad(path[9], "dataset /x is int32, expected float32", rank, nranks);
    check_bad(path[10], "dataset /y is [12, 4], expected [N, 5]", rank, nranks);
    check_bad(path[11], "dataset /x has 12 rows but /y has 11", rank, nranks);
    check_bad(path[12], "datasets /x and /y have no rows", rank, nranks);
    check_bad(path[13], "/x is not a dataset", rank, nranks);

    // Non-finite values: the first in batch order (row by row, x before y), whichever rank
    // holds it. N = 12, T = 8: step 0 reads rows 0..7, step 1 rows 8..11 and 0..3, step 2
    // rows 4..11.
    if (rank == 0) printf("P = %d: NaN and Inf in the data\n", nranks);
    check_bad_batch(path[14], 0, "dataset /y row 5 column 4 is Inf (batch of step 0)", rank,
                    nranks);
    check_bad_batch(path[14], 1, "dataset /x row 10 column 2 is NaN (batch of step 1)", rank,
                    nranks);
    check_bad_batch(path[14], 2, "dataset /y row 5 column 4 is Inf (batch of step 2)", rank,
                    nranks);

    // A failed open leaves nothing behind that breaks the next one.
    check_reads(path[0], 3 * T / 2, rank, nranks);

    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        for (int i = 0; i < NFILES; i++) unlink(path[i]);
        rmdir(dir);
        printf("mpi_data_hdf5: P = %d: %d checks passed\n", nranks, g_checks);
    }
    MPI_Finalize();
    return 0;
}
