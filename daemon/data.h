// Training data. `hdf5`: rows of /x and /y from data.path (daemon/data_hdf5.h). `synthetic`: x ~
// N(0, 1) from the counter-based RNG keyed by the global token index, y = teacher(x) where the
// teacher is a fixed random MoE layer with its own seed, expert count, top-k and hidden width), so
// the student has a function to learn and the loss can fall by orders of magnitude (DESIGN.md §2).
// With data.skew > 0 every input is shifted by skew·u (u fixed, unit variance per element):
// all tokens' router logits move the same way, the classic cause of expert load imbalance.
#ifndef MOED_DATA_H
#define MOED_DATA_H

#include <mpi.h>

#include "compute/router.h"
#include "config/config.h"
#include "daemon/arena.h"
#include "daemon/data_hdf5.h"

typedef struct {
    int source; // CFG_DATA_*
    data_hdf5_t h5;
    int d, f, Et, kt, Tl, residual;
    unsigned long seed;
    float skew;      // data.skew
    float* skew_dir; // [d] the fixed direction u of the input skew
    router_opts_t ropt;
    float* wr;                   // [d, Et]
    float *w0, *w1;              // [Et, d, f]
    float* wo;                   // [Et, f, d]
    float* xn;                   // [Tl, d]
    float* rinv;                 // [Tl]
    float* ones;                 // [d] unit RMSNorm scale
    float *logits, *probs, *lse; // [Tl, Et], [Tl, Et], [Tl]
    int* sel;                    // [Tl, kt]
    float* gates;                // [Tl, kt]
    int* slot_pos;               // [Tl, kt]
    int* counts;                 // [Et]
    int* offs;                   // [Et + 1]
    float* xe;                   // [Tl*kt, d]
    float *h0, *h1, *a;          // [Tl*kt, f]
    float* ye;                   // [Tl*kt, d]
} data_t;

void data_layout(data_t* D, const cfg_t* c, int Tl, arena_t* a);
// After the arena is reserved: the teacher's weights, or the HDF5 file opened and validated
// (collective; MOED_ERR_DATA with a message in err on every rank when it is unusable).
int data_open(data_t* D, const cfg_t* c, int rank, int nranks, MPI_Comm comm, char* err,
              size_t errlen);
// The batch of step `step` for global tokens [t0, t0 + Tl): x, y [Tl, d]. Collective for
// hdf5. Returns MOED_OK, or MOED_ERR_DATA (a failed read, or a NaN/Inf in the file's rows)
// with the same status and one-line message in err on every rank.
int data_batch(data_t* D, long step, long T, long t0, float* x, float* y, char* err, size_t errlen);
void data_close(data_t* D);

#endif
