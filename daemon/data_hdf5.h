// Training data from an HDF5 file (data.source = hdf5, DESIGN.md §4): datasets /x and /y,
// float32 [N, d]. Step s uses global rows s·T … s·T+T−1 modulo N, and rank r reads only
// its own T/P of them, rows (s·T + r·T/P + i) mod N for i in [0, T/P), with collective
// MPI-IO reads. The file stays open for the whole run.
#ifndef MOED_DATA_HDF5_H
#define MOED_DATA_HDF5_H

#include <hdf5.h>
#include <mpi.h>
#include <stddef.h>

typedef struct {
    hid_t file;     // opened with the MPI-IO driver on the communicator given to open
    hid_t dx, dy;   // datasets /x and /y
    hid_t fspace;   // [N, d] file dataspace, reselected for every read
    hid_t mspace;   // [Tl, d] memory dataspace (one rank's batch), reselected for every read
    hid_t dxpl;     // transfer property list: collective
    long N;         // rows in the file
    long T;         // global batch tokens
    long Tl;        // rows per rank (T / P)
    long t0;        // this rank's first token within a batch (rank · Tl)
    int d;          // row width
    int rank;       // in comm
    MPI_Comm comm;  // the communicator of open and of every batch
    char path[512]; // for messages (cfg_t's data.path has the same bound)
} data_hdf5_t;

// Opens and validates `path` collectively over `comm` (every rank calls it). T is the global
// batch (train.global_batch_tokens) and must be divisible by nranks. Validation comes before
// anything else: a file that is not HDF5, a missing /x or /y, a dataset that is not 2-D, not
// float32, or not d wide, x and y with different row counts, or no rows at all give
// MOED_ERR_DATA and a one-line message in err naming the file and the dataset. Status and
// message are the same on every rank. HDF5's own error-stack printing is turned off.
int data_hdf5_open(data_hdf5_t* dh, const char* path, int d, long T, int rank, int nranks,
                   MPI_Comm comm, char* err, size_t errlen);

// This rank's rows of step `step`: x, y [Tl, d]. Collective (every rank calls it with the
// same step). Allocates nothing. Returns MOED_OK, or MOED_ERR_DATA when a read failed or a
// value of x or y is NaN or Inf, with a one-line message in err naming the file, the dataset,
// and for a non-finite value its row and column (one MPI_Allreduce of an int per call). Status and
// message are the same on every rank (the lowest failing rank's), so callers can stop together and
// report from rank 0.
int data_hdf5_batch(data_hdf5_t* dh, long step, float* x, float* y, char* err, size_t errlen);

// Collective. Safe on a zeroed or already closed handle.
void data_hdf5_close(data_hdf5_t* dh);

#endif
