// Shared helpers for the test suites: naive double-precision references and comparisons.
#ifndef MOED_TESTUTIL_H
#define MOED_TESTUTIL_H

#include <stdint.h>

// Fills x[n] with values from N(0, scale^2), reproducibly from `seed`.
void tu_fill_normal(float* x, long n, uint64_t seed, float scale);
// Naive double GEMM: C[m,n] = A·B with the same stride convention as kern_sgemm_fn.
void tu_dgemm(int m, int n, int k, const float* a, long rsa, long csa, const float* b, long rsb,
              long csb, double* c, long ldc);
// max_i |got_i - want_i| / max(max_i |want_i|, tiny): a relative error of the whole tensor.
double tu_rel_err_fd(const float* got, const double* want, long n);
double tu_rel_err_ff(const float* got, const float* want, long n);
double tu_rel_err_dd(const double* got, const double* want, long n);

#include "config/config.h"
#include "daemon/arena.h"
#include "daemon/train.h"

// A complete training state for tests: arena sized and reserved, comm set up on `comm`,
// kernels initialised for `c->compute.threads` threads with the ISA of c->compute.isa,
// weights initialised from the config's seed. Returns 0, or -1 (message on stderr).
int tu_train_new(train_t* tr, arena_t* a, const cfg_t* c, MPI_Comm comm);
void tu_train_free(train_t* tr, arena_t* a);

#endif
