// finite_scan, which guards checkpoints, HDF5 training data and inference inputs, against a
// plain isfinite loop: every length around its 1024-element blocks, bad values at the edges
// of blocks, every kind of NaN and Inf, and finite extremes that must pass.
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "compute/finite.h"

static long naive(const float* x, long n) {
    long i = 0;
    while (i < n && isfinite(x[i])) i++;
    return i;
}

static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

// A finite array: plain values (plain = 1), or with every exponent, denormals and the
// largest floats among them, which a wrong exponent mask in the block scan would flag.
static void fill_finite(float* x, long n, int plain) {
    const float extremes[] = {
        0.0f, -0.0f, FLT_MAX, -FLT_MAX, FLT_MIN, from_bits(1), from_bits(0x807fffffu)};
    for (long i = 0; i < n; i++)
        x[i] = plain        ? 1.0f + (float)(i % 7)
               : i % 5 == 0 ? extremes[(i / 5) % 7]
                            : ldexpf(1.0f + (float)(i % 97) / 97, (int)(i % 250) - 125);
}

START_TEST(test_all_finite) {
    enum { N = 3100 };
    float* x = malloc(sizeof(float) * N); // [N]
    fill_finite(x, N, 0);
    for (long n = 0; n <= N; n += n < 8                                              ? 1
                                  : (n > 1015 && n < 1035) || (n > 2040 && n < 2055) ? 1
                                                                                     : 37)
        ck_assert_int_eq(finite_scan(x, n), n);
    free(x);
}
END_TEST

START_TEST(test_first_bad_value) {
    enum { N = 3100 };
    float* x = malloc(sizeof(float) * N); // [N]
    const float bad[] = {
        NAN, -NAN, INFINITY, -INFINITY, from_bits(0x7f800001u), from_bits(0xffc00123u)};
    const long lens[] = {1, 2, 1023, 1024, 1025, 2048, 2049, N};
    for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
        long n = lens[li];
        const long pos[] = {0, 1, n / 2, 1022, 1023, 1024, 1025, 2047, 2048, n - 2, n - 1};
        for (size_t pi = 0; pi < sizeof pos / sizeof *pos; pi++) {
            long p = pos[pi];
            if (p < 0 || p >= n) continue;
            for (size_t b = 0; b < 2 * sizeof bad / sizeof *bad; b++) {
                fill_finite(x, n, b % 2);
                x[p] = bad[b / 2];
                ck_assert_int_eq(naive(x, n), p);
                ck_assert_msg(finite_scan(x, n) == p, "n %ld, bad value %zu at %ld: got %ld", n, b,
                              p, finite_scan(x, n));
                if (p + 1 < n) { // a second bad value later does not change the answer
                    x[n - 1] = NAN;
                    ck_assert_int_eq(finite_scan(x, n), p);
                }
            }
        }
    }
    free(x);
}
END_TEST

int main(void) {
    Suite* s = suite_create("finite");
    TCase* tc = tcase_create("all");
    tcase_add_test(tc, test_all_finite);
    tcase_add_test(tc, test_first_bad_value);
    suite_add_tcase(s, tc);
    SRunner* r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
