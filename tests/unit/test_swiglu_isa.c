// Every ISA's SwiGLU kernels (kern_table_t.swiglu_fwd/bwd) against the formula in double,
// over ordinary and extreme inputs and lengths that leave a scalar tail.
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "compute/kernels/kernels.h"
#include "tests/common/testutil.h"

#define N 1037 // not a multiple of 8: the tail path runs too

static void inputs(float* h0, float* h1, float* da) {
    tu_fill_normal(h0, N, 1, 3.0f);
    tu_fill_normal(h1, N, 2, 1.0f);
    tu_fill_normal(da, N, 3, 1.0f);
    // saturation on both sides, and zero
    const float edge[] = {-100.0f, -88.0f, -30.0f, -1e-3f, 0.0f, 1e-3f, 30.0f, 88.0f, 100.0f};
    for (int i = 0; i < 9; i++) h0[i * 97] = edge[i];
}

// Relative error of one value against its double reference, scaled by |want| + |scale|
// so values near zero are judged against the tensor's typical size.
static double err(double got, double want, double scale) {
    return fabs(got - want) / (fabs(want) + scale);
}

START_TEST(test_swiglu_matches_formula) {
    static float h0[N], h1[N], da[N], a[N], dh0[N], dh1[N];
    inputs(h0, h1, da);
    for (int isa = 0; isa < KERN_N_ISA; isa++) {
        const kern_table_t* t = kern_table_for((kern_isa_t)isa);
        if (!t) continue;
        t->swiglu_fwd(N, h0, h1, a);
        t->swiglu_bwd(N, h0, h1, da, dh0, dh1);
        double worst = 0;
        for (int i = 0; i < N; i++) {
            double x = h0[i], s = 1.0 / (1.0 + exp(-x));
            double wa = x * s * h1[i];
            double wd0 = da[i] * h1[i] * s * (1.0 + x * (1.0 - s));
            double wd1 = da[i] * x * s;
            double e =
                fmax(err(a[i], wa, 1e-3), fmax(err(dh0[i], wd0, 1e-3), err(dh1[i], wd1, 1e-3)));
            ck_assert_msg(e < 2e-6, "%s: element %d (h0 = %g): error %g", t->name, i, x, e);
            if (e > worst) worst = e;
        }
        printf("swiglu %s: worst relative error %.2e\n", t->name, worst);
    }
}
END_TEST

int main(void) {
    Suite* s = suite_create("swiglu_isa");
    TCase* tc = tcase_create("all");
    tcase_add_test(tc, test_swiglu_matches_formula);
    suite_add_tcase(s, tc);
    SRunner* r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
