#include "tests/common/kernel_checks.h"

#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "tests/common/testutil.h"

void kc_set_threads(int t) {
#ifdef _OPENMP
    omp_set_num_threads(t);
#else
    (void)t;
#endif
}
#define set_threads kc_set_threads

static const float GUARD = -7777.0f; // C padding; any write to it is a bug

// Relative error allowed against the double reference for a float product of depth k.
static double gemm_tol(int k) { return 1e-5 * sqrt((double)k + 1.0) + 1e-6; }

// The first cell of cbuf [rows][ldc] (a guard row, C's m rows, a guard row) outside C's m x n
// that no longer holds GUARD, as r * ldc + j, or -1.
static long guard_hit(const float* cbuf, long rows, long ldc, int m, int n) {
    for (long r = 0; r < rows; r++)
        for (long j = 0; j < ldc; j++) {
            int inside = r >= 1 && r <= m && j < n;
            if (!inside && memcmp(&cbuf[r * ldc + j], &GUARD, sizeof GUARD) != 0)
                return r * ldc + j;
        }
    return -1;
}

kc_strided_t kc_make_operand(int rows, int cols, int trans, int pad, uint64_t seed) {
    kc_strided_t x;
    // Stored as [rows][cols + pad] when not transposed, as [cols][rows + pad] when it is.
    long outer = trans ? cols : rows, inner = (trans ? rows : cols) + pad;
    long n = outer * inner;
    x.buf = malloc(((size_t)n + 1) * sizeof(float));
    ck_assert_ptr_nonnull(x.buf);
    for (long i = 0; i < n; i++) x.buf[i] = NAN;
    x.rs = trans ? 1 : inner;
    x.cs = trans ? inner : 1;
    float* vals = malloc(((size_t)rows * cols + 1) * sizeof(float));
    tu_fill_normal(vals, (long)rows * cols, seed, 1.0f);
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) x.buf[i * x.rs + j * x.cs] = vals[(long)i * cols + j];
    free(vals);
    return x;
}

// Sizes to build shapes around: the table's blocking, or stand-ins for the unblocked ref.
typedef struct {
    int mr, nr, mc, kc, nc;
} blocking_t;

static blocking_t blocking(const kern_table_t* t) {
    blocking_t b = {t->mr, t->nr, t->mc, t->kc, t->nc};
    if (b.kc <= 0) b = (blocking_t){2, 2, 64, 64, 300};
    return b;
}

// A buffer for pre-packed B: 64-byte aligned (aligned_alloc wants a multiple of it).
static float* packed_alloc(size_t floats) {
    float* p = aligned_alloc(64, (floats * sizeof(float) + 63) & ~(size_t)63);
    ck_assert_ptr_nonnull(p);
    return p;
}

// sgemm_packed on B packed by pack_b (into a buffer with a NaN guard after it) gives the bits
// `want` that sgemm wrote (from initial C c0, accumulate as given).
static void check_packed_same(const kern_table_t* t, int m, int n, int k, const kc_strided_t* a,
                              const kc_strided_t* b, const float* c0, const float* want, long ldc,
                              int accumulate) {
    size_t np = t->packed_floats(k, n, 1);
    float* bp = packed_alloc(np + 16); // [np] + guard
    for (size_t i = 0; i < np + 16; i++) bp[i] = NAN;
    t->pack_b(k, n, b->buf, NULL, b->rs, b->cs, bp);
    for (size_t i = np; i < np + 16; i++)
        ck_assert_msg(isnan(bp[i]), "%s: pack_b overran", t->name);
    float* c = malloc(((size_t)m * ldc + 1) * sizeof(float)); // [m][ldc]
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) c[i * ldc + j] = c0[(long)i * n + j];
    t->sgemm_packed(m, n, k, a->buf, a->rs, a->cs, bp, c, ldc, accumulate);
    for (int i = 0; i < m; i++)
        ck_assert_msg(memcmp(c + i * ldc, want + i * ldc, (size_t)n * sizeof(float)) == 0,
                      "%s m=%d n=%d k=%d acc=%d: pre-packed B differs from sgemm (row %d)", t->name,
                      m, n, k, accumulate, i);
    free(c);
    free(bp);
}

// Runs one case and checks it: C[m, n] (+)= op(A)[m, k] op(B)[k, n] with ldc = n + cpad, one
// guard row above and below, error against the double reference, guards untouched.
void kc_check_case(const kern_table_t* t, int m, int n, int k, int ta, int tb, int accumulate,
                   int cpad, uint64_t seed) {
    kc_strided_t a = kc_make_operand(m, k, ta, 3, seed);
    kc_strided_t b = kc_make_operand(k, n, tb, 5, seed + 1);
    long ldc = n + cpad;
    long rows = m + 2;                                              // guard row, m rows, guard row
    float* cbuf = malloc(((size_t)rows * ldc + 1) * sizeof(float)); // [m + 2][ldc]
    for (long i = 0; i < rows * ldc; i++) cbuf[i] = GUARD;
    float* c = cbuf + ldc;
    float* c0 = malloc(((size_t)m * n + 1) * sizeof(float)); // [m][n]: initial C
    tu_fill_normal(c0, (long)m * n, seed + 2, 1.0f);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) c[i * ldc + j] = c0[(long)i * n + j];

    t->sgemm(m, n, k, a.buf, a.rs, a.cs, b.buf, b.rs, b.cs, c, ldc, accumulate);
    check_packed_same(t, m, n, k, &a, &b, c0, c, ldc, accumulate);

    double* want = malloc(((size_t)m * n + 1) * sizeof(double)); // [m][n]
    tu_dgemm(m, n, k, a.buf, a.rs, a.cs, b.buf, b.rs, b.cs, want, n);
    if (accumulate)
        for (long i = 0; i < (long)m * n; i++) want[i] += c0[i];
    float* got = malloc(((size_t)m * n + 1) * sizeof(float)); // [m][n]
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) got[(long)i * n + j] = c[i * ldc + j];
    double err = tu_rel_err_fd(got, want, (long)m * n);
    double tol = gemm_tol(k);
    ck_assert_msg(err <= tol, "%s m=%d n=%d k=%d %c%c acc=%d: rel err %.3g > %.3g", t->name, m, n,
                  k, ta ? 'T' : 'N', tb ? 'T' : 'N', accumulate, err, tol);

    long bad = guard_hit(cbuf, rows, ldc, m, n);
    ck_assert_msg(bad < 0, "%s m=%d n=%d k=%d %c%c acc=%d: wrote outside C (row %ld col %ld)",
                  t->name, m, n, k, ta ? 'T' : 'N', tb ? 'T' : 'N', accumulate, bad / ldc - 1,
                  bad % ldc);
    free(a.buf);
    free(b.buf);
    free(cbuf);
    free(c0);
    free(want);
    free(got);
}

// All four transposition cases and both accumulate modes.
static void check_all_cases(const kern_table_t* t, int m, int n, int k, uint64_t seed) {
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int acc = 0; acc < 2; acc++)
                kc_check_case(t, m, n, k, ta, tb, acc, 3, seed + 16 * (ta * 4 + tb * 2 + acc));
}

void kc_check_shapes(const kern_table_t* t, const int (*dims)[3], int count, int clamp,
                     uint64_t seed) {
    for (int s = 0; s < count; s++) {
        int m = dims[s][0], n = dims[s][1];
        if (clamp) m = m > 0 ? m : 1, n = n > 0 ? n : 1;
        check_all_cases(t, m, n, dims[s][2], seed + 100 * (uint64_t)s);
    }
}

// Around the table's own register and cache blocks: MR±1, NR±1, NR/2 (one zmm), KC±1, 2KC+1,
// MC±1, NC+1.
void kc_check_block_edges(const kern_table_t* t) {
    blocking_t bk = blocking(t);
    int mr = bk.mr, nr = bk.nr, kc = bk.kc, mc = bk.mc;
    const int dims[][3] = {
        {mr - 1, nr - 1, 5},      {mr, nr, 7},
        {mr + 1, nr + 1, 9},      {2 * mr + 1, 2 * nr - 1, 3},
        {mr + 1, nr, kc - 1},     {mr - 1, nr + 1, kc},
        {mr, nr - 1, kc + 1},     {mr, nr / 2, 2 * kc + 1},
        {mr + 1, nr / 2 + 1, 64}, {mr, nr / 2 - 1, 63},
        {mc + 1, nr + 3, 19},     {mc - 1, 2 * nr + 1, 33},
        {mc + 1, nr / 2, kc + 1}, {mc, 3 * nr, 70},
    };
    kc_check_shapes(t, dims, (int)(sizeof dims / sizeof dims[0]), 1, 5000);
}

// A big odd shape and ones wider than NC (several jc blocks, a partial last one); larger ldc
// padding.
void kc_check_big_shapes(const kern_table_t* t) {
    blocking_t bk = blocking(t);
    check_all_cases(t, 300, 257, 2 * bk.kc + 77, 9000);
    int wide = bk.nc + 37;
    kc_check_case(t, 7, wide, 40, 0, 0, 1, 64, 9100);
    kc_check_case(t, 13, wide, 70, 1, 1, 0, 1, 9200);
    kc_check_case(t, 5, 2 * bk.nc + 1, 17, 0, 1, 1, 5, 9300);
}

// k = 0: accumulate = 0 zeroes C, accumulate = 1 leaves it as it was; nothing else touched.
void kc_check_k_zero(const kern_table_t* t) {
    const int m = 13, n = 33;
    const long ldc = 40;
    float c[(m + 2) * ldc]; // [m + 2][ldc] with guard rows
    float a[1] = {NAN}, b[1] = {NAN};
    for (int acc = 0; acc < 2; acc++) {
        for (long i = 0; i < (m + 2) * ldc; i++) c[i] = GUARD;
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) c[(i + 1) * ldc + j] = (float)(i * n + j);
        t->sgemm(m, n, 0, a, 1, 1, b, 1, 1, c + ldc, ldc, acc);
        for (long r = 0; r < m + 2; r++)
            for (long j = 0; j < ldc; j++) {
                int inside = r >= 1 && r <= m && j < n;
                float want = !inside ? GUARD : acc ? (float)((r - 1) * n + j) : 0.0f;
                ck_assert_msg(c[r * ldc + j] == want, "%s acc=%d C[%ld][%ld] = %g, want %g",
                              t->name, acc, r - 1, j, c[r * ldc + j], want);
            }
    }
}

// Neither stride 1 (a strided view, e.g. every other column): the generic packing paths.
void kc_check_general_strides(const kern_table_t* t) {
    static const int dims[][3] = {{7, 19, 5}, {40, 70, 300}, {13, 33, 65}, {25, 64, 200}};
    for (size_t s = 0; s < sizeof dims / sizeof dims[0]; s++) {
        int m = dims[s][0], n = dims[s][1], k = dims[s][2];
        long rsa = 2L * k + 1, csa = 2, rsb = 3, csb = 3L * k + 2; // A rows, B columns apart
        float* a = malloc(((size_t)m * rsa + 1) * sizeof(float));  // [m][2k+1], odd cols used
        float* b = malloc(((size_t)n * csb + 1) * sizeof(float));  // [n][3k+2], every 3rd
        tu_fill_normal(a, (long)m * rsa, 60 + s, 1.0f);
        tu_fill_normal(b, (long)n * csb, 70 + s, 1.0f);
        float* c = malloc((size_t)m * n * sizeof(float));      // [m][n]
        double* want = malloc((size_t)m * n * sizeof(double)); // [m][n]
        t->sgemm(m, n, k, a, rsa, csa, b, rsb, csb, c, n, 0);
        tu_dgemm(m, n, k, a, rsa, csa, b, rsb, csb, want, n);
        double err = tu_rel_err_fd(c, want, (long)m * n);
        ck_assert_msg(err <= gemm_tol(k), "%s m=%d n=%d k=%d strided: rel err %.3g", t->name, m, n,
                      k, err);
        free(a);
        free(b);
        free(c);
        free(want);
    }
}

// Bit-identical results for 1, 2 and 3 threads, odd shapes, all cases, both modes; the short-k
// shapes take the whole-rows partition.
void kc_check_thread_invariance(const kern_table_t* t) {
    static const int dims[][3] = {
        {257, 131, 300}, {33, 517, 65}, {150, 70, 1000}, {7, 1100, 9}, {130, 90, 40}};
    for (size_t s = 0; s < sizeof dims / sizeof dims[0]; s++) {
        int m = dims[s][0], n = dims[s][1], k = dims[s][2];
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                kc_strided_t a = kc_make_operand(m, k, ta, 1, 700 + s);
                kc_strided_t b = kc_make_operand(k, n, tb, 2, 800 + s);
                size_t cn = (size_t)m * n;
                float* c0 = malloc(cn * sizeof(float)); // [m][n]
                float* c[3];                            // [m][n] for 1, 2, 3 threads
                tu_fill_normal(c0, (long)cn, 900 + s, 1.0f);
                for (int acc = 0; acc < 2; acc++) {
                    for (int th = 1; th <= 3; th++) {
                        c[th - 1] = malloc(cn * sizeof(float));
                        memcpy(c[th - 1], c0, cn * sizeof(float));
                        set_threads(th);
                        t->sgemm(m, n, k, a.buf, a.rs, a.cs, b.buf, b.rs, b.cs, c[th - 1], n, acc);
                    }
                    set_threads(1);
                    for (int th = 2; th <= 3; th++)
                        ck_assert_msg(memcmp(c[0], c[th - 1], cn * sizeof(float)) == 0,
                                      "%s m=%d n=%d k=%d %c%c acc=%d: %d threads differ from 1",
                                      t->name, m, n, k, ta ? 'T' : 'N', tb ? 'T' : 'N', acc, th);
                    for (int th = 0; th < 3; th++) free(c[th]);
                }
                free(c0);
                free(a.buf);
                free(b.buf);
            }
    }
}

// A sub-problem (a block of rows and columns of A·B, at an offset that is not a multiple of
// any block size) has the same bits as the same elements of the whole product: the result of
// an element does not depend on which micro-tile (full, partial rows, partial columns through
// the temporary tile) or thread rectangle it falls in.
void kc_check_position_invariance(const kern_table_t* t) {
    const int m = 61, n = 83, k = 2 * blocking(t).kc + 40; // 3 KC blocks
    for (int tab = 0; tab < 4; tab++) {
        int ta = tab / 2, tb = tab % 2;
        kc_strided_t a = kc_make_operand(m, k, ta, 0, 31);
        kc_strided_t b = kc_make_operand(k, n, tb, 0, 32);
        float* full = malloc((size_t)m * n * sizeof(float)); // [m][n]
        set_threads(2);
        t->sgemm(m, n, k, a.buf, a.rs, a.cs, b.buf, b.rs, b.cs, full, n, 0);
        static const int subs[][4] = {{1, 3, 17, 29},  {5, 7, 50, 1},    {0, 0, 61, 83},
                                      {13, 40, 9, 43}, {11, 17, 25, 33}, {2, 51, 12, 32}};
        for (size_t s = 0; s < sizeof subs / sizeof subs[0]; s++) {
            int i0 = subs[s][0], j0 = subs[s][1], sm = subs[s][2], sn = subs[s][3];
            float* part = malloc((size_t)sm * sn * sizeof(float)); // [sm][sn]
            set_threads(1 + (int)(s % 2));
            t->sgemm(sm, sn, k, a.buf + i0 * a.rs, a.rs, a.cs, b.buf + j0 * b.cs, b.rs, b.cs, part,
                     sn, 0);
            for (int i = 0; i < sm; i++)
                ck_assert_msg(memcmp(part + (long)i * sn, full + (long)(i0 + i) * n + j0,
                                     (size_t)sn * sizeof(float)) == 0,
                              "%s ta=%d tb=%d: sub-block at (%d, %d) row %d differs from the "
                              "full product",
                              t->name, ta, tb, i0, j0, i);
            free(part);
        }
        set_threads(1);
        free(full);
        free(a.buf);
        free(b.buf);
    }
}

// An nt product (B column-major: a transposed weight, column stride k + 3) of m rows, with A
// in both layouts, in both accumulate modes, computed whole on one thread and again in row
// slices of slices[] (cycled) on 1 and 2 threads: every row of C must have the same bits. With
// m too tall for a small-m path and slices that take it (and some that do not), this holds the
// path to the blocked loops' bits.
static void nt_slices_match(const kern_table_t* t, int m, int n, int k, const int* slices, int ns,
                            const char* path) {
    for (int ta = 0; ta < 2; ta++)
        for (int acc = 0; acc < 2; acc++) {
            kc_strided_t a = kc_make_operand(m, k, ta, 1, 71 + ta);
            kc_strided_t b = kc_make_operand(k, n, 1, 3, 73);
            size_t cn = (size_t)m * n;
            float* c0 = malloc(cn * sizeof(float));   // [m][n] C before the product
            float* full = malloc(cn * sizeof(float)); // [m][n] blocked loops
            float* part = malloc(cn * sizeof(float)); // [m][n] in slices
            tu_fill_normal(c0, (long)cn, 75, 1.0f);
            memcpy(full, c0, cn * sizeof(float));
            set_threads(1);
            t->sgemm(m, n, k, a.buf, a.rs, a.cs, b.buf, b.rs, b.cs, full, n, acc);
            memcpy(part, c0, cn * sizeof(float));
            for (int i0 = 0, s = 0; i0 < m; s++) {
                int rows = slices[s % ns] < m - i0 ? slices[s % ns] : m - i0;
                set_threads(1 + s % 2);
                t->sgemm(rows, n, k, a.buf + i0 * a.rs, a.rs, a.cs, b.buf, b.rs, b.cs,
                         part + (long)i0 * n, n, acc);
                i0 += rows;
            }
            set_threads(1);
            for (int i = 0; i < m; i++)
                ck_assert_msg(
                    memcmp(part + (long)i * n, full + (long)i * n, (size_t)n * sizeof(float)) == 0,
                    "%s m=%d n=%d k=%d %cT acc=%d: row %d differs between the %s and the "
                    "blocked loops",
                    t->name, m, n, k, ta ? 'T' : 'N', acc, i, path);
            free(c0);
            free(full);
            free(part);
            free(a.buf);
            free(b.buf);
        }
}

// The nt products of more than tp_max_m and at most wt_max_m rows take the weight-rows path
// (compute/kernels/driver_wt.h), larger ones the blocked loops: a product too tall for the
// path, then its rows again in slices that take it (whole, partial and single lane panels) or
// not. A too: the path packs it transposed, column-major or not. At a depth k where slices of
// several panels take the path (k >= wt_min_k), and where only those whose panels are all full
// do (wt_full_min_k <= k < wt_min_k).
static void wt_slices_match(const kern_table_t* t, int k) {
    int wm = t->wt_max_m;
    const int slices[] = {wm, 1, t->nr - 3, t->nr, 2 * t->nr, t->nr + 3, wm - 1};
    nt_slices_match(t, 2 * wm + 7, 3 * t->mr + 5, k, slices,
                    (int)(sizeof slices / sizeof slices[0]), "weight-rows path");
}

void kc_check_wt_path(const kern_table_t* t) {
    if (t->wt_max_m <= 0) return;
    int k0 = 2 * t->kc + 40; // several KC blocks, the last one short
    wt_slices_match(t, k0 > t->wt_min_k ? k0 : t->wt_min_k + 40);
    if (t->wt_full_min_k < t->wt_min_k)
        wt_slices_match(t, k0 > t->wt_full_min_k && k0 < t->wt_min_k ? k0 : t->wt_full_min_k + 40);
}

// The transposing path (compute/kernels/driver_tp.h), at most tp_max_m rows. n spans several
// of its tiles of a vector's weight rows (nr / 2) and ends in a partial one; k spans several
// KC blocks and ends in a short one whose depth is not a multiple of a vector (the gathered
// tail); every row count from 1 to tp_max_m takes it, one past it does not.
void kc_check_tp_path(const kern_table_t* t) {
    if (t->tp_max_m <= 0) return;
    int hi = t->tp_max_m, wm = t->wt_max_m > hi ? t->wt_max_m : hi;
    int slices[64 + 2], ns = 0;
    ck_assert_int_le(hi, 64);
    for (int r = 1; r <= hi; r++) slices[ns++] = r;
    slices[ns++] = hi + 1;
    slices[ns++] = hi;
    // m: more than any small-m path takes, so the whole product takes the blocked loops.
    nt_slices_match(t, wm + hi * (hi + 1) / 2 + 7, 5 * (t->nr / 2) + 3, 2 * t->kc + 43, slices, ns,
                    "transposing path");
}

// An nn product (B row-major, row stride ldb) of m rows, plain (both accumulate modes) and fused,
// with A in both layouts, computed whole on one thread and again in row slices of slices[] (cycled)
// on 1 and 2 threads: every row of C (H0, H1, out) must have the same bits. With m too tall for a
// small-m path and slices that take it (and some that do not), this holds the path to the
// blocked loops' bits.
static void nn_slices_match(const kern_table_t* t, int m, int n, int k, int ldb, const int* slices,
                            int ns, const char* path) {
    size_t cn = (size_t)m * n;
    for (int ta = 0; ta < 2; ta++) {
        kc_strided_t a = kc_make_operand(m, k, ta, 1, 81 + ta);
        kc_strided_t b0 = kc_make_operand(k, n, 0, ldb - n, 83);
        kc_strided_t b1 = kc_make_operand(k, n, 0, ldb - n, 84);
        float* want[3]; // [m][n] each: C (or H0), H1, out computed whole
        float* got[3];  // [m][n] each: the same in slices
        for (int q = 0; q < 3; q++) {
            want[q] = malloc(cn * sizeof(float));
            got[q] = malloc(cn * sizeof(float));
        }
        for (int fused = 0; fused < 2; fused++)
            for (int acc = 0; acc < 2 - fused; acc++) {
                tu_fill_normal(want[0], (long)cn, 85, 1.0f); // C before an accumulating product
                memcpy(got[0], want[0], cn * sizeof(float));
                set_threads(1);
                if (fused)
                    t->gemm_swiglu(m, n, k, a.buf, a.rs, a.cs, b0.buf, b1.buf, b0.rs, b0.cs, NULL,
                                   want[0], want[1], want[2], n);
                else
                    t->sgemm(m, n, k, a.buf, a.rs, a.cs, b0.buf, b0.rs, b0.cs, want[0], n, acc);
                for (int i0 = 0, s = 0; i0 < m; s++) {
                    int rows = slices[s % ns] < m - i0 ? slices[s % ns] : m - i0;
                    const float* ai = a.buf + i0 * a.rs;
                    long off = (long)i0 * n;
                    set_threads(1 + s % 2);
                    if (fused)
                        t->gemm_swiglu(rows, n, k, ai, a.rs, a.cs, b0.buf, b1.buf, b0.rs, b0.cs,
                                       NULL, got[0] + off, got[1] + off, got[2] + off, n);
                    else
                        t->sgemm(rows, n, k, ai, a.rs, a.cs, b0.buf, b0.rs, b0.cs, got[0] + off, n,
                                 acc);
                    i0 += rows;
                }
                set_threads(1);
                const char* what[3] = {fused ? "H0" : "C", "H1", "out"};
                for (int q = 0; q < (fused ? 3 : 1); q++)
                    for (int i = 0; i < m; i++)
                        ck_assert_msg(memcmp(got[q] + (long)i * n, want[q] + (long)i * n,
                                             (size_t)n * sizeof(float)) == 0,
                                      "%s m=%d n=%d k=%d %cN %s acc=%d: row %d of %s differs "
                                      "between the %s and the blocked loops",
                                      t->name, m, n, k, ta ? 'T' : 'N', fused ? "fused" : "plain",
                                      acc, i, what[q], path);
            }
        for (int q = 0; q < 3; q++) free(want[q]), free(got[q]);
        free(a.buf);
        free(b0.buf);
        free(b1.buf);
    }
}

// The weight-columns path (compute/kernels/driver_wc.h), wc_min_m to wc_max_m rows. n spans
// more than one group of the path's tiles (16 x MR columns) and ends in a partial tile; k
// spans several KC blocks and ends in a short one.
void kc_check_wc_path(const kern_table_t* t) {
    if (t->wc_max_m <= 0) return;
    int lo = t->wc_min_m, hi = t->wc_max_m;
    const int slices[] = {hi, lo, (lo + hi) / 2, lo - 1, hi - 1, 1, hi};
    nn_slices_match(t, 2 * hi + 7, 17 * t->mr + 5, 2 * t->kc + 40, 17 * t->mr + 8, slices,
                    (int)(sizeof slices / sizeof slices[0]), "weight-columns path");
}

// The first pass on B in place (compute/kernels/driver.h, bip_pass): products of at most
// bip_max_m rows; the whole product (more than MC rows) takes the packed loops. Two row
// strides: n + 3, where all the tiles read the weight in place, and 512 floats, where the first
// tile packs it for the others as it reads it. n spans several panels and ends in a partial
// one (packed); k spans several KC blocks and ends in a short one.
void kc_check_bip_path(const kern_table_t* t) {
    if (t->bip_max_m <= 0) return;
    int hi = t->bip_max_m < t->mc ? t->bip_max_m : t->mc;
    const int slices[] = {hi, 2 * t->mr + 1, hi + 1, 40, 1, hi - 1};
    int ns = (int)(sizeof slices / sizeof slices[0]);
    nn_slices_match(t, 2 * hi + 9, 5 * t->nr + 7, 2 * t->kc + 40, 5 * t->nr + 10, slices, ns,
                    "in-place first pass");
    nn_slices_match(t, 2 * hi + 9, 512 - 5, 2 * t->kc + 40, 512, slices, ns,
                    "in-place first pass, packing tile");
}

// The row-streaming path (compute/kernels/driver_rs.h), at most rs_max_m rows. n spans more
// than one chunk of its columns (1024) and ends in a partial vector; k spans several KC blocks
// and ends in a step of fewer than its RS_ROWS weight rows (6 on avx512, 3 on avx2); the row
// slices leave every count of rows in its last pass (RS_MA = 4). Then a weight row stride of
// 2048 floats, where avx512 takes up to 10 rows in passes of up to 8 over 2 weight rows a step
// (RS_ALIAS_MAX_M): every count of rows from 1 to 10 (9-10 in two even passes), and more, off
// that mode; k = 2 KC + 43 ends in a step of one row.
void kc_check_rs_path(const kern_table_t* t) {
    if (t->rs_max_m <= 0) return;
    int hi = t->rs_max_m;
    const int slices[] = {hi, 1, hi - 1, hi + 1, 3, hi};
    nn_slices_match(t, 2 * hi + 7, 1024 + 37, 2 * t->kc + 43, 1024 + 40, slices,
                    (int)(sizeof slices / sizeof slices[0]), "row-streaming path");
    const int aliased[] = {8, 1, 7, 2, 6, 3, 5, 4, 9, 10, 11, hi, hi + 1};
    nn_slices_match(t, 66 + 2 * hi + 1, 1024 + 37, 2 * t->kc + 43, 2048, aliased,
                    (int)(sizeof aliased / sizeof aliased[0]), "row-streaming path, 8 KiB rows");
}

// C of a product of depth k <= stream_max_k written with streaming stores (compute/kernels/
// driver.h, c_streams: C of at least KERN_STREAM_MIN_C floats, rows 64-byte aligned) against
// the same product stored normally (the row stride made odd, so the rows are not aligned): the
// same bits, every element written (C starts as NaN), nothing past n or outside C touched
// (guard cells), and the double reference. At depths 1, 2 and stream_max_k (dW = X^T dH of a
// group of that many tokens, and the other transposition cases) and one past it, where C is
// stored normally; 1 and 2 threads, which split C by rows.
void kc_check_stream_path(const kern_table_t* t) {
    if (t->stream_max_k <= 0) return;
    const int m = 300, n = 1000 - 3; // n: a partial last panel (temporary tile) on both ISAs
    ck_assert_int_ge((long)m * n, KERN_STREAM_MIN_C);
    const long lda = n + 11, ldo = n + 1; // aligned rows (a multiple of 16 floats), odd
    const int ks[] = {1, 2, t->stream_max_k, t->stream_max_k + 1};
    for (size_t s = 0; s < sizeof ks / sizeof ks[0]; s++)
        for (int tab = 0; tab < 4; tab++) {
            int k = ks[s], ta = tab / 2, tb = tab % 2;
            if (k != t->stream_max_k && !(ta == 1 && tb == 0)) continue; // dW's case elsewhere
            kc_strided_t a = kc_make_operand(m, k, ta, 1, 600 + s);
            kc_strided_t b = kc_make_operand(k, n, tb, 2, 610 + s);
            size_t rows = (size_t)m + 2;                               // guard, C, guard
            float* cs = aligned_alloc(64, rows * lda * sizeof(float)); // [m + 2][lda]
            float* co = malloc(rows * ldo * sizeof(float));            // [m + 2][ldo]
            ck_assert_ptr_nonnull(cs);
            ck_assert_ptr_nonnull(co);
            for (size_t i = 0; i < rows * lda; i++) cs[i] = GUARD;
            for (size_t i = 0; i < rows * ldo; i++) co[i] = GUARD;
            for (int i = 1; i <= m; i++)
                for (int j = 0; j < n; j++) cs[i * lda + j] = co[i * ldo + j] = NAN;
            ck_assert_int_eq((uintptr_t)(cs + lda) % 64, 0);
            for (int th = 1; th <= 2; th++) {
                set_threads(th);
                t->sgemm(m, n, k, a.buf, a.rs, a.cs, b.buf, b.rs, b.cs, cs + lda, lda, 0);
                t->sgemm(m, n, k, a.buf, a.rs, a.cs, b.buf, b.rs, b.cs, co + ldo, ldo, 0);
                for (int i = 1; i <= m; i++)
                    ck_assert_msg(memcmp(cs + i * lda, co + i * ldo, (size_t)n * sizeof(float)) ==
                                      0,
                                  "%s m=%d n=%d k=%d %c%c, %d threads: row %d differs between "
                                  "streaming and normal stores",
                                  t->name, m, n, k, ta ? 'T' : 'N', tb ? 'T' : 'N', th, i - 1);
            }
            set_threads(1);
            long bad = guard_hit(cs, (long)rows, lda, m, n);
            ck_assert_msg(bad < 0, "%s m=%d n=%d k=%d: streaming wrote outside C (row %ld col %ld)",
                          t->name, m, n, k, bad / lda - 1, bad % lda);
            double* want = malloc((size_t)m * n * sizeof(double)); // [m][n]
            float* got = malloc((size_t)m * n * sizeof(float));    // [m][n]
            tu_dgemm(m, n, k, a.buf, a.rs, a.cs, b.buf, b.rs, b.cs, want, n);
            for (int i = 0; i < m; i++)
                memcpy(got + (long)i * n, cs + (i + 1) * lda, (size_t)n * sizeof(float));
            double err = tu_rel_err_fd(got, want, (long)m * n);
            ck_assert_msg(err <= gemm_tol(k), "%s m=%d n=%d k=%d %c%c: rel err %.3g", t->name, m, n,
                          k, ta ? 'T' : 'N', tb ? 'T' : 'N', err);
            free(want);
            free(got);
            free(cs);
            free(co);
            free(a.buf);
            free(b.buf);
        }
}

// Called from inside a parallel region, each caller runs single-threaded on its own pack
// buffers and gets the same bits as a plain call.
void kc_check_inside_parallel_region(const kern_table_t* t) {
    const int m = 45, n = 70, k = 300, calls = 4;
    kc_strided_t a = kc_make_operand(m, k, 0, 0, 41);
    kc_strided_t b = kc_make_operand(k, n, 0, 0, 42);
    float* want = malloc((size_t)m * n * sizeof(float));        // [m][n]
    float* got = malloc((size_t)calls * m * n * sizeof(float)); // [calls][m][n]
    set_threads(1);
    t->sgemm(m, n, k, a.buf, a.rs, a.cs, b.buf, b.rs, b.cs, want, n, 0);
#ifdef _OPENMP
#pragma omp parallel for num_threads(2) schedule(static)
#endif
    for (int c = 0; c < calls; c++)
        t->sgemm(m, n, k, a.buf, a.rs, a.cs, b.buf, b.rs, b.cs, got + (long)c * m * n, n, 0);
    for (int c = 0; c < calls; c++)
        ck_assert_msg(memcmp(want, got + (long)c * m * n, (size_t)m * n * sizeof(float)) == 0,
                      "%s: call %d inside a parallel region differs", t->name, c);
    free(want);
    free(got);
    free(a.buf);
    free(b.buf);
}

// ---- SwiGLU ----

#define SN 1037 // not a multiple of 16: the zero-padded tail runs too

static void swiglu_inputs(float* h0, float* h1, float* da) {
    tu_fill_normal(h0, SN, 1, 3.0f);
    tu_fill_normal(h1, SN, 2, 1.0f);
    tu_fill_normal(da, SN, 3, 1.0f);
    // saturation on both sides, and zero; the last ones land in the tail
    const float edge[] = {-100.0f, -88.0f, -30.0f, -1e-3f, 0.0f, 1e-3f, 30.0f, 88.0f, 100.0f};
    for (int i = 0; i < 9; i++) h0[i * 97] = edge[i];
    h0[SN - 1] = -100.0f;
    h0[SN - 2] = 100.0f;
}

// Relative error of one value against its double reference, scaled by |want| + |scale|
// so values near zero are judged against the tensor's typical size.
static double err(double got, double want, double scale) {
    return fabs(got - want) / (fabs(want) + scale);
}

void kc_check_swiglu_formula(const kern_table_t* t) {
    static float h0[SN], h1[SN], da[SN], a[SN], dh0[SN], dh1[SN];
    swiglu_inputs(h0, h1, da);
    t->swiglu_fwd(SN, h0, h1, a);
    t->swiglu_bwd(SN, h0, h1, da, dh0, dh1);
    double worst = 0;
    for (int i = 0; i < SN; i++) {
        double x = h0[i], s = 1.0 / (1.0 + exp(-x));
        double wa = x * s * h1[i];
        double wd0 = da[i] * h1[i] * s * (1.0 + x * (1.0 - s));
        double wd1 = da[i] * x * s;
        double e = fmax(err(a[i], wa, 1e-3), fmax(err(dh0[i], wd0, 1e-3), err(dh1[i], wd1, 1e-3)));
        ck_assert_msg(e < 2e-6, "%s: element %d (h0 = %g): error %g", t->name, i, x, e);
        if (e > worst) worst = e;
    }
    printf("swiglu %s: worst relative error %.2e\n", t->name, worst);
}

// An element's result is a function of its inputs only, not of its position (vector body or
// tail) or of the length of the call; nothing past n is written.
void kc_check_swiglu_position(const kern_table_t* t) {
    static float h0[SN], h1[SN], da[SN], a[SN], dh0[SN], dh1[SN];
    swiglu_inputs(h0, h1, da);
    t->swiglu_fwd(SN, h0, h1, a);
    t->swiglu_bwd(SN, h0, h1, da, dh0, dh1);
    static const int offs[][2] = {{0, 1}, {3, 5}, {17, 16}, {100, 31}, {SN - 7, 7}, {0, 0}};
    for (size_t s = 0; s < sizeof offs / sizeof offs[0]; s++) {
        int i0 = offs[s][0], n = offs[s][1];
        float pa[40], p0[40], p1[40]; // n results, then guards
        for (int i = 0; i < 40; i++) pa[i] = p0[i] = p1[i] = GUARD;
        t->swiglu_fwd(n, h0 + i0, h1 + i0, pa);
        t->swiglu_bwd(n, h0 + i0, h1 + i0, da + i0, p0, p1);
        for (int i = 0; i < 40; i++) {
            int in = i < n;
            ck_assert_msg(memcmp(&pa[i], in ? &a[i0 + i] : &GUARD, sizeof(float)) == 0 &&
                              memcmp(&p0[i], in ? &dh0[i0 + i] : &GUARD, sizeof(float)) == 0 &&
                              memcmp(&p1[i], in ? &dh1[i0 + i] : &GUARD, sizeof(float)) == 0,
                          "%s: swiglu of [%d, %d) element %d differs from the full call", t->name,
                          i0, i0 + n, i);
        }
    }
}

// ---- gemm_swiglu ----

// Rows [0, m) x cols [0, n) of x (row stride ld) equal want [m][n] bit for bit, and every
// other cell of x's [m + 2][ld] buffer (guard row above, padding, guard row below) is GUARD.
static void expect_rows(const kern_table_t* t, const char* what, const float* xbuf, long ld,
                        const float* want, int m, int n, const char* how) {
    for (long r = 0; r < m + 2; r++)
        for (long j = 0; j < ld; j++) {
            int inside = r >= 1 && r <= m && j < n;
            const float* w = inside ? &want[(r - 1) * n + j] : &GUARD;
            ck_assert_msg(memcmp(&xbuf[r * ld + j], w, sizeof(float)) == 0,
                          "%s %s m=%d n=%d (%s): element (%ld, %ld) = %g, want %g", t->name, what,
                          m, n, how, r - 1, j, xbuf[r * ld + j], *w);
        }
}

// One fused case: h0 = op(A)·op(B0), h1 = op(A)·op(B1), out = silu(h0) * h1 with ldc = n + 3.
// The reference is the unfused path (two sgemm calls, then swiglu_fwd), itself checked
// against double here; the fused results must equal it bit for bit with B packed on the fly
// and pre-packed, on 1, 2 and 3 threads, and touch nothing outside [m, n].
static void check_fused_case(const kern_table_t* t, int m, int n, int k, int ta, int tb,
                             uint64_t seed) {
    kc_strided_t a = kc_make_operand(m, k, ta, 3, seed);
    kc_strided_t b0 = kc_make_operand(k, n, tb, 5, seed + 1);
    kc_strided_t b1 = kc_make_operand(k, n, tb, 5, seed + 2);
    size_t mn = (size_t)m * n + 1;
    float* r[3]; // [m][n] each: h0, h1, out of the unfused path
    for (int q = 0; q < 3; q++) r[q] = malloc(mn * sizeof(float));
    t->sgemm(m, n, k, a.buf, a.rs, a.cs, b0.buf, b0.rs, b0.cs, r[0], n, 0);
    t->sgemm(m, n, k, a.buf, a.rs, a.cs, b1.buf, b1.rs, b1.cs, r[1], n, 0);
    t->swiglu_fwd((long)m * n, r[0], r[1], r[2]);

    // the unfused path against double: h0, h1 by the GEMM tolerance, out by the formula
    double* w[2]; // [m][n] each
    for (int q = 0; q < 2; q++) w[q] = malloc(mn * sizeof(double));
    tu_dgemm(m, n, k, a.buf, a.rs, a.cs, b0.buf, b0.rs, b0.cs, w[0], n);
    tu_dgemm(m, n, k, a.buf, a.rs, a.cs, b1.buf, b1.rs, b1.cs, w[1], n);
    double tol = gemm_tol(k);
    for (int q = 0; q < 2; q++) {
        double e = tu_rel_err_fd(r[q], w[q], (long)m * n);
        ck_assert_msg(e <= tol, "%s fused m=%d n=%d k=%d: h%d rel err %.3g", t->name, m, n, k, q,
                      e);
    }
    for (long i = 0; i < (long)m * n; i++) {
        double x = r[0][i], want = x / (1.0 + exp(-x)) * r[1][i];
        ck_assert_msg(fabs(r[2][i] - want) <= 4e-6 * (fabs(want) + 1e-3),
                      "%s fused m=%d n=%d k=%d: out[%ld] = %g, want %g", t->name, m, n, k, i,
                      r[2][i], want);
    }

    size_t np = t->packed_floats(k, n, 2);
    float* bp = packed_alloc(np + 16); // [np] + NaN guard
    for (size_t i = 0; i < np + 16; i++) bp[i] = NAN;
    t->pack_b(k, n, b0.buf, b1.buf, b0.rs, b0.cs, bp);
    for (size_t i = np; i < np + 16; i++)
        ck_assert_msg(isnan(bp[i]), "%s: pack_b overran", t->name);

    long ldc = n + 3;
    size_t cells = (size_t)(m + 2) * ldc + 1;
    float* buf[3]; // [m + 2][ldc] each: h0, h1, out with guard rows
    for (int q = 0; q < 3; q++) buf[q] = malloc(cells * sizeof(float));
    for (int packed = 0; packed < 2; packed++)
        for (int th = 1; th <= 3; th++) {
            for (int q = 0; q < 3; q++)
                for (size_t i = 0; i < cells; i++) buf[q][i] = GUARD;
            set_threads(th);
            t->gemm_swiglu(m, n, k, a.buf, a.rs, a.cs, b0.buf, b1.buf, b0.rs, b0.cs,
                           packed ? bp : NULL, buf[0] + ldc, buf[1] + ldc, buf[2] + ldc, ldc);
            set_threads(1);
            char how[64];
            snprintf(how, sizeof how, "k=%d %c%c %s, %d threads", k, ta ? 'T' : 'N', tb ? 'T' : 'N',
                     packed ? "pre-packed" : "packed on the fly", th);
            expect_rows(t, "h0", buf[0], ldc, r[0], m, n, how);
            expect_rows(t, "h1", buf[1], ldc, r[1], m, n, how);
            expect_rows(t, "out", buf[2], ldc, r[2], m, n, how);
        }
    for (int q = 0; q < 3; q++) free(buf[q]), free(r[q]);
    for (int q = 0; q < 2; q++) free(w[q]);
    free(bp);
    free(a.buf);
    free(b0.buf);
    free(b1.buf);
}

void kc_check_gemm_swiglu(const kern_table_t* t) {
    blocking_t bk = blocking(t);
    int mr = bk.mr, nr = bk.nr, kc = bk.kc, mc = bk.mc;
    // zeros and ones; tails of 8 and 16 lanes; around MR, NR, KC, MC; short k (< 64: the
    // row-walking pass) and long; odd panel counts (a short last run pair); wider than NC.
    const int dims[][3] = {
        {0, 5, 7},
        {5, 0, 7},
        {5, 7, 0},
        {1, 1, 1},
        {1, 17, 5},
        {2, 300, 9},
        {mr, nr, kc},
        {mr + 1, nr - 1, kc + 1},
        {mr - 1, 3 * nr + 5, 70},
        {3 * mr + 5, 5 * nr + 7, 2 * kc + 3},
        {mc + 1, 2 * nr + 3, 65},
        {33, 9 * nr + 5, 30},
        {32, 11 * nr, 100},
    };
    for (size_t s = 0; s < sizeof dims / sizeof dims[0]; s++) {
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                check_fused_case(t, dims[s][0], dims[s][1], dims[s][2], ta, tb,
                                 20000 + 100 * s + 10 * ta + tb);
    }
    check_fused_case(t, 5, bk.nc + 37, 40, 0, 0, 21000); // several B blocks
    check_fused_case(t, 7, 2 * bk.nc + 3 * nr + 1, 70, 0, 1, 21100);
}

// One matrix (or pair) packed by pack_b and by pack_b_part in blocks of `rows` rows (by_rows)
// or of `cols` columns (whole panels), the blocks taken in reverse order.
static void pack_part_case(const kern_table_t* t, int k, int n, int trans, int pair, int by_rows,
                           int step) {
    kc_strided_t b0 = kc_make_operand(k, n, trans, 3, 77 + k + n);
    kc_strided_t b1 = kc_make_operand(k, n, trans, 3, 91 + k * n);
    const float* second = pair ? b1.buf : NULL;
    size_t np = t->packed_floats(k, n, pair ? 2 : 1);
    float* want = packed_alloc(np + 16);
    float* got = packed_alloc(np + 16);
    for (size_t i = 0; i < np + 16; i++) want[i] = got[i] = NAN;
    t->pack_b(k, n, b0.buf, second, b0.rs, b0.cs, want);
    int len = by_rows ? k : n, nblk = (len + step - 1) / step;
    for (int blk = nblk - 1; blk >= 0; blk--) {
        int lo = blk * step, hi = lo + step < len ? lo + step : len;
        if (by_rows)
            t->pack_b_part(k, n, b0.buf, second, b0.rs, b0.cs, got, lo, hi, 0, n);
        else
            t->pack_b_part(k, n, b0.buf, second, b0.rs, b0.cs, got, 0, k, lo, hi);
    }
    // NaN != NaN: compare the bytes (the guard stays NaN in both)
    ck_assert_msg(memcmp(want, got, (np + 16) * sizeof(float)) == 0,
                  "%s k=%d n=%d trans=%d pair=%d %s=%d: pack_b_part differs from pack_b", t->name,
                  k, n, trans, pair, by_rows ? "rows" : "cols", step);
    free(want), free(got), free(b0.buf), free(b1.buf);
}

void kc_check_pack_b_part(const kern_table_t* t) {
    int nr = t->nr, kc = t->kc > 0 ? t->kc : 64;
    const int shapes[][2] = {
        {1, 1}, {7, 3 * nr + 5}, {kc + 9, 2 * nr}, {2 * kc + 3, 5 * nr + 1}, {300, 520}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int k = shapes[s][0], n = shapes[s][1];
        for (int trans = 0; trans < 2; trans++)
            for (int pair = 0; pair < 2; pair++) {
                pack_part_case(t, k, n, trans, pair, 1, 1);
                pack_part_case(t, k, n, trans, pair, 1, 5);
                pack_part_case(t, k, n, trans, pair, 1, kc - 3);
                pack_part_case(t, k, n, trans, pair, 0, nr);
                pack_part_case(t, k, n, trans, pair, 0, 3 * nr);
            }
    }
}
