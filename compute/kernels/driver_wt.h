// The weight-rows path of the shared driver (driver.h, which includes this file): the `nt`
// products of the backward pass, dA = dY·Woᵀ and dX = dH·Wᵀ, where B is a weight stored
// row-major [n][k] and read transposed (B(p, j) = W[j, p]), for a small number of rows m (the
// tokens of one expert), more than the transposing path takes (driver_tp.h: at most TP_MAX_M,
// where most of this path's lanes would compute nothing).
//
// The blocked loops pack such a B panel by panel: NR weight rows at a time, a run of KC
// floats (12 lines on avx512) from each, rows 2-11 KiB apart. Runs that short stream from
// memory at about half the rate of whole rows (docs/performance.md), and with m = 32 each
// weight element feeds only 32 FMAs, so the product waits on that stream: 38-50% of the
// avx512 peak, where the row-major (`nn`) products of the same shapes reach 55-60%.
//
// Here the roles of the operands swap, as in computing Cᵀ = W·Aᵀ: the micro-tile's MR
// broadcast rows are MR weight rows, read in place, and its NR vector lanes are rows of A,
// packed once per call as transposed panels (pack_b_panel's [kc][NR] layout). A tile of MR
// weight rows runs every KC block of the depth in turn, so each weight row is read from start
// to end, MR rows side by side: long sequential streams the hardware prefetcher follows. The
// sum of each KC block is folded into a small transposed tile ct [MR][NR] (in L1), which is
// written to C's MR columns once, at the end.
//
// Bits: each element of C is still one FMA chain over p inside each KC block (kc_block(k)),
// starting from zero, and the blocks are added in increasing order, first onto C's value when
// accumulating; fma(w, a, s) and fma(a, w, s) are the same operation. So an element has the
// same bits whichever path computes it, and choosing the path by m and k (below) keeps the
// results a function of the inputs alone (position, row split, thread count).
#ifndef MOED_KERNELS_DRIVER_WT_H
#define MOED_KERNELS_DRIVER_WT_H

#include <string.h>

// Which products take the path (the ISA files may set their own; paired in-process against the
// blocked loops, 64 groups with their weights in memory, docs/performance.md):
// - at most WT_MAX_PANELS panels of A's rows (NR each): the weight tile is read once per
//   panel, from L1 after the first, and past 4 panels the blocked loops are as fast (avx512:
//   m = 128 at 1.05-1.13x, 512 at 0.95x);
// - more than one panel only at a depth of at least WT_MIN_K: each panel of each tile then
//   folds and stores its C tile, and with short rows the streams restart every few hundred
//   cycles (avx512, k = 256: 64-128 rows at 0.87-0.97x the blocked loops, 1.08-1.14x at
//   k = 512; avx2, 32-64 rows: 0.82-0.87x at k = 256, 0.99-1.01x at 512, 1.04-1.15x at 1024);
// - or, from a depth of WT_FULL_MIN_K (an ISA file's choice; default WT_MIN_K), more than one
//   panel when every panel is full (m a multiple of NR: the groups of a capacity-padded
//   layer), with the next tile's weight rows prefetched (WT_PREFETCH_NEXT, below), so that the
//   short rows' streams do not restart cold (avx2, k = 512: 32 rows 1.15-1.18x, 48 and 64
//   1.04-1.07x; with a partial last panel, 17-62 rows, 0.81-1.07x, so not those);
// - and more than WT_PARTIAL_MAX_PANELS panels only when every panel is full. A panel's lanes
//   are computed whether A has rows for them or not, so a partly empty last panel wastes FMAs
//   (m = 68 on avx512: 80 lanes computed for 68 rows), where the blocked loops' row tiles
//   waste none and, past two panels, share each transposed B panel among enough tiles to
//   repay packing it. Paired, 64 groups from memory, the blocked loops against the path with
//   a partial last panel: avx512 (3-4 panels, 65-113 rows, k = 512-2816) 1.02-1.20x, 2 panels
//   0.88-1.09x (36 and 52 rows gain, 40, 44 and 60 lose); avx2 (3-4 panels, 36-60 rows, k =
//   1024-2816) 0.98-1.15x, 2 panels (20-28 rows) 0.88-1.08x. Full panels stay (avx512, 128
//   rows: the path 1.07-1.14x at k = 512-1024, 0.98x at 2816).
// With WT_PREFETCH_NEXT (an ISA file's choice) the tiles of a product of several full panels
// prefetch the next tile's weight rows, a KC block at a time, during their first panel: each
// weight row is a 4 KiB page or less at these shapes, and the hardware's stream prefetcher
// starts cold on every page (avx2 at k >= 1024: 1.03-1.06x at 32 rows, 1.01-1.02x at 64; with
// a partial last panel 0.87-1.0x, and with one panel 0.85-0.88x, so neither; avx512 lost with
// it, 0.91-0.95x at 64-128 rows).
#ifndef WT_MAX_PANELS
#define WT_MAX_PANELS 4
#endif
#ifndef WT_MIN_K
#define WT_MIN_K 512
#endif
#ifndef WT_FULL_MIN_K
#define WT_FULL_MIN_K WT_MIN_K
#endif
#ifndef WT_PARTIAL_MAX_PANELS
#define WT_PARTIAL_MAX_PANELS 2
#endif
#define WT_MAX_M (WT_MAX_PANELS * NR)

// Whether the product takes this path: B column-major (a transposed weight), not fused, not
// pre-packed, m within WT_MAX_M (within NR below a depth of WT_MIN_K, or of WT_FULL_MIN_K
// when m is a multiple of NR; within WT_PARTIAL_MAX_PANELS * NR unless it is a multiple of
// NR), and A's transposed panels (k x NR floats each) fit in the thread's B pack buffer,
// which this path does not otherwise use.
static int wt_applies(const gemm_args_t* g, size_t b_floats) {
    long panels = (g->m + NR - 1) / NR;
    int full = g->m % NR == 0;
    int deep = g->k >= WT_MIN_K || (g->k >= WT_FULL_MIN_K && full);
    return g->halves == 1 && !g->bpre && g->rsb == 1 && g->csb != 1 && g->m <= WT_MAX_M &&
           (panels == 1 || deep) && (full || panels <= WT_PARTIAL_MAX_PANELS) &&
           (size_t)g->k * panels * NR <= b_floats;
}

// C's tile to and from ct, element by element: the ISA files' ct_load and ct_store for tiles
// of fewer than MR columns (at C's right edge).
static void ct_load_any(int ms, int mr, float* ct, const float* c, long ldc) {
    for (int r = 0; r < mr; r++)
        for (int i = 0; i < ms; i++) ct[r * NR + i] = c[i * ldc + r];
}

static void ct_store_any(int ms, int mr, const float* ct, float* c, long ldc) {
    for (int i = 0; i < ms; i++)
        for (int r = 0; r < mr; r++) c[i * ldc + r] = ct[r * NR + i];
}

// A's rows as transposed panels: panel s (rows [s*NR, s*NR + NR)) at at + s*k*NR, [k][NR],
// rows past m zero. Each KC block is packed by pack_b_panel as a [kc][NR] panel at its depth.
static void wt_pack_a(const gemm_args_t* g, float* at) {
    int kb = kc_block(g->k), np = (g->m + NR - 1) / NR;
    for (int s = 0; s < np; s++)
        for (int pc = 0; pc < g->k; pc += kb)
            pack_b_panel(MIN(kb, g->k - pc), MIN(NR, g->m - s * NR),
                         g->a + (long)s * NR * g->rsa + (long)pc * g->csa, g->csa, g->rsa,
                         at + ((long)s * g->k + pc) * NR);
}

// Tiles [t0, t1) of MR weight rows (columns [t0*MR, t1*MR) of C), with A packed in `at`.
static void wt_tiles(const gemm_args_t* g, int t0, int t1, const float* at) {
    int kb = kc_block(g->k), np = (g->m + NR - 1) / NR;
    const float* w = g->b[0]; // W[j][p] at w[j*csb + p]
    long ldw = g->csb, ldc = g->ldc;
    float ct[MR * NR] __attribute__((aligned(64))); // [MR][NR]: C's tile, transposed
    memset(ct, 0, sizeof ct); // lanes past m are computed but never stored: keep them finite
    for (int t = t0; t < t1; t++) {
        int j0 = t * MR, mr = MIN(MR, g->n - j0);
        for (int s = 0; s < np; s++) {
            int ms = MIN(NR, g->m - s * NR);
            float* c = g->c[0] + (long)s * NR * ldc + j0;
            if (g->accumulate) ct_load(ms, mr, ct, c, ldc);
            for (int pc = 0; pc < g->k; pc += kb) {
                int kc = MIN(kb, g->k - pc);
                pf_stream_t next = pf_none; // the next tile's rows of this block (see above)
#ifdef WT_PREFETCH_NEXT
                if (np > 1 && g->m % NR == 0 && s == 0 && t + 1 < t1)
                    next = pf_matrix(w + (long)(j0 + MR) * ldw + pc, MIN(MR, g->n - j0 - MR), kc,
                                     ldw, 1);
#endif
                ukr_pf_t pf = {{&next, NULL}, {(int)next.left, 0}};
                ukr_wt(mr, ms, kc, w + (long)j0 * ldw + pc, ldw, at + ((long)s * g->k + pc) * NR,
                       ct, pc == 0 && !g->accumulate, &pf);
            }
            ct_store(ms, mr, ct, c, ldc);
        }
    }
}

// Columns [j0, j1) of C (j0 a multiple of MR), on the thread's pack buffer.
static void wt_run(const gemm_args_t* g, int j0, int j1, const kern_pack_t* pk) {
    if (j0 >= j1) return;
    wt_pack_a(g, pk->b);
    wt_tiles(g, j0 / MR, (j1 + MR - 1) / MR, pk->b);
}

#endif
