// The row-streaming path of the shared driver (driver.h, which includes this file): the `nn`
// products whose B is a weight stored row-major [k][n], plain or fused, for the smallest
// groups (at most RS_MAX_M rows: a few tokens routed to an expert).
//
// With so few rows each weight element feeds a handful of FMAs, and the product waits on the
// weight's stream from memory. The blocked loops pull it at 10-11 GB/s (runs of 256 B from
// each row, packed, then read once by one row tile), where the core streams whole rows at
// 24-32 GB/s. Here the weight is read a block of RS_ROWS rows at a time, each row in runs of
// RS_CW floats (4 KiB, the whole row when n <= RS_CW), straight into the FMAs:
//   C[i][j .. j + VL) += A[i][p .. p + RS_ROWS) · W[p .. p + RS_ROWS)[j .. j + VL)
// for every row i of the group, while the next rows are prefetched. The sums of a column chunk
// (m x RS_CW floats, at most 64 KiB fused) stay in L1/L2; the block of rows is read from memory
// once, and from cache for the group's other rows.
//
// Bits: each element's FMA chain is the blocked loops' (driver.h): over p in order inside each
// KC block (kc_block(k)), starting from zero; the first block is written straight to C (or
// added to it when accumulating), each later block's sum is formed in a scratch (the thread's
// A pack buffer, unused here) and added to C, one rounding, as the blocked loops add a block's
// tile. The fused epilogue is swiglu_tile. So choosing this path by m changes no result.
#ifndef MOED_KERNELS_DRIVER_RS_H
#define MOED_KERNELS_DRIVER_RS_H

#include <math.h>

// Which products take the path: m in [1, RS_MAX_M], set by the ISA file (default: never).
#ifndef RS_MAX_M
#define RS_MAX_M 0
#endif
#ifndef RS_ROWS
#define RS_ROWS 8 // weight rows per step: their FMA chains run back to back on each sum
#endif
#ifndef RS_CW
#define RS_CW 1024 // columns per chunk: the chunk's sums stay in cache across the whole depth
#endif

_Static_assert(RS_ROWS >= 1, "rs_step takes RS_ROWS rows of the weight at a time");
_Static_assert((long)2 * RS_MAX_M * RS_CW <= (long)(MC + MR) * KC,
               "the fused pair's block sums fit the A pack buffer");

// One step: for rows i < m and columns j < nc of the sums s (row stride lds),
// s[i][j] = fma(A[i][r], W[r][j], s[i][j]) for r = 0 .. rows - 1 in order, from zero when
// `first`; A[i][r] at a[i*rsa + r*csa], W[r][j] at w[r*ldw + j]. Each row of A keeps its
// `rows` broadcasts in registers while the weight rows stream through a vector of columns at a
// time, each sum's chain run back to back (the other rows' sums are independent work for the
// FMA latency). The `next` rows after these (0 to RS_ROWS) are prefetched, a line per row
// per 16 columns, during the first row's pass. Columns past the last vector go one by one:
// fmaf is the same fused operation as a vector lane's. VF and its operations are the ISA
// file's (a vector of VL floats).
static inline __attribute__((always_inline)) void rs_body(int m, int nc, int rows, int next,
                                                          const float* a, long rsa, long csa,
                                                          const float* w, long ldw, float* s,
                                                          long lds, int first) {
    int nv = nc / VL * VL;
    for (int i = 0; i < m; i++) {
        VF b[RS_ROWS];
        for (int r = 0; r < rows; r++) b[r] = VF_SET1(a[i * rsa + r * csa]);
        float* si = s + i * lds;
        for (int j = 0; j < nv; j += VL) {
            if (i == 0 && j % 16 == 0)
                for (int r = 0; r < next; r++) __builtin_prefetch(w + (rows + r) * ldw + j, 0, 3);
            VF v = first ? VF_ZERO() : VF_LOADU(si + j);
            for (int r = 0; r < rows; r++) v = VF_FMA(b[r], VF_LOADU(w + r * ldw + j), v);
            VF_STOREU(si + j, v);
        }
        for (int j = nv; j < nc; j++) {
            float v = first ? 0.0f : si[j];
            for (int r = 0; r < rows; r++) v = fmaf(a[i * rsa + r * csa], w[r * ldw + j], v);
            si[j] = v;
        }
    }
}

static void rs_step(int m, int nc, int rows, int next, const float* a, long rsa, long csa,
                    const float* w, long ldw, float* s, long lds, int first) {
    if (rows == RS_ROWS) // the common case, with the row loops unrolled
        rs_body(m, nc, RS_ROWS, next, a, rsa, csa, w, ldw, s, lds, first);
    else
        rs_body(m, nc, rows, next, a, rsa, csa, w, ldw, s, lds, first);
}

// Whether the product takes this path: B row-major (a weight, or the fused pair), not
// pre-packed, at most RS_MAX_M rows.
static int rs_applies(const gemm_args_t* g) {
    return RS_MAX_M > 0 && !g->bpre && g->csb == 1 && g->m <= RS_MAX_M;
}

// Columns [j0, j1) of C (of H0, H1 and out when fused), on the thread's pack buffer.
static void rs_run(const gemm_args_t* g, int j0, int j1, const kern_pack_t* pk) {
    int kb = kc_block(g->k), m = g->m;
    long ldw = g->rsb, ldc = g->ldc;
    for (int jc = j0; jc < j1; jc += RS_CW) {
        int nc = MIN(RS_CW, j1 - jc);
        for (int pc = 0; pc < g->k; pc += kb) {
            int kc = MIN(kb, g->k - pc), direct = pc == 0 && !g->accumulate;
            for (int h = 0; h < g->halves; h++) {
                float* c = g->c[h] + jc;
                float* s = direct ? c : pk->a + (long)h * m * RS_CW; // the block's sums
                long lds = direct ? ldc : RS_CW;
                const float* w = g->b[h] + (long)pc * ldw + jc;
                const float* a = g->a + (long)pc * g->csa;
                for (int p = 0; p < kc; p += RS_ROWS) {
                    int rows = MIN(RS_ROWS, kc - p);
                    int next = MIN(RS_ROWS, g->k - (pc + p + rows)); // rows to prefetch
                    rs_step(m, nc, rows, next, a + (long)p * g->csa, g->rsa, g->csa,
                            w + (long)p * ldw, ldw, s, lds, p == 0);
                }
                if (!direct)
                    for (int i = 0; i < m; i++)
                        for (int j = 0; j < nc; j++) c[(long)i * ldc + j] += s[(long)i * RS_CW + j];
            }
        }
        if (g->halves == 2) swiglu_tile(m, nc, g->c[0] + jc, g->c[1] + jc, g->out + jc, ldc);
    }
}

#endif
