// The AVX-512 kernels (compute/kernels/avx512.c) on any AVX2 machine: the same source built
// with its SIMDe intrinsics emulated on AVX2 (kern_avx512_emu_table, target moed_avx512_emu)
// always, and the native kern_table_for(KERN_AVX512) where the CPU has AVX-512 (skipped with a
// note otherwise). The checks of test_kernels.c and test_swiglu_isa.c, with shapes around this
// kernel's own blocking (MR = 12, NR = 32, 16-lane vectors and 16 x 16 packing transposes,
// KC, MC, NC), against a double reference; and, where both run, native == emulated bits.
// SIMDe lowers each 512-bit operation to two AVX2 ones, so the emulation is quick enough
// for test_kernels.c's sizes: the suite takes about a second.
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "compute/kernels/kernels.h"
#include "tests/common/testutil.h"

// ---- the tables under test ----

enum { T_EMU = 0, T_NATIVE = 1, T_N = 2 };

// Table `which`, or NULL when this build or CPU cannot run it (*why says why).
static const kern_table_t* table_why(int which, const char** why) {
    const kern_table_t* t = NULL;
    *why = NULL;
    if (which == T_EMU) {
#ifdef MOED_HAVE_AVX512_EMU
        if (kern_cpu_supports(KERN_AVX2))
            t = &kern_avx512_emu_table;
        else
            *why = "the emulation runs on AVX2/FMA, which this CPU lacks";
#else
        *why = "not built (MOED_AVX512 off)";
#endif
    } else {
        t = kern_table_for(KERN_AVX512);
        if (!t)
            *why = kern_cpu_supports(KERN_AVX512) ? "not compiled in"
                                                  : "this CPU has no AVX-512 F/DQ/VL/BW";
    }
    return t;
}

static const kern_table_t* table(int which) {
    const char* why;
    return table_why(which, &why);
}

static void setup(void) { ck_assert_int_eq(kern_init(4), 0); }
static void teardown(void) { kern_shutdown(); }

static void set_threads(int t) {
#ifdef _OPENMP
    omp_set_num_threads(t);
#else
    (void)t;
#endif
}

// ---- helpers (as in test_kernels.c) ----

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

// ---- the tables ----

START_TEST(test_tables) {
#ifdef MOED_HAVE_AVX512_EMU
    const kern_table_t* e = &kern_avx512_emu_table;
    ck_assert_str_eq(e->name, "avx512-emulated");
    ck_assert_int_eq(e->isa, KERN_AVX512);
    ck_assert_ptr_nonnull(e->sgemm);
    ck_assert_ptr_nonnull(e->swiglu_fwd);
    ck_assert_ptr_nonnull(e->swiglu_bwd);
    ck_assert(e->mc % e->mr == 0 && e->nc % e->nr == 0 && e->kc > 0);
    for (int i = 0; i < KERN_N_ISA; i++) ck_assert_ptr_ne(kern_table_for((kern_isa_t)i), e);
#endif
#ifdef MOED_HAVE_AVX512
    // Compiled in: the dispatch table serves it exactly where the CPU has AVX-512.
    ck_assert_int_eq(kern_table_for(KERN_AVX512) != NULL, kern_cpu_supports(KERN_AVX512));
#endif
    const kern_table_t* n = kern_table_for(KERN_AVX512);
    if (n) {
        ck_assert_str_eq(n->name, "avx512");
        ck_assert_int_eq(kern_best_isa(), KERN_AVX512);
#ifdef MOED_HAVE_AVX512_EMU
        // One source: the same blocking.
        ck_assert_int_eq(n->mr, e->mr);
        ck_assert_int_eq(n->nr, e->nr);
        ck_assert_int_eq(n->mc, e->mc);
        ck_assert_int_eq(n->kc, e->kc);
        ck_assert_int_eq(n->nc, e->nc);
#endif
    }
}
END_TEST

// ---- correctness, per table (the loop index picks it) ----

// Small and edge shapes: 0, 1, 2, primes, non-multiples of 16 in n, k around the 16-wide
// transposing packers.
START_TEST(test_small_shapes) {
    const kern_table_t* t = table(_i);
    if (!t) return;
    static const int dims[][3] = {
        {0, 5, 7},   {5, 0, 7},    {5, 7, 0},    {0, 0, 0},    {1, 1, 1},    {2, 2, 2},
        {1, 17, 5},  {17, 1, 5},   {5, 5, 1},    {7, 15, 13},  {13, 17, 31}, {31, 33, 17},
        {33, 31, 2}, {12, 32, 16}, {12, 16, 15}, {12, 48, 17}, {24, 64, 32}, {11, 47, 33},
        {2, 300, 9}, {300, 2, 9},  {9, 9, 300},  {3, 8, 24},   {25, 24, 3},  {13, 80, 48},
    };
    for (size_t s = 0; s < sizeof dims / sizeof dims[0]; s++)
        check_all_cases(t, dims[s][0], dims[s][1], dims[s][2], 1000 + 100 * s);
}
END_TEST

// Around the table's own register and cache blocks: MR±1, NR±1, NR/2 (one zmm), KC±1, 2KC+1,
// MC±1, NC+1.
START_TEST(test_block_edges) {
    const kern_table_t* t = table(_i);
    if (!t) return;
    int mr = t->mr, nr = t->nr, kc = t->kc, mc = t->mc;
    const int dims[][3] = {
        {mr - 1, nr - 1, 5},      {mr, nr, 7},
        {mr + 1, nr + 1, 9},      {2 * mr + 1, 2 * nr - 1, 3},
        {mr + 1, nr, kc - 1},     {mr - 1, nr + 1, kc},
        {mr, nr - 1, kc + 1},     {mr, nr / 2, 2 * kc + 1},
        {mr + 1, nr / 2 + 1, 64}, {mr, nr / 2 - 1, 63},
        {mc + 1, nr + 3, 19},     {mc - 1, 2 * nr + 1, 33},
        {mc + 1, nr / 2, kc + 1}, {mc, 3 * nr, 70},
    };
    for (size_t s = 0; s < sizeof dims / sizeof dims[0]; s++)
        check_all_cases(t, dims[s][0], dims[s][1], dims[s][2], 5000 + 100 * s);
}
END_TEST

// A big odd shape and ones wider than NC (several jc blocks, a partial last one); larger ldc
// padding.
START_TEST(test_big_shapes) {
    const kern_table_t* t = table(_i);
    if (!t) return;
    check_all_cases(t, 300, 257, 2 * t->kc + 77, 9000);
    int wide = t->nc + 37;
    check_case(t, 7, wide, 40, 0, 0, 1, 64, 9100);
    check_case(t, 13, wide, 70, 1, 1, 0, 1, 9200);
    check_case(t, 5, 2 * t->nc + 1, 17, 0, 1, 1, 5, 9300);
}
END_TEST

// k = 0: accumulate = 0 zeroes C, accumulate = 1 leaves it as it was; nothing else touched.
START_TEST(test_k_zero) {
    const kern_table_t* t = table(_i);
    if (!t) return;
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
END_TEST

// Neither stride 1 (a strided view, e.g. every other column): the generic packing paths.
START_TEST(test_general_strides) {
    const kern_table_t* t = table(_i);
    if (!t) return;
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

// Bit-identical results for 1, 2 and 3 threads, odd shapes, all cases, both modes; the short-k
// shapes take the whole-rows partition.
START_TEST(test_thread_count_invariance) {
    const kern_table_t* t = table(_i);
    if (!t) return;
    static const int dims[][3] = {
        {257, 131, 300}, {33, 517, 65}, {150, 70, 1000}, {7, 1100, 9}, {130, 90, 40}};
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
// an element does not depend on which micro-tile (full, partial rows, partial columns through
// the temporary tile) or thread rectangle it falls in.
START_TEST(test_position_invariance) {
    const kern_table_t* t = table(_i);
    if (!t) return;
    const int m = 61, n = 83, k = 2 * t->kc + 40; // a short last KC block too
    for (int tb = 0; tb < 2; tb++) {
        strided_t a = make_operand(m, k, 0, 0, 31);
        strided_t b = make_operand(k, n, tb, 0, 32);
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
                              "%s tb=%d: sub-block at (%d, %d) row %d differs from the full "
                              "product",
                              t->name, tb, i0, j0, i);
            free(part);
        }
        set_threads(1);
        free(full);
        free(a.buf);
        free(b.buf);
    }
}
END_TEST

// Called from inside a parallel region, each caller runs single-threaded on its own pack
// buffers and gets the same bits as a plain call.
START_TEST(test_inside_parallel_region) {
    const kern_table_t* t = table(_i);
    if (!t) return;
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

// Where the CPU runs both: the native and emulated builds do the same IEEE operations in the
// same order, so their bits agree (sgemm in all cases, SwiGLU forward and backward).
START_TEST(test_native_matches_emulated) {
    const kern_table_t *e = table(T_EMU), *nt = table(T_NATIVE);
    if (!e || !nt) return;
    static const int dims[][3] = {{37, 71, 250}, {12, 32, 16}, {130, 45, 30}};
    for (size_t s = 0; s < sizeof dims / sizeof dims[0]; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                int m = dims[s][0], n = dims[s][1], k = dims[s][2];
                strided_t a = make_operand(m, k, ta, 1, 50 + s);
                strided_t b = make_operand(k, n, tb, 2, 60 + s);
                float* c1 = malloc((size_t)m * n * sizeof(float)); // [m][n]
                float* c2 = malloc((size_t)m * n * sizeof(float)); // [m][n]
                tu_fill_normal(c1, (long)m * n, 70 + s, 1.0f);
                memcpy(c2, c1, (size_t)m * n * sizeof(float));
                e->sgemm(m, n, k, a.buf, a.rs, a.cs, b.buf, b.rs, b.cs, c1, n, 1);
                nt->sgemm(m, n, k, a.buf, a.rs, a.cs, b.buf, b.rs, b.cs, c2, n, 1);
                ck_assert_msg(memcmp(c1, c2, (size_t)m * n * sizeof(float)) == 0,
                              "m=%d n=%d k=%d %c%c: native and emulated differ", m, n, k,
                              ta ? 'T' : 'N', tb ? 'T' : 'N');
                free(c1);
                free(c2);
                free(a.buf);
                free(b.buf);
            }
    enum { N = 1037 };
    static float h0[N], h1[N], da[N], o[2][3][N]; // [native/emulated][a, dh0, dh1][N]
    tu_fill_normal(h0, N, 1, 3.0f);
    tu_fill_normal(h1, N, 2, 1.0f);
    tu_fill_normal(da, N, 3, 1.0f);
    for (int w = 0; w < 2; w++) {
        const kern_table_t* t = w ? nt : e;
        t->swiglu_fwd(N, h0, h1, o[w][0]);
        t->swiglu_bwd(N, h0, h1, da, o[w][1], o[w][2]);
    }
    for (int q = 0; q < 3; q++)
        ck_assert_msg(memcmp(o[0][q], o[1][q], sizeof o[0][q]) == 0,
                      "swiglu output %d: native and emulated differ", q);
}
END_TEST

// ---- SwiGLU (as test_swiglu_isa.c) ----

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

START_TEST(test_swiglu_matches_formula) {
    const kern_table_t* t = table(_i);
    if (!t) return;
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
END_TEST

// An element's result is a function of its inputs only, not of its position (vector body or
// tail) or of the length of the call; nothing past n is written.
START_TEST(test_swiglu_position_invariance) {
    const kern_table_t* t = table(_i);
    if (!t) return;
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
END_TEST

static Suite* kernels_avx512_suite(void) {
    Suite* s = suite_create("kernels_avx512");
    TCase* tc = tcase_create("avx512");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_tables);
    tcase_add_loop_test(tc, test_small_shapes, 0, T_N);
    tcase_add_loop_test(tc, test_block_edges, 0, T_N);
    tcase_add_loop_test(tc, test_big_shapes, 0, T_N);
    tcase_add_loop_test(tc, test_k_zero, 0, T_N);
    tcase_add_loop_test(tc, test_general_strides, 0, T_N);
    tcase_add_loop_test(tc, test_thread_count_invariance, 0, T_N);
    tcase_add_loop_test(tc, test_position_invariance, 0, T_N);
    tcase_add_loop_test(tc, test_inside_parallel_region, 0, T_N);
    tcase_add_test(tc, test_native_matches_emulated);
    tcase_add_loop_test(tc, test_swiglu_matches_formula, 0, T_N);
    tcase_add_loop_test(tc, test_swiglu_position_invariance, 0, T_N);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    for (int w = 0; w < T_N; w++) {
        const char* why;
        if (!table_why(w, &why))
            printf("test_kernels_avx512: %s table skipped: %s\n",
                   w == T_EMU ? "avx512-emulated" : "native avx512", why);
    }
    fflush(stdout);
    SRunner* sr = srunner_create(kernels_avx512_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
