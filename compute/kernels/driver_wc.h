// The weight-columns path of the shared driver (driver.h, which includes this file): the `nn`
// products whose B is a weight stored row-major [k][n] (B(p, j) = W[p][j]), plain (the
// forward's down projection) or fused (the up projection [H0 | H1] = A·[W0 | W1] and its
// SwiGLU), for groups of about one lane panel of rows (the tokens of a small expert group).
//
// The blocked loops run m = 32 on avx512 as row tiles of 12, 12 and 8 rows per B panel: each
// panel of a weight that streams from memory is packed (a load and a store per element), then
// read three times. Here the roles of the operands swap, as in driver_wt.h (Cᵀ = Wᵀ·Aᵀ): the
// micro-tile's MR broadcasts are MR consecutive columns of the weight, W[p][j0 .. j0 + MR),
// read in place row after row (ldw apart), and its NR vector lanes are A's rows, packed
// transposed once per call (wt_pack_a). At m = NR every lane is a row, each weight element is
// read once, from memory straight into a broadcast, and A's panel (kc x NR: 24 KiB on avx512)
// stays in L1 across all the tiles.
//
// Tiles are taken WC_GROUP at a time (consecutive columns), each KC block over all of them
// before the next block: a block's rows are then read in runs of WC_GROUP * MR floats (768 B
// on avx512) by consecutive tile calls, each line while it is still in cache. The group's
// transposed C tiles ct [WC_GROUP][halves][MR][NR] live in the thread's A pack buffer, which
// this path does not otherwise use, and reach C (through the ISA's ct_store) when the group
// is done. Fused, each tile runs on W0 and then on W1, and the group's columns of
// out = silu(H0) * H1 are formed from the H0 and H1 tiles just stored, still in L1.
//
// Bits: each element of C is still one FMA chain over p inside each KC block (kc_block(k)),
// starting from zero, the blocks added in increasing order (first onto C's value when
// accumulating), and fma(w, a, s) is fma(a, w, s); the fused epilogue is swiglu_tile, the same
// per-element formula. So an element has the same bits whichever path computes it, and
// choosing the path by m (below) keeps the results a function of the inputs alone.
#ifndef MOED_KERNELS_DRIVER_WC_H
#define MOED_KERNELS_DRIVER_WC_H

#include <string.h>

#include "compute/kernels/driver_wt.h" // wt_pack_a, ct_load_any and ct_store_any

// Which products take the path: m in [WC_MIN_M, WC_MAX_M], within one lane panel, set by the
// ISA file (default: never). Paired in-process against the blocked loops (avx512, 64 groups
// with their weights in memory, docs/performance.md): 26-32 rows gain (1.03-1.28x); 24 and
// fewer lose (0.89-1.00x: the blocked loops' two row tiles are full, the path's lanes are
// not), and so do 33-64 rows (a second, partly empty lane panel). avx2's tile has 6 columns
// (24 B of a row per tile) and lost at every m.
#ifndef WC_MIN_M
#define WC_MIN_M 0
#endif
#ifndef WC_MAX_M
#define WC_MAX_M 0
#endif
#ifndef WC_GROUP
#define WC_GROUP 16
#endif
// Whether this CPU takes the path at all (the ISA file's choice; a run-time test: the bits are
// the same either way).
#ifndef WC_CPU_OK
#define WC_CPU_OK() 1
#endif

_Static_assert(WC_MAX_M <= NR, "the weight-columns path holds A's rows in one lane panel");
_Static_assert((long)WC_GROUP * 2 * MR * NR <= (long)(MC + MR) * KC,
               "a group's C tiles fit the A pack buffer");

// Whether the product takes this path: B row-major (a weight, or the fused pair), not
// pre-packed, m within [WC_MIN_M, WC_MAX_M], A's transposed panel (k x NR floats) fits in the
// thread's B pack buffer, and the CPU is one the path suits (WC_CPU_OK).
static int wc_applies(const gemm_args_t* g, size_t b_floats) {
    return WC_MAX_M > 0 && !g->bpre && g->csb == 1 && g->m >= WC_MIN_M && g->m <= WC_MAX_M &&
           (size_t)g->k * NR <= b_floats && WC_CPU_OK();
}

// Columns of tile t (MR, or fewer at C's right edge), and where its half h waits in ct.
static inline int wc_cols(const gemm_args_t* g, int t) { return MIN(MR, g->n - t * MR); }
static inline float* wc_ct(const gemm_args_t* g, float* ct, int slot, int h) {
    return ct + ((long)slot * g->halves + h) * MR * NR;
}

// Tiles [t0, t1) of MR columns (columns [t0*MR, t1*MR) of C, of H0 and H1 when fused), with A
// packed in `at` and the group's C tiles in `ct`.
static void wc_tiles(const gemm_args_t* g, int t0, int t1, const float* at, float* ct) {
    int kb = kc_block(g->k), ms = g->m, H = g->halves;
    long ldw = g->rsb, ldc = g->ldc;
    if (g->accumulate) // lanes past m are computed but never stored: keep them finite
        memset(ct, 0, (size_t)WC_GROUP * H * MR * NR * sizeof(float));
    for (int tg = t0; tg < t1; tg += WC_GROUP) {
        int te = MIN(t1, tg + WC_GROUP);
        if (g->accumulate) // never fused
            for (int t = tg; t < te; t++)
                ct_load(ms, wc_cols(g, t), wc_ct(g, ct, t - tg, 0), g->c[0] + t * MR, ldc);
        for (int pc = 0; pc < g->k; pc += kb)
            for (int t = tg; t < te; t++)
                for (int h = 0; h < H; h++)
                    ukr_wc(wc_cols(g, t), ms, MIN(kb, g->k - pc), g->b[h] + (long)pc * ldw + t * MR,
                           ldw, at + (long)pc * NR, wc_ct(g, ct, t - tg, h),
                           pc == 0 && !g->accumulate);
        for (int t = tg; t < te; t++)
            for (int h = 0; h < H; h++)
                ct_store(ms, wc_cols(g, t), wc_ct(g, ct, t - tg, h), g->c[h] + t * MR, ldc);
        if (H == 2) {
            long j0 = (long)tg * MR;
            swiglu_tile(ms, MIN(g->n, te * MR) - (int)j0, g->c[0] + j0, g->c[1] + j0, g->out + j0,
                        ldc);
        }
    }
}

// Columns [j0, j1) of C (j0 a multiple of MR), on the thread's pack buffers.
static void wc_run(const gemm_args_t* g, int j0, int j1, const kern_pack_t* pk) {
    if (j0 >= j1) return;
    wt_pack_a(g, pk->b);
    wc_tiles(g, j0 / MR, (j1 + MR - 1) / MR, pk->b, pk->a);
}

#endif
