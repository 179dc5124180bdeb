// The micro-kernel entry points of an ISA file, instantiated from its ukr_body. Included by
// avx2.c and avx512.c after they define
//   ukr_body(mr, nv, kc, ap, ars, acs, bp, bsr, bc, c, ldc, overwrite, stream, pf)   the
//       micro-tile: C[mr, nv vectors] (+)= A x B, row i of A's tile at ap + i*ars, stepped by
//       acs per p, B's row p at bp + p*bsr (NR: a packed panel), and copied to bc [kc][NR]
//       unless it is NULL; stream (a constant here) stores C with streaming stores
//   VL                floats per vector (NR = 2 * VL)
//   TILE_ROWS(X)      X(1) X(2) ... X(MR): the row counts to instantiate
//   TP_ROWS(X)        X(1) X(2) ... X(TP_MAX_M): the same for the transposing path's tiles
//   VF, VF_ZERO, VF_SET1, VF_LOADU, VF_STOREU, VF_FMA, VF_ADD   a vector of VL floats and its
//                     operations, and TRANSPOSE_VL(r) the in-register transpose of VF r[VL]
// and define here what driver.h declares: ukr_any (the blocked loops' tiles), ukr_row (a row of
// them; ukr_row_stream the same with streaming stores), ukr_bip (a tile on B in place), ukr_tp
// (the transposing path's, driver_tp.h), ukr_wt and ukr_wc (the swapped paths', driver_wt.h and
// driver_wc.h). Each is a table of kernels with compile-time rows and vectors, so that a partial
// tile costs less than a full one; every one runs each element's FMA chain the same way, so an
// element's bits do not depend on the tile or the path.
#ifndef MOED_KERNELS_DRIVER_TILES_H
#define MOED_KERNELS_DRIVER_TILES_H

_Static_assert(NR == 2 * VL, "the micro-kernels hold NR columns in two vectors");

// The blocked loops' tiles: A packed [kc][MR].
typedef void (*ukr_fn)(int kc, const float* ap, const float* bp, float* c, long ldc, int overwrite,
                       const ukr_pf_t* pf);

#define UKR(M, V)                                                                                  \
    static void ukr_##M##x##V(int kc, const float* ap, const float* bp, float* c, long ldc,        \
                              int overwrite, const ukr_pf_t* pf) {                                 \
        ukr_body(M, V, kc, ap, 1, MR, bp, NR, NULL, c, ldc, overwrite, 0, pf);                     \
    }
// The swapped paths' tiles: A is a weight read in place, the tile written to ct [mr][NR].
// The weight-rows path (driver_wt.h) reads row i at w + i*ldw walked along p (a weight read
// transposed), the weight-columns path (driver_wc.h) column i at w + i walked along p by ldw.
typedef void (*ukrw_fn)(int kc, const float* w, long ldw, const float* bp, float* ct, int overwrite,
                        const ukr_pf_t* pf);

#define UKR_INPLACE(NAME, M, V, ARS, ACS)                                                          \
    static void NAME##_##M##x##V(int kc, const float* w, long ldw, const float* bp, float* ct,     \
                                 int overwrite, const ukr_pf_t* pf) {                              \
        ukr_body(M, V, kc, w, ARS, ACS, bp, NR, NULL, ct, NR, overwrite, 0, pf);                   \
    }
#define UKRW(M, V) UKR_INPLACE(ukrw, M, V, ldw, 1)
#define UKRC(M, V) UKR_INPLACE(ukrc, M, V, 1, ldw)
#define UKR_ROWS(M) UKR(M, 1) UKR(M, 2) UKRW(M, 1) UKRW(M, 2) UKRC(M, 1) UKRC(M, 2)
#define UKR_ENTRY(M) {0, ukr_##M##x1, ukr_##M##x2},
#define UKRW_ENTRY(M) {0, ukrw_##M##x1, ukrw_##M##x2},
#define UKRC_ENTRY(M) {0, ukrc_##M##x1, ukrc_##M##x2},

TILE_ROWS(UKR_ROWS)

// [rows][vectors of columns]
static const ukr_fn ukr_tab[MR + 1][3] = {{0, 0, 0}, TILE_ROWS(UKR_ENTRY)};
static const ukrw_fn ukrw_tab[MR + 1][3] = {{0, 0, 0}, TILE_ROWS(UKRW_ENTRY)};
static const ukrw_fn ukrc_tab[MR + 1][3] = {{0, 0, 0}, TILE_ROWS(UKRC_ENTRY)};

// C[mr, nr] (+)= panels, for any mr <= MR, nr <= NR. Column counts that are not a multiple
// of VL go through a temporary tile so nothing outside C is read or written.
static inline void ukr_any(int mr, int nr, int kc, const float* ap, const float* bp, float* c,
                           long ldc, int overwrite, const ukr_pf_t* pf) {
    int nv = (nr + VL - 1) / VL;
    if (nr % VL == 0) {
        ukr_tab[mr][nv](kc, ap, bp, c, ldc, overwrite, pf);
        return;
    }
    float tile[MR * NR] __attribute__((aligned(64))); // [mr][NR]: the product, C untouched
    ukr_tab[mr][nv](kc, ap, bp, tile, NR, 1, pf);
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) {
            float* cij = c + i * ldc + j;
            // Same single rounding as the vector path: C + sum.
            *cij = overwrite ? tile[i * NR + j] : *cij + tile[i * NR + j];
        }
}

// Full tiles of MR rows across np full panels (consecutive in the packed B block, panel j at
// bp + j*NR*kc), C's columns in order: the short blocks' walk along C's rows (driver.h,
// short_pass). One call for the row instead of one per tile through ukr_any: a tile of a
// short block is only kc = 32-63 k steps, so the per-call work (the table lookup, the
// prefetch schedule) was a tenth of it.
static void ukr_row(int kc, const float* ap, const float* bp, int np, float* c, long ldc,
                    int overwrite, const ukr_pf_t* pf) {
    for (int j = 0; j < np; j++, bp += (long)NR * kc, c += NR)
        ukr_body(MR, 2, kc, ap, 1, MR, bp, NR, NULL, c, ldc, overwrite, 0, pf);
}

// The same row of tiles storing C with streaming stores (c_streams). A function of its own, so
// that the body's store mode is a constant in both and ukr_row's code stays as it was: with
// the mode a run-time argument the short blocks that store normally ran 4-8% slower, and with
// both loops in ukr_row 2-4% (avx512, 32 tokens).
static void ukr_row_stream(int kc, const float* ap, const float* bp, int np, float* c, long ldc,
                           const ukr_pf_t* pf) {
    for (int j = 0; j < np; j++, bp += (long)NR * kc, c += NR)
        ukr_body(MR, 2, kc, ap, 1, MR, bp, NR, NULL, c, ldc, 1, 1, pf);
}

#if BIP_MAX_M > 0
// The in-place tiles of the first pass (driver.h, bip_pass): A packed, B a full panel of a
// row-major weight read where it lies, row p at b + p*ldb, and stored packed at bc [kc][NR]
// unless bc is NULL.
typedef void (*ukrb_fn)(int kc, const float* ap, const float* b, long ldb, float* bc, float* c,
                        long ldc, int overwrite, const ukr_pf_t* pf);
#define UKRB(M)                                                                                    \
    static void ukrb_##M(int kc, const float* ap, const float* b, long ldb, float* bc, float* c,   \
                         long ldc, int overwrite, const ukr_pf_t* pf) {                            \
        ukr_body(M, 2, kc, ap, 1, MR, b, ldb, bc, c, ldc, overwrite, 0, pf);                       \
    }
#define UKRB_ENTRY(M) ukrb_##M,
TILE_ROWS(UKRB)
static const ukrb_fn ukrb_tab[MR + 1] = {0, TILE_ROWS(UKRB_ENTRY)};

static inline void ukr_bip(int mr, int kc, const float* ap, const float* b, long ldb, float* bc,
                           float* c, long ldc, int overwrite, const ukr_pf_t* pf) {
    ukrb_tab[mr](kc, ap, b, ldb, bc, c, ldc, overwrite, pf);
}
#endif

// The transposing path's tile (driver_tp.h): C[m, rows] (+)= A[m, kc] x Wᵀ for m <= TP_MAX_M
// rows of A, packed (ap [kc][TP_MAX_M]), and rows <= VL rows of a row-major weight (row j at
// w + j*ldw, walked along p): VL weight rows loaded a vector of p at a time and turned by
// TRANSPOSE_VL (the ISA file's in-register transpose) into VL vectors of B's rows, B(p, j) =
// W[j, p], which feed the m sums as a packed panel would (fma(A(i, p), B(p, .), s)). Each
// lane's chain runs over p in order from zero, the same chain as the blocked loops';
// overwrite = 1 stores the sum, 0 adds it to C (one rounding). Each weight line is prefetched
// TP_PFD floats ahead of its use; past the rem floats left in the rows, in the next tile's
// rows (next floats further on; next = 0: none).
static inline __attribute__((always_inline)) void tp_body(int m, int rows, int kc,
                                                          const float* restrict ap, const float* w,
                                                          long ldw, float* c, long ldc,
                                                          int overwrite, long rem, long next) {
    VF s[TP_MAX_M];
    for (int i = 0; i < m; i++) s[i] = VF_ZERO();
    int p = 0;
    for (; p + VL <= kc; p += VL, ap += VL * TP_MAX_M) {
        VF r[VL];
        long pf = p + TP_PFD < rem ? p + TP_PFD : next ? p + TP_PFD + next : -1;
        for (int j = 0; j < VL; j++) {
            r[j] = j < rows ? VF_LOADU(w + j * ldw + p) : VF_ZERO();
            if (j < rows && pf >= 0 && (p * 4) % 64 == 0)
                __builtin_prefetch(w + j * ldw + pf, 0, 3);
        }
        TRANSPOSE_VL(r);
        for (int q = 0; q < VL; q++)
            for (int i = 0; i < m; i++) s[i] = VF_FMA(VF_SET1(ap[q * TP_MAX_M + i]), r[q], s[i]);
    }
    for (; p < kc;
         p++, ap += TP_MAX_M) { // a depth that is not a multiple of VL: B's row p gathered
        float col[VL] __attribute__((aligned(64)));
        for (int j = 0; j < VL; j++) col[j] = j < rows ? w[j * ldw + p] : 0.0f;
        VF b = VF_LOADU(col);
        for (int i = 0; i < m; i++) s[i] = VF_FMA(VF_SET1(ap[i]), b, s[i]);
    }
    for (int i = 0; i < m; i++) {
        float* ci = c + i * ldc;
        if (rows == VL) {
            VF_STOREU(ci, overwrite ? s[i] : VF_ADD(VF_LOADU(ci), s[i]));
            continue;
        }
        float t[VL] __attribute__((aligned(64)));
        VF_STOREU(t, s[i]);
        for (int j = 0; j < rows; j++) ci[j] = overwrite ? t[j] : ci[j] + t[j];
    }
}

typedef void (*ukrt_fn)(int rows, int kc, const float* ap, const float* w, long ldw, float* c,
                        long ldc, int overwrite, long rem, long next);
#define UKRT(M)                                                                                    \
    static void ukrt_##M(int rows, int kc, const float* ap, const float* w, long ldw, float* c,    \
                         long ldc, int overwrite, long rem, long next) {                           \
        if (rows == VL)                                                                            \
            tp_body(M, VL, kc, ap, w, ldw, c, ldc, overwrite, rem, next);                          \
        else                                                                                       \
            tp_body(M, rows, kc, ap, w, ldw, c, ldc, overwrite, rem, next);                        \
    }
#define UKRT_ENTRY(M) ukrt_##M,
TP_ROWS(UKRT)
static const ukrt_fn ukrt_tab[TP_MAX_M + 1] = {0, TP_ROWS(UKRT_ENTRY)};

static inline void ukr_tp(int m, int rows, int kc, const float* ap, const float* w, long ldw,
                          float* c, long ldc, int overwrite, long rem, long next) {
    ukrt_tab[m](rows, kc, ap, w, ldw, c, ldc, overwrite, rem, next);
}

static inline void ukr_wt(int mr, int nr, int kc, const float* w, long ldw, const float* bp,
                          float* ct, int overwrite, const ukr_pf_t* pf) {
    ukrw_tab[mr][(nr + VL - 1) / VL](kc, w, ldw, bp, ct, overwrite, pf);
}

static inline void ukr_wc(int mr, int nr, int kc, const float* w, long ldw, const float* bp,
                          float* ct, int overwrite) {
    ukrc_tab[mr][(nr + VL - 1) / VL](kc, w, ldw, bp, ct, overwrite, NULL);
}

#endif
