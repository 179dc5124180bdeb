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
#include "tests/common/kernel_checks.h"
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

// ---- correctness, per table (the loop index picks it; the checks: kernel_checks.c) ----

#define TABLE_TEST(name, call)                                                                     \
    START_TEST(name) {                                                                             \
        const kern_table_t* t = table(_i);                                                         \
        if (t) call(t);                                                                            \
    }                                                                                              \
    END_TEST

// Small and edge shapes: 0, 1, 2, primes, non-multiples of 16 in n, k around the 16-wide
// transposing packers.
static void check_small_shapes(const kern_table_t* t) {
    static const int dims[][3] = {
        {0, 5, 7},   {5, 0, 7},    {5, 7, 0},    {0, 0, 0},    {1, 1, 1},    {2, 2, 2},
        {1, 17, 5},  {17, 1, 5},   {5, 5, 1},    {7, 15, 13},  {13, 17, 31}, {31, 33, 17},
        {33, 31, 2}, {12, 32, 16}, {12, 16, 15}, {12, 48, 17}, {24, 64, 32}, {11, 47, 33},
        {2, 300, 9}, {300, 2, 9},  {9, 9, 300},  {3, 8, 24},   {25, 24, 3},  {13, 80, 48},
    };
    kc_check_shapes(t, dims, (int)(sizeof dims / sizeof dims[0]), 0, 1000);
}

TABLE_TEST(test_small_shapes, check_small_shapes)
TABLE_TEST(test_block_edges, kc_check_block_edges)
TABLE_TEST(test_big_shapes, kc_check_big_shapes)
TABLE_TEST(test_k_zero, kc_check_k_zero)
TABLE_TEST(test_general_strides, kc_check_general_strides)
TABLE_TEST(test_thread_count_invariance, kc_check_thread_invariance)
TABLE_TEST(test_position_invariance, kc_check_position_invariance)
TABLE_TEST(test_wt_path, kc_check_wt_path)
TABLE_TEST(test_tp_path, kc_check_tp_path)
TABLE_TEST(test_wc_path, kc_check_wc_path)
TABLE_TEST(test_rs_path, kc_check_rs_path)
TABLE_TEST(test_bip_path, kc_check_bip_path)
TABLE_TEST(test_stream_path, kc_check_stream_path)
TABLE_TEST(test_inside_parallel_region, kc_check_inside_parallel_region)
TABLE_TEST(test_gemm_swiglu, kc_check_gemm_swiglu)
TABLE_TEST(test_pack_b_part, kc_check_pack_b_part)
TABLE_TEST(test_swiglu_matches_formula, kc_check_swiglu_formula)
TABLE_TEST(test_swiglu_position_invariance, kc_check_swiglu_position)

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
                kc_strided_t a = kc_make_operand(m, k, ta, 1, 50 + s);
                kc_strided_t b = kc_make_operand(k, n, tb, 2, 60 + s);
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
    tcase_add_loop_test(tc, test_wt_path, 0, T_N);
    tcase_add_loop_test(tc, test_tp_path, 0, T_N);
    tcase_add_loop_test(tc, test_wc_path, 0, T_N);
    tcase_add_loop_test(tc, test_rs_path, 0, T_N);
    tcase_add_loop_test(tc, test_bip_path, 0, T_N);
    tcase_add_loop_test(tc, test_stream_path, 0, T_N);
    tcase_add_loop_test(tc, test_inside_parallel_region, 0, T_N);
    tcase_add_loop_test(tc, test_gemm_swiglu, 0, T_N);
    tcase_add_loop_test(tc, test_pack_b_part, 0, T_N);
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
