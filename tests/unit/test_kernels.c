// The dense kernels behind the dispatch table: every ISA this CPU runs against a double
// reference, in all four transposition cases, with edge shapes around the blocking of each
// table, strided inputs with poisoned padding, guarded output, and bit-identical results
// for any thread count and any position of a sub-problem; pre-packed B and the fused
// gemm_swiglu bit-identical to the plain path. The checks live in tests/common/kernel_checks.c,
// shared with test_kernels_avx512.c.
#include <check.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "compute/kernels/kernels.h"
#include "tests/common/kernel_checks.h"
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
        ck_assert_ptr_nonnull(t->sgemm_packed);
        ck_assert_ptr_nonnull(t->gemm_swiglu);
        ck_assert_ptr_nonnull(t->packed_floats);
        ck_assert_ptr_nonnull(t->pack_b);
        ck_assert_ptr_nonnull(t->pack_b_part);
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

// MOED_MAX_ISA's cap: no table above it, auto picks at most it, and lifting it restores all.
START_TEST(test_max_isa) {
    kern_isa_t best = kern_best_isa();
    ck_assert_int_eq(kern_max_isa(), KERN_N_ISA - 1);
    kern_set_max_isa(KERN_REF);
    ck_assert_int_eq(kern_max_isa(), KERN_REF);
    for (int i = KERN_REF + 1; i < KERN_N_ISA; i++)
        ck_assert_ptr_null(kern_table_for((kern_isa_t)i));
    ck_assert_int_eq(kern_best_isa(), KERN_REF);
    ck_assert_int_eq(kern_select(KERN_AVX2), -1);
    ck_assert_int_eq(kern_select(-1), 0);
    ck_assert_ptr_eq(kern, &kern_ref_table);
    if (best >= KERN_AVX2) { // a cap between ISAs the CPU runs
        kern_set_max_isa(KERN_AVX2);
        ck_assert_int_eq(kern_best_isa(), KERN_AVX2);
        ck_assert_ptr_null(kern_table_for(KERN_AVX512));
        ck_assert_ptr_nonnull(kern_table_for(KERN_AVX2));
    }
    kern_set_max_isa((kern_isa_t)(KERN_N_ISA - 1));
    ck_assert_int_eq(kern_best_isa(), best);
    ck_assert_ptr_nonnull(kern_table_for(best));
    ck_assert_int_eq(kern_isa_by_name("ref"), KERN_REF);
    ck_assert_int_eq(kern_isa_by_name("avx2"), KERN_AVX2);
    ck_assert_int_eq(kern_isa_by_name("avx512"), KERN_AVX512);
    ck_assert_int_eq(kern_isa_by_name("sse9"), -1);
    ck_assert_int_eq(kern_isa_by_name(""), -1);
    ck_assert_int_eq(kern_isa_by_name(NULL), -1);
    ck_assert_str_eq(kern_isa_name(KERN_AVX512), "avx512");
    ck_assert_str_eq(kern_isa_name(KERN_N_ISA), "?");
}
END_TEST

// ---- correctness, per ISA (the loop index picks the ISA) ----

#define ISA_TEST(name, call)                                                                       \
    START_TEST(name) {                                                                             \
        if (_i >= n_isas) return;                                                                  \
        call(kern_table_for(isas[_i]));                                                            \
    }                                                                                              \
    END_TEST

// Small and edge shapes: 0, 1, 2, primes, MR/NR neighbours, non-multiples of 8.
static void check_small_shapes(const kern_table_t* t) {
    static const int dims[][3] = {
        {0, 5, 7},    {5, 0, 7},   {5, 7, 0},   {0, 0, 0},    {1, 1, 1},    {2, 2, 2},   {1, 17, 5},
        {17, 1, 5},   {5, 5, 1},   {7, 15, 13}, {13, 17, 31}, {31, 33, 17}, {33, 31, 2}, {6, 16, 8},
        {12, 32, 16}, {2, 300, 9}, {300, 2, 9}, {9, 9, 300},  {3, 8, 24},   {11, 24, 3},
    };
    kc_check_shapes(t, dims, (int)(sizeof dims / sizeof dims[0]), 0, 1000);
}

ISA_TEST(test_small_shapes, check_small_shapes)
ISA_TEST(test_block_edges, kc_check_block_edges)
ISA_TEST(test_big_shapes, kc_check_big_shapes)
ISA_TEST(test_k_zero, kc_check_k_zero)
ISA_TEST(test_general_strides, kc_check_general_strides)
ISA_TEST(test_thread_count_invariance, kc_check_thread_invariance)
ISA_TEST(test_position_invariance, kc_check_position_invariance)
ISA_TEST(test_wt_path, kc_check_wt_path)
ISA_TEST(test_tp_path, kc_check_tp_path)
ISA_TEST(test_wc_path, kc_check_wc_path)
ISA_TEST(test_rs_path, kc_check_rs_path)
ISA_TEST(test_bip_path, kc_check_bip_path)
ISA_TEST(test_stream_path, kc_check_stream_path)
ISA_TEST(test_inside_parallel_region, kc_check_inside_parallel_region)
ISA_TEST(test_gemm_swiglu, kc_check_gemm_swiglu)
ISA_TEST(test_pack_b_part, kc_check_pack_b_part)

// ---- kern_for_groups: every group once; which run inside the pool ----

typedef struct {
    int calls[16];
    int pooled[16]; // run inside the parallel region
} groups_log_t;

static void log_group(int g, void* v) {
    groups_log_t* l = v;
    l->calls[g]++;
#ifdef _OPENMP
    l->pooled[g] = omp_in_parallel();
#endif
}

// rows: the groups' sizes; want: 1 where the group must be handed out (pooled), 0 where it
// must run on all threads.
static void check_groups(int threads, int n, const int* rows, const int* want) {
    int offs[17] = {0};
    for (int g = 0; g < n; g++) offs[g + 1] = offs[g] + rows[g];
    groups_log_t l = {{0}, {0}};
    kc_set_threads(threads);
    kern_for_groups(n, offs, log_group, &l);
    kc_set_threads(1);
    for (int g = 0; g < n; g++) {
        ck_assert_msg(l.calls[g] == 1, "%d threads: group %d called %d times", threads, g,
                      l.calls[g]);
#ifdef _OPENMP
        ck_assert_msg(l.pooled[g] == want[g], "%d threads: group %d (%d rows) %s", threads, g,
                      rows[g], want[g] ? "not handed out" : "handed out");
#endif
    }
}

START_TEST(test_for_groups) {
    // 16 equal groups on 4 threads: all handed out, 4 each
    int eq[16], all[16], none[16] = {0};
    for (int g = 0; g < 16; g++) eq[g] = 32, all[g] = 1;
    check_groups(4, 16, eq, all);
    check_groups(1, 16, eq, none); // one thread: in order
    // one large group (>= 1/8 of the work on 4 threads) on all threads, the 8 small ones pooled,
    // empty ones included
    int mixed[10] = {100, 1, 0, 1, 1, 1, 1, 1, 1, 1};
    int mixed_want[10] = {0, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    check_groups(4, 10, mixed, mixed_want);
    // a lone small group is not worth a pool
    int lone[3] = {10, 10, 1};
    check_groups(4, 3, lone, none);
    // small groups too uneven to share out (the 4 would finish long after the 1s): in order
    int uneven[4] = {40, 4, 1, 1};
    check_groups(4, 4, uneven, none);
    // 8 groups of 512 on 2 threads are each below 1/4 of the work: handed out, 4 each
    check_groups(2, 8, eq, all);
    // every group large: in order
    int big[2] = {7, 9};
    check_groups(4, 2, big, none);
}
END_TEST

static Suite* kernels_suite(void) {
    Suite* s = suite_create("kernels");
    TCase* tc = tcase_create("sgemm");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_dispatch);
    tcase_add_test(tc, test_max_isa);
    tcase_add_loop_test(tc, test_small_shapes, 0, KERN_N_ISA);
    tcase_add_loop_test(tc, test_block_edges, 0, KERN_N_ISA);
    tcase_add_loop_test(tc, test_big_shapes, 0, KERN_N_ISA);
    tcase_add_loop_test(tc, test_k_zero, 0, KERN_N_ISA);
    tcase_add_loop_test(tc, test_general_strides, 0, KERN_N_ISA);
    tcase_add_loop_test(tc, test_thread_count_invariance, 0, KERN_N_ISA);
    tcase_add_loop_test(tc, test_position_invariance, 0, KERN_N_ISA);
    tcase_add_loop_test(tc, test_wt_path, 0, KERN_N_ISA);
    tcase_add_loop_test(tc, test_tp_path, 0, KERN_N_ISA);
    tcase_add_loop_test(tc, test_wc_path, 0, KERN_N_ISA);
    tcase_add_loop_test(tc, test_rs_path, 0, KERN_N_ISA);
    tcase_add_loop_test(tc, test_bip_path, 0, KERN_N_ISA);
    tcase_add_loop_test(tc, test_stream_path, 0, KERN_N_ISA);
    tcase_add_loop_test(tc, test_inside_parallel_region, 0, KERN_N_ISA);
    tcase_add_loop_test(tc, test_gemm_swiglu, 0, KERN_N_ISA);
    tcase_add_loop_test(tc, test_pack_b_part, 0, KERN_N_ISA);
    tcase_add_test(tc, test_for_groups);
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
