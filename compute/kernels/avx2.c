// AVX2/FMA sgemm, BLIS-style, on the shared driver (driver.h: loops, packing schedule,
// prefetch, threads, pre-packed B, fused SwiGLU). Compiled with -mavx2 -mfma -O3. This file
// holds what is ISA-specific: the blocking, the packers and the 6x16 micro-kernel.
#include <immintrin.h>

#include "compute/kernels/avx2_swiglu.h"

#define MR 6           // rows of the micro-tile: 6 broadcasts of A per k step
#define NR 16          // columns of the micro-tile: two ymm of B per k step
#define MC 144         // A block MC x KC = 144 KiB: fits the 512 KiB L2 beside the B panels
#define KC 256         // B micro-panel KC x NR = 16 KiB: half of the 32 KiB L1D
#define NC 4080        // B block KC x NC = 4 MiB: a slice of L3
#define ROW_GROUP 4    // row-major B packed 4 panels at a time: runs of 256 B per row
#define KC_BALANCED    // k = 1555 in 7 blocks of 224, not 6 of 256 and one of 19 (kc_block)
#define EVEN_ROW_TILES // 32 rows in tiles of 6, 6, 5, 5, 5, 5, not ..., 6, 2 (tile_rows)
#define VL 8           // floats per ymm
#define WT_MIN_K 1024  // nt products of more than NR rows read B in place from this depth
#define BIP_MAX_M MC   // a first pass of up to MC rows may read B in place (driver.h, bip_pass)
// nt products whose rows of A fill whole panels (m a multiple of NR) read B in place from
// this depth too, prefetching the next tile's weight rows (driver_wt.h)
#define WT_FULL_MIN_K 512
#define WT_PREFETCH_NEXT
// nn products of at most 12 rows stream B's rows (driver_rs.h), 3 weight rows at a time and 4
// rows of A per pass, so each weight vector feeds 4 FMAs. 12 broadcasts, 4 sums and a weight
// vector are one more than the 16 ymm, yet this shape ran fastest (paired: 1.2-1.5x 2 rows of
// A x 6 weight rows, and 3 x 3, at 4 and 8 rows).
#define RS_MAX_M 12
#define RS_ROWS 3
#define RS_MA 4
#define VF __m256 // the vector operations of driver_rs.h's loop and driver_tiles.h's tp_body
#define VF_SET1 _mm256_set1_ps
#define VF_ZERO _mm256_setzero_ps
#define VF_LOADU _mm256_loadu_ps
#define VF_STOREU _mm256_storeu_ps
#define VF_FMA _mm256_fmadd_ps
#define VF_ADD _mm256_add_ps
// The transposing path (driver_tp.h) serves the `nt` products of at most 10 rows, 8 weight rows
// a tile, through transpose8. Paired against the weight-rows path, which took them (64 groups,
// weights in memory, n x k = 1024 x 512, 512 x 1024, 2816 x 1024 and 1024 x 2816): 1-4 rows
// 1.5-1.6x, 6 rows 1.3-1.4x, 7 rows 1.29-1.34x, 8 1.12-1.16x, 9 1.21-1.28x, 10 1.08-1.19x; 11
// rows 0.92-1.03x and 12 0.87-0.93x (10 and more sums beside the transpose's 8 vectors spill
// in the 16 ymm), and two passes of 6 or fewer rows over each tile 0.82-0.97x at 7-12 rows.
#define TP_MAX_M 10
#define TRANSPOSE_VL transpose8
// Products of depth k <= 4 that store a C of at least KERN_STREAM_MIN_C floats write it with
// streaming stores (driver.h, c_streams): below 5 cycles of FMAs per 64-byte line of C, writing
// C is what bounds them (paired, 64 groups of dW = X^T dH, n = 1024 and 2816: k = 2
// 1.07-1.41x, 4 1.02-1.34x, 6 0.97-1.21x, 8 0.89-1.08x; docs/performance.md).
#define STREAM_MAX_K 4
#define STREAM_FENCE _mm_sfence
#define KERN_NAME "avx2"

#include "compute/kernels/driver.h"

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
    if (csa == 1) {
        // A row-major (the NN and NT cases): each row is contiguous in p. Transpose 8 p at a
        // time, rows past mr zero; the 8-float stores overlap, each one's lanes 6..7
        // overwritten by the next (the last one spills 2 floats into the next panel or the
        // slack, packed later).
        for (; p + 8 <= kc; p += 8) {
            __m256 r[8];
            for (int i = 0; i < 8; i++)
                r[i] = i < mr ? _mm256_loadu_ps(a + i * rsa + p) : _mm256_setzero_ps();
            transpose8(r);
            for (int j = 0; j < 8; j++) _mm256_storeu_ps(dst + (p + j) * MR, r[j]);
        }
    }
    for (; p < kc; p++) {
        for (int i = 0; i < mr; i++) dst[p * MR + i] = a[i * rsa + p * csa];
        for (int i = mr; i < MR; i++) dst[p * MR + i] = 0.0f;
    }
}

// The A block: rows [0, mc) into one micro-panel per row tile (tile_rows), panel t at
// dst + t*MR*kc, in increasing t (pack_a_panel's spill).
static void pack_a_block(int mc, int kc, const float* a, long rsa, long csa, float* dst) {
    int tiles = (mc + MR - 1) / MR, t = 0, ir;
    if (rsa == 1 && csa != 1) {
        // A column-major (TN, TT): a p-slice of all mc rows is contiguous. Walk p outermost
        // so each source line is read once; p-inner per panel would stride by csa and, for
        // power-of-two csa, thrash one L1 set per panel. The leading full tiles (t * MR rows
        // each) this way, the others below.
        while (t < tiles && tile_rows(mc, t, &ir) == MR) t++;
        for (int p = 0; p < kc; p++) {
            const float* src = a + p * csa;
            float* d = dst + p * MR;
            for (int r = 0; r < t * MR; r += MR, d += (long)MR * kc) {
                _mm_storeu_ps(d, _mm_loadu_ps(src + r));
                d[4] = src[r + 4];
                d[5] = src[r + 5];
            }
        }
    }
    for (; t < tiles; t++) {
        int mr = tile_rows(mc, t, &ir);
        pack_a_panel(mr, kc, a + ir * rsa, rsa, csa, dst + (long)t * MR * kc);
    }
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
// Micro-kernel. C[mr, 8*nv] (+)= Ap[kc][MR] * Bp[kc][NR] for compile-time mr in 1..MR and
// nv in 1..2 (instantiated by driver_tiles.h): one register per (row, 8 columns), the p loop
// innermost, one FMA per accumulator per p. The full 6x16 tile uses 12 accumulators, 2 B registers
// and 1 broadcast register; the smaller ones exist so a partial tile costs less than a full one and
// produce bit-identical values, since each accumulator sees the same FMA chain. overwrite = 1
// stores the sum, 0 adds it to C; stream = 1 (a constant wherever the body is inlined) stores it
// with streaming stores (driver.h, c_streams). Row i of A's tile is read at ap + i*ars and steps by
// acs per p: packed A (1, MR), or the rows of a weight read in place (ldw, 1; the weight-rows path,
// driver_wt.h). B's row p is at bp + p*bsr: a packed panel (NR), or a weight's panel read in
// place (its row stride; bip_pass in driver.h), which is then also stored, packed, at bc
// [kc][NR] (64-byte aligned) when bc is not NULL.
// ---------------------------------------------------------------------------------------------

// One k step of the micro-tile: two loads of B, mr broadcasts of A, mr*nv FMAs.
static inline __attribute__((always_inline)) void
ukr_step(int mr, int nv, __m256 acc[MR][2], const float* ap, long ars, const float* bp, float* bc) {
    __m256 b0 = _mm256_loadu_ps(bp); // unaligned: B may be a weight read in place (bip_pass)
    __m256 b1 = nv > 1 ? _mm256_loadu_ps(bp + 8) : b0;
    if (bc) {
        _mm256_store_ps(bc, b0);
        if (nv > 1) _mm256_store_ps(bc + 8, b1);
    }
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++) {
        __m256 ai = _mm256_broadcast_ss(ap + i * ars);
        acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
        if (nv > 1) acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
    }
}

static inline __attribute__((always_inline)) void
ukr_body(int mr, int nv, int kc, const float* restrict ap, long ars, long acs,
         const float* restrict bp, long bsr, float* restrict bc, float* c, long ldc, int overwrite,
         int stream, const ukr_pf_t* pf) {
    __m256 acc[MR][2];
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++) {
        acc[i][0] = _mm256_setzero_ps();
        acc[i][1] = _mm256_setzero_ps();
        // C is read or written at the end: start bringing its lines in now (unless the
        // stores stream past the cache).
        if (!stream) {
            _mm_prefetch((const char*)(c + i * ldc), _MM_HINT_T0);
            _mm_prefetch((const char*)(c + i * ldc + 8 * nv - 1), _MM_HINT_T0);
        }
    }
    int p = 0, n0, n1, gap = pf_lines(pf, kc, &n0, &n1);
    if (gap > 0) {
        for (int i = 0; i < n0 + n1; i++) {
            pf_issue(i < n0 ? pf->s[0] : pf->s[1]);
            // Unrolled: the loop's own add/compare/branch per k step measured 1-10% of the
            // large products on a shared core (avx2), most when a neighbour loads the core.
#pragma GCC unroll 4
            for (int j = 0; j < gap; j++, p++, ap += acs, bp += bsr)
                ukr_step(mr, nv, acc, ap, ars, bp, bc ? bc + p * NR : NULL);
        }
    }
#pragma GCC unroll 4
    for (; p < kc; p++, ap += acs, bp += bsr)
        ukr_step(mr, nv, acc, ap, ars, bp, bc ? bc + p * NR : NULL);
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++) {
#pragma GCC unroll 2
        for (int v = 0; v < nv; v++) {
            float* cp = c + i * ldc + 8 * v;
            __m256 r = overwrite ? acc[i][v] : _mm256_add_ps(_mm256_loadu_ps(cp), acc[i][v]);
            if (stream)
                _mm256_stream_ps(cp, r); // 32-byte aligned: c_streams checked C's rows
            else
                _mm256_storeu_ps(cp, r);
        }
    }
}

// The kernel tables, ukr_any and ukr_wt (driver_tiles.h), for tiles of 1..MR rows.
#define TILE_ROWS(X) X(1) X(2) X(3) X(4) X(5) X(6)
#define TP_ROWS(X) TILE_ROWS(X) X(7) X(8) X(9) X(10) // TP_MAX_M = 10
#include "compute/kernels/driver_tiles.h"

// The weight-rows path's C tile (driver_wt.h): a full tile's 6 columns of 8 rows at a time
// through transpose8, each C row as an xmm and a pair of floats; a tile at C's right edge
// element by element.
_Static_assert(MR == 6, "ct_load and ct_store move a C row's 6 floats as 4 + 2");

static void ct_load(int ms, int mr, float* ct, const float* c, long ldc) {
    if (mr < MR) {
        ct_load_any(ms, mr, ct, c, ldc);
        return;
    }
    for (int h = 0; h < ms; h += 8) {
        __m256 r[8];
        for (int i = 0; i < 8; i++) {
            r[i] = _mm256_setzero_ps();
            if (h + i >= ms) continue;
            const float* d = c + (h + i) * ldc;
            // d[4], d[5], 0, 0 (movlps: no alignment; _mm_load_sd's double would want 8 bytes)
            __m128 pair = _mm_loadl_pi(_mm_setzero_ps(), (const __m64*)(d + 4));
            r[i] = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(d)), pair, 1);
        }
        transpose8(r);
        for (int j = 0; j < MR; j++) _mm256_store_ps(ct + j * NR + h, r[j]);
    }
}

static void ct_store(int ms, int mr, const float* ct, float* c, long ldc) {
    if (mr < MR) {
        ct_store_any(ms, mr, ct, c, ldc);
        return;
    }
    for (int h = 0; h < ms; h += 8) {
        __m256 r[8];
        for (int j = 0; j < MR; j++) r[j] = _mm256_load_ps(ct + j * NR + h);
        for (int j = MR; j < 8; j++) r[j] = _mm256_setzero_ps();
        transpose8(r);
        for (int i = 0; i < 8 && h + i < ms; i++) {
            float* d = c + (h + i) * ldc;
            _mm_storeu_ps(d, _mm256_castps256_ps128(r[i]));
            _mm_storel_pi((__m64*)(d + 4), _mm256_extractf128_ps(r[i], 1));
        }
    }
}

// out = silu(h0) * h1 over a tile, 8 columns at a time with avx2_swiglu.h's formula; a column
// tail goes through a zero-padded vector, as in avx2_swiglu_fwd, so every element gets the
// same bits as there.
static void swiglu_tile(int mr, int nr, const float* h0, const float* h1, float* out, long ld) {
    for (int i = 0; i < mr; i++, h0 += ld, h1 += ld, out += ld) {
        int j = 0;
        for (; j + 8 <= nr; j += 8) avx2_swiglu8(h0 + j, h1 + j, out + j);
        if (j < nr) avx2_swiglu_tail(nr - j, h0 + j, h1 + j, out + j);
    }
}

// clang-format off
const kern_table_t kern_avx2_table = {
    .name = KERN_NAME,
    .isa = KERN_AVX2,
    .mr = MR, .nr = NR,
    .mc = MC, .kc = KC, .nc = NC,
    .wt_max_m = WT_MAX_M,
    .wt_min_k = WT_MIN_K,
    .wt_full_min_k = WT_FULL_MIN_K,
    .wc_min_m = WC_MIN_M,
    .wc_max_m = WC_MAX_M,
    .tp_max_m = TP_MAX_M,
    .rs_max_m = RS_MAX_M,
    .bip_max_m = BIP_MAX_M,
    .stream_max_k = STREAM_MAX_K,
    .sgemm = drv_sgemm,
    .sgemm_packed = drv_sgemm_packed,
    .gemm_swiglu = drv_gemm_swiglu,
    .packed_floats = drv_packed_floats,
    .pack_b = drv_pack_b,
    .pack_b_part = drv_pack_b_part,
    .swiglu_fwd = avx2_swiglu_fwd,
    .swiglu_bwd = avx2_swiglu_bwd,
};
// clang-format on
