// Unit tests of compute/permute: the plan is a stable counting sort (counts, each expert's
// rows in token order, dropped slots get -1 and no row), and the four row movers against
// naive double loops, on odd shapes: experts with 0 or 1 tokens, all tokens on one expert,
// everything dropped, row widths 1, 7, 33.
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compute/permute.h"
#include "tests/common/testutil.h"

// A routing case: T tokens, k choices, E experts, sel[T*k] (-1 = dropped).
typedef struct {
    const char* name;
    int T, k, E;
    int* sel;
} case_t;

// Distinct experts per token from a simple LCG, with slots dropped at rate drop_per_1000,
// and expert `empty` never chosen (-1: none kept empty).
static case_t random_case(const char* name, int T, int k, int E, unsigned seed, int drop_per_1000,
                          int empty) {
    case_t c = {name, T, k, E, malloc(sizeof(int) * T * k)};
    unsigned x = seed;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < k; i++) {
            int e, dup;
            do {
                x = x * 1664525u + 1013904223u;
                e = (int)((x >> 8) % (unsigned)E);
                dup = e == empty;
                for (int j = 0; j < i; j++) dup |= c.sel[t * k + j] == e;
            } while (dup);
            x = x * 1664525u + 1013904223u;
            c.sel[t * k + i] = (int)((x >> 8) % 1000) < drop_per_1000 ? -1 : e;
        }
    return c;
}

static case_t fixed_case(const char* name, int T, int k, int E, const int* sel) {
    case_t c = {name, T, k, E, malloc(sizeof(int) * T * k)};
    memcpy(c.sel, sel, sizeof(int) * T * k);
    return c;
}

// All the cases the tests run; returns how many were written to cs.
static int make_cases(case_t* cs) {
    int n = 0;
    cs[n++] = random_case("random", 37, 3, 6, 1, 0, -1);
    cs[n++] = random_case("random with drops, expert 2 empty", 41, 2, 5, 2, 150, 2);
    cs[n++] = random_case("k=1", 19, 1, 4, 3, 100, -1);
    // expert 0 empty, expert 1 with one token (token 3), the rest on 2 and 3
    static const int one[] = {2, 3, 3, 2, 2, 3, 1, 2, 2, 3, 3, -1, 2, 3};
    cs[n++] = fixed_case("0 and 1 tokens", 7, 2, 4, one);
    static const int all1[] = {2, 2, 2, 2, 2, 2, 2, 2, 2};
    cs[n++] = fixed_case("all to one expert", 9, 1, 5, all1);
    static const int all2[] = {4, 0, 4, 0, 0, 4, 4, 0, 0, 4};
    cs[n++] = fixed_case("all to two experts, both choices", 5, 2, 6, all2);
    static const int none[] = {-1, -1, -1, -1, -1, -1};
    cs[n++] = fixed_case("all dropped", 3, 2, 3, none);
    static const int one_tok[] = {1, 0, 2};
    cs[n++] = fixed_case("one token", 1, 3, 3, one_tok);
    return n;
}

static void free_cases(case_t* cs, int n) {
    for (int i = 0; i < n; i++) free(cs[i].sel);
}

static int n_kept(const case_t* c) {
    int n = 0;
    for (int s = 0; s < c->T * c->k; s++) n += c->sel[s] >= 0;
    return n;
}

START_TEST(test_plan) {
    case_t cs[16];
    int nc = make_cases(cs);
    for (int ci = 0; ci < nc; ci++) {
        const case_t* c = &cs[ci];
        int T = c->T, k = c->k, E = c->E;
        int counts[64], pos[1024], want_counts[64] = {0};
        memset(counts, 0x55, sizeof counts); // overwritten, not accumulated
        permute_plan(T, k, E, c->sel, counts, pos);
        for (int s = 0; s < T * k; s++)
            if (c->sel[s] >= 0) want_counts[c->sel[s]]++;
        for (int e = 0; e < E; e++)
            ck_assert_msg(counts[e] == want_counts[e], "%s: counts[%d] = %d, want %d", c->name, e,
                          counts[e], want_counts[e]);
        // The expected rows, by definition: expert e owns [off_e, off_e + counts_e); its
        // slots take them in (token, choice) order.
        int next = 0;
        int seen[1024] = {0};
        for (int e = 0; e < E; e++)
            for (int t = 0; t < T; t++)
                for (int i = 0; i < k; i++)
                    if (c->sel[t * k + i] == e) {
                        ck_assert_msg(pos[t * k + i] == next,
                                      "%s: slot (%d,%d) of expert %d at row %d, want %d", c->name,
                                      t, i, e, pos[t * k + i], next);
                        seen[next++]++;
                    }
        ck_assert_int_eq(next, n_kept(c));
        for (int s = 0; s < T * k; s++)
            if (c->sel[s] < 0)
                ck_assert_msg(pos[s] == -1, "%s: dropped slot %d at row %d", c->name, s, pos[s]);
        for (int r = 0; r < next; r++) ck_assert_int_eq(seen[r], 1); // a bijection
    }
    free_cases(cs, nc);
}
END_TEST

// The four row movers for one case and row width w.
static void check_rows(const case_t* c, int w) {
    int T = c->T, k = c->k, E = c->E, N = n_kept(c);
    int counts[64], pos[1024];
    permute_plan(T, k, E, c->sel, counts, pos);
    long nt = (long)T * w, nr = (long)(N > 0 ? N : 1) * w;
    float* src = malloc(sizeof(float) * nt);      // [T, w] token rows
    float* rows = malloc(sizeof(float) * nr);     // [N, w] expert-side rows
    float* dout = malloc(sizeof(float) * nt);     // [T, w]
    float* gates = malloc(sizeof(float) * T * k); // [T, k]
    float* dst = malloc(sizeof(float) * nr);
    float* out = malloc(sizeof(float) * nt);
    float* dgates = malloc(sizeof(float) * T * k);
    float* drows = malloc(sizeof(float) * nr);
    double* want = malloc(sizeof(double) * (nt > nr ? nt : nr));
    double* wantg = malloc(sizeof(double) * T * k);
    tu_fill_normal(src, nt, 100 + w, 1.0f);
    tu_fill_normal(rows, nr, 200 + w, 1.0f);
    tu_fill_normal(dout, nt, 300 + w, 1.0f);
    tu_fill_normal(gates, (long)T * k, 400 + w, 0.5f);

    // permute_rows: every kept slot's row is its token's row, bit for bit, and every row
    // [0, N) is written
    for (long i = 0; i < nr; i++) dst[i] = NAN;
    permute_rows(T, k, w, pos, src, dst);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < k; i++) {
            int p = pos[t * k + i];
            if (p < 0) continue;
            ck_assert_msg(memcmp(dst + (long)p * w, src + (long)t * w, sizeof(float) * w) == 0,
                          "%s w=%d: permute_rows slot (%d,%d)", c->name, w, t, i);
        }
    for (long i = 0; i < (long)N * w; i++) ck_assert_msg(!isnan(dst[i]), "%s: row gap", c->name);

    // permute_rows_backward: out[t] = sum over kept slots of rows[slot]
    for (long i = 0; i < nt; i++) out[i] = NAN, want[i] = 0;
    permute_rows_backward(T, k, w, pos, rows, out);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < k; i++) {
            int p = pos[t * k + i];
            if (p >= 0)
                for (int j = 0; j < w; j++) want[t * w + j] += rows[(long)p * w + j];
        }
    double e1 = tu_rel_err_fd(out, want, nt);
    ck_assert_msg(e1 <= 1e-6, "%s w=%d: permute_rows_backward rel err %g", c->name, w, e1);
    if (N == 0)
        for (long i = 0; i < nt; i++) ck_assert(out[i] == 0.0f);

    // unpermute_forward: out[t] = sum_i gates[t,i] rows[slot]; also exactly the float sum
    // in choice order (the determinism contract)
    for (long i = 0; i < nt; i++) out[i] = NAN, want[i] = 0;
    unpermute_forward(T, k, w, pos, gates, rows, out);
    for (int t = 0; t < T; t++)
        for (int j = 0; j < w; j++) {
            float acc = 0;
            for (int i = 0; i < k; i++) {
                int p = pos[t * k + i];
                if (p < 0) continue;
                want[t * w + j] += (double)gates[t * k + i] * rows[(long)p * w + j];
                acc += gates[t * k + i] * rows[(long)p * w + j];
            }
            ck_assert_msg(out[t * w + j] == acc, "%s w=%d: out[%d,%d] not in choice order", c->name,
                          w, t, j);
        }
    double e2 = tu_rel_err_fd(out, want, nt);
    ck_assert_msg(e2 <= 1e-6, "%s w=%d: unpermute_forward rel err %g", c->name, w, e2);

    // unpermute_backward: dgates = <dout[t], rows[slot]> (0 when dropped),
    // drows[slot] = gates * dout[t]
    for (long i = 0; i < nr; i++) drows[i] = NAN, want[i] = NAN;
    for (int s = 0; s < T * k; s++) dgates[s] = NAN;
    unpermute_backward(T, k, w, pos, gates, rows, dout, dgates, drows);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < k; i++) {
            int p = pos[t * k + i];
            double dot = 0;
            if (p >= 0)
                for (int j = 0; j < w; j++) {
                    dot += (double)dout[t * w + j] * rows[(long)p * w + j];
                    want[(long)p * w + j] = (double)gates[t * k + i] * dout[t * w + j];
                }
            wantg[t * k + i] = dot;
        }
    double e3 = tu_rel_err_fd(dgates, wantg, (long)T * k);
    ck_assert_msg(e3 <= 1e-6, "%s w=%d: dgates rel err %g", c->name, w, e3);
    for (int s = 0; s < T * k; s++)
        if (pos[s] < 0) ck_assert_msg(dgates[s] == 0.0f, "%s: dropped dgate %d", c->name, s);
    if (N > 0) {
        double e4 = tu_rel_err_fd(drows, want, (long)N * w);
        ck_assert_msg(e4 <= 1e-6, "%s w=%d: drows rel err %g", c->name, w, e4);
    }

    free(src), free(rows), free(dout), free(gates), free(dst), free(out), free(dgates);
    free(drows), free(want), free(wantg);
}

START_TEST(test_rows) {
    static const int widths[] = {1, 7, 8, 33, 64};
    case_t cs[16];
    int nc = make_cases(cs);
    for (int ci = 0; ci < nc; ci++)
        for (size_t wi = 0; wi < sizeof widths / sizeof widths[0]; wi++)
            check_rows(&cs[ci], widths[wi]);
    free_cases(cs, nc);
}
END_TEST

// permute_rows and permute_rows_backward are an adjoint pair: <P x, r> = <x, Pᵀ r>.
START_TEST(test_adjoint) {
    case_t cs[16];
    int nc = make_cases(cs);
    const int w = 7;
    for (int ci = 0; ci < nc; ci++) {
        const case_t* c = &cs[ci];
        int T = c->T, k = c->k, N = n_kept(c);
        if (N == 0) continue;
        int counts[64], pos[1024];
        permute_plan(T, k, c->E, c->sel, counts, pos);
        float* x = malloc(sizeof(float) * T * w);
        float* px = malloc(sizeof(float) * N * w);
        float* r = malloc(sizeof(float) * N * w);
        float* ptr = malloc(sizeof(float) * T * w);
        tu_fill_normal(x, (long)T * w, 7, 1.0f);
        tu_fill_normal(r, (long)N * w, 8, 1.0f);
        permute_rows(T, k, w, pos, x, px);
        permute_rows_backward(T, k, w, pos, r, ptr);
        double a = 0, b = 0;
        for (long i = 0; i < (long)N * w; i++) a += (double)px[i] * r[i];
        for (long i = 0; i < (long)T * w; i++) b += (double)x[i] * ptr[i];
        ck_assert_msg(fabs(a - b) <= 1e-5 * (fabs(a) + 1), "%s: <Px,r> %g vs <x,P'r> %g", c->name,
                      a, b);
        free(x), free(px), free(r), free(ptr);
    }
    free_cases(cs, nc);
}
END_TEST

static Suite* permute_suite(void) {
    Suite* s = suite_create("permute");
    TCase* tc = tcase_create("permute");
    tcase_add_test(tc, test_plan);
    tcase_add_test(tc, test_rows);
    tcase_add_test(tc, test_adjoint);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner* sr = srunner_create(permute_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
