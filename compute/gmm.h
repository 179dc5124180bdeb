// Grouped GEMMs of the expert FFNs: group e is rows [off[e], off[e+1]) of the expert-side
// buffers and uses expert e's weights. Every product goes through kern->sgemm, so the ISA
// is the one chosen at start-up and results never depend on the thread count.
#ifndef MOED_GMM_H
#define MOED_GMM_H

#include <stddef.h>

#include "compute/optim.h"

// Expert weights pre-packed in the layout the micro-kernel reads (kern->pack_b), one copy per
// product that reads them, so that no product of the step packs a weight: packed in full when
// the weights are set (gmm_pack: initialisation, checkpoint load) and refreshed by the
// optimizer in the pass that updates them (gmm_adamw_pack). The layouts belong to the kernel
// table chosen at start-up (kern); bind after kern_select. A product whose copy is NULL packs
// its weights on the fly; the bits are the same either way (the kernel contract).
typedef struct {
    int G, d, f;
    long up_n, down_n, da_n, dx_n; // floats per expert of each copy
    float* up;   // [G, up_n]   W0|W1, B of x·[W0|W1] (k = d, n = f, the fused pair)
    float* down; // [G, down_n] Wo, B of a·Wo (k = f, n = d)
    float* da;   // [G, da_n]   Woᵀ, B of dy·Woᵀ (k = d, n = f); NULL: forward copies only
    float* dx0;  // [G, dx_n]   W0ᵀ, B of dh0·W0ᵀ (k = f, n = d); NULL with da
    float* dx1;  // [G, dx_n]   W1ᵀ
} gmm_packed_t;

// Floats gmm_packed_bind carves from `mem` for G experts (backward = 0: forward copies).
size_t gmm_packed_floats(int G, int d, int f, int backward);
// Points pk's copies into mem (64-byte aligned, gmm_packed_floats long; NULL gives NULL copies).
void gmm_packed_bind(gmm_packed_t* pk, int G, int d, int f, int backward, float* mem);
// Every copy from the weights w0, w1 [G, d, f] and wo [G, f, d].
void gmm_pack(const gmm_packed_t* pk, const float* w0, const float* w1, const float* wo);
// The optimizer's pass over the expert matrices, fused with the repack: for each block of a few
// rows, g *= clip, then AdamW (as adamw_update, element for element), then the block's elements
// into every copy while they are in cache. w, g, m, v: the model's flat buffers; o0, o1, oo:
// the offsets of W0, W1, Wo in them. Threads split the blocks; bits do not depend on them.
void gmm_adamw_pack(const gmm_packed_t* pk, const adamw_opts_t* o, long t, int decay, float clip,
                    float* w, float* g, float* m, float* v, long o0, long o1, long oo);

typedef struct {
    int n_groups;    // local experts
    const int* offs; // [n_groups + 1] row offsets
    int d, f;
    const gmm_packed_t* packed; // the groups' weights pre-packed, or NULL: packed on the fly
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
