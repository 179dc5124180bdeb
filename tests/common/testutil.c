#include "tests/common/testutil.h"

#include <math.h>
#include <stdio.h>

#include "compute/kernels/kernels.h"
#include "compute/rng.h"

void tu_fill_normal(float* x, long n, uint64_t seed, float scale) {
    for (long i = 0; i < n; i++) x[i] = scale * rng_normal(seed, 0x7e57, 0, (uint64_t)i);
}

void tu_dgemm(int m, int n, int k, const float* a, long rsa, long csa, const float* b, long rsb,
              long csb, double* c, long ldc) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int p = 0; p < k; p++) s += (double)a[i * rsa + p * csa] * b[p * rsb + j * csb];
            c[i * ldc + j] = s;
        }
}

static double rel_err(double maxdiff, double maxref) {
    return maxdiff / (maxref > 1e-30 ? maxref : 1e-30);
}

double tu_rel_err_fd(const float* got, const double* want, long n) {
    double md = 0, mr = 0;
    for (long i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (!(d <= md)) md = d; // NaN propagates as a failure
        if (fabs(want[i]) > mr) mr = fabs(want[i]);
    }
    return rel_err(md, mr);
}

double tu_rel_err_ff(const float* got, const float* want, long n) {
    double md = 0, mr = 0;
    for (long i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (!(d <= md)) md = d;
        if (fabs(want[i]) > mr) mr = fabs(want[i]);
    }
    return rel_err(md, mr);
}

double tu_rel_err_dd(const double* got, const double* want, long n) {
    double md = 0, mr = 0;
    for (long i = 0; i < n; i++) {
        double d = fabs(got[i] - want[i]);
        if (!(d <= md)) md = d;
        if (fabs(want[i]) > mr) mr = fabs(want[i]);
    }
    return rel_err(md, mr);
}

int tu_train_new(train_t* tr, arena_t* a, const cfg_t* c, MPI_Comm comm) {
    int rank, nranks;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &nranks);
    static const int isa_map[] = {[CFG_ISA_AUTO] = -1,
                                  [CFG_ISA_REF] = KERN_REF,
                                  [CFG_ISA_AVX2] = KERN_AVX2,
                                  [CFG_ISA_AVX512] = KERN_AVX512};
    if (kern_select(isa_map[c->compute.isa]) != 0 || kern_init(c->compute.threads) != 0) {
        fprintf(stderr, "tu_train_new: ISA or kernel set-up failed\n");
        return -1;
    }
    arena_begin_count(a);
    train_layout(tr, c, rank, nranks, a);
    if (arena_reserve(a) != 0) return -1;
    train_layout(tr, c, rank, nranks, a);
    if (train_setup(tr, comm) != 0) {
        fprintf(stderr, "tu_train_new: train_setup failed\n");
        return -1;
    }
    return 0;
}

void tu_train_free(train_t* tr, arena_t* a) {
    train_free(tr);
    arena_free(a);
}
