// The transposing path of the shared driver (driver.h, which includes this file): the `nt`
// products of the backward pass, dA = dY·Woᵀ and dX = dH·Wᵀ, where B is a weight stored
// row-major [n][k] and read transposed, for the smallest groups (at most TP_MAX_M rows).
//
// The weight-rows path (driver_wt.h) holds the group's rows in vector lanes, so with a few
// rows most lanes compute nothing: 4 rows fill a quarter of a 16-lane vector. Here the lanes
// are C's columns, as in the blocked loops: a tile of VL weight rows is read a vector of p at a
// time, turned in registers into VL vectors of B's rows (ukr_tp), and each feeds the m sums.
// No lane is wasted and B is not packed (A is, once, p-major); the transpose costs a few
// shuffles per weight vector, which the weight's stream from memory hides. The m sums stay in
// registers beside the transpose's VL vectors, which bounds m (TP_MAX_M, the ISA file's). A tile
// walks its VL rows from start to end, KC block after KC block (VL sequential streams the
// prefetchers follow), adding each block's sums to C, then the next tile.
//
// Bits: each element of C is one FMA chain over p inside each KC block (kc_block(k)), from
// zero, with the blocked loops' operands (fma(A(i, p), B(p, j), s)), and the blocks are added
// to C in increasing order, the first one stored unless accumulating. So an element has the
// same bits whichever path computes it.
#ifndef MOED_KERNELS_DRIVER_TP_H
#define MOED_KERNELS_DRIVER_TP_H

// Which products take the path: m in [1, TP_MAX_M], set by the ISA file with TP_ROWS, the
// row counts of ukr_tp's tiles (default: never).
#ifndef TP_MAX_M
#define TP_MAX_M 0
#endif
#ifndef TP_PFD
#define TP_PFD 64 // floats ahead of its use each weight line is prefetched (4 lines)
#endif

// Whether the product takes this path: B column-major (a transposed weight), not fused, not
// pre-packed, at most TP_MAX_M rows, and A packed ([k][TP_MAX_M]) fits the thread's A pack
// buffer.
static int tp_applies(const gemm_args_t* g, size_t a_floats) {
    return TP_MAX_M > 0 && g->halves == 1 && !g->bpre && g->rsb == 1 && g->csb != 1 &&
           g->m <= TP_MAX_M && (size_t)g->k * TP_MAX_M <= a_floats;
}

// Columns [j0, j1) of C: A packed once, p-major (at [k][TP_MAX_M], A(i, p) at at[p*TP_MAX_M
// + i]: a tile's m broadcasts of one p are adjacent), then tiles of VL weight rows.
static void tp_run(const gemm_args_t* g, int j0, int j1, const kern_pack_t* pk) {
    int kb = kc_block(g->k), m = g->m;
    if (j0 >= j1) return;
    float* at = pk->a;
    for (int i = 0; i < m; i++)
        for (int p = 0; p < g->k; p++) at[(long)p * TP_MAX_M + i] = g->a[i * g->rsa + p * g->csa];
    const float* w = g->b[0]; // W[j][p] at w[j*csb + p]
    for (int j = j0; j < j1; j += VL) {
        int rows = MIN(VL, j1 - j);
        // Past its rows' ends the prefetch stream goes on in the next tile's (full) rows.
        long next = j + 2 * VL <= j1 ? (long)VL * g->csb - g->k : 0;
        for (int pc = 0; pc < g->k; pc += kb)
            ukr_tp(m, rows, MIN(kb, g->k - pc), at + (long)pc * TP_MAX_M, w + (long)j * g->csb + pc,
                   g->csb, g->c[0] + j, g->ldc, pc == 0 && !g->accumulate, g->k - pc, next);
    }
}

#endif
