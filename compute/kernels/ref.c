// Reference kernels: plain C, no blocking, no threads. The yardstick the fast ISA files are
// tested against, and the fallback on CPUs without AVX2. Each C element is one float
// accumulator summed over p = 0, 1, ..., k-1 in that order (no FMA contraction: the build
// passes -ffp-contract=off), so the result depends only on the inputs.
#include "compute/kernels/kernels.h"
#include "compute/swiglu.h"

static void ref_sgemm(int m, int n, int k, const float* a, long rsa, long csa, const float* b,
                      long rsb, long csb, float* c, long ldc, int accumulate) {
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < n; j++) {
            float acc = 0.0f;
            for (int p = 0; p < k; p++) acc += a[i * rsa + p * csa] * b[p * rsb + j * csb];
            float* cij = &c[i * ldc + j];
            *cij = accumulate ? *cij + acc : acc;
        }
    }
}

const kern_table_t kern_ref_table = {
    .name = "ref",
    .isa = KERN_REF,
    .mr = 1, // no register blocking
    .nr = 1,
    .mc = 0, // no cache blocking: needs no pack buffers
    .kc = 0,
    .nc = 0,
    .sgemm = ref_sgemm,
    .swiglu_fwd = swiglu_forward,
    .swiglu_bwd = swiglu_backward,
};
