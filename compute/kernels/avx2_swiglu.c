// SwiGLU on AVX2/FMA: a = h0 * sigmoid(h0) * h1 and its backward, 8 lanes at a time with
// avx2_swiglu.h's formula. Element-wise, so threads split the elements without changing any
// result; the last n % 8 go through a zero-padded vector, so every element gets the same
// formula wherever it sits (the fused epilogue of gemm_swiglu relies on it too).
#include "compute/kernels/avx2_swiglu.h"

#include "compute/kernels/kernels.h"

void avx2_swiglu_fwd(long n, const float* h0, const float* h1, float* a) {
    long nv = n / 8 * 8;
#pragma omp parallel for schedule(static) if (nv >= 1 << 16)
    for (long i = 0; i < nv; i += 8) avx2_swiglu8(h0 + i, h1 + i, a + i);
    if (nv < n) avx2_swiglu_tail((int)(n - nv), h0 + nv, h1 + nv, a + nv);
}

// 8 elements of the backward pass.
static inline void bwd8(const float* h0, const float* h1, const float* da, float* dh0, float* dh1) {
    __m256 one = _mm256_set1_ps(1.0f);
    __m256 x = _mm256_loadu_ps(h0), g = _mm256_loadu_ps(da);
    __m256 s = avx2_sigmoid256(x);
    // d silu/dx = s * (1 + x * (1 - s))
    __m256 dsilu = _mm256_mul_ps(s, _mm256_add_ps(one, _mm256_mul_ps(x, _mm256_sub_ps(one, s))));
    _mm256_storeu_ps(dh0, _mm256_mul_ps(_mm256_mul_ps(g, _mm256_loadu_ps(h1)), dsilu));
    _mm256_storeu_ps(dh1, _mm256_mul_ps(g, _mm256_mul_ps(x, s)));
}

void avx2_swiglu_bwd(long n, const float* h0, const float* h1, const float* da, float* dh0,
                     float* dh1) {
    long nv = n / 8 * 8;
#pragma omp parallel for schedule(static) if (nv >= 1 << 16)
    for (long i = 0; i < nv; i += 8) bwd8(h0 + i, h1 + i, da + i, dh0 + i, dh1 + i);
    if (nv < n) { // the tail, zero-padded
        float x[8] = {0}, y[8] = {0}, g[8] = {0}, o0[8], o1[8];
        for (long i = nv; i < n; i++) x[i - nv] = h0[i], y[i - nv] = h1[i], g[i - nv] = da[i];
        bwd8(x, y, g, o0, o1);
        for (long i = nv; i < n; i++) dh0[i] = o0[i - nv], dh1[i] = o1[i - nv];
    }
}
