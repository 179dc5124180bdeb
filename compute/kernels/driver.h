// The BLIS-style blocked driver shared by the ISA files (Van Zee & van de Geijn, "BLIS: A
// Framework for Rapidly Instantiating BLAS Functionality", TOMS 2015): loops, packing
// schedule, prefetch streams, thread partition, pre-packed B and the fused SwiGLU epilogue.
// Included once by each ISA file (avx2.c, avx512.c) after it defines
//   MR, NR, MC, KC, NC   micro-tile and cache blocks
//   ROW_GROUP            B panels packed per group when B is row-major (see group_end)
//   KERN_NAME            the table's name, for errors
// and before it defines the functions declared below (its packers, micro-kernel and SwiGLU
// tile), which the loops here call. Everything is static: each ISA file gets its own copy,
// compiled with its instruction set. This file holds the blocked loops and the packing
// schedule; driver_prefetch.h the prefetch streams the micro-kernels issue, driver_tp.h the
// transposing path of the transposed-weight products of the fewest rows, driver_wt.h the
// weight-rows path of those of a few more, driver_wc.h the
// weight-columns path of the row-major ones, driver_rs.h the row-streaming path of the
// row-major ones of very few rows, driver_run.h the thread
// partition and the table's entry points (all included from here).
//
//   for jc in [0, n) step NC            B block  KC x NC  packed per thread, lives in L3
//     for pc in [0, k) step KC          the k loop: sequential, never split between threads
//       for ic in [0, m) step MC        A block  MC x KC  packed, lives in L2
//         for jr in [0, nc) step NR     B micro-panel KC x NR  lives in L1
//           for ir in [0, mc) step MR   A micro-panel MR x KC  streams from L2
//             micro-kernel: C[MR, NR] (+)= A-panel * B-panel
//
// Columns are handled in B micro-panels ("panels", NR columns each). A plain GEMM has
// ceil(n / NR) of them in order. The fused up-projection [H0 | H1] = A·[B0 | B1] has twice as
// many, in runs of R (fused_run: a multiple of ROW_GROUP): B0's panels s..s+R-1, then B1's
// same panels, and so on, so that each H1 tile is computed after the H0 tiles of the same
// columns, and its epilogue (at the last KC block) forms out = silu(H0) * H1 from the H1 tile
// just stored (L1) and the H0 tile stored one run earlier (an H0 strip of at most ~128 KiB:
// L2): neither makes a round trip to memory before `out` is formed. H0 and H1 are stored because
// the backward pass needs them (recomputing them there would cost another two GEMMs of the same
// size).
//
// Memory, which decides the small shapes of an MoE layer (32 tokens per expert: each weight
// element feeds only 32 FMAs, and the weights stream from DRAM):
// - The B block is packed during the first ic pass, software-pipelined with the arithmetic
//   (first_pass): a piece of the next panels is packed before each micro-tile, and the
//   micro-kernel prefetches the source lines of the piece after, spread over its k loop.
// - Or B is pre-packed (kern->pack_b, once per weight update) and read in place.
// - Or B is a transposed weight (the backward's dA, dX) and m a few rows: no B packing, the
//   weight rows streamed whole in place and transposed in registers (driver_tp.h).
// - Or B is a transposed weight and m small: no B packing at all, the weight rows streamed whole
//   in place, broadcast against A's rows in the vector lanes (driver_wt.h).
// - Or B is a row-major weight (the forward's up and down) and m fills most of one lane panel
//   (avx512 on AMD CPUs: 25-32 rows): no B packing either, the weight's columns read in place as
//   broadcasts (driver_wc.h).
// - Or B is a row-major weight and m a few rows (at most 12): the weight read in long runs, a
//   few rows at a time, straight into the FMAs (driver_rs.h).
// - Or B is a row-major weight and m at most BIP_MAX_M (avx2 144, avx512 192): the panels read
//   in place by the tiles, each prefetching the next, or with rows 2 or 4 KiB apart by the first
//   tile only, which packs them for the others as it goes (bip_pass).
// - Every micro-kernel call also prefetches its share of the next A block's source lines.
// - Short blocks (small k, e.g. dW = X^T dH of a small group) walk C along its rows, and at
//   a depth of a few (STREAM_MAX_K) write its full tiles with streaming stores (c_streams).
// - Pack buffers sit in huge pages (dispatch.c), so cache conflicts do not vary by run.
//
// Determinism: every C element is one FMA chain over p inside a KC block, starting from zero,
// and the KC blocks are added to C in increasing order (the first one stores when
// accumulate = 0). The partial-tile kernels run the same chain per element, so the bits of a
// C element do not depend on the tile it falls in, on the thread partition, on the thread
// count, on whether B was pre-packed, or on whether the product is fused. Threads own
// disjoint rectangles of C (whole run pairs when fused) and pack their own copies of A and B.
#ifndef MOED_KERNELS_DRIVER_H
#define MOED_KERNELS_DRIVER_H

#include <stdint.h>

#include "compute/kernels/kernels.h"

#define MIN(a, b) ((a) < (b) ? (a) : (b))

// Rows up to which a first pass may read a row-major B in place (bip_pass), set by the ISA file
// (default: never).
#ifndef BIP_MAX_M
#define BIP_MAX_M 0
#endif

_Static_assert(MC % MR == 0 && NC % NR == 0, "cache blocks must hold whole micro-tiles");
_Static_assert(NC / NR >= 2 * ROW_GROUP, "a B block must hold a fused run pair");

#include "compute/kernels/driver_prefetch.h"

// Row tiles of an A block of mc rows: ceil(mc / MR) of them, tile t's A micro-panel at
// t * MR * kc in the packed block. Tile t covers rows [*first, *first + return value). All of
// MR rows but the last, or with EVEN_ROW_TILES (the ISA file's choice) the rows shared as evenly
// as that many tiles allow, the larger ones first (32 rows on MR = 6: 6, 6, 5, 5, 5, 5, not 6,
// 6, 6, 6, 6, 2). A tile holds two accumulators per row, one FMA chain each, and a chain waits
// on the FMA latency: on avx2 a 2-row tile's 4 chains keep half of the two FMA pipes busy (it
// took 69% of a full tile's time for a third of its work), a 4-row tile's 8 just keep them
// busy, a 5-row tile's 10 with slack (1.00-1.03x the 6, 6, 6, 6, 4, 4 of the tiling kept
// before, which split only the last two tiles evenly; avx512's 12-row tiles hold 24 chains,
// and it lost with even tiles: 0.93-1.0x). Which tile a C element falls in never changes its
// FMA chain, so any tiling gives the same bits.
static inline int tile_rows(int mc, int t, int* first) {
#ifdef EVEN_ROW_TILES
    int n = (mc + MR - 1) / MR, base = mc / n, extra = mc % n;
    *first = t * base + MIN(t, extra);
    return base + (t < extra);
#else
    *first = t * MR;
    return MIN(MR, mc - t * MR);
#endif
}

// ---- What the ISA file defines after including this header (ukr_any and ukr_wt through
// driver_tiles.h, from its ukr_body) ----

// The A block: rows [0, mc) of a (element (r, p) at a[r*rsa + p*csa]) into consecutive
// micro-panels [kc][MR], panel q at dst + q*MR*kc, rows past mc zero.
static void pack_a_block(int mc, int kc, const float* a, long rsa, long csa, float* dst);
// One B micro-panel: columns [0, nr) of b (element (p, j) at b[p*rsb + j*csb]) into
// dst [kc][NR] (64-byte aligned), columns past nr zero.
static void pack_b_panel(int kc, int nr, const float* b, long rsb, long csb, float* restrict dst);
// C[mr, nr] (+)= Ap[kc][MR] * Bp[kc][NR] for any mr <= MR, nr <= NR; nothing outside C is read
// or written. overwrite = 1 stores the sum, 0 adds it to C.
static inline void ukr_any(int mr, int nr, int kc, const float* ap, const float* bp, float* c,
                           long ldc, int overwrite, const ukr_pf_t* pf);
// Full MR x NR tiles across np full panels of a packed B block (panel j at bp + j*NR*kc),
// C[MR, np*NR] (+)= Ap * panels, each tile as ukr_any would compute it; ukr_row_stream: C = the
// product, written with streaming stores (C 64-byte aligned, row stride a multiple of 16).
static void ukr_row(int kc, const float* ap, const float* bp, int np, float* c, long ldc,
                    int overwrite, const ukr_pf_t* pf);
static void ukr_row_stream(int kc, const float* ap, const float* bp, int np, float* c, long ldc,
                           const ukr_pf_t* pf);
#if BIP_MAX_M > 0
// A full MR x NR (or smaller mr) tile with B a full panel of a row-major weight read in place,
// row p at b + p*ldb, and stored packed at bc [kc][NR] unless bc is NULL: bip_pass's first tile.
static inline void ukr_bip(int mr, int kc, const float* ap, const float* b, long ldb, float* bc,
                           float* c, long ldc, int overwrite, const ukr_pf_t* pf);
#endif
// The same tile with A read in place from mr rows of a row-major weight, row i at w + i*ldw
// and walked along p, into ct [mr][NR] (only its first nr columns computed), issuing pf's
// prefetches: the weight-rows path (driver_wt.h).
static inline void ukr_wt(int mr, int nr, int kc, const float* w, long ldw, const float* bp,
                          float* ct, int overwrite, const ukr_pf_t* pf);
// C[m, rows] (+)= A[m, kc] x Wᵀ for m <= TP_MAX_M rows of A, packed (ap [kc][TP_MAX_M]), and
// rows <= VL rows of a row-major weight read in place (row j at w + j*ldw), transposed in
// registers: the transposing path (driver_tp.h).
static inline void ukr_tp(int m, int rows, int kc, const float* ap, const float* w, long ldw,
                          float* c, long ldc, int overwrite, long rem, long next);
// The same with column i of the tile at w + i, walked along p by ldw: mr consecutive columns
// of a row-major weight (the weight-columns path, driver_wc.h).
static inline void ukr_wc(int mr, int nr, int kc, const float* w, long ldw, const float* bp,
                          float* ct, int overwrite);
// The weight-rows path's transposed C tile ct [MR][NR] (64-byte aligned): C[i][r] (row stride
// ldc) at ct[r*NR + i] for rows i < ms <= NR and columns r < mr <= MR. ct_load fills it from
// C, ct_store writes it to C; nothing else of C is read or written.
static void ct_load(int ms, int mr, float* ct, const float* c, long ldc);
static void ct_store(int ms, int mr, const float* ct, float* c, long ldc);
// out = silu(h0) * h1 over an mr x nr tile (row stride ld), with the same per-element formula
// as the table's swiglu_fwd, so that fused and unfused results are bit-identical.
static void swiglu_tile(int mr, int nr, const float* h0, const float* h1, float* out, long ld);

// ---------------------------------------------------------------------------------------------
// Columns by panels.
// ---------------------------------------------------------------------------------------------

typedef struct {
    int m, n, k; // n: columns of C (of each of H0, H1 when fused)
    const float* a;
    long rsa, csa;
    const float* b[2]; // B, or B0 and B1 when fused; unused when B is pre-packed
    long rsb, csb;
    const float* bpre; // pre-packed B (drv_pack_b layout), or NULL: packed on the fly
    float* c[2];       // C, or H0 and H1 when fused
    float* out;        // fused: silu(H0) * H1, [m, n] with row stride ldc
    long ldc;
    int accumulate;
    int halves; // 1: plain; 2: fused
    int panels; // halves * ceil(n / NR)
    int run;    // fused: panels of B0, then of B1, per run (a multiple of ROW_GROUP)
} gemm_args_t;

// Panel q's half (0: B0/H0, 1: B1/H1) and its panel index s within that half.
static inline int panel_half(const gemm_args_t* g, int q, int* s) {
    if (g->halves == 1) {
        *s = q;
        return 0;
    }
    int R = g->run, half_panels = g->panels / 2, r = q / (2 * R);
    int len = MIN(R, half_panels - r * R), w = q - r * 2 * R;
    int h = w >= len;
    *s = r * R + w - h * len;
    return h;
}

static inline int panel_width(const gemm_args_t* g, int q) {
    int s;
    panel_half(g, q, &s);
    return MIN(NR, g->n - s * NR);
}

// B source of panel q (row 0), and the C column block it writes (row 0).
static inline const float* panel_src(const gemm_args_t* g, int q) {
    int s, h = panel_half(g, q, &s);
    return g->b[h] + (long)s * NR * g->csb;
}

static inline float* panel_dst(const gemm_args_t* g, int q) {
    int s, h = panel_half(g, q, &s);
    return g->c[h] + (long)s * NR;
}

// Panels a thread's column range or a B block is made of: run pairs when fused, so that the
// H0 and H1 tiles of the same columns are computed by one thread, in one block, in order.
static inline int panel_unit(const gemm_args_t* g) { return g->halves == 2 ? 2 * g->run : 1; }

// ---------------------------------------------------------------------------------------------
// The blocked loops over one thread's rectangle: rows [m0, m1), panels [q0, q1).
// ---------------------------------------------------------------------------------------------

// One KC x MC block of C's update: everything the loops need to know about it.
typedef struct {
    int mc, np, kc;    // block extent: rows, panels, depth
    int ic, qb, pc;    // first row, first panel, first p
    const float* abuf; // packed A block [ceil(mc/MR) panels][kc][MR], panel t: row tile t
    float* bbuf;       // packed B block [np][kc][NR], or a ring of `ring` panels
    int ring;          // 0, or: panel j lives in slot j % ring (see panel_buf)
    int overwrite;
    int stream;          // short_pass writes its full tiles with streaming stores (c_streams)
    int last;            // the last KC block: the fused epilogue runs
    pf_stream_t* next_a; // the next A block's source lines, or NULL
} block_t;

// Lines of the next A block each micro-kernel call of this block should prefetch.
static int a_share(const block_t* blk) {
    long calls = (long)((blk->mc + MR - 1) / MR) * blk->np;
    return blk->next_a ? (int)((blk->next_a->left + calls - 1) / calls) : 0;
}

// Where local panel j of the block is packed. A B block that only one ic pass reads (m
// within MC: the small groups of an MoE layer) is packed into a ring of 2 * ROW_GROUP panels
// instead of the whole block: first_pass holds at most the group it computes and the group
// it packs (<= ROW_GROUP panels each, consecutive), so they never share a slot, and the ring
// (8 x 16 KiB on avx2) stays in L2, where a whole block (MBs) would be written back to L3 and
// memory for nothing while the weights stream in.
static inline float* panel_buf(const block_t* blk, int j) {
    return blk->bbuf + (long)(blk->ring ? j % blk->ring : j) * NR * blk->kc;
}

// B source of local panel j of the block at its first row.
static inline const float* blk_src(const gemm_args_t* g, const block_t* blk, int j) {
    return panel_src(g, blk->qb + j) + (long)blk->pc * g->rsb;
}

// The fused epilogue over rows [ir, ir + rows) of the block's panel j, when it is an H1 panel
// of the last KC block: out = silu(H0) * H1, H0's tile of the same columns stored earlier
// (panel j - run length) and still in L2, H1's just stored.
static inline void epilogue(const gemm_args_t* g, const block_t* blk, int ir, int rows, int j) {
    int s, h = panel_half(g, blk->qb + j, &s);
    if (h != 1 || !blk->last) return;
    long off = (long)(blk->ic + ir) * g->ldc + (long)s * NR;
    swiglu_tile(rows, MIN(NR, g->n - s * NR), g->c[0] + off, g->c[1] + off, g->out + off, g->ldc);
}

// Micro-tile (t, j) of the block: row tile t (tile_rows), panel j. The epilogue is the
// caller's: after a whole panel where the loops go down panels (its exps are then independent
// work the core overlaps; one tile's 12 vectors of exp, right after the tile, are a
// latency-bound chain), after the tile where they go along rows.
static inline void tile(const gemm_args_t* g, const block_t* blk, int t, int j,
                        const ukr_pf_t* pf) {
    int q = blk->qb + j, s, h = panel_half(g, q, &s), ir;
    int mr = tile_rows(blk->mc, t, &ir), nr = MIN(NR, g->n - s * NR);
    long row = (long)(blk->ic + ir) * g->ldc, col = (long)s * NR;
    ukr_any(mr, nr, blk->kc, blk->abuf + (long)t * MR * blk->kc, panel_buf(blk, j),
            g->c[h] + row + col, g->ldc, blk->overwrite, pf);
}

// The first ic pass over a B block packs B on the way, overlapped with the arithmetic.
// Panels are taken in groups (below). With row-major B the next group is packed a piece (a
// range of k rows) at a time, one piece before each micro-tile of the current group, and each
// micro-tile prefetches the source lines of the piece after that, so only a tile's worth of
// lines is in flight: with a power-of-two row stride, a whole panel of lines (one per row)
// would not even fit the cache sets it maps to. This is what keeps small m (few tokens per
// expert, each weight element feeding only a few FMAs) fed from memory.
//
// Group widths: with row-major B a group of w panels reads its rows in runs of w * NR floats,
// which DRAM serves at up to twice the rate of one 64-byte line per row (measured: 4.8 GB/s
// at w = 1, 7.9 at w = 4 on the EPYC dev box; ROW_GROUP is 4 x 64 B for avx2, 2 x 128 B for
// avx512); groups grow 1, 2, 4 so that the unhidden packing of the first one stays short, and
// never straddle a fused half-run, so a group's panels are contiguous in the source. With
// column-major B a panel's columns are already contiguous runs; one panel per group, packed
// whole after the tiles of the previous panel, which prefetch it (measured faster than pieces).
static int group_end(const gemm_args_t* g, const block_t* blk, int j0) {
    int w = g->csb == 1 ? ROW_GROUP : 1, end = MIN(blk->np, j0 + MIN(w, j0 + 1));
    if (g->halves == 2) { // the end of the half-run holding panel j0
        int R = g->run, q0 = blk->qb + j0, r = q0 / (2 * R), base = r * 2 * R;
        int len = MIN(R, g->panels / 2 - r * R);
        int run_end = q0 < base + len ? base + len : base + 2 * len;
        end = MIN(end, run_end - blk->qb);
    }
    return end;
}

// Rows per piece when a group is packed during the tiles of a group of w panels.
static int piece_rows(int kc, int w, int tiles) {
    int pieces = w * tiles;
    if (pieces <= 0) return kc;
    return ((kc + pieces - 1) / pieces + 7) / 8 * 8; // whole 8-row chunks (transposing pack)
}

// Panels [j0, j1) of a group that are full (a partial panel ends its half-run).
static int full_end(const gemm_args_t* g, const block_t* blk, int j0, int j1) {
    while (j0 < j1 && panel_width(g, blk->qb + j0) == NR) j0++;
    return j0;
}

static void pack_panel(const gemm_args_t* g, const block_t* blk, int j, int r0, int rows) {
    pack_b_panel(rows, panel_width(g, blk->qb + j), blk_src(g, blk, j) + (long)r0 * g->rsb, g->rsb,
                 g->csb, panel_buf(blk, j) + (long)r0 * NR);
}

static void first_pass(const gemm_args_t* g, const block_t* blk) {
    int mc = blk->mc, np = blk->np, kc = blk->kc;
    int tiles = (mc + MR - 1) / MR;
    // Row-major B is packed in pieces; other layouts a group at a time (see above).
    int pieces = g->csb == 1;
    ukr_pf_t pf = {{NULL, blk->next_a}, {0, a_share(blk)}};
    int q0 = 0, q1 = group_end(g, blk, 0);
    for (int j = q0; j < q1; j++) pack_panel(g, blk, j, 0, kc); // the first group, unhidden
    while (q0 < np) {
        int n0 = q1, n1 = n0 < np ? group_end(g, blk, n0) : np; // packed during this group
        int a0 = n1, a1 = a0 < np ? group_end(g, blk, a0) : np; // prefetched at the end
        int nf1 = full_end(g, blk, n0, n1), af1 = full_end(g, blk, a0, a1);
        int piece = pieces ? piece_rows(kc, q1 - q0, tiles) : kc;
        int apiece = piece_rows(kc, n1 - n0, tiles);
        int u = 0, last_u = (q1 - q0) * tiles - 1;
        pf_stream_t whole = pf_none; // the next group's lines, when packed whole
        int whole_share = 0;
        if (!pieces && nf1 > n0) {
            whole = pf_matrix(blk_src(g, blk, n0), kc, (nf1 - n0) * NR, g->rsb, g->csb);
            whole_share = (int)((whole.left + last_u) / (last_u + 1));
        }
        for (int q = q0; q < q1; q++) {
            for (int t = 0; t < tiles; t++, u++) {
                int r0 = MIN(kc, u * piece), r1 = MIN(kc, (u + 1) * piece);
                pf_stream_t bs = pf_none;
                if (pieces) {
                    if (r1 > r0)
                        for (int j = n0; j < nf1; j++) pack_panel(g, blk, j, r0, r1 - r0);
                    if (u == 0 && nf1 < n1) // a partial last panel: all of it, zero-padded
                        pack_panel(g, blk, nf1, 0, kc);
                    // Prefetch what the next tile packs: the next piece of this next group,
                    // or after the last tile, the first piece of the group after.
                    if (u < last_u && r1 < kc && nf1 > n0)
                        bs = pf_matrix(blk_src(g, blk, n0) + r1 * g->rsb, MIN(kc, r1 + piece) - r1,
                                       (nf1 - n0) * NR, g->rsb, g->csb);
                    else if (u == last_u && af1 > a0)
                        bs = pf_matrix(blk_src(g, blk, a0), MIN(kc, apiece), (af1 - a0) * NR,
                                       g->rsb, g->csb);
                    pf.s[0] = &bs;
                    pf.n[0] = (int)bs.left;
                } else {
                    pf.s[0] = &whole;
                    pf.n[0] = whole_share;
                }
                tile(g, blk, t, q, &pf);
            }
            epilogue(g, blk, 0, mc, q);
        }
        if (!pieces) // the next group, whole, now that its lines are in cache
            for (int j = n0; j < n1; j++) pack_panel(g, blk, j, 0, kc);
        q0 = n0;
        q1 = n1;
    }
}

#if BIP_MAX_M > 0
// The first and only ic pass over a B block of a row-major weight, for up to BIP_MAX_M rows:
// no packing pass. The tiles read each panel of the weight where it lies, the first row tile
// from memory (a line per row, one row stride apart, prefetched by the previous panel's tiles),
// the others from L2. Except where the row stride is a multiple of 512 floats (d_ff = 1024 or
// 2048): a panel's KC rows then fall in only 16 of L2's 1024 sets (4 KiB apart; 32 at 2 KiB),
// 16 ways x 16 sets is exactly the 256 rows of a block, and the later tiles missed there (0.66x
// the packed first pass at n = 1024 and 2048). So there the first tile also stores the panel,
// packed, into the ring as it reads it (ukr_bip's bc), and the others read that copy from L1:
// the packed pass's layout without its packer's loads and loop (paired against the packed first
// pass, n = 512-2048: avx2 1.09-1.18x at 16-32 rows, avx512 1.15-1.29x at 16-24 rows, 1.04x
// at 144-192). Where the rows spread, the copy cost avx512 3-5% against reading in place (n =
// 1000, 2816), so it is kept to these strides. A partial panel (the last of a half) is packed
// as in the blocked loops, so nothing past the weight's columns is read. Same FMA chains, same
// bits. A single row tile (m <= MR) prefetches the next panel a row per k step, both lines of
// a row at once (pf_rows): a line per step reached only the first half of an avx512 panel's
// rows (2 lines each), and the tile ran 12 rows at 0.95-1.04x the row-streaming path, where
// with the whole panel it runs 11-12 rows at 1.02-1.49x (docs/performance.md, 2026-11-28 16:37).
static void bip_pass(const gemm_args_t* g, const block_t* blk) {
    int tiles = (blk->mc + MR - 1) / MR, copy = tiles > 1 && g->rsb % 512 == 0;
    for (int j = 0; j < blk->np; j++) {
        pf_stream_t next_b = pf_none;
        if (j + 1 < blk->np && panel_width(g, blk->qb + j + 1) == NR)
            next_b = tiles > 1 ? pf_matrix(blk_src(g, blk, j + 1), blk->kc, NR, g->rsb, 1)
                               : pf_rows(blk_src(g, blk, j + 1), blk->kc, NR, g->rsb);
        ukr_pf_t pf = {{&next_b, blk->next_a},
                       {(int)((next_b.left + tiles - 1) / tiles), a_share(blk)}};
        int full = panel_width(g, blk->qb + j) == NR, s, h = panel_half(g, blk->qb + j, &s);
        if (!full) pack_panel(g, blk, j, 0, blk->kc);
        for (int t = 0; t < tiles; t++) {
            if (!full || (copy && t > 0)) {
                tile(g, blk, t, j, &pf);
                continue;
            }
            int ir, mr = tile_rows(blk->mc, t, &ir);
            ukr_bip(mr, blk->kc, blk->abuf + (long)t * MR * blk->kc, blk_src(g, blk, j), g->rsb,
                    copy ? panel_buf(blk, j) : NULL,
                    g->c[h] + (long)(blk->ic + ir) * g->ldc + (long)s * NR, g->ldc, blk->overwrite,
                    &pf);
        }
        epilogue(g, blk, 0, blk->mc, j);
    }
}

// Whether a first pass of `rows` rows reads B in place: B a row-major weight (not pre-packed)
// and one ic pass.
static int bip_applies(const gemm_args_t* g, int rows) {
    return !g->bpre && g->csb == 1 && rows <= BIP_MAX_M && rows <= MC;
}
#endif

// A later ic pass, or a pre-packed B: B micro-panels stay in L1 across the ir loop, and the
// tiles of panel j prefetch panel j + 1 (from L3, or memory when pre-packed), spread over
// them. Left to the hardware, a small m (32 rows: 6 tiles per panel) would fetch each panel
// in a burst during its first tile and leave memory idle during the other five.
static void later_pass(const gemm_args_t* g, const block_t* blk) {
    int tiles = (blk->mc + MR - 1) / MR;
    ukr_pf_t pf = {{NULL, blk->next_a}, {0, a_share(blk)}};
    for (int j = 0; j < blk->np; j++) {
        pf_stream_t next_b = pf_none;
        if (j + 1 < blk->np) next_b = pf_matrix(panel_buf(blk, j + 1), blk->kc, NR, NR, 1);
        pf.s[0] = &next_b;
        pf.n[0] = (int)((next_b.left + tiles - 1) / tiles);
        for (int t = 0; t < tiles; t++) tile(g, blk, t, j, &pf);
        epilogue(g, blk, 0, blk->mc, j);
    }
}

// Depth of the KC blocks of a product of depth k: KC, or with KC_BALANCED (the ISA file's
// choice) the k loop cut into the fewest blocks of at most KC, of equal depth rounded up to
// whole 8-row chunks (the last takes the rest). Uneven groups give dW = X^T dH any depth, and
// k = 1555 in blocks of KC = 256 ends with one of 19 rows: a whole pass over C (read, add,
// write) for 19 FMAs per element; balanced, it is 7 blocks of 224. A function of k alone, so
// the FMA chains, and the bits, are the same for any m, any row tiling (chunked dispatch),
// any thread count, and packed or not.
static inline int kc_block(int k) {
#ifdef KC_BALANCED
    int nb = (k + KC - 1) / KC;
    if (nb <= 1) return KC;
    int kb = ((k + nb - 1) / nb + 7) / 8 * 8;
    return MIN(kb, KC);
#else
    (void)k;
    return KC;
#endif
}

// Below this depth a micro-tile is too short to hide C's memory traffic behind its FMAs
// (the dW = X^T dH product of a small expert group has k = its token count).
#define SHORT_KC 64

// A short block (kc < SHORT_KC): the whole B block is packed first (it is small), then the
// tiles are walked along C's rows (jr innermost), so that C is written in long sequential
// runs that the hardware prefetcher and the DRAM pages like; the A micro-panel stays in L1
// and the B block in L2.
static void short_pass(const gemm_args_t* g, const block_t* blk, int pack_b) {
    if (pack_b)
        for (int j = 0; j < blk->np; j++) pack_panel(g, blk, j, 0, blk->kc);
    ukr_pf_t pf = {{NULL, blk->next_a}, {0, a_share(blk)}};
    for (int t = 0, tiles = (blk->mc + MR - 1) / MR; t < tiles; t++) {
        int ir, mr = tile_rows(blk->mc, t, &ir), j = 0;
        if (mr == MR && g->halves == 1 && !blk->ring) { // full tiles in one call (ukr_row)
            j = full_end(g, blk, 0, blk->np);
            const float* ap = blk->abuf + (long)t * MR * blk->kc;
            float* c = g->c[0] + (long)(blk->ic + ir) * g->ldc + (long)blk->qb * NR;
            if (blk->stream)
                ukr_row_stream(blk->kc, ap, panel_buf(blk, 0), j, c, g->ldc, &pf);
            else
                ukr_row(blk->kc, ap, panel_buf(blk, 0), j, c, g->ldc, blk->overwrite, &pf);
        }
        for (; j < blk->np; j++) {
            tile(g, blk, t, j, &pf);
            epilogue(g, blk, ir, mr, j);
        }
    }
}

// Whether C is written with streaming (non-temporal) stores, which write whole lines to memory
// without first reading them in (the write-allocate) and without keeping them in cache. For a
// product of depth k at most STREAM_MAX_K (the ISA file's: where the FMAs take only a few cycles
// per 64-byte line of C, so that writing C bounds the product), one KC block that stores C once and
// never reads it back, a plain C (not the fused H0 | H1, whose epilogue reads them back), and at
// least KERN_STREAM_MIN_C floats, more than a core's L2 holds. That is dW = X^T dH of an expert
// group of a few tokens (k = its rows): MiBs that the optimizer reads after the other groups'
// products, by which time they are out of cache anyway; a normal store would first read each line
// from memory, doubling the traffic. C's rows must start on 64-byte lines (row stride a multiple of
// 16 floats), so every vector a tile stores is aligned, as the streaming stores want; otherwise C
// is stored normally. Only short_pass's full tiles stream (the others are a sliver of C). The
// same values either way: only where they are kept changes.
#ifndef STREAM_MAX_K
#define STREAM_MAX_K 0
#define STREAM_FENCE() ((void)0)
#endif
#ifndef STREAM_FENCE
#error "driver.h: an ISA file that sets STREAM_MAX_K defines STREAM_FENCE, its store fence"
#endif

static int c_streams(const gemm_args_t* g) {
    return g->k <= STREAM_MAX_K && !g->accumulate && g->halves == 1 &&
           (long)g->m * g->n >= KERN_STREAM_MIN_C && (uintptr_t)g->c[0] % 64 == 0 &&
           g->ldc % 16 == 0;
}

// Panels per B block: NC's worth, in whole run pairs when fused.
static int block_panels(const gemm_args_t* g) {
    int u = panel_unit(g);
    return NC / NR / u * u;
}

static void gemm_rect(const gemm_args_t* g, int m0, int m1, int q0, int q1, const kern_pack_t* pk) {
    int ncp = block_panels(g), kb = kc_block(g->k), stream = c_streams(g);
    for (int jc = q0; jc < q1; jc += ncp) {
        int np = MIN(ncp, q1 - jc);
        for (int pc = 0; pc < g->k; pc += kb) {
            int kc = MIN(kb, g->k - pc);
            for (int ic = m0; ic < m1; ic += MC) {
                int mc = MIN(MC, m1 - ic);
                // The A block after this one, in loop order, to prefetch while this one runs.
                int nic = ic + MC, npc = pc, njc = jc;
                if (nic >= m1) nic = m0, npc = pc + kb;
                if (npc >= g->k) npc = 0, njc = jc + ncp;
                pf_stream_t next_a = pf_none;
                if (njc < q1)
                    next_a = pf_matrix(g->a + nic * g->rsa + npc * g->csa, MIN(MC, m1 - nic),
                                       MIN(kb, g->k - npc), g->rsa, g->csa);
                block_t blk = {
                    .mc = mc,
                    .np = np,
                    .kc = kc,
                    .ic = ic,
                    .qb = jc,
                    .pc = pc,
                    .abuf = pk->a,
                    .bbuf = pk->b,
                    .overwrite = pc == 0 && !g->accumulate,
                    .stream = stream,
                    .last = pc + kc == g->k,
                    .next_a = next_a.left > 0 ? &next_a : NULL,
                };
                // Pre-packed B: block pc is [panels][kc][NR] at pc * panels * NR floats.
                if (g->bpre)
                    blk.bbuf = (float*)g->bpre + (long)pc * g->panels * NR + (long)jc * kc * NR;
                pack_a_block(mc, kc, g->a + ic * g->rsa + pc * g->csa, g->rsa, g->csa, pk->a);
                if (kc < SHORT_KC) {
                    short_pass(g, &blk, ic == m0 && !g->bpre);
#if BIP_MAX_M > 0
                } else if (ic == m0 && bip_applies(g, m1 - m0)) {
                    blk.ring = 1; // bip_pass packs (where it does) one panel at a time
                    bip_pass(g, &blk);
#endif
                } else if (ic == m0 && !g->bpre) {
                    blk.ring = m1 - m0 <= MC ? 2 * ROW_GROUP : 0; // no later pass reads it
                    first_pass(g, &blk);
                } else {
                    later_pass(g, &blk);
                }
            }
        }
    }
    // Streaming stores are weakly ordered: make them visible before the caller (or, past the
    // parallel region's barrier, another thread) reads C.
    if (stream) STREAM_FENCE();
}

#include "compute/kernels/driver_rs.h"
#include "compute/kernels/driver_tp.h"
#include "compute/kernels/driver_wc.h"
#include "compute/kernels/driver_wt.h"

// The thread partition and the table entries, which choose among the paths.
#include "compute/kernels/driver_run.h"

#endif
