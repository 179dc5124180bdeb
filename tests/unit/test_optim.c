// Unit tests of compute/optim: the warm-up + cosine schedule (DESIGN.md §2), AdamW against a
// double implementation of torch.optim.AdamW's single-tensor formulas, clip_grad_norm_'s
// factor, sumsq and scale_inplace.
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compute/optim.h"
#include "tests/common/testutil.h"

// ---- lr_schedule ---------------------------------------------------------------------

// DESIGN.md §2, written out: warm-up lr (s+1)/W, then cosine from lr to lr_min over
// steps - W steps.
static double ref_lr(long s, long steps, long W, double lr, double lr_min) {
    if (s < W) return lr * (s + 1) / W;
    return lr_min + (lr - lr_min) * (1 + cos(M_PI * (double)(s - W) / (double)(steps - W))) / 2;
}

static void expect_lr(long s, long steps, long W, double lr, double lr_min, double want) {
    double got = lr_schedule(s, steps, W, lr, lr_min);
    ck_assert_msg(fabs(got - want) <= 1e-15 * fabs(want) + 1e-18,
                  "lr_schedule(%ld, steps %ld, warmup %ld) = %.17g, want %.17g", s, steps, W, got,
                  want);
}

START_TEST(test_lr_schedule) {
    const double lr = 3e-3, lr_min = 3e-4;
    // warm-up: lr/10, 2 lr/10, ..., lr at step 9
    for (long s = 0; s < 10; s++) expect_lr(s, 100, 10, lr, lr_min, lr * (s + 1) / 10.0);
    expect_lr(0, 100, 10, lr, lr_min, 3e-4);
    expect_lr(9, 100, 10, lr, lr_min, lr);
    // cosine: lr at its start, the mean half way, lr_min at its end point s = steps
    expect_lr(10, 100, 10, lr, lr_min, lr);
    expect_lr(55, 100, 10, lr, lr_min, (lr + lr_min) / 2);
    expect_lr(100, 100, 10, lr, lr_min, lr_min);
    // the last step (steps - 1) is one cosine step before the end point, just above lr_min
    double last = lr_schedule(99, 100, 10, lr, lr_min);
    expect_lr(99, 100, 10, lr, lr_min, ref_lr(99, 100, 10, lr, lr_min));
    ck_assert(last > lr_min && last < lr_min + 1e-3 * (lr - lr_min));
    // every step against the formula, non-increasing after the warm-up
    for (long s = 0; s < 100; s++)
        expect_lr(s, 100, 10, lr, lr_min, ref_lr(s, 100, 10, lr, lr_min));
    for (long s = 10; s < 99; s++)
        ck_assert(lr_schedule(s + 1, 100, 10, lr, lr_min) <= lr_schedule(s, 100, 10, lr, lr_min));

    // no warm-up: the cosine starts at step 0
    expect_lr(0, 50, 0, lr, lr_min, lr);
    expect_lr(25, 50, 0, lr, lr_min, (lr + lr_min) / 2);
    expect_lr(50, 50, 0, lr, lr_min, lr_min);
    for (long s = 0; s < 50; s++) expect_lr(s, 50, 0, lr, lr_min, ref_lr(s, 50, 0, lr, lr_min));
    ck_assert(isfinite(lr_schedule(0, 1, 0, lr, lr_min)));
    expect_lr(0, 1, 0, lr, lr_min, lr);

    // all warm-up (warmup >= steps): linear ramp, never a division by zero
    for (long s = 0; s < 8; s++) expect_lr(s, 8, 8, lr, lr_min, lr * (s + 1) / 8.0);
    for (long s = 0; s < 5; s++) expect_lr(s, 5, 8, lr, lr_min, lr * (s + 1) / 8.0);

    // lr_min = lr: constant after warm-up
    for (long s = 3; s < 20; s++) expect_lr(s, 20, 3, lr, lr, lr);
}
END_TEST

// ---- AdamW ---------------------------------------------------------------------------

// torch.optim.AdamW, single tensor, step t (1-based), in double:
//   p *= 1 - lr wd;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
static void ref_adamw(const adamw_opts_t* o, long t, long n, int decay, double* p, const float* g,
                      double* m, double* v) {
    double bc1 = 1 - pow(o->beta1, t), bc2 = 1 - pow(o->beta2, t);
    for (long i = 0; i < n; i++) {
        if (decay) p[i] *= 1 - o->lr * o->weight_decay;
        m[i] = o->beta1 * m[i] + (1 - o->beta1) * g[i];
        v[i] = o->beta2 * v[i] + (1 - o->beta2) * (double)g[i] * g[i];
        p[i] -= o->lr / bc1 * m[i] / (sqrt(v[i]) / sqrt(bc2) + o->eps);
    }
}

// Five steps of adamw_update against ref_adamw: the float state against the double state
// carried alongside (1e-6 relative), and each step's update against the reference update
// applied to the same float state (1e-5 relative to the update, which is ~100x smaller than
// the parameters).
static void check_adamw(const adamw_opts_t* o, int decay) {
    enum { N = 300 };
    float p[N], m[N], v[N], g[N], p0[N];
    double dp[N], dm[N], dv[N], sp[N], sm[N], sv[N], upd[N];
    tu_fill_normal(p, N, 1, 0.1f);
    for (int i = 0; i < N; i++) m[i] = v[i] = 0, dp[i] = p[i], dm[i] = dv[i] = 0;
    for (long t = 1; t <= 5; t++) {
        tu_fill_normal(g, N, 10 + t, 1.0f);
        g[0] = 0;                    // no gradient at all
        g[1] = 1e-4f * (float)t;     // tiny
        g[2] = 30.0f;                // large
        g[3] = t % 2 ? 1.0f : -1.0f; // flips sign
        // the reference step from the same float state
        for (int i = 0; i < N; i++) sp[i] = p[i], sm[i] = m[i], sv[i] = v[i], p0[i] = p[i];
        ref_adamw(o, t, N, decay, sp, g, sm, sv);
        adamw_update(o, t, N, decay, p, g, m, v);
        ref_adamw(o, t, N, decay, dp, g, dm, dv);
        for (int i = 0; i < N; i++) upd[i] = sp[i] - p0[i];
        float got_upd[N];
        for (int i = 0; i < N; i++) got_upd[i] = p[i] - p0[i]; // exact: p, p0 close
        double ep = tu_rel_err_fd(p, dp, N), em = tu_rel_err_fd(m, dm, N);
        double ev = tu_rel_err_fd(v, dv, N), eu = tu_rel_err_fd(got_upd, upd, N);
        ck_assert_msg(ep <= 1e-6 && em <= 1e-6 && ev <= 1e-6,
                      "lr %g wd %g decay %d b %g/%g eps %g step %ld: rel err p %g m %g v %g", o->lr,
                      o->weight_decay, decay, o->beta1, o->beta2, o->eps, t, ep, em, ev);
        ck_assert_msg(eu <= 1e-5, "lr %g wd %g decay %d eps %g step %ld: update rel err %g", o->lr,
                      o->weight_decay, decay, o->eps, t, eu);
    }
}

START_TEST(test_adamw) {
    const adamw_opts_t defaults = {
        .lr = 1e-2, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1};
    // non-default betas (catches swapped betas), a large eps (catches where eps goes) and a
    // large decay (catches where the decay goes)
    const adamw_opts_t odd = {
        .lr = 5e-3, .beta1 = 0.8, .beta2 = 0.99, .eps = 1e-2, .weight_decay = 2.0};
    const adamw_opts_t no_wd = {
        .lr = 1e-2, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.0};
    check_adamw(&defaults, 1);
    check_adamw(&defaults, 0);
    check_adamw(&odd, 1);
    check_adamw(&odd, 0);
    check_adamw(&no_wd, 1);
}
END_TEST

// decay = 0 ignores weight_decay; with g = 0 and m = v = 0 only the decay moves p.
START_TEST(test_adamw_decay_only) {
    const adamw_opts_t o = {
        .lr = 0.1, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.5};
    float p[4] = {1, -2, 0.5f, 4}, g[4] = {0, 0, 0, 0}, m[4] = {0}, v[4] = {0};
    adamw_update(&o, 1, 4, 1, p, g, m, v);
    const float want[4] = {0.95f, -1.9f, 0.475f, 3.8f};
    for (int i = 0; i < 4; i++)
        ck_assert_msg(fabsf(p[i] - want[i]) <= 1e-6f, "p[%d] = %g", i, p[i]);
    float q[4] = {1, -2, 0.5f, 4};
    adamw_update(&o, 1, 4, 0, q, g, m, v);
    ck_assert(q[0] == 1 && q[1] == -2 && q[2] == 0.5f && q[3] == 4);
    // the first step moves every parameter with a gradient by ~lr (sign of g)
    float r[2] = {0, 0}, gr[2] = {3.0f, -1e-3f}, mr[2] = {0}, vr[2] = {0};
    adamw_update(&o, 1, 2, 0, r, gr, mr, vr);
    ck_assert(fabsf(r[0] + 0.1f) < 1e-6f && fabsf(r[1] - 0.1f) < 1e-5f);
}
END_TEST

// ---- clipping ------------------------------------------------------------------------

START_TEST(test_clip) {
    // off
    ck_assert(clip_factor(1e9, 0.0) == 1.0f);
    ck_assert(clip_factor(0.0, 0.0) == 1.0f);
    // under the limit, or zero gradient
    ck_assert(clip_factor(0.5, 1.0) == 1.0f);
    ck_assert(clip_factor(0.0, 1.0) == 1.0f);
    ck_assert(clip_factor(0.9999, 1.0) == 1.0f);
    // over: max / (norm + 1e-6), as torch computes it
    ck_assert(clip_factor(4.0, 1.0) == (float)(1.0 / (4.0 + 1e-6)));
    ck_assert(clip_factor(250.0, 2.5) == (float)(2.5 / (250.0 + 1e-6)));
    // at the limit torch's coefficient is just below 1
    ck_assert(clip_factor(1.0, 1.0) == (float)(1.0 / (1.0 + 1e-6)));
    ck_assert(clip_factor(1.0, 1.0) < 1.0f);
}
END_TEST

START_TEST(test_sumsq_scale) {
    enum { N = 1001 };
    float g[N], h[N];
    tu_fill_normal(g, N, 77, 2.0f);
    double want = 0;
    for (int i = 0; i < N; i++) want += (double)g[i] * g[i];
    ck_assert(fabs(sumsq(N, g) - want) <= 1e-13 * want);
    ck_assert(sumsq(0, g) == 0.0);
    memcpy(h, g, sizeof g);
    scale_inplace(N, h, 0.5f);
    for (int i = 0; i < N; i++) ck_assert(h[i] == g[i] * 0.5f);
    memcpy(h, g, sizeof g);
    scale_inplace(N, h, 1.0f);
    ck_assert(memcmp(h, g, sizeof g) == 0);
    // clipping end to end: the clipped gradient has norm max_norm (to 1e-6)
    double norm = sqrt(sumsq(N, g));
    scale_inplace(N, g, clip_factor(norm, 1.0));
    ck_assert(fabs(sqrt(sumsq(N, g)) - 1.0) < 2e-6);
}
END_TEST

static Suite* optim_suite(void) {
    Suite* s = suite_create("optim");
    TCase* tc = tcase_create("optim");
    tcase_add_test(tc, test_lr_schedule);
    tcase_add_test(tc, test_adamw);
    tcase_add_test(tc, test_adamw_decay_only);
    tcase_add_test(tc, test_clip);
    tcase_add_test(tc, test_sumsq_scale);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner* sr = srunner_create(optim_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
