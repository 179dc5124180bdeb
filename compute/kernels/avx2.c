// AVX2/FMA sgemm, BLIS-style (Van Zee & van de Geijn, "BLIS: A Framework for Rapidly
// Instantiating BLAS Functionality", TOMS 2015). Compiled with -mavx2 -mfma -O3.
//
//   for jc in [0, n) step NC            B block  KC x NC  lives in L3, packed per thread
//     for pc in [0, k) step KC          the k loop: sequential, never split between threads
//       for ic in [0, m) step MC        A block  MC x KC  packed, lives in L2
//         for jr in [0, nc) step NR     B micro-panel KC x NR  lives in L1
//           for ir in [0, mc) step MR   A micro-panel MR x KC  streams from L2
//             micro-kernel: C[MR, NR] (+)= A-panel * B-panel, 12 ymm accumulators
//
// The B micro-panels are packed lazily during the first ic pass (right before the micro-kernel
// uses them, so they are still in L1), and reused from the B block by the later ic passes.
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

_Static_assert(MC % MR == 0 && NC % NR == 0, "cache blocks must hold whole micro-tiles");
_Static_assert(KERN_PACK_SLACK >= 8, "transposing A packer stores up to 2 floats past a panel");

// ---------------------------------------------------------------------------------------------
// Packing. A micro-panel of A is [kc][MR] (MR consecutive rows for each p), a micro-panel of B
// is [kc][NR] (NR consecutive columns for each p). Rows or columns past the matrix edge are
// zero, so the micro-kernel always runs full-width arithmetic on them and the results are
// simply not stored. All four transposition cases are a choice of (rs, cs) read here.
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
static void pack_a_panel(int mr, int kc, const float* a, long rsa, long csa,
                         float* restrict dst) {
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
// `next`, when not NULL, is the source of the next full panel: its lines are prefetched while
// this one is packed, so they arrive from memory while the micro-kernels run on this panel.
// (The panels of a weight are used by only a few micro-tiles when m is small; without this
// the packing would wait on memory latency once per row.)
static void pack_b_panel(int kc, int nr, const float* b, long rsb, long csb, const float* next,
                         float* restrict dst) {
    int p = 0;
    if (nr == NR && csb == 1) {
        // B row-major (NN, TN): NR contiguous floats per p.
        for (; p < kc; p++) {
            const float* src = b + p * rsb;
            if (next) {
                _mm_prefetch((const char*)(next + p * rsb), _MM_HINT_T0);
                _mm_prefetch((const char*)(next + p * rsb + NR - 1), _MM_HINT_T0);
            }
            _mm256_store_ps(dst + p * NR, _mm256_loadu_ps(src));
            _mm256_store_ps(dst + p * NR + 8, _mm256_loadu_ps(src + 8));
        }
    } else if (nr == NR && rsb == 1) {
        // B column-major (NT, TT: B is a transposed weight): each column is contiguous in p.
        // Two 8x8 transposes per 8 p.
        for (; p + 8 <= kc; p += 8) {
            for (int h = 0; h < NR; h += 8) {
                __m256 r[8];
                for (int j = 0; j < 8; j++) {
                    if (next) _mm_prefetch((const char*)(next + (h + j) * csb + p), _MM_HINT_T0);
                    r[j] = _mm256_loadu_ps(b + (h + j) * csb + p);
                }
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
// Micro-kernel. C[mr, 8*nv] (+)= Ap[kc][MR] * Bp[kc][NR] for compile-time mr in 1..MR and
// nv in 1..2 (instantiated below): one register per (row, 8 columns), the p loop innermost,
// one FMA per accumulator per p. The full 6x16 tile uses 12 accumulators, 2 B registers and
// 1 broadcast register; the smaller ones exist so a partial tile costs less than a full one
// and produce bit-identical values, since each accumulator sees the same FMA chain.
// overwrite = 1 stores the sum, 0 adds it to C.
// ---------------------------------------------------------------------------------------------

static inline __attribute__((always_inline)) void ukr_body(int mr, int nv, int kc,
                                                           const float* restrict ap,
                                                           const float* restrict bp, long ldb,
                                                           float* c, long ldc, int overwrite) {
    __m256 acc[MR][2];
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++) {
        acc[i][0] = _mm256_setzero_ps();
        acc[i][1] = _mm256_setzero_ps();
        // C is read at the end: start bringing its lines in now.
        _mm_prefetch((const char*)(c + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char*)(c + i * ldc + 8 * nv - 1), _MM_HINT_T0);
    }
#pragma GCC unroll 4
    for (int p = 0; p < kc; p++) {
        __m256 b0 = _mm256_loadu_ps(bp);
        __m256 b1 = nv > 1 ? _mm256_loadu_ps(bp + 8) : b0;
#pragma GCC unroll 6
        for (int i = 0; i < mr; i++) {
            __m256 ai = _mm256_broadcast_ss(ap + i);
            acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
            if (nv > 1) acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
        }
        ap += MR;
        bp += ldb;
    }
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

typedef void (*ukr_fn)(int kc, const float* ap, const float* bp, long ldb, float* c, long ldc,
                       int overwrite);

#define UKR(M, V)                                                                              \
    static void ukr_##M##x##V(int kc, const float* ap, const float* bp, long ldb, float* c,   \
                              long ldc, int overwrite) {                                       \
        ukr_body(M, V, kc, ap, bp, ldb, c, ldc, overwrite);                                    \
    }
UKR(1, 1) UKR(2, 1) UKR(3, 1) UKR(4, 1) UKR(5, 1) UKR(6, 1)
UKR(1, 2) UKR(2, 2) UKR(3, 2) UKR(4, 2) UKR(5, 2) UKR(6, 2)

// [rows][ymm columns]
static const ukr_fn ukr_tab[MR + 1][3] = {
    {0, 0, 0},
    {0, ukr_1x1, ukr_1x2},
    {0, ukr_2x1, ukr_2x2},
    {0, ukr_3x1, ukr_3x2},
    {0, ukr_4x1, ukr_4x2},
    {0, ukr_5x1, ukr_5x2},
    {0, ukr_6x1, ukr_6x2},
};

// C[mr, nr] (+)= panels, for any mr <= MR, nr <= NR. Column counts that are not a multiple
// of 8 go through a temporary tile so nothing outside C is read or written.
static inline void ukr_any(int mr, int nr, int kc, const float* ap, const float* bp, long ldb,
                           float* c, long ldc, int overwrite) {
    int nv = (nr + 7) / 8;
    if (nr % 8 == 0) {
        ukr_tab[mr][nv](kc, ap, bp, ldb, c, ldc, overwrite);
        return;
    }
    float tile[MR * NR] __attribute__((aligned(32))); // [mr][NR]: the product, C untouched
    ukr_tab[mr][nv](kc, ap, bp, ldb, tile, NR, 1);
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

#ifndef DIRECT_B_MAX_M
#define DIRECT_B_MAX_M 48
#endif
static void gemm_rect(const gemm_args_t* g, int m0, int m1, int n0, int n1,
                      const kern_pack_t* pk) {
    float* abuf = pk->a; // [MC/MR panels][KC][MR]
    float* bbuf = pk->b; // [NC/NR panels][KC][NR]
    int direct_b = g->csb == 1 && m1 - m0 <= DIRECT_B_MAX_M;
    for (int jc = n0; jc < n1; jc += NC) {
        int nc = MIN(NC, n1 - jc);
        for (int pc = 0; pc < g->k; pc += KC) {
            int kc = MIN(KC, g->k - pc);
            int overwrite = pc == 0 && !g->accumulate;
            for (int ic = m0; ic < m1; ic += MC) {
                int mc = MIN(MC, m1 - ic);
                pack_a_block(mc, kc, g->a + ic * g->rsa + pc * g->csa, g->rsa, g->csa, abuf);
                for (int jr = 0; jr < nc; jr += NR) {
                    int nr = MIN(NR, nc - jr);
                    const float* src = g->b + pc * g->rsb + (jc + jr) * g->csb;
                    const float* bp = src; // B micro-panel [kc][ldb]
                    long ldb = g->rsb;
                    if (!direct_b || nr % 8) {
                        float* dst = bbuf + (long)jr * kc;
                        if (ic == m0) {
                            const float* next = jr + 2 * NR <= nc ? src + NR * g->csb : NULL;
                            pack_b_panel(kc, nr, src, g->rsb, g->csb, next, dst);
                        }
                        bp = dst;
                        ldb = NR;
                    }
                    float* cblk = g->c + (long)ic * g->ldc + jc + jr;
                    for (int ir = 0; ir < mc; ir += MR)
                        ukr_any(MIN(MR, mc - ir), nr, kc, abuf + (long)ir * kc, bp, ldb,
                                cblk + (long)ir * g->ldc, g->ldc, overwrite);
                }
            }
        }
    }
}

// Splits C among up to `nthreads` threads as a grid of mt x nt rectangles on micro-tile
// boundaries, choosing the grid that minimises the largest rectangle (load balance), then
// the packing each thread repeats (rows + columns of its rectangle). Threads past mt*nt idle.
// Any grid gives the same bits.
static void partition(int m, int n, int nthreads, int* mt_out, int* nt_out) {
    long tiles_m = (m + MR - 1) / MR, tiles_n = (n + NR - 1) / NR;
    long best_area = -1, best_edge = 0;
    *mt_out = *nt_out = 1;
    for (int mt = 1; mt <= nthreads && mt <= tiles_m; mt++) {
        int nt = (int)MIN(nthreads / mt, tiles_n);
        long rows = (tiles_m + mt - 1) / mt * MR, cols = (tiles_n + nt - 1) / nt * NR;
        long area = rows * cols, edge = rows + cols;
        if (best_area < 0 || area < best_area || (area == best_area && edge < best_edge)) {
            best_area = area;
            best_edge = edge;
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

static void die_no_pack(int tid) {
    fprintf(stderr, "moed: kernels: no pack buffer for thread %d (kern_init(%d) too small or "
                    "not called)\n", tid, kern_pack_threads());
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
        partition(m, n, nt_all, &mt, &nt);
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

const kern_table_t kern_avx2_table = {
    .name = "avx2",
    .isa = KERN_AVX2,
    .mr = MR, .nr = NR,
    .mc = MC, .kc = KC, .nc = NC,
    .sgemm = avx2_sgemm,
};
