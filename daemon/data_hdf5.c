#include "daemon/data_hdf5.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "compute/finite.h"
#include "config/status.h"

#define MSGLEN 1024 // every message is built and broadcast in a buffer of this size

// ---------------------------------------------------------------------------------------------
// Agreement: every rank returns the same status and message

// Every rank passes its own status and message; all return the status and message of the
// lowest failing rank (or MOED_OK), so callers can report from rank 0 alone.
static int agree(int status, char* msg, int rank, MPI_Comm comm) {
    int first = status ? rank : INT_MAX;
    MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPI_INT, MPI_MIN, comm);
    if (first == INT_MAX) return MOED_OK;
    MPI_Bcast(&status, 1, MPI_INT, first, comm);
    MPI_Bcast(msg, MSGLEN, MPI_CHAR, first, comm);
    return status;
}

// ---------------------------------------------------------------------------------------------
// Validation

// A short name for an HDF5 datatype ("float32", "int64", "string", ...) for messages.
static void type_name(hid_t t, char* buf, size_t len) {
    size_t bits = 8 * H5Tget_size(t);
    switch (H5Tget_class(t)) {
    case H5T_FLOAT: snprintf(buf, len, "float%zu", bits); break;
    case H5T_INTEGER:
        snprintf(buf, len, "%sint%zu", H5Tget_sign(t) == H5T_SGN_NONE ? "u" : "", bits);
        break;
    case H5T_STRING: snprintf(buf, len, "string"); break;
    case H5T_COMPOUND: snprintf(buf, len, "compound"); break;
    case H5T_ENUM: snprintf(buf, len, "enum"); break;
    case H5T_ARRAY: snprintf(buf, len, "array"); break;
    default: snprintf(buf, len, "a non-numeric type"); break;
    }
}

// Opens dataset `name` and checks it is float32 [rows, d]. On success *out holds the open
// dataset and *rows its first dimension; on failure msg says why (naming path and name).
static int open_checked(hid_t file, const char* path, const char* name, int d, hid_t* out,
                        long* rows, char* msg) {
    *out = H5I_INVALID_HID;
    if (H5Lexists(file, name, H5P_DEFAULT) <= 0) {
        snprintf(msg, MSGLEN,
                 "%s: dataset %s not found (data.source = hdf5 needs /x and /y, "
                 "float32 [N, d_model])",
                 path, name);
        return MOED_ERR_DATA;
    }
    hid_t ds = H5Dopen2(file, name, H5P_DEFAULT);
    if (ds < 0) {
        snprintf(msg, MSGLEN, "%s: %s is not a dataset", path, name);
        return MOED_ERR_DATA;
    }
    hid_t space = H5Dget_space(ds), type = H5Dget_type(ds);
    hsize_t dims[H5S_MAX_RANK] = {0};
    int ndims = H5Sget_simple_extent_dims(space, dims, NULL);
    int rc = MOED_OK;
    char tname[32];
    type_name(type, tname, sizeof tname);
    if (ndims != 2) {
        snprintf(msg, MSGLEN, "%s: dataset %s is %d-D, expected 2-D [N, d_model]", path, name,
                 ndims < 0 ? 0 : ndims);
        rc = MOED_ERR_DATA;
    } else if (H5Tget_class(type) != H5T_FLOAT || H5Tget_size(type) != 4) {
        // Any float32 byte order is fine: HDF5 converts on read.
        snprintf(msg, MSGLEN, "%s: dataset %s is %s, expected float32", path, name, tname);
        rc = MOED_ERR_DATA;
    } else if (dims[1] != (hsize_t)d) {
        snprintf(msg, MSGLEN, "%s: dataset %s is [%llu, %llu], expected [N, %d] (model.d_model)",
                 path, name, (unsigned long long)dims[0], (unsigned long long)dims[1], d);
        rc = MOED_ERR_DATA;
    }
    H5Tclose(type);
    H5Sclose(space);
    if (rc) {
        H5Dclose(ds);
        return rc;
    }
    *out = ds;
    *rows = (long)dims[0];
    return MOED_OK;
}

// Checks that each rank can see the file and that it is HDF5 at all, before the collective
// open (so a missing or foreign file never reaches MPI-IO).
static int precheck(const char* path, char* msg) {
    if (access(path, R_OK) != 0) {
        snprintf(msg, MSGLEN, "%s: cannot open data file: %s", path, strerror(errno));
        return MOED_ERR_DATA;
    }
    if (H5Fis_hdf5(path) <= 0) {
        snprintf(msg, MSGLEN, "%s: not an HDF5 file", path);
        return MOED_ERR_DATA;
    }
    return MOED_OK;
}

// Collective open with the MPI-IO driver and validation of /x and /y.
static int open_and_validate(data_hdf5_t* dh, const char* path, MPI_Comm comm, char* msg) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL);
    dh->file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (dh->file < 0) {
        snprintf(msg, MSGLEN, "%s: cannot open data file with the MPI-IO driver", path);
        return MOED_ERR_DATA;
    }
    long nx = 0, ny = 0;
    int rc = open_checked(dh->file, path, "/x", dh->d, &dh->dx, &nx, msg);
    if (rc == MOED_OK) rc = open_checked(dh->file, path, "/y", dh->d, &dh->dy, &ny, msg);
    if (rc) return rc;
    if (nx != ny) {
        snprintf(msg, MSGLEN, "%s: dataset /x has %ld rows but /y has %ld", path, nx, ny);
        return MOED_ERR_DATA;
    }
    if (nx == 0) {
        snprintf(msg, MSGLEN, "%s: datasets /x and /y have no rows", path);
        return MOED_ERR_DATA;
    }
    dh->N = nx;
    return MOED_OK;
}

// ---------------------------------------------------------------------------------------------
// Open / close

int data_hdf5_open(data_hdf5_t* dh, const char* path, int d, long T, int rank, int nranks,
                   MPI_Comm comm, char* err, size_t errlen) {
    // Failures are reported as our one-line messages; HDF5's stack dumps would be noise.
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    memset(dh, 0, sizeof *dh);
    dh->file = dh->dx = dh->dy = dh->fspace = dh->mspace = dh->dxpl = H5I_INVALID_HID;
    dh->d = d, dh->T = T;
    dh->rank = rank, dh->comm = comm;
    snprintf(dh->path, sizeof dh->path, "%s", path ? path : "");

    char msg[MSGLEN] = "";
    int rc = MOED_OK;
    if (path == NULL || *path == '\0') {
        snprintf(msg, MSGLEN, "data.path is empty (data.source = hdf5 needs a file)");
        rc = MOED_ERR_CONFIG;
    } else if (nranks < 1 || T < nranks || T % nranks != 0 || d < 1) {
        snprintf(msg, MSGLEN, "%s: cannot split T = %ld rows of width %d over %d ranks", path, T, d,
                 nranks);
        rc = MOED_ERR_CONFIG;
    }
    if (rc == MOED_OK) rc = precheck(path, msg);
    rc = agree(rc, msg, rank, comm);
    if (rc == MOED_OK) rc = agree(open_and_validate(dh, path, comm, msg), msg, rank, comm);
    if (rc) {
        data_hdf5_close(dh);
        snprintf(err, errlen, "%s", msg);
        return rc;
    }

    dh->Tl = T / nranks;
    dh->t0 = (long)rank * dh->Tl;
    hsize_t mdims[2] = {(hsize_t)dh->Tl, (hsize_t)d};
    dh->fspace = H5Dget_space(dh->dx); // /x and /y have the same shape
    dh->mspace = H5Screate_simple(2, mdims, NULL);
    dh->dxpl = H5Pcreate(H5P_DATASET_XFER);
    if (dh->fspace < 0 || dh->mspace < 0 || dh->dxpl < 0 ||
        H5Pset_dxpl_mpio(dh->dxpl, H5FD_MPIO_COLLECTIVE) < 0) {
        snprintf(msg, MSGLEN, "%s: cannot set up HDF5 dataspaces for reading", path);
        rc = MOED_ERR_OTHER;
    }
    rc = agree(rc, msg, rank, comm);
    if (rc) {
        data_hdf5_close(dh);
        snprintf(err, errlen, "%s", msg);
    }
    return rc;
}

// HDF5 identifiers are positive, so both a zeroed handle and closed ones (-1) are skipped.
void data_hdf5_close(data_hdf5_t* dh) {
    if (dh->dxpl > 0) H5Pclose(dh->dxpl);
    if (dh->mspace > 0) H5Sclose(dh->mspace);
    if (dh->fspace > 0) H5Sclose(dh->fspace);
    if (dh->dy > 0) H5Dclose(dh->dy);
    if (dh->dx > 0) H5Dclose(dh->dx);
    if (dh->file > 0) H5Fclose(dh->file);
    dh->file = dh->dx = dh->dy = dh->fspace = dh->mspace = dh->dxpl = H5I_INVALID_HID;
}

// ---------------------------------------------------------------------------------------------
// Reading a batch

// Selects memory rows [m0, m0 + n) and file rows [f0, f0 + n), or nothing on both when n = 0
// (a rank with nothing to read still takes part in the collective read).
static int select_rows(data_hdf5_t* dh, long m0, long f0, long n) {
    if (n == 0) return H5Sselect_none(dh->mspace) < 0 || H5Sselect_none(dh->fspace) < 0;
    hsize_t count[2] = {(hsize_t)n, (hsize_t)dh->d};
    hsize_t mstart[2] = {(hsize_t)m0, 0}, fstart[2] = {(hsize_t)f0, 0};
    return H5Sselect_hyperslab(dh->mspace, H5S_SELECT_SET, mstart, NULL, count, NULL) < 0 ||
           H5Sselect_hyperslab(dh->fspace, H5S_SELECT_SET, fstart, NULL, count, NULL) < 0;
}

// Memory row i holds file row (o + i) mod N. The first min(Tl, N) rows are at most two
// contiguous runs of the file: [o, N) and then [0, ...) after the wrap. Each is its own
// collective read, because HDF5 pairs file and memory elements in ascending order of each
// selection and a two-block file selection would come back rotated. Every rank issues the
// same two reads (empty where it has no second run), as collective I/O requires.
static int read_rows(data_hdf5_t* dh, hid_t ds, long o, float* buf) {
    long n1 = dh->Tl < dh->N ? dh->Tl : dh->N; // rows that are distinct file rows
    long a = n1 < dh->N - o ? n1 : dh->N - o;  // first run: file rows [o, o + a)
    // Both reads happen even after a failure, so no other rank waits in a collective forever.
    int bad = select_rows(dh, 0, o, a);
    bad |= H5Dread(ds, H5T_NATIVE_FLOAT, dh->mspace, dh->fspace, dh->dxpl, buf) < 0;
    bad |= select_rows(dh, a, 0, n1 - a);
    bad |= H5Dread(ds, H5T_NATIVE_FLOAT, dh->mspace, dh->fspace, dh->dxpl, buf) < 0;
    if (bad) return MOED_ERR_DATA;
    // A file shorter than a rank's slice repeats with period N: row i equals row i − N.
    for (long i = dh->N; i < dh->Tl; i += dh->N) {
        long n = dh->Tl - i < dh->N ? dh->Tl - i : dh->N;
        memcpy(buf + i * dh->d, buf, sizeof(float) * (size_t)(n * dh->d));
    }
    return MOED_OK;
}

// The first non-finite value of the batch in row order (x's row before y's), as a message
// naming the dataset, its file row and column; MOED_OK if there is none. Memory row i is
// file row (o + i) mod N. Row order makes the lowest failing rank's message the batch's first
// bad row, so it is the same at every P.
static int check_finite(const data_hdf5_t* dh, long step, long o, const float* x, const float* y,
                        char* msg) {
    long n = dh->Tl * dh->d, ix = finite_scan(x, n), iy = finite_scan(y, n);
    if (ix == n && iy == n) return MOED_OK;
    int in_x = ix / dh->d <= iy / dh->d; // iy == n: row Tl, after every row of x
    long i = in_x ? ix : iy;
    float v = in_x ? x[i] : y[i];
    long row = (long)(((unsigned long)o + (unsigned long)(i / dh->d)) % (unsigned long)dh->N);
    snprintf(msg, MSGLEN,
             "%s: dataset %s row %ld column %ld is %s (batch of step %ld): the data must be finite",
             dh->path, in_x ? "/x" : "/y", row, i % dh->d, isnan(v) ? "NaN" : "Inf", step);
    return MOED_ERR_DATA;
}

int data_hdf5_batch(data_hdf5_t* dh, long step, float* x, float* y, char* err, size_t errlen) {
    // (step·T + t0) mod N without overflowing for long runs over big files.
    unsigned __int128 g = (unsigned __int128)(unsigned long)step * (unsigned long)dh->T;
    long o = (long)((g + (unsigned long)dh->t0) % (unsigned long)dh->N);
    char msg[MSGLEN] = "";
    int rc = MOED_OK;
    if (read_rows(dh, dh->dx, o, x) | read_rows(dh, dh->dy, o, y)) { // both: collective
        snprintf(msg, MSGLEN, "%s: reading the rows of step %ld from /x and /y failed", dh->path,
                 step);
        rc = MOED_ERR_DATA;
    }
    if (rc == MOED_OK) rc = check_finite(dh, step, o, x, y, msg);
    // One rank's bad row stops every rank, at the same step.
    rc = agree(rc, msg, dh->rank, dh->comm);
    if (rc) snprintf(err, errlen, "%s", msg);
    return rc;
}
