// The AVX2/FMA SwiGLU formula, 8 lanes at a time: shared by avx2_swiglu.c (the element-wise
// kernels) and avx2.c (the fused epilogue of gemm_swiglu), so both give the same bits.
// a = h0 * sigmoid(h0) * h1, with a vector exp (Cephes' expf: range reduction by ln 2,
// degree-5 polynomial, scaling by 2^n through the exponent bits; within 2 ulp of expf over the
// clamped range). Tails go through a zero-padded vector, so an element's result never depends
// on its position in the array (P ranks hold different row counts, DESIGN.md §3).
#ifndef MOED_KERNELS_AVX2_SWIGLU_H
#define MOED_KERNELS_AVX2_SWIGLU_H

#include <immintrin.h>

// exp(x) for x clamped to [-87.3, 88.3]: beyond that expf under- or overflows, and sigmoid
// is 0 or 1 to float precision anyway.
static inline __m256 avx2_exp256(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    // r = x - n ln2, with ln2 split in two so the product is exact
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

static inline __m256 avx2_sigmoid256(__m256 x) {
    __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(one,
                         _mm256_add_ps(one, avx2_exp256(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}

// a[0:8] = silu(h0[0:8]) * h1[0:8]
static inline void avx2_swiglu8(const float* h0, const float* h1, float* a) {
    __m256 x = _mm256_loadu_ps(h0);
    __m256 s = avx2_sigmoid256(x);
    _mm256_storeu_ps(a, _mm256_mul_ps(_mm256_mul_ps(x, s), _mm256_loadu_ps(h1)));
}

// The same for n < 8 elements, through a zero-padded vector.
static inline void avx2_swiglu_tail(int n, const float* h0, const float* h1, float* a) {
    float x[8] = {0}, y[8] = {0}, o[8];
    for (int i = 0; i < n; i++) x[i] = h0[i], y[i] = h1[i];
    avx2_swiglu8(x, y, o);
    for (int i = 0; i < n; i++) a[i] = o[i];
}

#endif
