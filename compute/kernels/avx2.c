// AVX2/FMA sgemm, BLIS-style (Van Zee & van de Geijn, "BLIS: A Framework for Rapidly
// Instantiating BLAS Functionality", TOMS 2015). Compiled with -mavx2 -mfma -O3.
//
//   for jc in [0, n) step NC            B block  KC x NC  packed per thread, lives in L3
//     for pc in [0, k) step KC          the k loop: sequential, never split between threads
//       for ic in [0, m) step MC        A block  MC x KC  packed, lives in L2
//         for jr in [0, nc) step NR     B micro-panel KC x NR  lives in L1
//           for ir in [0, mc) step MR   A micro-panel MR x KC  streams from L2
//             micro-kernel: C[MR, NR] (+)= A-panel * B-panel, 12 ymm accumulators
//
// Memory, which decides the small shapes of an MoE layer (32 tokens per expert: each weight
// element feeds only 32 FMAs, and the weights stream from DRAM):
// - The B block is packed during the first ic pass, software-pipelined with the arithmetic
//   (first_pass): a piece of the next panels is packed before each micro-tile, and the
//   micro-kernel prefetches the source lines of the piece after, spread over its k loop.
// - Every micro-kernel call also prefetches its share of the next A block's source lines.
// - Short blocks (small k, e.g. dW = X^T dH of a small group) walk C along its rows.
// - Pack buffers sit in huge pages (dispatch.c), so cache conflicts do not vary by run.
//
// Determinism: every C element is one FMA chain over p inside a KC block, starting from zero,
// and the KC blocks are added to C in increasing order (the first one stores when
// accumulate = 0). The partial-tile kernels run the same chain per element, so the bits of a
// C element do not depend on the tile it falls in, on the thread partition, or on the thread
// count. Threads own disjoint rectangles of C and pack their own copies of A and B.
#include "compute/kernels/kernels.h"

#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define MR 6    // rows of the micro-tile: 6 broadcasts of A per k step
#define NR 16   // columns of the micro-tile: two ymm of B per k step
#define MC 144  // A block MC x KC = 144 KiB: fits the 512 KiB L2 beside the B panels
#define KC 256  // B micro-panel KC x NR = 16 KiB: half of the 32 KiB L1D
#define NC 4080 // B block KC x NC = 4 MiB: a slice of L3

#define MIN(a, b) ((a) < (b) ? (a) : (b))

#define PF_HINT _MM_HINT_T0 // software prefetches of pack sources: into L1 (and L2)

_Static_assert(MC % MR == 0 && NC % NR == 0, "cache blocks must hold whole micro-tiles");
_Static_assert(KERN_PACK_SLACK >= 8, "transposing A packer stores up to 2 floats past a panel");

// ---------------------------------------------------------------------------------------------
// Packing. A micro-panel of A is [kc][MR] (MR consecutive rows for each p), a micro-panel of B
// is [kc][NR] (NR consecutive columns for each p). Rows or columns past the matrix edge are
// packed as zeros: a partial tile computes whole 8-column vectors on them into a temporary
// tile, of which only the valid part reaches C. All four transposition cases are a choice of
// (rs, cs) read here.
// ---------------------------------------------------------------------------------------------

// In-register 8x8 transpose: r[i] lane j  ->  r[j] lane i.
static inline __attribute__((always_inline)) void transpose8(__m256 r[8]) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xee);
    __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xee);
    __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xee);
    __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xee);
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
    r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
    r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// One A micro-panel: rows [0, mr) of a (element (r, p) at a[r*rsa + p*csa]) into dst [kc][MR].
static void pack_a_panel(int mr, int kc, const float* a, long rsa, long csa, float* restrict dst) {
    int p = 0;
    if (mr == MR && csa == 1) {
        // A row-major (the NN and NT cases): each row is contiguous in p. Transpose 8 p at a
        // time; the 8-float stores overlap, each one's lanes 6..7 overwritten by the next
        // (the last one spills 2 floats into the next panel or the slack, packed later).
        for (; p + 8 <= kc; p += 8) {
            __m256 r[8];
            for (int i = 0; i < MR; i++) r[i] = _mm256_loadu_ps(a + i * rsa + p);
            r[6] = r[7] = _mm256_setzero_ps();
            transpose8(r);
            for (int j = 0; j < 8; j++) _mm256_storeu_ps(dst + (p + j) * MR, r[j]);
        }
    }
    for (; p < kc; p++) {
        for (int i = 0; i < mr; i++) dst[p * MR + i] = a[i * rsa + p * csa];
        for (int i = mr; i < MR; i++) dst[p * MR + i] = 0.0f;
    }
}

// The A block: rows [0, mc) into consecutive micro-panels, panel q at dst + q*MR*kc.
static void pack_a_block(int mc, int kc, const float* a, long rsa, long csa, float* dst) {
    if (rsa == 1 && csa != 1) {
        // A column-major (TN, TT): a p-slice of all mc rows is contiguous. Walk p outermost
        // so each source line is read once; p-inner per panel would stride by csa and, for
        // power-of-two csa, thrash one L1 set per panel.
        int full = mc / MR * MR;
        for (int p = 0; p < kc; p++) {
            const float* src = a + p * csa;
            float* d = dst + p * MR;
            for (int ir = 0; ir < full; ir += MR, d += (long)MR * kc) {
                _mm_storeu_ps(d, _mm_loadu_ps(src + ir));
                d[4] = src[ir + 4];
                d[5] = src[ir + 5];
            }
        }
        if (full < mc) pack_a_panel(mc - full, kc, a + full, rsa, csa, dst + (long)full * kc);
        return;
    }
    for (int ir = 0; ir < mc; ir += MR)
        pack_a_panel(MIN(MR, mc - ir), kc, a + ir * rsa, rsa, csa, dst + (long)ir * kc);
}

// One B micro-panel: columns [0, nr) of b (element (p, j) at b[p*rsb + j*csb]) into
// dst [kc][NR] (dst is 64-byte aligned: panels start at multiples of NR*kc floats).
static void pack_b_panel(int kc, int nr, const float* b, long rsb, long csb, float* restrict dst) {
    int p = 0;
    if (nr == NR && csb == 1) {
        // B row-major (NN, TN): NR contiguous floats per p.
        for (; p < kc; p++) {
            const float* src = b + p * rsb;
            _mm256_store_ps(dst + p * NR, _mm256_loadu_ps(src));
            _mm256_store_ps(dst + p * NR + 8, _mm256_loadu_ps(src + 8));
        }
    } else if (nr == NR && rsb == 1) {
        // B column-major (NT, TT: B is a transposed weight): each column is contiguous in p.
        // Two 8x8 transposes per 8 p.
        for (; p + 8 <= kc; p += 8) {
            for (int h = 0; h < NR; h += 8) {
                __m256 r[8];
                for (int j = 0; j < 8; j++) r[j] = _mm256_loadu_ps(b + (h + j) * csb + p);
                transpose8(r);
                for (int i = 0; i < 8; i++) _mm256_store_ps(dst + (p + i) * NR + h, r[i]);
            }
        }
    }
    for (; p < kc; p++) {
        for (int j = 0; j < nr; j++) dst[p * NR + j] = b[p * rsb + j * csb];
        for (int j = nr; j < NR; j++) dst[p * NR + j] = 0.0f;
    }
}

// ---------------------------------------------------------------------------------------------
// Prefetch streams. The micro-kernel also issues software prefetches for its caller: the
// source lines of the B panel packed next (first ic pass) and of the next A block, so that
// packing finds them in cache. A stream is a walk over lines in runs: `run` lines `inner`
// floats apart, successive runs `outer` floats apart (row-major source: a run per row;
// column-major: a run per column). Each call issues its share of the lines, spread over its k
// loop: issued in a burst they would fill the miss buffers and stall the kernel's own loads.
// ---------------------------------------------------------------------------------------------

typedef struct {
    const float* row;  // first float of the current run
    long inner, outer; // floats between lines of a run, between runs
    int run, cnt;      // lines per run, lines of the current run already issued
    long left;         // lines still to issue
} pf_stream_t;

static const pf_stream_t pf_none = {NULL, 0, 0, 1, 0, 0};

static inline void pf_issue(pf_stream_t* s) {
    if (s->left <= 0) return;
    const float* q = s->row + s->cnt * s->inner;
    _mm_prefetch((const char*)q, PF_HINT);
    _mm_prefetch((const char*)(q + 15), PF_HINT); // the line may straddle 64 bytes
    s->left--;
    if (++s->cnt == s->run) {
        s->cnt = 0;
        s->row += s->outer;
    }
}

// The lines of rows [0, rows) x cols [0, cols) of a matrix with element (r, c) at
// x[r*rs + c*cs], walked along whichever of rs, cs is 1. None when neither is.
static pf_stream_t pf_matrix(const float* x, int rows, int cols, long rs, long cs) {
    pf_stream_t s = pf_none;
    if (rows <= 0 || cols <= 0) return s;
    if (cs == 1) { // a run per row
        int run = (cols + 15) / 16;
        s = (pf_stream_t){x, 16, rs, run, 0, (long)rows * run};
    } else if (rs == 1) { // a run per column
        int run = (rows + 15) / 16;
        s = (pf_stream_t){x, 16, cs, run, 0, (long)cols * run};
    }
    return s;
}

// What one micro-kernel call prefetches: n[i] lines of stream s[i] (s[i] may be NULL).
typedef struct {
    pf_stream_t* s[2];
    int n[2];
} ukr_pf_t;

// ---------------------------------------------------------------------------------------------
// Micro-kernel. C[mr, 8*nv] (+)= Ap[kc][MR] * Bp[kc][NR] for compile-time mr in 1..MR and
// nv in 1..2 (instantiated below): one register per (row, 8 columns), the p loop innermost,
// one FMA per accumulator per p. The full 6x16 tile uses 12 accumulators, 2 B registers and
// 1 broadcast register; the smaller ones exist so a partial tile costs less than a full one
// and produce bit-identical values, since each accumulator sees the same FMA chain.
// overwrite = 1 stores the sum, 0 adds it to C.
// ---------------------------------------------------------------------------------------------

// One k step of the micro-tile: two loads of B, mr broadcasts of A, mr*nv FMAs.
static inline __attribute__((always_inline)) void ukr_step(int mr, int nv, __m256 acc[MR][2],
                                                           const float* ap, const float* bp) {
    __m256 b0 = _mm256_load_ps(bp);
    __m256 b1 = nv > 1 ? _mm256_load_ps(bp + 8) : b0;
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++) {
        __m256 ai = _mm256_broadcast_ss(ap + i);
        acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
        if (nv > 1) acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
    }
}

static inline __attribute__((always_inline)) void
ukr_body(int mr, int nv, int kc, const float* restrict ap, const float* restrict bp, float* c,
         long ldc, int overwrite, const ukr_pf_t* pf) {
    __m256 acc[MR][2];
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++) {
        acc[i][0] = _mm256_setzero_ps();
        acc[i][1] = _mm256_setzero_ps();
        // C is read or written at the end: start bringing its lines in now.
        _mm_prefetch((const char*)(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char*)(c + i * ldc + 8 * nv - 1), _MM_HINT_T0);
    }
    int p = 0;
    int n0 = pf && pf->s[0] ? pf->n[0] : 0, n1 = pf && pf->s[1] ? pf->n[1] : 0;
    if (n0 + n1 > 0) {
        if (n0 > kc) n0 = kc;
        if (n1 > kc - n0) n1 = kc - n0;
        int gap = kc / (n0 + n1); // >= 1
        for (int i = 0; i < n0 + n1; i++) {
            pf_issue(i < n0 ? pf->s[0] : pf->s[1]);
            for (int j = 0; j < gap; j++, p++, ap += MR, bp += NR) ukr_step(mr, nv, acc, ap, bp);
        }
    }
#pragma GCC unroll 4
    for (; p < kc; p++, ap += MR, bp += NR) ukr_step(mr, nv, acc, ap, bp);
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++) {
#pragma GCC unroll 2
        for (int v = 0; v < nv; v++) {
            float* cp = c + i * ldc + 8 * v;
            __m256 r = overwrite ? acc[i][v] : _mm256_add_ps(_mm256_loadu_ps(cp), acc[i][v]);
            _mm256_storeu_ps(cp, r);
        }
    }
}

typedef void (*ukr_fn)(int kc, const float* ap, const float* bp, float* c, long ldc, int overwrite,
                       const ukr_pf_t* pf);

#define UKR(M, V)                                                                                  \
    static void ukr_##M##x##V(int kc, const float* ap, const float* bp, float* c, long ldc,        \
                              int overwrite, const ukr_pf_t* pf) {                                 \
        ukr_body(M, V, kc, ap, bp, c, ldc, overwrite, pf);                                         \
    }
// clang-format off
UKR(1, 1) UKR(2, 1) UKR(3, 1) UKR(4, 1) UKR(5, 1) UKR(6, 1)
UKR(1, 2) UKR(2, 2) UKR(3, 2) UKR(4, 2) UKR(5, 2) UKR(6, 2)

// [rows][ymm columns]
static const ukr_fn ukr_tab[MR + 1][3] = {
    {0, 0, 0},
    {0, ukr_1x1, ukr_1x2}, {0, ukr_2x1, ukr_2x2}, {0, ukr_3x1, ukr_3x2},
    {0, ukr_4x1, ukr_4x2}, {0, ukr_5x1, ukr_5x2}, {0, ukr_6x1, ukr_6x2},
};
// clang-format on

// C[mr, nr] (+)= panels, for any mr <= MR, nr <= NR. Column counts that are not a multiple
// of 8 go through a temporary tile so nothing outside C is read or written.
static inline void ukr_any(int mr, int nr, int kc, const float* ap, const float* bp, float* c,
                           long ldc, int overwrite, const ukr_pf_t* pf) {
    int nv = (nr + 7) / 8;
    if (nr % 8 == 0) {
        ukr_tab[mr][nv](kc, ap, bp, c, ldc, overwrite, pf);
        return;
    }
    float tile[MR * NR] __attribute__((aligned(32))); // [mr][NR]: the product, C untouched
    ukr_tab[mr][nv](kc, ap, bp, tile, NR, 1, pf);
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) {
            float* cij = c + i * ldc + j;
            // Same single rounding as the vector path: C + sum.
            *cij = overwrite ? tile[i * NR + j] : *cij + tile[i * NR + j];
        }
}

// ---------------------------------------------------------------------------------------------
// The blocked loops over one thread's rectangle C[m0:m1, n0:n1].
// ---------------------------------------------------------------------------------------------

typedef struct {
    int m, n, k;
    const float* a;
    long rsa, csa;
    const float* b;
    long rsb, csb;
    float* c;
    long ldc;
    int accumulate;
} gemm_args_t;

// One KC x MC block of C's update: everything the loops need to know about it.
typedef struct {
    int mc, nc, kc;    // block extent: rows, columns, depth
    const float* bsrc; // B source of the block: element (p, j) at bsrc[p*rsb + j*csb]
    const float* abuf; // packed A block [mc/MR panels][kc][MR]
    float* bbuf;       // packed B block [nc/NR panels][kc][NR]
    float* c;          // C block, row stride ldc
    int overwrite;
    pf_stream_t* next_a; // the next A block's source lines, or NULL
} block_t;

// Lines of the next A block each micro-kernel call of this block should prefetch.
static int a_share(const block_t* blk) {
    long calls = (long)((blk->mc + MR - 1) / MR) * ((blk->nc + NR - 1) / NR);
    return blk->next_a ? (int)((blk->next_a->left + calls - 1) / calls) : 0;
}

// The first ic pass over a B block packs B on the way, overlapped with the arithmetic.
// Panels are taken in groups (below). With row-major B the next group is packed a piece (a
// range of k rows) at a time, one piece before each micro-tile of the current group, and each
// micro-tile prefetches the source lines of the piece after that, so only a tile's worth of
// lines is in flight: with a power-of-two row stride, a whole panel of lines (one per row)
// would not even fit the cache sets it maps to. This is what keeps small m (few tokens per
// expert, each weight element feeding only a few FMAs) fed from memory.
//
// Group widths: with row-major B a group of w panels reads its rows in runs of w * 64 bytes,
// which DRAM serves at up to twice the rate of one 64-byte line per row (measured: 4.8 GB/s
// at w = 1, 7.9 at w = 4 on the EPYC dev box); groups grow 1, 2, 4 so that the unhidden
// packing of the first one stays short. With column-major B a panel's columns are already
// contiguous runs; one panel per group, packed whole after the tiles of the previous panel,
// which prefetch it (measured faster than pieces there).
static int group_end(const gemm_args_t* g, int q0, int panels) {
    int w = g->csb == 1 ? 4 : 1;
    return MIN(panels, q0 + MIN(w, q0 + 1));
}

// Rows per piece when group [n0, n1) is packed during the tiles of a group of w panels.
static int piece_rows(int kc, int w, int tiles) {
    int pieces = w * tiles;
    if (pieces <= 0) return kc;
    return ((kc + pieces - 1) / pieces + 7) / 8 * 8; // whole 8-row chunks (transposing pack)
}

static void first_pass(const gemm_args_t* g, const block_t* blk) {
    int mc = blk->mc, nc = blk->nc, kc = blk->kc;
    int tiles = (mc + MR - 1) / MR;
    int panels = (nc + NR - 1) / NR;
    int nfull = nc / NR; // panels [0, nfull) are full; a partial one may follow
    // Row-major B is packed in pieces; other layouts a group at a time (see above).
    int pieces = g->csb == 1;
    ukr_pf_t pf = {{NULL, blk->next_a}, {0, a_share(blk)}};
    const float* bsrc = blk->bsrc;
    long pstep = (long)NR * g->csb; // source floats from one panel to the next
    int q0 = 0, q1 = group_end(g, 0, panels);
    for (int q = q0; q < q1; q++) // the first group, unhidden
        pack_b_panel(kc, MIN(NR, nc - q * NR), bsrc + q * pstep, g->rsb, g->csb,
                     blk->bbuf + (long)q * NR * kc);
    while (q0 < panels) {
        int n0 = q1, n1 = group_end(g, n0, panels); // the next group, packed during this one
        int a0 = n1, a1 = group_end(g, a0, panels); // the one after, prefetched at the end
        int nf1 = MIN(n1, nfull), af1 = MIN(a1, nfull);
        int piece = pieces ? piece_rows(kc, q1 - q0, tiles) : kc;
        int apiece = piece_rows(kc, n1 - n0, tiles);
        int u = 0, last_u = (q1 - q0) * tiles - 1;
        pf_stream_t whole = pf_none; // the next group's lines, when packed whole
        int whole_share = 0;
        if (!pieces && nf1 > n0) {
            whole = pf_matrix(bsrc + n0 * pstep, kc, (nf1 - n0) * NR, g->rsb, g->csb);
            whole_share = (int)((whole.left + last_u) / (last_u + 1));
        }
        for (int q = q0; q < q1; q++) {
            int nr = MIN(NR, nc - q * NR);
            for (int t = 0; t < tiles; t++, u++) {
                int r0 = MIN(kc, u * piece), r1 = MIN(kc, (u + 1) * piece);
                pf_stream_t bs = pf_none;
                if (pieces) {
                    if (r1 > r0)
                        for (int j = n0; j < nf1; j++)
                            pack_b_panel(r1 - r0, NR, bsrc + r0 * g->rsb + j * pstep, g->rsb,
                                         g->csb, blk->bbuf + (long)j * NR * kc + (long)r0 * NR);
                    if (u == 0 && nf1 < n1) // a partial last panel: all of it, zero-padded
                        pack_b_panel(kc, nc - nf1 * NR, bsrc + nf1 * pstep, g->rsb, g->csb,
                                     blk->bbuf + (long)nf1 * NR * kc);
                    // Prefetch what the next tile packs: the next piece of this next group,
                    // or after the last tile, the first piece of the group after.
                    if (u < last_u && r1 < kc && nf1 > n0)
                        bs = pf_matrix(bsrc + r1 * g->rsb + n0 * pstep, MIN(kc, r1 + piece) - r1,
                                       (nf1 - n0) * NR, g->rsb, g->csb);
                    else if (u == last_u && af1 > a0)
                        bs = pf_matrix(bsrc + a0 * pstep, MIN(kc, apiece), (af1 - a0) * NR, g->rsb,
                                       g->csb);
                    pf.s[0] = &bs;
                    pf.n[0] = (int)bs.left;
                } else {
                    pf.s[0] = &whole;
                    pf.n[0] = whole_share;
                }
                int ir = t * MR;
                ukr_any(MIN(MR, mc - ir), nr, kc, blk->abuf + (long)ir * kc,
                        blk->bbuf + (long)q * NR * kc, blk->c + (long)ir * g->ldc + q * NR, g->ldc,
                        blk->overwrite, &pf);
            }
        }
        if (!pieces) // the next group, whole, now that its lines are in cache
            for (int j = n0; j < n1; j++)
                pack_b_panel(kc, MIN(NR, nc - j * NR), bsrc + j * pstep, g->rsb, g->csb,
                             blk->bbuf + (long)j * NR * kc);
        q0 = n0;
        q1 = n1;
    }
}

// A later ic pass: the B block is packed; B micro-panels stay in L1 across the ir loop.
static void later_pass(const gemm_args_t* g, const block_t* blk) {
    int mc = blk->mc, nc = blk->nc, kc = blk->kc;
    ukr_pf_t pf = {{NULL, blk->next_a}, {0, a_share(blk)}};
    for (int jr = 0; jr < nc; jr += NR)
        for (int ir = 0; ir < mc; ir += MR)
            ukr_any(MIN(MR, mc - ir), MIN(NR, nc - jr), kc, blk->abuf + (long)ir * kc,
                    blk->bbuf + (long)jr * kc, blk->c + (long)ir * g->ldc + jr, g->ldc,
                    blk->overwrite, &pf);
}

// Below this depth a micro-tile is too short to hide C's memory traffic behind its FMAs
// (the dW = X^T dH product of a small expert group has k = its token count).
#define SHORT_KC 64

// A short block (kc < SHORT_KC): the whole B block is packed first (it is small), then the
// tiles are walked along C's rows (jr innermost), so that C is written in long sequential
// runs that the hardware prefetcher and the DRAM pages like; the A micro-panel stays in L1
// and the B block in L2.
static void short_pass(const gemm_args_t* g, const block_t* blk, int pack_b) {
    int mc = blk->mc, nc = blk->nc, kc = blk->kc;
    if (pack_b)
        for (int jr = 0; jr < nc; jr += NR)
            pack_b_panel(kc, MIN(NR, nc - jr), blk->bsrc + jr * g->csb, g->rsb, g->csb,
                         blk->bbuf + (long)jr * kc);
    ukr_pf_t pf = {{NULL, blk->next_a}, {0, a_share(blk)}};
    for (int ir = 0; ir < mc; ir += MR)
        for (int jr = 0; jr < nc; jr += NR)
            ukr_any(MIN(MR, mc - ir), MIN(NR, nc - jr), kc, blk->abuf + (long)ir * kc,
                    blk->bbuf + (long)jr * kc, blk->c + (long)ir * g->ldc + jr, g->ldc,
                    blk->overwrite, &pf);
}

static void gemm_rect(const gemm_args_t* g, int m0, int m1, int n0, int n1, const kern_pack_t* pk) {
    for (int jc = n0; jc < n1; jc += NC) {
        int nc = MIN(NC, n1 - jc);
        for (int pc = 0; pc < g->k; pc += KC) {
            int kc = MIN(KC, g->k - pc);
            for (int ic = m0; ic < m1; ic += MC) {
                int mc = MIN(MC, m1 - ic);
                // The A block after this one, in loop order, to prefetch while this one runs.
                int nic = ic + MC, npc = pc, njc = jc;
                if (nic >= m1) nic = m0, npc = pc + KC;
                if (npc >= g->k) npc = 0, njc = jc + NC;
                pf_stream_t next_a = pf_none;
                if (njc < n1)
                    next_a = pf_matrix(g->a + nic * g->rsa + npc * g->csa, MIN(MC, m1 - nic),
                                       MIN(KC, g->k - npc), g->rsa, g->csa);
                block_t blk = {
                    .mc = mc,
                    .nc = nc,
                    .kc = kc,
                    .bsrc = g->b + pc * g->rsb + jc * g->csb,
                    .abuf = pk->a,
                    .bbuf = pk->b,
                    .c = g->c + (long)ic * g->ldc + jc,
                    .overwrite = pc == 0 && !g->accumulate,
                    .next_a = next_a.left > 0 ? &next_a : NULL,
                };
                pack_a_block(mc, kc, g->a + ic * g->rsa + pc * g->csa, g->rsa, g->csa, pk->a);
                if (kc < SHORT_KC)
                    short_pass(g, &blk, ic == m0);
                else if (ic == m0)
                    first_pass(g, &blk);
                else
                    later_pass(g, &blk);
            }
        }
    }
}

#ifdef _OPENMP
// Splits C among up to `nthreads` threads as a grid of mt x nt rectangles on micro-tile
// boundaries, choosing the grid that minimises the largest rectangle (load balance); on a tie
// the one with fewer row splits, since each thread packs all of B for its columns: splitting
// the columns has each weight element read from memory by one thread only. Threads past
// mt*nt idle. Any grid gives the same bits.
static void partition(int m, int n, int k, int nthreads, int* mt_out, int* nt_out) {
    long tiles_m = (m + MR - 1) / MR, tiles_n = (n + NR - 1) / NR;
    if (k < SHORT_KC && tiles_m >= nthreads) {
        // Bound by writing C: give each thread whole rows, so that each writes one
        // contiguous region instead of all threads interleaving within every row
        // (measured: 100 vs 70 GFLOP/s for 64 groups of dW = X^T dH, 32 tokens each, on
        // 2 threads). Non-temporal stores of C were tried as well and were slower.
        *mt_out = nthreads;
        *nt_out = 1;
        return;
    }
    long best_area = -1;
    *mt_out = *nt_out = 1;
    for (int mt = 1; mt <= nthreads && mt <= tiles_m; mt++) {
        int nt = (int)MIN(nthreads / mt, tiles_n);
        long rows = (tiles_m + mt - 1) / mt * MR, cols = (tiles_n + nt - 1) / nt * NR;
        if (best_area < 0 || rows * cols < best_area) {
            best_area = rows * cols;
            *mt_out = mt;
            *nt_out = nt;
        }
    }
}

// Rectangle `idx` of `parts` along a dimension of `tiles` micro-tiles of size `t`, clipped to
// `len`: [*lo, *hi).
static void split(int len, int t, int parts, int idx, int* lo, int* hi) {
    int tiles = (len + t - 1) / t;
    int base = tiles / parts, rem = tiles % parts;
    int first = idx * base + MIN(idx, rem), count = base + (idx < rem);
    *lo = MIN(len, first * t);
    *hi = MIN(len, (first + count) * t);
}

#endif

static void die_no_pack(int tid) {
    fprintf(stderr,
            "moed: kernels: no pack buffer for thread %d (kern_init(%d) too small or "
            "not called)\n",
            tid, kern_pack_threads());
    abort();
}

// Below this many multiply-adds a parallel region costs more than it saves.
#define PARALLEL_MIN_MACS (1L << 18)

static void avx2_sgemm(int m, int n, int k, const float* a, long rsa, long csa, const float* b,
                       long rsb, long csb, float* c, long ldc, int accumulate) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0) {
        if (!accumulate)
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++) c[(long)i * ldc + j] = 0.0f;
        return;
    }
    gemm_args_t g = {m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, accumulate};

    int nthreads = 1, tid0 = 0;
#ifdef _OPENMP
    if (omp_in_parallel()) {
        tid0 = omp_get_thread_num(); // called from a worker: its own buffers, one thread
    } else {
        nthreads = MIN(omp_get_max_threads(), kern_pack_threads());
        if ((long)m * n * k < PARALLEL_MIN_MACS) nthreads = 1;
    }
#endif
    if (nthreads <= 1) {
        const kern_pack_t* pk = kern_pack_for(tid0);
        if (!pk) die_no_pack(tid0);
        gemm_rect(&g, 0, m, 0, n, pk);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(nthreads)
    {
        // The team may be smaller than asked for; partition by what we got.
        int nt_all = omp_get_num_threads(), tid = omp_get_thread_num();
        int mt, nt;
        partition(m, n, k, nt_all, &mt, &nt);
        if (tid < mt * nt) {
            int m0, m1, n0, n1;
            split(m, MR, mt, tid / nt, &m0, &m1);
            split(n, NR, nt, tid % nt, &n0, &n1);
            const kern_pack_t* pk = kern_pack_for(tid);
            if (!pk) die_no_pack(tid);
            if (m0 < m1 && n0 < n1) gemm_rect(&g, m0, m1, n0, n1, pk);
        }
    }
#endif
}

// clang-format off
const kern_table_t kern_avx2_table = {
    .name = "avx2",
    .isa = KERN_AVX2,
    .mr = MR, .nr = NR,
    .mc = MC, .kc = KC, .nc = NC,
    .sgemm = avx2_sgemm,
    .swiglu_fwd = avx2_swiglu_fwd,
    .swiglu_bwd = avx2_swiglu_bwd,
};
// clang-format on
