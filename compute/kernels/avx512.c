// AVX-512 sgemm and SwiGLU, BLIS-style like avx2.c (Van Zee & van de Geijn, TOMS 2015).
//
// One source, two builds. Every intrinsic is written with SIMDe's names (simde_mm512_*,
// <simde/x86/avx512.h>, native aliases off):
// - native (moedcore, CMakeLists.txt gives avx512*.c -mavx512f/dq/vl/bw -mfma -O3): SIMDe maps
//   each call to the AVX-512 instruction itself; defines kern_avx512_table ("avx512"), served
//   by dispatch.c on CPUs with AVX-512 F/DQ/VL/BW;
// - emulated (tests/CMakeLists.txt, target moed_avx512_emu: -mavx2 -mfma -O3
//   -DMOED_KERN_AVX512_EMULATED): SIMDe lowers each 512-bit operation to two AVX2/FMA ones
//   (an FMA stays one fused FMA), so the same micro-kernels, packing and edge handling run,
//   at about a tenth of the native speed, on CPUs without AVX-512; defines kern_avx512_emu_table
//   ("avx512-emulated"), which only the unit tests use. Nothing here uses what Debian's SIMDe 0.7.4
//   lacks (masked loads/stores, reduce_add, cvtps_epi32): tails go through zero-padded packed
//   panels and a temporary C tile, as in avx2.c.
//
// Micro-tile MR x NR = 12 x 32: 12 rows (broadcasts of A) x 2 zmm of B (32 columns).
// - Latency x throughput: a Xeon core retires 2 zmm FMAs per cycle with 4 cycles of latency,
//   so at least 8 independent accumulator chains keep both ports busy; 24 leave 3x that margin
//   (each chain waits 12 cycles between its FMAs, for 4 needed), which also absorbs the L2
//   latency of the A stream. It is BLIS's SKX sgemm shape (32 x 12 there, C column-major).
// - Registers: 24 accumulators + 2 B vectors + 1 broadcast = 27 of the 32 zmm, so the compiler
//   has room for addresses and temporaries without spilling in the k loop. 14 x 32 (28
//   accumulators) would use 31 and gain 1/14 in loads per FMA; 6 x 64 (24 accumulators, 4 B
//   vectors per k step) needs B micro-panels twice as wide, doubling partial-tile waste on the
//   MoE shapes' n.
// - Loads per k step: 2 aligned zmm of B from L1 + 12 broadcasts of A = 14 loads for 24 FMAs,
//   inside the 2 loads per cycle of the load ports while the FMAs take 12 cycles.
// - MR = 12 covers the MoE layer's small m (tokens per expert, e.g. 32 = 12 + 12 + 8) with
//   full or near-full tiles; partial tiles have their own smaller kernels (driver_tiles.h).
// Cache blocks:
// - KC = 192: the B micro-panel KC x NR x 4 B = 24 KiB is half of the 48 KiB L1D of Ice Lake /
//   Sapphire Rapids (the avx2.c rule); the A micro-panel (9 KiB) streams beside it. On 32 KiB
//   L1D parts (Skylake-X) B spills to L2 partly, which its bandwidth (64 B/cycle) still feeds:
//   128 B of B per 12 cycles.
// - MC = 384 (32 micro-tiles): the A block MC x KC x 4 B = 288 KiB sits in a 1-2 MiB L2 beside
//   the B micro-panels, and each B micro-panel is reused 32 times per L1 fill.
// - NC = 4064 (127 x NR): the B block KC x NC = 3 MiB, a slice of L3; KC * (NC + NR) = 3 MiB
//   of pack buffer (dispatch.c sizes for the largest compiled table).
// First measurements (an Intel Xeon with AVX-512 FP16, i.e. Sapphire Rapids class, in a VM
// whose runs vary by +-25%; one thread unless said): 1536^3 120-150 GFLOP/s (avx2.c: 80),
// 16 threads 0.8-1.1 TFLOP/s (avx2.c: 0.74-0.81); the MoE shapes 32x1024x4096 ~90 (avx2.c: 64),
// 32x4096x1024 ~75 (61), 1024x4096x32 ~133 (78). Of six (KC, MC) pairs tried, KC in 128-384
// and MC in 240-768, KC = 192 / MC = 384 was best or within noise of it on every shape; KC =
// 256 and 384 ran the small-m shapes 10-45% slower. Worth re-measuring with moed-bench gemm.
//
// The loops, packing schedule, prefetch, threads, pre-packed B and fused SwiGLU epilogue are
// the shared driver's (driver.h, also avx2.c's). Row-major B is read in groups of 2 panels
// (runs of 2 x 128 B per row, the run length measured best on AVX2).
//
// Determinism (DESIGN.md §3): every C element is one FMA chain over p inside a KC block,
// starting from zero, and the KC blocks are added to C in increasing order (the first one
// stores when accumulate = 0). The partial-tile kernels run the same chain per element, so the
// bits of a C element do not depend on the tile it falls in, on the thread partition, or on
// the thread count. Threads own disjoint rectangles of C and pack their own copies of A and
// B. The bits need not equal avx2's or ref's (different KC), only be a function of the inputs;
// the native and emulated builds agree with each other as well, both doing the same IEEE
// operations in the same order.
#include <simde/x86/avx512.h>

#ifdef MOED_KERN_AVX512_EMULATED
#define KERN_TABLE kern_avx512_emu_table
#define KERN_NAME "avx512-emulated"
#else
#if !defined(__AVX512F__) || !defined(SIMDE_X86_AVX512F_NATIVE)
#error "compute/kernels/avx512.c: the native build needs -mavx512f (CMakeLists.txt sets it)"
#endif
#define KERN_TABLE kern_avx512_table
#define KERN_NAME "avx512"
#endif

#define MR 12       // rows of the micro-tile: 12 broadcasts of A per k step
#define NR 32       // columns of the micro-tile: two zmm of B per k step
#define MC 384      // A block MC x KC = 288 KiB: in L2 beside the B panels
#define KC 192      // B micro-panel KC x NR = 24 KiB: half of a 48 KiB L1D
#define NC 4064     // B block KC x NC = 3 MiB: a slice of L3
#define ROW_GROUP 2 // row-major B packed 2 panels at a time: runs of 256 B per row
// The prefetch streams (next pieces of B, next A block) go to L2 (prefetcht1), not L1: the
// kernel's own loads keep the L1 fill buffers, and the lines move to L1 when the packing or
// the next panel's first tile reads them. Paired in-process on the 16-core Xeon, groups of 32
// rows from memory: nn 1.01-1.05, nt 1.01-1.05, fused up 1.01-1.13, pre-packed 1.02-1.03,
// tn 0.99-1.01; 512 rows 0.996-1.003. On the Zen 5 dev box: nn 1.02-1.03, nt 1.01-1.05,
// tn 1.02, pre-packed 0.99, fused up 0.94-1.09 (noisy). The same bits either way.
#define PF_LOCALITY 2

#define VL 16 // floats per zmm
// The weight-columns path (driver_wc.h) serves the `nn` products of 25 to 32 rows: from 25 the
// blocked loops need a third row tile, mostly empty; at 24 and fewer their two tiles are full
// where the path's lanes are not (paired: 0.89-1.00x the blocked loops at 20-24 rows,
// 1.03-1.15x at 26-30, 1.16-1.28x at 32).
// Only on AMD CPUs (measured on the Zen 5; Zen 4 has the same L1 stride prefetcher), whose
// prefetchers keep up with the tile's 12 column reads down the weight, one row stride (4-11
// KiB) per step. Intel's do not: its IP prefetcher follows strides of at most 2 KiB and its L2
// streamer stays inside a 4 KiB page, and each row of a tile is a new page, so the path waits
// on demand misses there. On the 16-core Xeon of the device it ran up and down of the groups
// of 32 at 41-54 GFLOP/s, 19-28% of the peak, half of oneDNN, and the in-place first pass that
// takes those rows instead ran 1.3-2.2x faster (paired alternately, 1 thread; software prefetch
// of the next KC block brought the path to 1.4-2.5x there, but cost it 2-11% on the Zen 5, and
// still trailed the first pass; docs/performance.md).
#define WC_MIN_M (2 * MR + 1)
#define WC_MAX_M NR
#ifdef MOED_KERN_AVX512_EMULATED
#define WC_CPU_OK() 1 // the tests run the path's code on any CPU
#else
#define WC_CPU_OK() __builtin_cpu_is("amd")
#endif
// A first pass of up to 192 rows may read a row-major weight in place (driver.h, bip_pass):
// paired against the packed first pass at n = 2816 (fused) and 1000, 16 rows 1.26-1.32x, 24
// rows 1.21-1.28x, 48 rows 1.09-1.12x, 96 rows 1.06-1.08x, 192 rows 1.05-1.06x; 288 and 384
// rows 0.97-1.05x.
#define BIP_MAX_M 192
// The row-streaming path (driver_rs.h) serves the `nn` products of at most 10 rows, 4 rows of A
// per pass over 6 weight rows (24 broadcasts, 4 sums and a weight vector in the 32 zmm): each
// weight vector feeds 4 FMAs. Paired against a row per pass over 8 weight rows (up to 8 rows)
// and the blocked loops (9-13): 2 rows 1.20x, 4 1.30x, 8 1.23x, 12 1.15x, 13 1.00-1.08x. Since
// the in-place first pass (bip_pass) the blocked loops take 13 rows faster, 1.21-1.24x over
// four shapes (two row tiles, 12 + 1), and since its single tile prefetches the whole next
// panel, 11 rows 1.13-1.49x and 12 rows 1.02-1.14x (plain and fused, the four `nn` shapes of
// the two model sizes), while 10 rows stay here (the blocked loops 0.90-0.96x at three shapes,
// 1.08-1.09x at n x k = 2816 x 1024; docs/performance.md, 2026-11-28 16:37). Its loop, and
// driver_tiles.h's tp_body, are written with these vector operations.
#define RS_MAX_M 10
#define RS_ROWS 6
#define RS_MA 4
// At a row stride of a multiple of 4 KiB (driver_rs.h), up to 8 rows of A a pass over 2 weight
// rows a step (16 broadcasts, 8 sums and a weight vector): 6 rows a step, 4 rows of A a pass,
// put 6 + 6 weight lines and 4 sums lines in one L1 set. Paired against that (32 or 12 groups,
// weights in memory; n x k = 1024 x 512 plain and fused, 1024 x 2816): 1-3 rows 0.96-1.12x
// (the weight's stream bounds them either way), 4 rows 1.26-1.50x, 5-7 rows 1.40-1.56x, 8 rows
// 1.16-1.27x; in two even passes 9 rows 1.26-1.30x, 10 1.09-1.11x, 11 1.06-1.09x (now the
// blocked loops'), 12 (6 + 6) 0.84-0.85x. 2 rows a step with 4 rows of A a pass lost at 7 rows (4 +
// 3: 0.89-0.93x) and at 10-12 (0.79-0.92x); avx2 (3 rows a step, 10 lines in the set) lost with
// every such mode tried (0.50-0.95x; docs/performance.md).
#define RS_ALIAS_MAX_M RS_MAX_M
#define RS_ROWS_ALIAS 2
#define RS_MA_ALIAS 8
#define VF simde__m512
#define VF_SET1 simde_mm512_set1_ps
#define VF_ZERO simde_mm512_setzero_ps
#define VF_LOADU simde_mm512_loadu_ps
#define VF_STOREU simde_mm512_storeu_ps
#define VF_FMA simde_mm512_fmadd_ps
#define VF_ADD simde_mm512_add_ps
// The transposing path (driver_tp.h) serves the `nt` products of at most 16 rows, 16 weight
// rows a tile, through transpose16. Paired against the weight-rows path, which took them (64
// groups, weights in memory, n x k = 1024 x 512, 512 x 1024 and 1024 x 2816): 1-2 rows
// 1.4-1.6x, 4 rows 1.3-1.6x, 8 rows 1.4-1.5x, 12 rows 1.2-1.3x. Past 12 rows (MR) the 16 sums
// and the 16 transposed vectors fill the 32 zmm, and it still wins, in one pass (2816 x 1024
// as well): 13-14 rows 1.15-1.26x, 15 rows 1.05-1.18x, 16 rows 0.94-1.14x (about even); and
// built with TP_MAX_M = 16 its 12 rows ran 1.09-1.18x faster than built with 12 (GCC
// allocates the registers differently; the code is otherwise the same). Two passes over each
// tile (re-reading and re-transposing it) lost: 13-24 rows 0.88-1.02x.
#define TP_MAX_M 16
#define TRANSPOSE_VL transpose16
// Products of depth k <= 12 that store a C of at least KERN_STREAM_MIN_C floats write it with
// streaming stores (driver.h, c_streams): below 6 cycles of FMAs per 64-byte line of C, writing
// C is what bounds them. Paired on the Zen 5, 64 groups of dW = X^T dH, n = 1024 and 2816: k =
// 2 1.30-1.57x, 4 1.30-1.71x, 8 1.09-1.74x, 10 1.12-1.19x (n = 2816), 12 0.95-1.33x (median
// 1.07 at n = 2816), 14 1.01x, 16 0.97-1.20x, 24 0.91-1.08x (docs/performance.md). SIMDe 0.7.4 has
// no 512-bit streaming store, so the emulated build (tests only) stores normally: the same bits
// either way.
#define STREAM_MAX_K 12
#define STREAM_FENCE simde_mm_sfence
#ifdef MOED_KERN_AVX512_EMULATED
#define STREAM_PS simde_mm512_storeu_ps
#else
#define STREAM_PS _mm512_stream_ps
#endif

#include "compute/kernels/driver.h"

_Static_assert(MR <= VL, "the transposing A packer fits MR rows in one 16 x 16 transpose");
_Static_assert(KERN_PACK_SLACK >= VL - MR,
               "transposing A packer stores up to VL - MR floats past a panel");

// ---------------------------------------------------------------------------------------------
// Packing. A micro-panel of A is [kc][MR] (MR consecutive rows for each p), a micro-panel of B
// is [kc][NR] (NR consecutive columns for each p). Rows or columns past the matrix edge are
// packed as zeros: a partial tile computes whole 16-column vectors on them into a temporary
// tile, of which only the valid part reaches C. All four transposition cases are a choice of
// (rs, cs) read here.
// ---------------------------------------------------------------------------------------------

// In-register 16x16 transpose: r[i] lane j  ->  r[j] lane i. Pairs of rows interleave within
// 128-bit lanes (unpack), quads of rows gather one column per lane (shuffle_ps), then a 4x4
// transpose of 128-bit lanes (two rounds of shuffle_f32x4) puts each column in one register.
static inline __attribute__((always_inline)) void transpose16(simde__m512 r[16]) {
    simde__m512 t[16], s[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = simde_mm512_unpacklo_ps(r[i], r[i + 1]);     // per lane: r0[0] r1[0] r0[1] r1[1]
        t[i + 1] = simde_mm512_unpackhi_ps(r[i], r[i + 1]); // per lane: r0[2] r1[2] r0[3] r1[3]
    }
    for (int g = 0; g < 4; g++) { // rows 4g..4g+3: s[4g + c] lane L = column 4L + c
        s[4 * g + 0] = simde_mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
        s[4 * g + 1] = simde_mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0xee);
        s[4 * g + 2] = simde_mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
        s[4 * g + 3] = simde_mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xee);
    }
    for (int c = 0; c < 4; c++) { // column 4L + c: lane g from s[4g + c] lane L
        simde__m512 u0 = simde_mm512_shuffle_f32x4(s[c], s[4 + c], 0x44); // s0.L0 L1 s4.L0 L1
        simde__m512 u1 = simde_mm512_shuffle_f32x4(s[c], s[4 + c], 0xee); // s0.L2 L3 s4.L2 L3
        simde__m512 u2 = simde_mm512_shuffle_f32x4(s[8 + c], s[12 + c], 0x44);
        simde__m512 u3 = simde_mm512_shuffle_f32x4(s[8 + c], s[12 + c], 0xee);
        r[c] = simde_mm512_shuffle_f32x4(u0, u2, 0x88);      // lane 0 of s0, s4, s8, s12
        r[4 + c] = simde_mm512_shuffle_f32x4(u0, u2, 0xdd);  // lane 1
        r[8 + c] = simde_mm512_shuffle_f32x4(u1, u3, 0x88);  // lane 2
        r[12 + c] = simde_mm512_shuffle_f32x4(u1, u3, 0xdd); // lane 3
    }
}

// One A micro-panel: rows [0, mr) of a (element (r, p) at a[r*rsa + p*csa]) into dst [kc][MR].
static void pack_a_panel(int mr, int kc, const float* a, long rsa, long csa, float* restrict dst) {
    int p = 0;
    if (mr == MR && csa == 1) {
        // A row-major (the NN and NT cases): each row is contiguous in p. Transpose 16 p at a
        // time (rows MR..15 zero); the 16-float stores overlap, each one's lanes MR..15
        // overwritten by the next (the last one spills VL - MR floats into the next panel or
        // the slack, packed later).
        for (; p + VL <= kc; p += VL) {
            simde__m512 r[16];
            for (int i = 0; i < MR; i++) r[i] = simde_mm512_loadu_ps(a + i * rsa + p);
            for (int i = MR; i < 16; i++) r[i] = simde_mm512_setzero_ps();
            transpose16(r);
            for (int j = 0; j < 16; j++) simde_mm512_storeu_ps(dst + (p + j) * MR, r[j]);
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
        // power-of-two csa, thrash one L1 set per panel. 12 floats = one ymm + one xmm.
        int full = mc / MR * MR;
        for (int p = 0; p < kc; p++) {
            const float* src = a + p * csa;
            float* d = dst + p * MR;
            for (int ir = 0; ir < full; ir += MR, d += (long)MR * kc) {
                simde_mm256_storeu_ps(d, simde_mm256_loadu_ps(src + ir));
                simde_mm_storeu_ps(d + 8, simde_mm_loadu_ps(src + ir + 8));
            }
        }
        if (full < mc) pack_a_panel(mc - full, kc, a + full, rsa, csa, dst + (long)full * kc);
        return;
    }
    for (int ir = 0; ir < mc; ir += MR)
        pack_a_panel(MIN(MR, mc - ir), kc, a + ir * rsa, rsa, csa, dst + (long)ir * kc);
}

// One B micro-panel: columns [0, nr) of b (element (p, j) at b[p*rsb + j*csb]) into
// dst [kc][NR] (dst is 64-byte aligned: panels and pieces start at multiples of NR floats).
static void pack_b_panel(int kc, int nr, const float* b, long rsb, long csb, float* restrict dst) {
    int p = 0;
    if (nr == NR && csb == 1) {
        // B row-major (NN, TN): NR contiguous floats per p.
        for (; p < kc; p++) {
            const float* src = b + p * rsb;
            simde_mm512_store_ps(dst + p * NR, simde_mm512_loadu_ps(src));
            simde_mm512_store_ps(dst + p * NR + VL, simde_mm512_loadu_ps(src + VL));
        }
    } else if (nr == NR && rsb == 1) {
        // B column-major (NT, TT: B is a transposed weight): each column is contiguous in p.
        // Two 16x16 transposes per 16 p.
        for (; p + VL <= kc; p += VL) {
            for (int h = 0; h < NR; h += VL) {
                simde__m512 r[16];
                for (int j = 0; j < 16; j++) r[j] = simde_mm512_loadu_ps(b + (h + j) * csb + p);
                transpose16(r);
                for (int i = 0; i < 16; i++) simde_mm512_store_ps(dst + (p + i) * NR + h, r[i]);
            }
        }
    }
    for (; p < kc; p++) {
        for (int j = 0; j < nr; j++) dst[p * NR + j] = b[p * rsb + j * csb];
        for (int j = nr; j < NR; j++) dst[p * NR + j] = 0.0f;
    }
}

// ---------------------------------------------------------------------------------------------
// Micro-kernel. C[mr, 16*nv] (+)= Ap[kc][MR] * Bp[kc][NR] for compile-time mr in 1..MR and
// nv in 1..2 (instantiated by driver_tiles.h): one register per (row, 16 columns), the p loop
// innermost, one FMA per accumulator per p. The full 12x32 tile uses 24 accumulators, 2 B registers
// and a broadcast; the smaller ones exist so a partial tile costs less than a full one and produce
// bit-identical values, since each accumulator sees the same FMA chain. overwrite = 1 stores the
// sum, 0 adds it to C; stream = 1 (a constant wherever the body is inlined) stores it with
// streaming stores (driver.h, c_streams). Row i of A's tile is read at ap + i*ars and steps by acs
// per p: packed A (1, MR), or the rows of a weight read in place (ldw, 1; the weight-rows path,
// driver_wt.h). B's row p is at bp + p*bsr: a packed panel (NR), or a weight's panel read in place
// (its row stride; bip_pass in driver.h), which is then also stored, packed, at bc [kc][NR]
// (64-byte aligned) when bc is not NULL.
// ---------------------------------------------------------------------------------------------

// One k step of the micro-tile: two loads of B, mr broadcasts of A, mr*nv FMAs.
static inline __attribute__((always_inline)) void ukr_step(int mr, int nv, simde__m512 acc[MR][2],
                                                           const float* ap, long ars,
                                                           const float* bp, float* bc) {
    simde__m512 b0 = simde_mm512_loadu_ps(bp); // unaligned: B may be a weight read in place
    simde__m512 b1 = nv > 1 ? simde_mm512_loadu_ps(bp + VL) : b0;
    if (bc) {
        simde_mm512_store_ps(bc, b0);
        if (nv > 1) simde_mm512_store_ps(bc + VL, b1);
    }
#pragma GCC unroll 12
    for (int i = 0; i < mr; i++) {
        simde__m512 ai = simde_mm512_set1_ps(ap[i * ars]);
        acc[i][0] = simde_mm512_fmadd_ps(ai, b0, acc[i][0]);
        if (nv > 1) acc[i][1] = simde_mm512_fmadd_ps(ai, b1, acc[i][1]);
    }
}

static inline __attribute__((always_inline)) void
ukr_body(int mr, int nv, int kc, const float* restrict ap, long ars, long acs,
         const float* restrict bp, long bsr, float* restrict bc, float* c, long ldc, int overwrite,
         int stream, const ukr_pf_t* pf) {
    simde__m512 acc[MR][2];
#pragma GCC unroll 12
    for (int i = 0; i < mr; i++) {
        acc[i][0] = simde_mm512_setzero_ps();
        acc[i][1] = simde_mm512_setzero_ps();
        // C is read or written at the end: start bringing its lines in now (unless the
        // stores stream past the cache). prefetcht0 through the builtin: SIMDe 0.7.4 hands its
        // own hint numbers to _mm_prefetch in the native build, so its HINT_T0 (1) became
        // prefetcht2 (GCC's _MM_HINT_T2 is 1).
        if (!stream) {
            __builtin_prefetch(c + i * ldc, 0, 3);
            __builtin_prefetch(c + i * ldc + VL * nv - 1, 0, 3);
        }
    }
    int p = 0, n0, n1, gap = pf_lines(pf, kc, &n0, &n1);
    if (gap > 0) {
        for (int i = 0; i < n0 + n1; i++) {
            pf_issue(i < n0 ? pf->s[0] : pf->s[1]);
            // Unrolled as in avx2.c, where the loop's own add/compare/branch per k step cost
            // 1-10% of the large products (not measured on AVX-512).
#pragma GCC unroll 4
            for (int j = 0; j < gap; j++, p++, ap += acs, bp += bsr)
                ukr_step(mr, nv, acc, ap, ars, bp, bc ? bc + p * NR : NULL);
        }
    }
#pragma GCC unroll 4
    for (; p < kc; p++, ap += acs, bp += bsr)
        ukr_step(mr, nv, acc, ap, ars, bp, bc ? bc + p * NR : NULL);
#pragma GCC unroll 12
    for (int i = 0; i < mr; i++) {
#pragma GCC unroll 2
        for (int v = 0; v < nv; v++) {
            float* cp = c + i * ldc + VL * v;
            simde__m512 r =
                overwrite ? acc[i][v] : simde_mm512_add_ps(simde_mm512_loadu_ps(cp), acc[i][v]);
            if (stream)
                STREAM_PS(cp, r); // 64-byte aligned: c_streams checked C's rows
            else
                simde_mm512_storeu_ps(cp, r);
        }
    }
}

// The kernel tables, ukr_any and ukr_wt (driver_tiles.h), for tiles of 1..MR rows.
#define TILE_ROWS(X) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12)
#define TP_ROWS(X) TILE_ROWS(X) X(13) X(14) X(15) X(16) // TP_MAX_M = 16
#include "compute/kernels/driver_tiles.h"

// The weight-rows path's C tile (driver_wt.h): a full tile's 12 columns of 16 rows at a
// time through transpose16, each C row as one ymm and one xmm; a tile at C's right edge
// element by element.
static void ct_load(int ms, int mr, float* ct, const float* c, long ldc) {
    if (mr < MR) {
        ct_load_any(ms, mr, ct, c, ldc);
        return;
    }
    for (int h = 0; h < ms; h += VL) {
        simde__m512 r[16];
        for (int i = 0; i < 16; i++) {
            r[i] = simde_mm512_setzero_ps();
            if (h + i >= ms) continue;
            const float* d = c + (h + i) * ldc;
            r[i] = simde_mm512_insertf32x8(r[i], simde_mm256_loadu_ps(d), 0);
            r[i] = simde_mm512_insertf32x4(r[i], simde_mm_loadu_ps(d + 8), 2);
        }
        transpose16(r);
        for (int j = 0; j < MR; j++) simde_mm512_store_ps(ct + j * NR + h, r[j]);
    }
}

static void ct_store(int ms, int mr, const float* ct, float* c, long ldc) {
    if (mr < MR) {
        ct_store_any(ms, mr, ct, c, ldc);
        return;
    }
    for (int h = 0; h < ms; h += VL) {
        simde__m512 r[16];
        for (int j = 0; j < MR; j++) r[j] = simde_mm512_load_ps(ct + j * NR + h);
        for (int j = MR; j < 16; j++) r[j] = simde_mm512_setzero_ps();
        transpose16(r);
        for (int i = 0; i < VL && h + i < ms; i++) {
            float* d = c + (h + i) * ldc;
            simde_mm256_storeu_ps(d, simde_mm512_castps512_ps256(r[i]));
            simde_mm_storeu_ps(d + 8, simde_mm512_extractf32x4_ps(r[i], 2));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// SwiGLU: a = h0 * sigmoid(h0) * h1 and its backward, 16 lanes at a time, with avx2_swiglu.c's
// vector exp (Cephes' expf: range reduction by ln 2, degree-5 polynomial, scaling by 2^n
// through the exponent bits; within 2 ulp of expf over the clamped range). The last n % 16
// elements go through a zero-padded 16-lane tile, so every element gets the same formula
// whatever its position. Element-wise: threads split the elements without changing a result.
// ---------------------------------------------------------------------------------------------

// exp(x) for x clamped to [-87.3, 88.3]: beyond that expf under- or overflows, and sigmoid
// is 0 or 1 to float precision anyway.
static inline __attribute__((always_inline)) simde__m512 exp512(simde__m512 x) {
    x = simde_mm512_min_ps(simde_mm512_max_ps(x, simde_mm512_set1_ps(-87.3f)),
                           simde_mm512_set1_ps(88.3f));
    // n = x log2(e) rounded to the nearest integer, ties to even (as _MM_FROUND_TO_NEAREST_INT):
    // adding 1.5 * 2^23 leaves no fraction bits (|n| <= 127), and the sum's bits are
    // 0x4B400000 + n, whose low 9 bits give the exponent field below.
    const simde__m512 magic = simde_mm512_set1_ps(12582912.0f);
    simde__m512 t =
        simde_mm512_add_ps(simde_mm512_mul_ps(x, simde_mm512_set1_ps(1.44269504088896341f)), magic);
    simde__m512 n = simde_mm512_sub_ps(t, magic);
    // r = x - n ln2, with ln2 split in two so the product is exact
    simde__m512 r = simde_mm512_fnmadd_ps(n, simde_mm512_set1_ps(0.693359375f), x);
    r = simde_mm512_fnmadd_ps(n, simde_mm512_set1_ps(-2.12194440e-4f), r);
    simde__m512 p = simde_mm512_set1_ps(1.9875691500e-4f);
    p = simde_mm512_fmadd_ps(p, r, simde_mm512_set1_ps(1.3981999507e-3f));
    p = simde_mm512_fmadd_ps(p, r, simde_mm512_set1_ps(8.3334519073e-3f));
    p = simde_mm512_fmadd_ps(p, r, simde_mm512_set1_ps(4.1665795894e-2f));
    p = simde_mm512_fmadd_ps(p, r, simde_mm512_set1_ps(1.6666665459e-1f));
    p = simde_mm512_fmadd_ps(p, r, simde_mm512_set1_ps(5.0000001201e-1f));
    p = simde_mm512_fmadd_ps(p, simde_mm512_mul_ps(r, r),
                             simde_mm512_add_ps(r, simde_mm512_set1_ps(1.0f)));
    // 2^n: ((0x4B400000 + n + 127) << 23) keeps (n + 127) in the exponent field, 0 in the sign
    simde__m512i e = simde_mm512_slli_epi32(
        simde_mm512_add_epi32(simde_mm512_castps_si512(t), simde_mm512_set1_epi32(127)), 23);
    return simde_mm512_mul_ps(p, simde_mm512_castsi512_ps(e));
}

static inline __attribute__((always_inline)) simde__m512 sigmoid512(simde__m512 x) {
    simde__m512 one = simde_mm512_set1_ps(1.0f);
    return simde_mm512_div_ps(
        one, simde_mm512_add_ps(one, exp512(simde_mm512_sub_ps(simde_mm512_setzero_ps(), x))));
}

// 16 elements of the forward pass.
static inline __attribute__((always_inline)) void fwd16(const float* h0, const float* h1,
                                                        float* a) {
    simde__m512 x = simde_mm512_loadu_ps(h0);
    simde__m512 s = sigmoid512(x);
    simde_mm512_storeu_ps(a,
                          simde_mm512_mul_ps(simde_mm512_mul_ps(x, s), simde_mm512_loadu_ps(h1)));
}

// 16 elements of the backward pass.
static inline __attribute__((always_inline)) void bwd16(const float* h0, const float* h1,
                                                        const float* da, float* dh0, float* dh1) {
    simde__m512 one = simde_mm512_set1_ps(1.0f);
    simde__m512 x = simde_mm512_loadu_ps(h0), g = simde_mm512_loadu_ps(da);
    simde__m512 s = sigmoid512(x);
    // d silu/dx = s * (1 + x * (1 - s))
    simde__m512 dsilu = simde_mm512_mul_ps(
        s, simde_mm512_add_ps(one, simde_mm512_mul_ps(x, simde_mm512_sub_ps(one, s))));
    simde_mm512_storeu_ps(
        dh0, simde_mm512_mul_ps(simde_mm512_mul_ps(g, simde_mm512_loadu_ps(h1)), dsilu));
    simde_mm512_storeu_ps(dh1, simde_mm512_mul_ps(g, simde_mm512_mul_ps(x, s)));
}

static void avx512_swiglu_fwd(long n, const float* h0, const float* h1, float* a) {
    long nv = n / VL * VL;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (nv >= 1 << 16)
#endif
    for (long i = 0; i < nv; i += VL) fwd16(h0 + i, h1 + i, a + i);
    if (nv < n) { // the tail, zero-padded
        float x[VL] = {0}, y[VL] = {0}, o[VL];
        for (long i = nv; i < n; i++) x[i - nv] = h0[i], y[i - nv] = h1[i];
        fwd16(x, y, o);
        for (long i = nv; i < n; i++) a[i] = o[i - nv];
    }
}

static void avx512_swiglu_bwd(long n, const float* h0, const float* h1, const float* da, float* dh0,
                              float* dh1) {
    long nv = n / VL * VL;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (nv >= 1 << 16)
#endif
    for (long i = 0; i < nv; i += VL) bwd16(h0 + i, h1 + i, da + i, dh0 + i, dh1 + i);
    if (nv < n) { // the tail, zero-padded
        float x[VL] = {0}, y[VL] = {0}, g[VL] = {0}, o0[VL], o1[VL];
        for (long i = nv; i < n; i++) x[i - nv] = h0[i], y[i - nv] = h1[i], g[i - nv] = da[i];
        bwd16(x, y, g, o0, o1);
        for (long i = nv; i < n; i++) dh0[i] = o0[i - nv], dh1[i] = o1[i - nv];
    }
}

// out = silu(h0) * h1 over a tile (the fused epilogue), 16 columns at a time with fwd16; a
// column tail through a zero-padded vector, as in avx512_swiglu_fwd: the same bits as there.
static void swiglu_tile(int mr, int nr, const float* h0, const float* h1, float* out, long ld) {
    for (int i = 0; i < mr; i++, h0 += ld, h1 += ld, out += ld) {
        int j = 0;
        for (; j + VL <= nr; j += VL) fwd16(h0 + j, h1 + j, out + j);
        if (j < nr) {
            float x[VL] = {0}, y[VL] = {0}, o[VL];
            for (int t = j; t < nr; t++) x[t - j] = h0[t], y[t - j] = h1[t];
            fwd16(x, y, o);
            for (int t = j; t < nr; t++) out[t] = o[t - j];
        }
    }
}

// clang-format off
const kern_table_t KERN_TABLE = {
    .name = KERN_NAME,
    .isa = KERN_AVX512,
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
    .swiglu_fwd = avx512_swiglu_fwd,
    .swiglu_bwd = avx512_swiglu_bwd,
};
// clang-format on
