// Unit tests of compute/capacity against a naive global model: all T tokens on one "rank",
// every slot visited in priority order (choice i, then global token), an expert keeping its
// first C. Splitting the same tokens over P = 1, 2, 3, 4, 6 ranks (from every rank's counts)
// must keep exactly the same slots, and the loads and drop counts must agree. Shapes cover
// C = 1, C larger than every load (nothing dropped), skewed routing (one expert takes most
// slots) and ceil rounding of c·T·k/E.
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "compute/capacity.h"

// Distinct experts per token: choices i = 0..k-1 take experts (h + i) mod E for a pseudo-
// random h per token; with skew, h = 0 for 3 tokens in 4 (expert 0 is everyone's first).
static void make_sel(int T, int k, int E, unsigned seed, int skew, int* sel) {
    unsigned x = seed;
    for (int t = 0; t < T; t++) {
        x = x * 1664525u + 1013904223u;
        int h = skew && t % 4 != 3 ? 0 : (int)((x >> 8) % (unsigned)E);
        for (int i = 0; i < k; i++) sel[t * k + i] = (h + i) % E;
    }
}

// The priority order written out: for each choice i, tokens in global order.
static long naive_keep(int T, int k, int E, const int* sel, long C, int* kept, long* load) {
    long taken[64] = {0}, dropped = 0;
    for (int e = 0; e < E; e++) load[e] = 0;
    for (int i = 0; i < k; i++)
        for (int t = 0; t < T; t++) {
            int e = sel[t * k + i];
            load[e]++;
            kept[t * k + i] = taken[e]++ < C ? e : -1;
            dropped += kept[t * k + i] < 0;
        }
    return dropped;
}

static void check_case(int T, int k, int E, double c, unsigned seed, int skew) {
    int *sel = malloc(sizeof(int) * T * k), *want = malloc(sizeof(int) * T * k);
    int* got = malloc(sizeof(int) * T * k);
    long C = capacity_slots(c, T, k, E), wload[64];
    ck_assert_int_gt(C, 0);
    make_sel(T, k, E, seed, skew, sel);
    long wdrop = naive_keep(T, k, E, sel, C, want, wload);
    static const int Ps[] = {1, 2, 3, 4, 6};
    for (size_t pi = 0; pi < sizeof Ps / sizeof Ps[0]; pi++) {
        int P = Ps[pi];
        if (T % P) continue;
        int Tl = T / P;
        int* all = malloc(sizeof(int) * P * k * E);
        for (int r = 0; r < P; r++)
            capacity_count(Tl, k, E, sel + (long)r * Tl * k, all + r * k * E);
        long dsum = 0;
        for (int r = 0; r < P; r++)
            dsum += capacity_keep(Tl, k, E, sel + (long)r * Tl * k, all, r, P, C,
                                  got + (long)r * Tl * k);
        for (int s = 0; s < T * k; s++)
            ck_assert_msg(got[s] == want[s], "T=%d k=%d E=%d c=%g P=%d: slot %d kept %d, want %d",
                          T, k, E, c, P, s, got[s], want[s]);
        int64_t load[64];
        long drop = capacity_loads(k, E, all, P, C, load);
        ck_assert_int_eq(drop, wdrop);
        ck_assert_int_eq(dsum, wdrop);
        for (int e = 0; e < E; e++) ck_assert_int_eq(load[e], wload[e]);
        free(all);
    }
    if (skew) ck_assert_int_gt(wdrop, 0);
    free(sel), free(want), free(got);
}

START_TEST(test_slots) {
    ck_assert_int_eq(capacity_slots(0.0, 256, 2, 8), 0);
    ck_assert_int_eq(capacity_slots(1.0, 256, 2, 8), 64);
    ck_assert_int_eq(capacity_slots(1.25, 256, 2, 8), 80);
    ck_assert_int_eq(capacity_slots(1.0, 60, 1, 7), 9); // ceil(60/7 = 8.57)
    ck_assert_int_eq(capacity_slots(0.001, 60, 1, 7), 1);
}
END_TEST

START_TEST(test_against_naive) {
    check_case(48, 2, 8, 1.0, 1, 0);
    check_case(48, 2, 8, 1.0, 2, 1);
    check_case(60, 3, 5, 0.5, 3, 1);
    check_case(24, 1, 4, 0.001, 4, 0); // C = 1
    check_case(36, 2, 6, 10.0, 5, 0);  // nothing dropped
    check_case(72, 4, 16, 1.5, 6, 1);
}
END_TEST

START_TEST(test_dropless_loads) {
    // C = 0: loads only, nothing counted as dropped
    int sel[8] = {0, 1, 0, 2, 0, 1, 3, 0}, all[2 * 4];
    capacity_count(4, 2, 4, sel, all);
    int64_t load[4];
    ck_assert_int_eq(capacity_loads(2, 4, all, 1, 0, load), 0);
    ck_assert_int_eq(load[0], 4);
    ck_assert_int_eq(load[1], 2);
    ck_assert_int_eq(load[2], 1);
    ck_assert_int_eq(load[3], 1);
}
END_TEST

int main(void) {
    Suite* s = suite_create("capacity");
    TCase* tc = tcase_create("core");
    tcase_add_test(tc, test_slots);
    tcase_add_test(tc, test_against_naive);
    tcase_add_test(tc, test_dropless_loads);
    suite_add_tcase(s, tc);
    SRunner* sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int nf = srunner_ntests_failed(sr);
    srunner_free(sr);
    return nf ? 1 : 0;
}
