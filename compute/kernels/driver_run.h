// How the shared blocked driver (driver.h, which includes this file last) runs a product:
// the thread partition, the per-thread pack buffers, and the kern_table_t entries the ISA
// files put in their tables. Static, like driver.h: each ISA file gets its own copy.
#ifndef MOED_KERNELS_DRIVER_RUN_H
#define MOED_KERNELS_DRIVER_RUN_H

#include <stdio.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#ifdef _OPENMP
// Splits C among up to `nthreads` threads as a grid of mt x nt rectangles on micro-tile
// boundaries (columns: whole panel units). Each thread packs the A rows and B columns of its
// rectangle, so a grid's cost per thread is its rectangle's multiply-adds plus its packing:
// rows x cols + PACK_COST x (rows + cols) per step of k, packing an element costing about
// as much as 2 x MR multiply-adds (a load and a store, or a transpose, against MR x NR FMAs
// per NR-wide load in the micro-kernel). The cheapest grid wins; one with more row splits
// must be cheaper by 1/32, the model's own precision, since with fewer each weight element
// (B) is read from memory by fewer threads. (The area alone put 512 x 512 products on 16
// threads at 1 x 16, each thread packing all of A for 32 columns; down and dX ran at
// 0.67-0.80x oneDNN there.) Threads past mt*nt idle. Any grid gives the same bits.
#define PACK_COST (2 * MR)
static void partition(const gemm_args_t* g, int nthreads, int* mt_out, int* nt_out) {
    int unit = panel_unit(g);
    long tiles_m = (g->m + MR - 1) / MR, tiles_n = (g->panels + unit - 1) / unit;
    if (g->k < SHORT_KC && tiles_m >= nthreads) {
        // Bound by writing C: give each thread whole rows, so that each writes one
        // contiguous region instead of all threads interleaving within every row
        // (measured: 100 vs 70 GFLOP/s for 64 groups of dW = X^T dH, 32 tokens each, on
        // 2 threads). Streaming stores of C were slower at k = 32; they pay only at a
        // depth of a few (c_streams in driver.h).
        *mt_out = nthreads;
        *nt_out = 1;
        return;
    }
    long best = -1;
    *mt_out = *nt_out = 1;
    for (int mt = 1; mt <= nthreads && mt <= tiles_m; mt++) {
        int nt = (int)MIN(nthreads / mt, tiles_n);
        long rows = (tiles_m + mt - 1) / mt * MR, cols = (tiles_n + nt - 1) / nt * unit * NR;
        long cost = rows * cols + PACK_COST * (rows + cols);
        if (best < 0 || cost + cost / 32 < best) {
            best = cost;
            *mt_out = mt;
            *nt_out = nt;
        }
    }
}

// Part `idx` of `parts` along a dimension of `len` elements in tiles of `t`: [*lo, *hi).
static void split(int len, int t, int parts, int idx, int* lo, int* hi) {
    int tiles = (len + t - 1) / t;
    int base = tiles / parts, rem = tiles % parts;
    int first = idx * base + MIN(idx, rem), count = base + (idx < rem);
    *lo = MIN(len, first * t);
    *hi = MIN(len, (first + count) * t);
}
#endif

// The pack buffers of thread `tid`, checked against this file's blocking: dispatch.c sizes
// them for the compiled-in tables, which the emulated AVX-512 table (tests only) is not one of.
static const kern_pack_t* pack_for(int tid) {
    const kern_pack_t* pk = kern_pack_for(tid);
    if (!pk) {
        fprintf(stderr,
                "moed: kernels: no pack buffer for thread %d (kern_init(%d) too small or "
                "not called)\n",
                tid, kern_pack_threads());
        abort();
    }
    if (pk->a_floats < (size_t)(MC + MR) * KC || pk->b_floats < (size_t)KC * (NC + NR)) {
        fprintf(stderr, "moed: kernels: %s: pack buffers sized for a smaller blocking\n",
                KERN_NAME);
        abort();
    }
    return pk;
}

// Below this many multiply-adds a parallel region costs more than it saves.
#define PARALLEL_MIN_MACS (1L << 18)

// The small-m path that serves the product (driver_wt.h, driver_wc.h, driver_rs.h), or NULL:
// the blocked loops. Every path gives the same bits; the small-m ones split C's columns among
// threads in whole tiles of MR.
typedef void (*path_fn)(const gemm_args_t* g, int j0, int j1, const kern_pack_t* pk);
static path_fn small_m_path(const gemm_args_t* g, const kern_pack_t* pk) {
    if (tp_applies(g, pk->a_floats)) return tp_run;
    if (wt_applies(g, pk->b_floats)) return wt_run;
    if (wc_applies(g, pk->b_floats)) return wc_run;
    if (rs_applies(g)) return rs_run;
    return NULL;
}

static void drv_run(const gemm_args_t* g) {
    int nthreads = 1, tid0 = 0;
#ifdef _OPENMP
    if (omp_in_parallel()) {
        tid0 = omp_get_thread_num(); // called from a worker: its own buffers, one thread
    } else {
        nthreads = MIN(omp_get_max_threads(), kern_pack_threads());
        if ((long)g->m * g->n * g->halves * g->k < PARALLEL_MIN_MACS) nthreads = 1;
    }
#endif
    if (nthreads <= 1) {
        const kern_pack_t* pk = pack_for(tid0);
        path_fn sw = small_m_path(g, pk);
        if (sw)
            sw(g, 0, g->n, pk);
        else
            gemm_rect(g, 0, g->m, 0, g->panels, pk);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(nthreads)
    {
        // The team may be smaller than asked for; partition by what we got.
        int nt_all = omp_get_num_threads(), tid = omp_get_thread_num();
        const kern_pack_t* pk = pack_for(tid);
        path_fn sw = small_m_path(g, pk);
        if (sw) {
            int j0, j1;
            split(g->n, MR, nt_all, tid, &j0, &j1);
            sw(g, j0, j1, pk);
        } else {
            int mt, nt;
            partition(g, nt_all, &mt, &nt);
            if (tid < mt * nt) {
                int m0, m1, q0, q1;
                split(g->m, MR, mt, tid / nt, &m0, &m1);
                split(g->panels, panel_unit(g), nt, tid % nt, &q0, &q1);
                if (m0 < m1 && q0 < q1) gemm_rect(g, m0, m1, q0, q1, pk);
            }
        }
    }
#endif
}

// ---------------------------------------------------------------------------------------------
// The table's entries.
// ---------------------------------------------------------------------------------------------

static void zero_rows(int m, int n, float* c, long ldc) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) c[(long)i * ldc + j] = 0.0f;
}

// The arguments common to the entries; the caller sets B, C and the rest.
static gemm_args_t args_for(int m, int n, int k, const float* a, long rsa, long csa, long rsb,
                            long csb, const float* bpre, int halves) {
    gemm_args_t g = {.m = m, .n = n, .k = k, .a = a, .rsa = rsa, .csa = csa, .rsb = rsb};
    g.csb = csb;
    g.bpre = bpre;
    g.halves = halves;
    g.panels = halves * ((n + NR - 1) / NR);
    return g;
}

static void drv_sgemm_any(int m, int n, int k, const float* a, long rsa, long csa, const float* b,
                          long rsb, long csb, const float* bpre, float* c, long ldc,
                          int accumulate) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0) {
        if (!accumulate) zero_rows(m, n, c, ldc);
        return;
    }
    gemm_args_t g = args_for(m, n, k, a, rsa, csa, rsb, csb, bpre, 1);
    g.b[0] = b;
    g.c[0] = c;
    g.ldc = ldc;
    g.accumulate = accumulate;
    drv_run(&g);
}

static void drv_sgemm(int m, int n, int k, const float* a, long rsa, long csa, const float* b,
                      long rsb, long csb, float* c, long ldc, int accumulate) {
    drv_sgemm_any(m, n, k, a, rsa, csa, b, rsb, csb, NULL, c, ldc, accumulate);
}

static void drv_sgemm_packed(int m, int n, int k, const float* a, long rsa, long csa,
                             const float* bp, float* c, long ldc, int accumulate) {
    drv_sgemm_any(m, n, k, a, rsa, csa, NULL, 0, 0, bp, c, ldc, accumulate);
}

// Panels per fused run when B is packed on the fly: as long as an H0 strip of MIN(m, MC) rows
// stays within about 128 KiB (in L2 when its H1 strip's epilogue reads it back), so that the
// reads alternate between B0 and B1 rarely (alternating every few panels doubles the pages a
// KC block of B spans at a time: TLB misses on the memory-bound small-m shapes); at most half
// a B block; and among those lengths (multiples of ROW_GROUP) the longest that leaves the
// busiest thread the fewest panels, since threads split whole run pairs. Any run gives the
// same bits.
static int fused_run(int m, int n) {
    int rows = MIN(m, MC), half = (n + NR - 1) / NR, threads = 1;
#ifdef _OPENMP
    if (!omp_in_parallel()) threads = omp_get_max_threads();
#endif
    int rmax = (int)((128L << 10) / ((long)rows * NR * (long)sizeof(float)));
    rmax = MIN(MIN(rmax, NC / NR / 2), half) / ROW_GROUP * ROW_GROUP;
    int best = ROW_GROUP;
    long best_load = -1;
    for (int r = rmax; r >= ROW_GROUP; r -= ROW_GROUP) {
        long units = (half + r - 1) / r; // thread 0 gets the most whole runs
        long load = MIN((long)half, (units + threads - 1) / threads * r);
        if (best_load < 0 || load < best_load) best_load = load, best = r;
    }
    return best;
}

static void drv_gemm_swiglu(int m, int n, int k, const float* a, long rsa, long csa,
                            const float* b0, const float* b1, long rsb, long csb, const float* bp,
                            float* h0, float* h1, float* out, long ldc) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0) { // H0 = H1 = 0, and out = silu(0) * 0 through the same formula
        zero_rows(m, n, h0, ldc);
        zero_rows(m, n, h1, ldc);
        for (int i = 0; i < m; i += MR)
            for (int j = 0; j < n; j += NR)
                swiglu_tile(MIN(MR, m - i), MIN(NR, n - j), h0 + (long)i * ldc + j,
                            h1 + (long)i * ldc + j, out + (long)i * ldc + j, ldc);
        return;
    }
    gemm_args_t g = args_for(m, n, k, a, rsa, csa, rsb, csb, bp, 2);
    g.run = bp ? ROW_GROUP : fused_run(m, n);
    g.b[0] = b0, g.b[1] = b1;
    g.c[0] = h0, g.c[1] = h1;
    g.out = out;
    g.ldc = ldc;
    drv_run(&g);
}

// Pre-packed B: for each KC block pc (kc_block(k) deep, in order), each panel (in the order above)
// as [kc][NR], zero-padded past the matrix edge: block pc starts at pc * panels * NR floats.
static size_t drv_packed_floats(int k, int n, int halves) {
    return (size_t)(k > 0 ? k : 0) * halves * ((n + NR - 1) / NR) * NR;
}

static void drv_pack_b(int k, int n, const float* b0, const float* b1, long rsb, long csb,
                       float* dst) {
    if (k <= 0 || n <= 0) return;
    gemm_args_t g = args_for(0, n, k, NULL, 0, 0, rsb, csb, NULL, b1 ? 2 : 1);
    g.b[0] = b0, g.b[1] = b1;
    g.run = ROW_GROUP; // the pre-packed pair's order, which gemm_swiglu then walks
    int kb = kc_block(k), nblk = (k + kb - 1) / kb;
    // Each (block, panel) is written by one thread: a copy, so any split gives the same bits.
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if ((long)k * n * g.halves >= 1L << 16)
#endif
    for (long t = 0; t < (long)nblk * g.panels; t++) {
        int pc = (int)(t / g.panels) * kb, q = (int)(t % g.panels);
        int kc = MIN(kb, k - pc);
        pack_b_panel(kc, panel_width(&g, q), panel_src(&g, q) + (long)pc * rsb, rsb, csb,
                     dst + (long)pc * g.panels * NR + (long)q * kc * NR);
    }
}

// drv_pack_b restricted to rows [p0, p1) and columns [j0, j1) (see kern_pack_b_part_fn).
static void drv_pack_b_part(int k, int n, const float* b0, const float* b1, long rsb, long csb,
                            float* dst, int p0, int p1, int j0, int j1) {
    if (k <= 0 || n <= 0) return;
    p0 = p0 < 0 ? 0 : p0, p1 = MIN(p1, k), j1 = MIN(j1, n);
    if (p0 >= p1 || j0 >= j1) return;
    gemm_args_t g = args_for(0, n, k, NULL, 0, 0, rsb, csb, NULL, b1 ? 2 : 1);
    g.b[0] = b0, g.b[1] = b1;
    g.run = ROW_GROUP;
    int s0 = j0 / NR, s1 = (j1 + NR - 1) / NR;
    int kb = kc_block(k);
    for (int pc = p0 / kb * kb; pc < p1; pc += kb) {
        int kc = MIN(kb, k - pc), r0 = (p0 > pc ? p0 : pc) - pc, r1 = MIN(p1, pc + kc) - pc;
        for (int q = 0; q < g.panels; q++) {
            int s;
            panel_half(&g, q, &s);
            if (s < s0 || s >= s1) continue;
            pack_b_panel(r1 - r0, panel_width(&g, q), panel_src(&g, q) + (long)(pc + r0) * rsb, rsb,
                         csb, dst + (long)pc * g.panels * NR + ((long)q * kc + r0) * NR);
        }
    }
}

#endif
