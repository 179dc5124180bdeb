// The dense kernels behind the dispatch table: every ISA this CPU runs against a double
// reference, in all four transposition cases, with edge shapes around the blocking of each
// table, strided inputs with poisoned padding, guarded output, and bit-identical results
// for any thread count and any position of a sub-problem.
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "compute/kernels/kernels.h"
#include "tests/common/testutil.h"

// ---- helpers ----

// The ISAs this build and CPU can run, in KERN_* order.
static int n_isas;
static kern_isa_t isas[KERN_N_ISA];

static void setup(void) {
    ck_assert_int_eq(kern_init(4), 0);
    n_isas = 0;
    for (int i = 0; i < KERN_N_ISA; i++)
        if (kern_table_for((kern_isa_t)i)) isas[n_isas++] = (kern_isa_t)i;
}

static void teardown(void) { kern_shutdown(); }

static void set_threads(int t) {
#ifdef _OPENMP
    omp_set_num_threads(t);
#else
    (void)t;
#endif
}

static const float GUARD = -7777.0f; // C padding; any write to it is a bug

// A matrix op(X)[rows, cols] stored with some padding between rows (or columns) that holds
// NaN, so a kernel that reads past the logical matrix produces NaN and fails the error check.
typedef struct {
    float* buf;  // [rows * ld] or [cols * ld] floats, padding included
    long rs, cs; // element (i, j) at buf[i*rs + j*cs]
} strided_t;

static strided_t make_operand(int rows, int cols, int trans, int pad, uint64_t seed) {
    strided_t x;
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

// Runs one case and checks it: C[m, n] (+)= op(A)[m, k] op(B)[k, n] with ldc = n + cpad, one
// guard row above and below, error against the double reference, guards untouched.
static void check_case(const kern_table_t* t, int m, int n, int k, int ta, int tb, int accumulate,
                       int cpad, uint64_t seed) {
    strided_t a = make_operand(m, k, ta, 3, seed);
    strided_t b = make_operand(k, n, tb, 5, seed + 1);
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

    double* want = malloc(((size_t)m * n + 1) * sizeof(double)); // [m][n]
    tu_dgemm(m, n, k, a.buf, a.rs, a.cs, b.buf, b.rs, b.cs, want, n);
    if (accumulate)
        for (long i = 0; i < (long)m * n; i++) want[i] += c0[i];
    float* got = malloc(((size_t)m * n + 1) * sizeof(float)); // [m][n]
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) got[(long)i * n + j] = c[i * ldc + j];
    double err = tu_rel_err_fd(got, want, (long)m * n);
    double tol = 1e-5 * sqrt((double)k + 1.0) + 1e-6;
    ck_assert_msg(err <= tol, "%s m=%d n=%d k=%d %c%c acc=%d: rel err %.3g > %.3g", t->name, m, n,
                  k, ta ? 'T' : 'N', tb ? 'T' : 'N', accumulate, err, tol);

    long bad = -1;
    for (long r = 0; r < rows && bad < 0; r++)
        for (long j = 0; j < ldc; j++) {
            int inside = r >= 1 && r <= m && j < n;
            if (!inside && memcmp(&cbuf[r * ldc + j], &GUARD, sizeof GUARD) != 0) {
                bad = r * ldc + j;
                break;
            }
        }
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
                check_case(t, m, n, k, ta, tb, acc, 3, seed + 16 * (ta * 4 + tb * 2 + acc));
}

// ---- the dispatch table ----

START_TEST(test_dispatch) {
    ck_assert_ptr_nonnull(kern_table_for(KERN_REF));
    ck_assert_int_eq(kern_cpu_supports(KERN_REF), 1);
    ck_assert_ptr_null(kern_table_for((kern_isa_t)-1));
    ck_assert_ptr_null(kern_table_for(KERN_N_ISA));
    ck_assert_int_eq(kern_table_for(KERN_AVX2) != NULL, kern_cpu_supports(KERN_AVX2));
#ifndef MOED_HAVE_AVX512
    ck_assert_ptr_null(kern_table_for(KERN_AVX512));
#endif
    for (int i = 0; i < KERN_N_ISA; i++) {
        const kern_table_t* t = kern_table_for((kern_isa_t)i);
        if (!t) continue;
        ck_assert_int_eq(t->isa, i);
        ck_assert_ptr_nonnull(t->sgemm);
        ck_assert_ptr_nonnull(t->name);
    }
    kern_isa_t best = kern_best_isa();
    ck_assert_ptr_nonnull(kern_table_for(best));
    for (int i = best + 1; i < KERN_N_ISA; i++) ck_assert_ptr_null(kern_table_for((kern_isa_t)i));
    ck_assert_int_eq(kern_select(-1), 0);
    ck_assert_ptr_eq(kern, kern_table_for(best));
    ck_assert_int_eq(kern_select(KERN_REF), 0);
    ck_assert_ptr_eq(kern, kern_table_for(KERN_REF));
    ck_assert_int_eq(kern_select(KERN_N_ISA), -1);
    ck_assert_ptr_eq(kern, kern_table_for(KERN_REF)); // a failed select changes nothing
    ck_assert_int_ge(kern_pack_threads(), 4);
}
END_TEST

// ---- correctness, per ISA (the loop index picks the ISA) ----

// Small and edge shapes: 0, 1, 2, primes, MR/NR neighbours, non-multiples of 8.
START_TEST(test_small_shapes) {
    if (_i >= n_isas) return;
    const kern_table_t* t = kern_table_for(isas[_i]);
    static const int dims[][3] = {
        {0, 5, 7},    {5, 0, 7},   {5, 7, 0},   {0, 0, 0},    {1, 1, 1},    {2, 2, 2},   {1, 17, 5},
        {17, 1, 5},   {5, 5, 1},   {7, 15, 13}, {13, 17, 31}, {31, 33, 17}, {33, 31, 2}, {6, 16, 8},
        {12, 32, 16}, {2, 300, 9}, {300, 2, 9}, {9, 9, 300},  {3, 8, 24},   {11, 24, 3},
    };
    for (size_t s = 0; s < sizeof dims / sizeof dims[0]; s++)
        check_all_cases(t, dims[s][0], dims[s][1], dims[s][2], 1000 + 100 * s);
}
END_TEST

// Around this table's own register and cache blocks: MR±1, NR±1, KC±1, MC+1.
START_TEST(test_block_edges) {
    if (_i >= n_isas) return;
    const kern_table_t* t = kern_table_for(isas[_i]);
    int mr = t->mr, nr = t->nr, kc = t->kc > 0 ? t->kc : 64, mc = t->mc > 0 ? t->mc : 64;
    const int dims[][3] = {
        {mr - 1, nr - 1, 5},         {mr, nr, 7},          {mr + 1, nr + 1, 9},
        {2 * mr + 1, 2 * nr - 1, 3}, {mr + 1, nr, kc - 1}, {mr - 1, nr + 1, kc},
        {mr, nr - 1, kc + 1},        {mc + 1, nr + 3, 19}, {mc - 1, 2 * nr + 1, 33},
        {mc + 1, 3 * nr, kc + 1},
    };
    for (size_t s = 0; s < sizeof dims / sizeof dims[0]; s++) {
        int m = dims[s][0] > 0 ? dims[s][0] : 1, n = dims[s][1] > 0 ? dims[s][1] : 1;
        check_all_cases(t, m, n, dims[s][2], 5000 + 100 * s);
    }
}
END_TEST

// A big odd shape and one wider than NC, in all cases; larger ldc padding.
START_TEST(test_big_shapes) {
    if (_i >= n_isas) return;
    const kern_table_t* t = kern_table_for(isas[_i]);
    check_all_cases(t, 300, 257, 513, 9000);
    int wide = t->nc > 0 ? t->nc + 37 : 300;
    check_case(t, 7, wide, 40, 0, 0, 1, 64, 9100);
    check_case(t, 7, wide, 40, 1, 1, 0, 1, 9200);
}
END_TEST

// k = 0: accumulate = 0 zeroes C, accumulate = 1 leaves it as it was; nothing else touched.
START_TEST(test_k_zero) {
    if (_i >= n_isas) return;
    const kern_table_t* t = kern_table_for(isas[_i]);
    const int m = 5, n = 9;
    const long ldc = 12;
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
END_TEST

// Neither stride 1 (a strided view, e.g. every other column): the generic packing paths.
START_TEST(test_general_strides) {
    if (_i >= n_isas) return;
    const kern_table_t* t = kern_table_for(isas[_i]);
    static const int dims[][3] = {{7, 19, 5}, {40, 70, 300}, {13, 33, 65}};
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
        ck_assert_msg(err <= 1e-5 * sqrt((double)k + 1.0) + 1e-6,
                      "%s m=%d n=%d k=%d strided: rel err %.3g", t->name, m, n, k, err);
        free(a);
        free(b);
        free(c);
        free(want);
    }
}
END_TEST

// ---- determinism ----

// Bit-identical results for 1, 2 and 3 threads, odd shapes, all cases, both modes.
START_TEST(test_thread_count_invariance) {
    if (_i >= n_isas) return;
    const kern_table_t* t = kern_table_for(isas[_i]);
    static const int dims[][3] = {{257, 131, 300}, {33, 517, 65}, {150, 70, 1000}, {7, 1100, 9}};
    for (size_t s = 0; s < sizeof dims / sizeof dims[0]; s++) {
        int m = dims[s][0], n = dims[s][1], k = dims[s][2];
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                strided_t a = make_operand(m, k, ta, 1, 700 + s);
                strided_t b = make_operand(k, n, tb, 2, 800 + s);
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
END_TEST

// A sub-problem (a block of rows and columns of A·B, at an offset that is not a multiple of
// any block size) has the same bits as the same elements of the whole product: the result of
// an element does not depend on which micro-tile or thread rectangle it falls in.
START_TEST(test_position_invariance) {
    if (_i >= n_isas) return;
    const kern_table_t* t = kern_table_for(isas[_i]);
    const int m = 61, n = 83, k = 600;
    strided_t a = make_operand(m, k, 0, 0, 31);
    strided_t b = make_operand(k, n, 1, 0, 32);
    float* full = malloc((size_t)m * n * sizeof(float)); // [m][n]
    set_threads(2);
    t->sgemm(m, n, k, a.buf, a.rs, a.cs, b.buf, b.rs, b.cs, full, n, 0);
    static const int subs[][4] = {{1, 3, 17, 29}, {5, 7, 50, 1}, {0, 0, 61, 83}, {13, 40, 9, 43}};
    for (size_t s = 0; s < sizeof subs / sizeof subs[0]; s++) {
        int i0 = subs[s][0], j0 = subs[s][1], sm = subs[s][2], sn = subs[s][3];
        float* part = malloc((size_t)sm * sn * sizeof(float)); // [sm][sn]
        set_threads(1 + (int)(s % 2));
        t->sgemm(sm, sn, k, a.buf + i0 * a.rs, a.rs, a.cs, b.buf + j0 * b.cs, b.rs, b.cs, part, sn,
                 0);
        for (int i = 0; i < sm; i++)
            ck_assert_msg(memcmp(part + (long)i * sn, full + (long)(i0 + i) * n + j0,
                                 (size_t)sn * sizeof(float)) == 0,
                          "%s: sub-block at (%d, %d) row %d differs from the full product", t->name,
                          i0, j0, i);
        free(part);
    }
    set_threads(1);
    free(full);
    free(a.buf);
    free(b.buf);
}
END_TEST

// Called from inside a parallel region, each caller runs single-threaded on its own pack
// buffers and gets the same bits as a plain call.
START_TEST(test_inside_parallel_region) {
    if (_i >= n_isas) return;
    const kern_table_t* t = kern_table_for(isas[_i]);
    const int m = 45, n = 70, k = 300, calls = 4;
    strided_t a = make_operand(m, k, 0, 0, 41);
    strided_t b = make_operand(k, n, 0, 0, 42);
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
END_TEST

static Suite* kernels_suite(void) {
    Suite* s = suite_create("kernels");
    TCase* tc = tcase_create("sgemm");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_dispatch);
    tcase_add_loop_test(tc, test_small_shapes, 0, KERN_N_ISA);
    tcase_add_loop_test(tc, test_block_edges, 0, KERN_N_ISA);
    tcase_add_loop_test(tc, test_big_shapes, 0, KERN_N_ISA);
    tcase_add_loop_test(tc, test_k_zero, 0, KERN_N_ISA);
    tcase_add_loop_test(tc, test_general_strides, 0, KERN_N_ISA);
    tcase_add_loop_test(tc, test_thread_count_invariance, 0, KERN_N_ISA);
    tcase_add_loop_test(tc, test_position_invariance, 0, KERN_N_ISA);
    tcase_add_loop_test(tc, test_inside_parallel_region, 0, KERN_N_ISA);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner* sr = srunner_create(kernels_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
