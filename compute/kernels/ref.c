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

// Pre-packed B for ref: each column contiguous (panels of one column, no KC blocking); the
// pair B0, B1 interleaved column by column. Element (p, q) at dst[q*k + p].
static size_t ref_packed_floats(int k, int n, int halves) {
    return (size_t)(k > 0 ? k : 0) * (n > 0 ? n : 0) * halves;
}

static void ref_pack_b_part(int k, int n, const float* b0, const float* b1, long rsb, long csb,
                            float* dst, int p0, int p1, int j0, int j1) {
    int halves = b1 ? 2 : 1;
    p0 = p0 < 0 ? 0 : p0, p1 = p1 < k ? p1 : k, j1 = j1 < n ? j1 : n;
    for (int j = j0; j < j1; j++)
        for (int h = 0; h < halves; h++) {
            const float* b = h ? b1 : b0;
            float* col = dst + ((long)j * halves + h) * k;
            for (int p = p0; p < p1; p++) col[p] = b[p * rsb + j * csb];
        }
}

static void ref_pack_b(int k, int n, const float* b0, const float* b1, long rsb, long csb,
                       float* dst) {
    ref_pack_b_part(k, n, b0, b1, rsb, csb, dst, 0, k, 0, n);
}

static void ref_sgemm_packed(int m, int n, int k, const float* a, long rsa, long csa,
                             const float* bp, float* c, long ldc, int accumulate) {
    ref_sgemm(m, n, k, a, rsa, csa, bp, 1, k, c, ldc, accumulate);
}

// Row by row: h0 and h1 through ref_sgemm's chains, then swiglu_forward on the row.
static void ref_gemm_swiglu(int m, int n, int k, const float* a, long rsa, long csa,
                            const float* b0, const float* b1, long rsb, long csb, const float* bp,
                            float* h0, float* h1, float* out, long ldc) {
    for (int i = 0; i < m; i++) {
        const float* ai = a + i * rsa;
        float *h0i = h0 + i * ldc, *h1i = h1 + i * ldc;
        if (bp) { // pre-packed: column j of B0 at bp[2jk], of B1 at bp[(2j+1)k]
            ref_sgemm(1, n, k, ai, rsa, csa, bp, 1, 2L * k, h0i, ldc, 0);
            ref_sgemm(1, n, k, ai, rsa, csa, bp + k, 1, 2L * k, h1i, ldc, 0);
        } else {
            ref_sgemm(1, n, k, ai, rsa, csa, b0, rsb, csb, h0i, ldc, 0);
            ref_sgemm(1, n, k, ai, rsa, csa, b1, rsb, csb, h1i, ldc, 0);
        }
        swiglu_forward(n, h0i, h1i, out + i * ldc);
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
    .sgemm_packed = ref_sgemm_packed,
    .gemm_swiglu = ref_gemm_swiglu,
    .packed_floats = ref_packed_floats,
    .pack_b = ref_pack_b,
    .pack_b_part = ref_pack_b_part,
    .swiglu_fwd = swiglu_forward,
    .swiglu_bwd = swiglu_backward,
};
