// dispatch_sgemm (the progress-driving tiled product of the chunked dispatcher) is
// bit-identical to one kern->sgemm call, for every ISA this machine runs (the AVX-512 table
// also as its SIMDe emulation), both accumulate modes, the transposed stride cases the
// layer uses, and shapes that cut tiles, KC blocks and micro-tiles unevenly. The chunked
// dispatcher's bit-identity with alltoallv rests on this.
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "compute/kernels/kernels.h"
#include "daemon/dispatch.h"
#include "tests/common/testutil.h"

static void check_table(const kern_table_t* t) {
    static const int shapes[][3] = {{300, 270, 290}, {257, 520, 70},  {5, 600, 64},
                                    {270, 17, 7},    {256, 256, 256}, {513, 300, 0}};
    kern = t;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
        float* a = malloc(sizeof(float) * ((size_t)m * k + 1));
        float* b = malloc(sizeof(float) * ((size_t)k * n + 1));
        float* c1 = malloc(sizeof(float) * (size_t)m * n);
        float* c2 = malloc(sizeof(float) * (size_t)m * n);
        tu_fill_normal(a, (long)m * k + 1, 11 + s, 1.0f);
        tu_fill_normal(b, (long)k * n + 1, 22 + s, 1.0f);
        for (int tr = 0; tr < 4; tr++) {
            // tr bit 0: A stored transposed; bit 1: B stored transposed
            long rsa = tr & 1 ? 1 : k, csa = tr & 1 ? m : 1;
            long rsb = tr & 2 ? 1 : n, csb = tr & 2 ? k : 1;
            for (int acc = 0; acc < 2; acc++) {
                tu_fill_normal(c1, (long)m * n, 33 + s, 1.0f);
                memcpy(c2, c1, sizeof(float) * (size_t)m * n);
                // active: an exchange "in flight" (no requests), so the product is tiled
                dispatch_t ds = {.active = 1};
                kern->sgemm(m, n, k, a, rsa, csa, b, rsb, csb, c1, n, acc);
                dispatch_sgemm(&ds, m, n, k, a, rsa, csa, b, rsb, csb, c2, n, acc);
                ck_assert_msg(!memcmp(c1, c2, sizeof(float) * (size_t)m * n),
                              "%s m=%d n=%d k=%d case %d acc %d: tiles differ from one call",
                              t->name, m, n, k, tr, acc);
            }
        }
        free(a), free(b), free(c1), free(c2);
    }
}

START_TEST(tiles_bit_identical) {
    ck_assert_int_eq(kern_init(2), 0);
    int ran = 0;
    for (int isa = 0; isa < KERN_N_ISA; isa++) {
        const kern_table_t* t = kern_table_for((kern_isa_t)isa);
        if (t) check_table(t), ran++;
    }
#ifdef MOED_HAVE_AVX512_EMU
    if (kern_cpu_supports(KERN_AVX2)) check_table(&kern_avx512_emu_table), ran++;
#endif
    ck_assert_int_ge(ran, 1);
    kern_shutdown();
}
END_TEST

int main(void) {
    Suite* s = suite_create("dispatch_tiles");
    TCase* tc = tcase_create("core");
    tcase_add_test(tc, tiles_bit_identical);
    suite_add_tcase(s, tc);
    SRunner* sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
