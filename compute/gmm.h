// Grouped GEMMs of the expert FFNs: group e is rows [off[e], off[e+1]) of the expert-side
// buffers and uses expert e's weights. Every product goes through kern->sgemm, so the ISA
// is the one chosen at start-up and results never depend on the thread count.
#ifndef MOED_GMM_H
#define MOED_GMM_H

typedef struct {
    int n_groups;    // local experts
    const int* offs; // [n_groups + 1] row offsets
    int d, f;
} gmm_shape_t;

// h0 = x·W0_e, h1 = x·W1_e, a = silu(h0) * h1, through kern->gemm_swiglu: one pass over x,
// SwiGLU fused into the epilogue (bit-identical to two sgemm calls and swiglu_fwd).
void gmm_up_forward(const gmm_shape_t* s,
                    const float* x,  // [N, d]
                    const float* w0, // [G, d, f]
                    const float* w1, // [G, d, f]
                    float* h0,       // [N, f]
                    float* h1,       // [N, f]
                    float* a);       // [N, f]
// y = a·Wo_e.
void gmm_down_forward(const gmm_shape_t* s, const float* a, // [N, f]
                      const float* wo,                      // [G, f, d]
                      float* y);                            // [N, d]
// da = dy·Wo_eᵀ, dwo_e = aᵀ·dy (overwritten; a group with no rows gets zeros).
void gmm_down_backward(const gmm_shape_t* s, const float* a, const float* wo,
                       const float* dy, // [N, d]
                       float* da,       // [N, f]
                       float* dwo);     // [G, f, d]
// From da: dh0, dh1 (through SwiGLU), then dx = dh0·W0ᵀ + dh1·W1ᵀ, dw0 = xᵀ·dh0,
// dw1 = xᵀ·dh1. dh0 and dh1 are work buffers [N, f].
void gmm_up_backward(const gmm_shape_t* s, const float* x, const float* w0, const float* w1,
                     const float* h0, const float* h1, const float* da, float* dh0, float* dh1,
                     float* dx,   // [N, d]
                     float* dw0,  // [G, d, f]
                     float* dw1); // [G, d, f]

// Floating-point operations of one forward (mult-add = 2) over N rows.
double gmm_forward_flops(long N, int d, int f);

#endif
