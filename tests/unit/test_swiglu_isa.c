// Every ISA's SwiGLU kernels (kern_table_t.swiglu_fwd/bwd) against the formula in double,
// over ordinary and extreme inputs and lengths that leave a tail, and position invariance:
// an element's bits do not depend on where it sits (vector body or zero-padded tail), which
// the fused gemm_swiglu epilogue and determinism across rank counts rely on.
#include <check.h>
#include <stdlib.h>

#include "compute/kernels/kernels.h"
#include "tests/common/kernel_checks.h"

START_TEST(test_swiglu_matches_formula) {
    for (int isa = 0; isa < KERN_N_ISA; isa++) {
        const kern_table_t* t = kern_table_for((kern_isa_t)isa);
        if (t) kc_check_swiglu_formula(t);
    }
}
END_TEST

START_TEST(test_swiglu_position_invariance) {
    for (int isa = 0; isa < KERN_N_ISA; isa++) {
        const kern_table_t* t = kern_table_for((kern_isa_t)isa);
        if (t) kc_check_swiglu_position(t);
    }
}
END_TEST

int main(void) {
    Suite* s = suite_create("swiglu_isa");
    TCase* tc = tcase_create("all");
    tcase_add_test(tc, test_swiglu_matches_formula);
    tcase_add_test(tc, test_swiglu_position_invariance);
    suite_add_tcase(s, tc);
    SRunner* r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
