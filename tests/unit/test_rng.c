// Unit tests of compute/rng: Philox4x32-10 known-answer vectors (Random123, kat_vectors)
// through our (seed, stream, index, element) mapping, the uniform and normal transforms, and
// independence of the four inputs.
#include <check.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "compute/rng.h"

// Runs one known-answer vector: counter words c[4], key words k[2], expected out[4].
// Our mapping: counter = {element lo, element hi, index, stream}, key = {seed lo, seed hi}.
static void check_kat(const uint32_t c[4], const uint32_t k[2], const uint32_t want[4]) {
    uint64_t element = (uint64_t)c[1] << 32 | c[0];
    uint64_t seed = (uint64_t)k[1] << 32 | k[0];
    uint32_t got[4];
    rng_philox(seed, c[3], c[2], element, got);
    for (int i = 0; i < 4; i++)
        ck_assert_msg(got[i] == want[i],
                      "ctr {%08x %08x %08x %08x} key {%08x %08x}: word %d = %08x, want %08x", c[0],
                      c[1], c[2], c[3], k[0], k[1], i, got[i], want[i]);
}

START_TEST(test_philox_kat) {
    {
        const uint32_t c[4] = {0, 0, 0, 0}, k[2] = {0, 0};
        const uint32_t want[4] = {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8};
        check_kat(c, k, want);
    }
    {
        const uint32_t c[4] = {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff};
        const uint32_t k[2] = {0xffffffff, 0xffffffff};
        const uint32_t want[4] = {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd};
        check_kat(c, k, want);
    }
    {
        const uint32_t c[4] = {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344};
        const uint32_t k[2] = {0xa4093822, 0x299f31d0};
        const uint32_t want[4] = {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1};
        check_kat(c, k, want);
    }
}
END_TEST

// rng_uniform is the first Philox word mapped into the open interval, never 0 or 1, and it
// has the moments of U(0,1).
START_TEST(test_uniform) {
    const long n = 100000;
    double sum = 0, sumsq = 0, lo = 1, hi = 0;
    for (long i = 0; i < n; i++) {
        double u = rng_uniform(42, RNG_STREAM(RNG_DATA_X, 0), 7, (uint64_t)i);
        ck_assert_msg(u > 0.0 && u < 1.0, "draw %ld = %.17g outside (0,1)", i, u);
        sum += u, sumsq += u * u;
        lo = u < lo ? u : lo, hi = u > hi ? u : hi;
    }
    double mean = sum / n, var = sumsq / n - mean * mean;
    // standard errors: 0.29/sqrt(n) = 9e-4 for the mean, ~3e-4 for the variance
    ck_assert_msg(fabs(mean - 0.5) < 5e-3, "uniform mean %g", mean);
    ck_assert_msg(fabs(var - 1.0 / 12) < 2e-3, "uniform variance %g", var);
    ck_assert_msg(lo < 1e-3 && hi > 1 - 1e-3, "uniform range [%g, %g]", lo, hi);

    // The first word decides the value; check the mapping of the word extremes is inside.
    uint32_t r[4];
    rng_philox(42, 3, 5, 11, r);
    double u = rng_uniform(42, 3, 5, 11);
    ck_assert_msg(fabs(u - ((double)r[0] + 0.5) / 4294967296.0) < 1e-15, "uniform %.17g, word %u",
                  u, r[0]);
}
END_TEST

START_TEST(test_normal_moments) {
    const long n = 100000;
    double s1 = 0, s2 = 0, s3 = 0, s4 = 0;
    long beyond3 = 0;
    for (long i = 0; i < n; i++) {
        double z = rng_normal(1234, RNG_STREAM(RNG_W0, 3), 17, (uint64_t)i);
        ck_assert_msg(isfinite(z), "draw %ld not finite", i);
        s1 += z, s2 += z * z, s3 += z * z * z, s4 += z * z * z * z;
        beyond3 += fabs(z) > 3;
    }
    double mean = s1 / n, var = s2 / n - mean * mean;
    // standard errors: 1/sqrt(n) = 3.2e-3 (mean), sqrt(2/n) = 4.5e-3 (variance),
    // sqrt(6/n) = 7.7e-3 (third moment), sqrt(96/n) = 3.1e-2 (fourth moment)
    ck_assert_msg(fabs(mean) < 0.015, "normal mean %g", mean);
    ck_assert_msg(fabs(var - 1) < 0.02, "normal variance %g", var);
    ck_assert_msg(fabs(s3 / n) < 0.04, "normal third moment %g", s3 / n);
    ck_assert_msg(fabs(s4 / n - 3) < 0.15, "normal fourth moment %g", s4 / n);
    // P(|z| > 3) = 0.0027: 270 expected, sd ~16
    ck_assert_msg(beyond3 > 190 && beyond3 < 350, "%ld draws beyond 3 sigma", beyond3);
}
END_TEST

// Every one of seed, stream, index and element (both halves) changes the output; a grid of
// inputs gives pairwise different 128-bit blocks.
START_TEST(test_independent_inputs) {
    enum { NS = 2, NST = 3, NI = 3, NE = 4 };
    const uint64_t seeds[NS] = {1234, 1234ull | (1ull << 32)};
    const uint32_t streams[NST] = {RNG_STREAM(RNG_W0, 0), RNG_STREAM(RNG_W1, 0),
                                   RNG_STREAM(RNG_W0, 1)};
    const uint32_t idx[NI] = {0, 1, 0x80000000u};
    const uint64_t el[NE] = {0, 1, 1ull << 32, 5};
    uint32_t out[NS * NST * NI * NE][4];
    int n = 0;
    for (int a = 0; a < NS; a++)
        for (int b = 0; b < NST; b++)
            for (int c = 0; c < NI; c++)
                for (int e = 0; e < NE; e++)
                    rng_philox(seeds[a], streams[b], idx[c], el[e], out[n++]);
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            ck_assert_msg(memcmp(out[i], out[j], sizeof out[i]) != 0, "inputs %d and %d collide", i,
                          j);
    // Same inputs, same output: a pure function.
    uint32_t again[4];
    rng_philox(seeds[1], streams[2], idx[2], el[3], again);
    ck_assert(memcmp(again, out[n - 1], sizeof again) == 0);
}
END_TEST

// Neighbouring streams, indices and elements are uncorrelated (sample correlation of
// normals ~ N(0, 1/n)).
START_TEST(test_uncorrelated) {
    const long n = 20000;
    double sxy[3] = {0, 0, 0}, sxx = 0;
    for (long i = 0; i < n; i++) {
        double x = rng_normal(9, RNG_STREAM(RNG_WO, 2), 4, (uint64_t)i);
        double y_stream = rng_normal(9, RNG_STREAM(RNG_WO, 3), 4, (uint64_t)i);
        double y_index = rng_normal(9, RNG_STREAM(RNG_WO, 2), 5, (uint64_t)i);
        double y_elem = rng_normal(9, RNG_STREAM(RNG_WO, 2), 4, (uint64_t)i + 1);
        sxx += x * x;
        sxy[0] += x * y_stream, sxy[1] += x * y_index, sxy[2] += x * y_elem;
    }
    for (int j = 0; j < 3; j++) {
        double corr = sxy[j] / sxx; // both have unit variance
        ck_assert_msg(fabs(corr) < 0.035, "correlation %d = %g (4.9 sigma)", j, corr);
    }
}
END_TEST

static Suite* rng_suite(void) {
    Suite* s = suite_create("rng");
    TCase* tc = tcase_create("rng");
    tcase_add_test(tc, test_philox_kat);
    tcase_add_test(tc, test_uniform);
    tcase_add_test(tc, test_normal_moments);
    tcase_add_test(tc, test_independent_inputs);
    tcase_add_test(tc, test_uncorrelated);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner* sr = srunner_create(rng_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
