// Unit tests of compute/router: router_forward against a naive double-precision router
// written here (DESIGN.md §2 steps 2-4), explicit tie cases, router_backward against
// central finite differences of a double loss built from the gates, the switch aux loss and
// the z-loss, and router_stats against naive sums.
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compute/router.h"
#include "tests/common/testutil.h"

#define MAXE 64

// ---- naive double reference ----------------------------------------------------------

// Scores and logsumexp of one token in double.
static void ref_scores(int sigmoid, int E, const double* l, double* s, double* lse) {
    double m = l[0];
    for (int e = 1; e < E; e++) m = fmax(m, l[e]);
    double z = 0;
    for (int e = 0; e < E; e++) z += exp(l[e] - m);
    *lse = m + log(z);
    for (int e = 0; e < E; e++) s[e] = sigmoid ? 1.0 / (1.0 + exp(-l[e])) : exp(l[e] - *lse);
}

// a ranks before b: larger value, or equal value and lower index.
static int before(double va, int a, double vb, int b) { return va > vb || (va == vb && a < b); }

// Selection of one token from its scores s[E] and bias (may be NULL): sel[k] in rank order.
// Written as "rank = number of candidates that beat me", independent of the C version's
// repeated argmax.
static void ref_select(const router_opts_t* o, const double* s, const float* bias, int* sel) {
    int E = o->E, G = o->n_groups, per = E / G;
    double v[MAXE], gs[MAXE];
    int ok[MAXE];
    for (int e = 0; e < E; e++) v[e] = s[e] + (bias ? bias[e] : 0.0);
    // group score: sum of the two largest selection scores of the group
    for (int g = 0; g < G; g++) {
        double m1 = -INFINITY, m2 = -INFINITY;
        for (int e = g * per; e < (g + 1) * per; e++) {
            if (v[e] > m1)
                m2 = m1, m1 = v[e];
            else if (v[e] > m2)
                m2 = v[e];
        }
        gs[g] = m1 + m2;
    }
    for (int g = 0; g < G; g++) {
        int beaten = 0;
        for (int h = 0; h < G; h++) beaten += h != g && before(gs[h], h, gs[g], g);
        for (int e = g * per; e < (g + 1) * per; e++) ok[e] = G <= 1 || beaten < o->topk_groups;
    }
    for (int i = 0; i < o->k; i++) sel[i] = -1;
    for (int e = 0; e < E; e++) {
        if (!ok[e]) continue;
        int r = 0;
        for (int e2 = 0; e2 < E; e2++) r += ok[e2] && e2 != e && before(v[e2], e2, v[e], e);
        if (r < o->k) sel[r] = e;
    }
}

// Gate weights of one token from its scores and a fixed selection.
static void ref_gates(const router_opts_t* o, const double* s, const int* sel, double* g) {
    double sum = 0;
    for (int i = 0; i < o->k; i++) sum += s[sel[i]];
    for (int i = 0; i < o->k; i++)
        g[i] = (o->norm_topk ? s[sel[i]] / sum : s[sel[i]]) * o->routed_scaling;
}

static router_opts_t opts(int E, int k, int sigmoid, int norm_topk, double scaling, int G,
                          int topk_groups) {
    router_opts_t o = {.d = 16,
                       .E = E,
                       .k = k,
                       .sigmoid = sigmoid,
                       .norm_topk = norm_topk,
                       .routed_scaling = (float)scaling,
                       .n_groups = G,
                       .topk_groups = topk_groups};
    return o;
}

// Runs router_forward on T tokens and checks it against the reference. Returns the number
// of tokens whose selection differs from `other_sel` (if given), so that callers can check
// that a feature (bias, groups) changed something.
static int check_forward(const router_opts_t* o, int T, const float* logits, const float* bias,
                         const int* other_sel, int* sel_out) {
    int E = o->E, k = o->k;
    float* probs = malloc(sizeof(float) * T * E); // [T, E]
    float* lse = malloc(sizeof(float) * T);       // [T]
    int* sel = malloc(sizeof(int) * T * k);       // [T, k]
    float* gates = malloc(sizeof(float) * T * k); // [T, k]
    double* rprobs = malloc(sizeof(double) * T * E);
    double* rlse = malloc(sizeof(double) * T);
    double* rgates = malloc(sizeof(double) * T * k);
    router_forward(o, T, logits, bias, probs, lse, sel, gates);

    int differ = 0;
    for (int t = 0; t < T; t++) {
        double l[MAXE];
        for (int e = 0; e < E; e++) l[e] = logits[t * E + e];
        ref_scores(o->sigmoid, E, l, rprobs + t * E, rlse + t);
        int rsel[MAXE];
        ref_select(o, rprobs + t * E, bias, rsel);
        for (int i = 0; i < k; i++)
            ck_assert_msg(sel[t * k + i] == rsel[i],
                          "sigmoid %d bias %d groups %d/%d norm %d: token %d choice %d: expert "
                          "%d, want %d",
                          o->sigmoid, bias != NULL, o->n_groups, o->topk_groups, o->norm_topk, t, i,
                          sel[t * k + i], rsel[i]);
        ref_gates(o, rprobs + t * E, rsel, rgates + t * k);
        if (other_sel && memcmp(other_sel + t * k, rsel, sizeof(int) * k) != 0) differ++;
    }
    double ep = tu_rel_err_fd(probs, rprobs, (long)T * E);
    double el = tu_rel_err_fd(lse, rlse, T);
    double eg = tu_rel_err_fd(gates, rgates, (long)T * k);
    ck_assert_msg(ep <= 1e-6, "probs rel err %g", ep);
    ck_assert_msg(el <= 1e-6, "lse rel err %g", el);
    ck_assert_msg(eg <= 1e-6, "gates rel err %g", eg);
    // elementwise too: every gate within 1e-6 of its own value
    for (long i = 0; i < (long)T * k; i++)
        ck_assert_msg(fabs(gates[i] - rgates[i]) <= 1e-6 * fabs(rgates[i]) + 1e-12,
                      "gate %ld = %.9g, want %.9g", i, gates[i], rgates[i]);
    if (sel_out) memcpy(sel_out, sel, sizeof(int) * T * k);
    free(probs), free(lse), free(sel), free(gates), free(rprobs), free(rlse), free(rgates);
    return differ;
}

// ---- forward -------------------------------------------------------------------------

START_TEST(test_forward_vs_reference) {
    enum { T = 256, E = 8, K = 2 };
    float logits[T * E], bias[E];
    tu_fill_normal(logits, T * E, 11, 1.5f);
    int base_sel[T * K], sel[T * K];
    for (int sigmoid = 0; sigmoid <= 1; sigmoid++) {
        // bias on the scale of the score differences, so that it changes choices
        tu_fill_normal(bias, E, 12, sigmoid ? 0.2f : 0.1f);
        for (int norm = 0; norm <= 1; norm++)
            for (int si = 0; si < 2; si++) {
                double scaling = si ? 2.5 : 1.0;
                router_opts_t plain = opts(E, K, sigmoid, norm, scaling, 1, 1);
                router_opts_t grouped = opts(E, K, sigmoid, norm, scaling, 4, 2);
                check_forward(&plain, T, logits, NULL, NULL, base_sel);
                int by_bias = check_forward(&plain, T, logits, bias, base_sel, sel);
                int by_groups = check_forward(&grouped, T, logits, NULL, base_sel, sel);
                int by_both = check_forward(&grouped, T, logits, bias, base_sel, sel);
                // the cases are not vacuous: bias and groups change some selections
                ck_assert_msg(by_bias > 0 && by_groups > 0 && by_both > 0,
                              "bias changed %d, groups %d, both %d tokens", by_bias, by_groups,
                              by_both);
            }
    }
}
END_TEST

// More shapes: k = 1 and k = 3, 16 experts in 8 groups of 2 with 3 kept, 4 groups of 4.
START_TEST(test_forward_shapes) {
    enum { T = 128, E = 16 };
    float logits[T * E], bias[E];
    tu_fill_normal(logits, T * E, 21, 2.0f);
    tu_fill_normal(bias, E, 22, 0.05f);
    const int cfg[][3] = {{1, 1, 1}, {3, 1, 1}, {3, 8, 3}, {4, 4, 1}, {1, 4, 2}, {6, 8, 8}};
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++)
        for (int sigmoid = 0; sigmoid <= 1; sigmoid++) {
            router_opts_t o = opts(E, cfg[c][0], sigmoid, 1, 1.0, cfg[c][1], cfg[c][2]);
            check_forward(&o, T, logits, NULL, NULL, NULL);
            check_forward(&o, T, logits, bias, NULL, NULL);
        }
}
END_TEST

// sel[0..n) must equal want[0..n).
static void expect_sel(const int* sel, const int* want, int n, int line) {
    for (int i = 0; i < n; i++)
        ck_assert_msg(sel[i] == want[i], "line %d: choice %d is expert %d, want %d", line, i,
                      sel[i], want[i]);
}

// One token through router_forward; returns its selection in sel[k].
static void route_one(const router_opts_t* o, const float* l, const float* bias, int* sel) {
    float probs[MAXE], lse, gates[MAXE];
    router_forward(o, 1, l, bias, probs, &lse, sel, gates);
}

START_TEST(test_ties) {
    int sel[8];
    for (int sigmoid = 0; sigmoid <= 1; sigmoid++) {
        // all logits equal: the lowest indices win, in index order
        router_opts_t o3 = opts(8, 3, sigmoid, 1, 1.0, 1, 1);
        float flat[8] = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f};
        route_one(&o3, flat, NULL, sel);
        expect_sel(sel, (const int[]){0, 1, 2}, 3, __LINE__);

        // a three-way tie for the top behind nothing: 1, 2, 4 in that order
        float three[8] = {1, 3, 3, 0, 3, -1, 2, 2};
        route_one(&o3, three, NULL, sel);
        expect_sel(sel, (const int[]){1, 2, 4}, 3, __LINE__);
        // a tie for the last place: 0 beats 7
        float last[8] = {1, 3, 0, 0, 0, -1, 2, 1};
        route_one(&o3, last, NULL, sel);
        expect_sel(sel, (const int[]){1, 6, 0}, 3, __LINE__);

        // a tie made by the bias on equal scores: experts 3 and 5 lead, 3 first
        router_opts_t o2 = opts(8, 2, sigmoid, 1, 1.0, 1, 1);
        float b[8] = {0, 0, 0, 0.25f, 0, 0.25f, 0, 0};
        route_one(&o2, flat, b, sel);
        expect_sel(sel, (const int[]){3, 5}, 2, __LINE__);
        float b2[8] = {0, 0, 0, 0.25f, 0, 0.25f, 0, 0.5f};
        route_one(&o2, flat, b2, sel);
        expect_sel(sel, (const int[]){7, 3}, 2, __LINE__);

        // equal group scores: groups (2,3) and (4,5) both score s(2)+s(1); group 1 wins
        router_opts_t og = opts(8, 2, sigmoid, 1, 1.0, 4, 1);
        float gtie[8] = {0, 0, 2, 1, 1, 2, 0, 0};
        route_one(&og, gtie, NULL, sel);
        expect_sel(sel, (const int[]){2, 3}, 2, __LINE__);
        // two groups kept, four tied: the two lowest groups stay eligible
        router_opts_t og2 = opts(8, 4, sigmoid, 1, 1.0, 4, 2);
        route_one(&og2, flat, NULL, sel);
        expect_sel(sel, (const int[]){0, 1, 2, 3}, 4, __LINE__);
    }
}
END_TEST

// Group-limited routing uses the sum of the two best scores of a group (not the max, not
// the sum of all), and the best expert overall may be excluded.
START_TEST(test_group_score) {
    int sel[4];
    // softmax, 2 groups of 4: top-2 sums: g0 = 2e^3 = 40.2 > g1 = e^3.5 + e^1.5 = 37.6;
    // by max g1 would win, by the sum of all four g1 would win too (46.5).
    router_opts_t o = opts(8, 1, 0, 1, 1.0, 2, 1);
    float l[8] = {3, 3, -9, -9, 3.5f, 1.5f, 1.5f, 1.5f};
    route_one(&o, l, NULL, sel);
    expect_sel(sel, (const int[]){0}, 1, __LINE__);
    // without groups the best expert is 4
    router_opts_t plain = opts(8, 1, 0, 1, 1.0, 1, 1);
    route_one(&plain, l, NULL, sel);
    expect_sel(sel, (const int[]){4}, 1, __LINE__);
    // the bias enters the group score: lifting expert 5 makes group 1 win
    float b[8] = {0, 0, 0, 0, 0, 0.1f, 0, 0};
    route_one(&o, l, b, sel);
    expect_sel(sel, (const int[]){4}, 1, __LINE__);
}
END_TEST

// The bias selects but never enters the gate weights.
START_TEST(test_bias_not_in_gates) {
    enum { E = 8 };
    float l[E] = {0.3f, -0.2f, 1.1f, 0.7f, 0.0f, -1.0f, 0.4f, 0.2f};
    float b[E] = {0, 0, 0, 0, 0, 5.0f, 0, 0};
    for (int sigmoid = 0; sigmoid <= 1; sigmoid++)
        for (int norm = 0; norm <= 1; norm++) {
            router_opts_t o = opts(E, 2, sigmoid, norm, 2.5, 1, 1);
            float probs[E], lse, gates[2];
            int sel[2];
            router_forward(&o, 1, l, b, probs, &lse, sel, gates);
            expect_sel(sel, (const int[]){5, 2}, 2, __LINE__);
            double sum = norm ? (double)probs[5] + probs[2] : 1.0;
            ck_assert(fabs(gates[0] - 2.5 * probs[5] / sum) <= 1e-6 * gates[0]);
            ck_assert(fabs(gates[1] - 2.5 * probs[2] / sum) <= 1e-6 * gates[1]);
            if (norm) ck_assert(fabs(gates[0] + gates[1] - 2.5) < 1e-6);
        }
}
END_TEST

// ---- router_stats --------------------------------------------------------------------

START_TEST(test_stats) {
    enum { T = 50, E = 8 };
    float logits[T * E], probs[T * E], lse[T], gates[T * 2];
    int sel[T * 2];
    tu_fill_normal(logits, T * E, 31, 2.0f);
    for (int sigmoid = 0; sigmoid <= 1; sigmoid++) {
        router_opts_t o = opts(E, 2, sigmoid, 1, 1.0, 1, 1);
        router_forward(&o, T, logits, NULL, probs, lse, sel, gates);
        // accumulates into what is there
        double psum[E], zsum = 0.75, want[E], wantz = 0.75;
        for (int e = 0; e < E; e++) psum[e] = want[e] = 0.125 * e;
        router_stats(&o, T, probs, lse, psum, &zsum);
        for (int t = 0; t < T; t++) {
            double tot = 0;
            for (int e = 0; e < E; e++) tot += probs[t * E + e];
            for (int e = 0; e < E; e++) want[e] += probs[t * E + e] / tot;
            wantz += (double)lse[t] * lse[t];
        }
        double ep = tu_rel_err_dd(psum, want, E);
        ck_assert_msg(ep < 1e-12, "psum rel err %g", ep);
        ck_assert_msg(fabs(zsum - wantz) < 1e-12 * wantz, "zsum %.17g want %.17g", zsum, wantz);
        // normalised probabilities: the added mass is T
        double added = 0;
        for (int e = 0; e < E; e++) added += psum[e] - 0.125 * e;
        ck_assert(fabs(added - T) < 1e-9);
    }
}
END_TEST

// ---- backward ------------------------------------------------------------------------

typedef struct {
    const router_opts_t* o;
    int T;
    long T_global;
    const int* sel;     // [T, k] fixed selection
    const float* c;     // [T, k] loss weights of the gates (= dgates)
    const double* f;    // [E] load fractions (no gradient)
    double alpha, beta; // aux and z coefficients
} loss_ctx_t;

// L(logits) = sum_t sum_i c[t,i] g[t,i] + alpha E sum_e f_e P_e + beta/Tg sum_t lse_t^2,
// P_e = 1/Tg sum_t s[t,e] / sum_e' s[t,e'], for this rank's T tokens, in double.
static double ref_loss(const loss_ctx_t* x, const double* logits) {
    int E = x->o->E, k = x->o->k;
    double L = 0, P[MAXE] = {0};
    for (int t = 0; t < x->T; t++) {
        double s[MAXE], lse, g[MAXE];
        ref_scores(x->o->sigmoid, E, logits + t * E, s, &lse);
        ref_gates(x->o, s, x->sel + t * k, g);
        for (int i = 0; i < k; i++) L += x->c[t * k + i] * g[i];
        double tot = 0;
        for (int e = 0; e < E; e++) tot += s[e];
        for (int e = 0; e < E; e++) P[e] += s[e] / tot / x->T_global;
        L += x->beta * lse * lse / x->T_global;
    }
    for (int e = 0; e < E; e++) L += x->alpha * E * x->f[e] * P[e];
    return L;
}

// router_backward against central differences of ref_loss. gate_w, alpha, beta switch the
// three terms, so that each is checked on its own and all together.
static void check_backward(const router_opts_t* o, double gate_w, double alpha, double beta) {
    enum { T = 24 };
    int E = o->E, k = o->k;
    long Tg = 40; // this rank's 24 tokens of 40: the means must use T_global
    float logits[T * MAXE], probs[T * MAXE], lse[T], gates[T * MAXE], c[T * MAXE];
    float dlogits[T * MAXE];
    int sel[T * MAXE];
    double f[MAXE], lg[T * MAXE], fd[T * MAXE];
    tu_fill_normal(logits, (long)T * E, 41, 1.0f);
    tu_fill_normal(c, (long)T * k, 42, (float)gate_w);
    double fs = 0;
    for (int e = 0; e < E; e++) f[e] = 0.5 + 0.37 * ((e * 7) % 5), fs += f[e];
    for (int e = 0; e < E; e++) f[e] /= fs;
    router_forward(o, T, logits, NULL, probs, lse, sel, gates);
    router_backward(o, T, logits, probs, lse, sel, c, f, alpha, beta, Tg, dlogits);

    loss_ctx_t x = {o, T, Tg, sel, c, f, alpha, beta};
    for (int i = 0; i < T * E; i++) lg[i] = logits[i];
    const double h = 1e-5;
    for (int i = 0; i < T * E; i++) {
        double keep = lg[i];
        lg[i] = keep + h;
        double Lp = ref_loss(&x, lg);
        lg[i] = keep - h;
        double Lm = ref_loss(&x, lg);
        lg[i] = keep;
        fd[i] = (Lp - Lm) / (2 * h);
    }
    double err = tu_rel_err_fd(dlogits, fd, (long)T * E);
    ck_assert_msg(err <= 1e-5,
                  "sigmoid %d norm %d scaling %g groups %d: gates %g aux %g z %g: dlogits rel "
                  "err %g",
                  o->sigmoid, o->norm_topk, o->routed_scaling, o->n_groups, gate_w, alpha, beta,
                  err);
}

START_TEST(test_backward_fd) {
    for (int sigmoid = 0; sigmoid <= 1; sigmoid++)
        for (int norm = 0; norm <= 1; norm++)
            for (int grouped = 0; grouped <= 1; grouped++) {
                router_opts_t o = opts(8, 2, sigmoid, norm, 2.5, grouped ? 4 : 1, 2);
                check_backward(&o, 1.0, 0.0, 0.0); // gates only
                check_backward(&o, 0.0, 0.3, 0.0); // aux only
                check_backward(&o, 0.0, 0.0, 0.2); // z only
                check_backward(&o, 1.0, 0.3, 0.2); // all three
            }
    router_opts_t o3 = opts(16, 3, 0, 1, 1.0, 1, 1);
    check_backward(&o3, 1.0, 0.01, 0.001);
    router_opts_t o3s = opts(16, 3, 1, 1, 1.0, 1, 1);
    check_backward(&o3s, 1.0, 0.01, 0.001);
}
END_TEST

static Suite* router_suite(void) {
    Suite* s = suite_create("router");
    TCase* tc = tcase_create("router");
    tcase_add_test(tc, test_forward_vs_reference);
    tcase_add_test(tc, test_forward_shapes);
    tcase_add_test(tc, test_ties);
    tcase_add_test(tc, test_group_score);
    tcase_add_test(tc, test_bias_not_in_gates);
    tcase_add_test(tc, test_stats);
    tcase_add_test(tc, test_backward_fd);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner* sr = srunner_create(router_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
