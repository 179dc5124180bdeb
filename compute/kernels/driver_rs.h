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
// for the rows i of the group, RS_MA of them per pass (each weight vector loaded once for
// RS_MA sums), while the next rows are prefetched. The sums of a column chunk (m x RS_CW
// floats, at most 112 KiB fused) stay in L1/L2; the block of rows is read from memory once,
// and from cache for the group's later passes.
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
#ifndef RS_MA
#define RS_MA 1 // rows of A per pass over a step's weight rows: each weight vector feeds RS_MA sums
#endif
#ifndef RS_CW
#define RS_CW 1024 // columns per chunk: the chunk's sums stay in cache across the whole depth
#endif
// Weight rows per step and rows of A per pass where the weight's rows alias in L1 (a row
// stride of a multiple of 4 KiB: d_ff = 1024, 2048) and m is at most RS_ALIAS_MAX_M (the ISA
// file's choice; default: never). Vector j of every row of a step, of the next step's rows
// being prefetched and, in the first KC block, of the sums (written straight to C, whose rows
// are as far apart) then falls in one L1 set, whose 12 ways hold only so many lines.
#ifndef RS_ALIAS_MAX_M
#define RS_ALIAS_MAX_M 0
#endif
#ifndef RS_ROWS_ALIAS
#define RS_ROWS_ALIAS RS_ROWS
#endif
#ifndef RS_MA_ALIAS
#define RS_MA_ALIAS RS_MA
#endif
#define RS_ROWS_MAX (RS_ROWS > RS_ROWS_ALIAS ? RS_ROWS : RS_ROWS_ALIAS)
#define RS_MA_MAX (RS_MA > RS_MA_ALIAS ? RS_MA : RS_MA_ALIAS)
// The pass sizes instantiated (rs_passes), 1 to RS_MA_TAB rows of A.
#define RS_MAS_4(X) X(1) X(2) X(3) X(4)
#define RS_MAS_8(X) RS_MAS_4(X) X(5) X(6) X(7) X(8)
#if RS_MA_MAX > 4
#define RS_MAS RS_MAS_8
#define RS_MA_TAB 8
#else
#define RS_MAS RS_MAS_4
#define RS_MA_TAB 4
#endif

_Static_assert(RS_ROWS >= 1 && RS_ROWS_ALIAS >= 1 && RS_MA >= 1 && RS_MA_ALIAS >= 1 &&
                   RS_MA_MAX <= 8,
               "rs_step's row and pass blocking");
_Static_assert((long)2 * RS_MAX_M * RS_CW <= (long)(MC + MR) * KC,
               "the fused pair's block sums fit the A pack buffer");

// One pass: for rows i < ma of A and columns j < nc of the sums s (row stride lds),
// s[i][j] = fma(A[i][r], W[r][j], s[i][j]) for r = 0 .. rows - 1 in order, from zero when
// `first`; A[i][r] at a[i*rsa + r*csa], W[r][j] at w[r*ldw + j]. The ma x rows broadcasts of
// A stay in registers while the weight rows stream through a vector of columns at a time, each
// weight vector loaded once for the ma sums (whose chains are independent work for the FMA
// latency). The `next` rows after these (up to a step's) are prefetched, a line per row per 16
// columns. Columns past the last vector go one by one: fmaf is the same fused operation as a
// vector lane's. VF and its operations are the ISA file's (a vector of VL floats).
static inline __attribute__((always_inline)) void rs_body(int ma, int nc, int rows, int next,
                                                          const float* a, long rsa, long csa,
                                                          const float* w, long ldw, float* s,
                                                          long lds, int first) {
    int nv = nc / VL * VL;
    VF b[RS_MA_TAB][RS_ROWS_MAX];
    for (int i = 0; i < ma; i++)
        for (int r = 0; r < rows; r++) b[i][r] = VF_SET1(a[i * rsa + r * csa]);
    for (int j = 0; j < nv; j += VL) {
        if (j % 16 == 0)
            for (int r = 0; r < next; r++) __builtin_prefetch(w + (rows + r) * ldw + j, 0, 3);
        VF v[RS_MA_TAB];
        for (int i = 0; i < ma; i++) v[i] = first ? VF_ZERO() : VF_LOADU(s + i * lds + j);
        for (int r = 0; r < rows; r++) {
            VF wr = VF_LOADU(w + r * ldw + j);
            for (int i = 0; i < ma; i++) v[i] = VF_FMA(b[i][r], wr, v[i]);
        }
        for (int i = 0; i < ma; i++) VF_STOREU(s + i * lds + j, v[i]);
    }
    for (int i = 0; i < ma; i++)
        for (int j = nv; j < nc; j++) {
            float v = first ? 0.0f : s[i * lds + j];
            for (int r = 0; r < rows; r++) v = fmaf(a[i * rsa + r * csa], w[r * ldw + j], v);
            s[i * lds + j] = v;
        }
}

// A pass with compile-time ma and, in the common cases, rows (the loops unrolled).
typedef void (*rs_pass_fn)(int nc, int rows, int next, const float* a, long rsa, long csa,
                           const float* w, long ldw, float* s, long lds, int first);
#define RS_PASS(MA)                                                                                \
    static void rs_pass_##MA(int nc, int rows, int next, const float* a, long rsa, long csa,       \
                             const float* w, long ldw, float* s, long lds, int first) {            \
        if (MA <= RS_MA && rows == RS_ROWS)                                                        \
            rs_body(MA, nc, RS_ROWS, next, a, rsa, csa, w, ldw, s, lds, first);                    \
        else if (MA <= RS_MA_ALIAS && rows == RS_ROWS_ALIAS)                                       \
            rs_body(MA, nc, RS_ROWS_ALIAS, next, a, rsa, csa, w, ldw, s, lds, first);              \
        else                                                                                       \
            rs_body(MA, nc, rows, next, a, rsa, csa, w, ldw, s, lds, first);                       \
    }
#define RS_PASS_ENTRY(MA) rs_pass_##MA,
RS_MAS(RS_PASS)
static const rs_pass_fn rs_passes[] = {NULL, RS_MAS(RS_PASS_ENTRY)};

// One step of `rows` weight rows for all m rows of A in passes of at most `ma_max` rows: as
// many full passes as fit and the rest, or with `even` the fewest passes, their rows shared
// evenly (the aliasing mode's choice: 9 rows as 5 + 4 ran 1.26-1.30x, as 8 + 1 1.08-1.11x the
// old path; with 4 rows a pass, 6 rows as 3 + 3 lost, 0.90x). The first pass prefetches the
// next rows (it reads these ones from memory, the others from cache).
static void rs_step(int m, int ma_max, int even, int nc, int rows, int next, const float* a,
                    long rsa, long csa, const float* w, long ldw, float* s, long lds, int first) {
    int passes = (m + ma_max - 1) / ma_max;
    for (int q = 0, i = 0; i < m; q++, next = 0) {
        int ma = even ? (m - i + passes - q - 1) / (passes - q) : MIN(ma_max, m - i);
        rs_passes[ma](nc, rows, next, a + i * rsa, rsa, csa, w, ldw, s + i * lds, lds, first);
        i += ma;
    }
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
    int alias = g->rsb % 1024 == 0 && m <= RS_ALIAS_MAX_M;
    int step = alias ? RS_ROWS_ALIAS : RS_ROWS, ma_max = alias ? RS_MA_ALIAS : RS_MA;
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
                for (int p = 0; p < kc; p += step) {
                    int rows = MIN(step, kc - p);
                    int next = MIN(step, g->k - (pc + p + rows)); // rows to prefetch
                    rs_step(m, ma_max, alias, nc, rows, next, a + (long)p * g->csa, g->rsa, g->csa,
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
