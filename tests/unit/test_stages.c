// Unit tests of the elementwise and expert stages against naive double references and
// finite differences: SwiGLU, RMSNorm (forward, backward, dscale), the MSE loss, and the four
// grouped GEMMs for every ISA this CPU runs, on groups with 0, 1 and many rows and widths
// that are not multiples of the vector length.
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "compute/gmm.h"
#include "compute/kernels/kernels.h"
#include "compute/loss.h"
#include "compute/rmsnorm.h"
#include "compute/swiglu.h"
#include "tests/common/testutil.h"

static double dsilu(double x) { return x / (1.0 + exp(-x)); }
static double dsigm(double x) { return 1.0 / (1.0 + exp(-x)); }

// max_i |got_i - want_i| / (|want_i| + floor): an elementwise relative error.
static double elem_err(const float* got, const double* want, long n, double floor) {
    double m = 0;
    for (long i = 0; i < n; i++) {
        double e = fabs(got[i] - want[i]) / (fabs(want[i]) + floor);
        if (!(e <= m)) m = e;
    }
    return m;
}

// ---- SwiGLU --------------------------------------------------------------------------

START_TEST(test_swiglu) {
    enum { N = 1000 };
    float h0[N], h1[N], da[N], a[N], dh0[N], dh1[N];
    double want[N], wd0[N], wd1[N], fd0[N], fd1[N];
    tu_fill_normal(h0, N, 1, 3.0f);
    tu_fill_normal(h1, N, 2, 1.0f);
    tu_fill_normal(da, N, 3, 1.0f);
    // the tails: exp over/underflow must not give NaN
    h0[0] = 100.0f, h0[1] = -100.0f, h0[2] = 89.0f, h0[3] = -89.0f, h0[4] = 0.0f;
    swiglu_forward(N, h0, h1, a);
    swiglu_backward(N, h0, h1, da, dh0, dh1);
    for (int i = 0; i < N; i++) {
        double x = h0[i], y = h1[i], s = dsigm(x);
        want[i] = dsilu(x) * y;
        wd0[i] = da[i] * y * s * (1 + x * (1 - s));
        wd1[i] = da[i] * dsilu(x);
        // central differences of the double forward, relative step
        double h = 1e-6 * (fabs(x) + 1);
        fd0[i] = da[i] * (dsilu(x + h) - dsilu(x - h)) / (2 * h) * y;
        h = 1e-6 * (fabs(y) + 1);
        fd1[i] = da[i] * (dsilu(x) * (y + h) - dsilu(x) * (y - h)) / (2 * h);
    }
    for (int i = 0; i < N; i++) ck_assert_msg(isfinite(a[i]) && isfinite(dh0[i]), "i=%d", i);
    ck_assert_msg(elem_err(a, want, N, 1e-30) <= 1e-6, "a elem err %g",
                  elem_err(a, want, N, 1e-30));
    // silu' has a zero near -1.28, where the float formula cancels: elementwise with a floor
    ck_assert_msg(tu_rel_err_fd(dh0, wd0, N) <= 1e-6, "dh0 rel err %g", tu_rel_err_fd(dh0, wd0, N));
    ck_assert_msg(elem_err(dh0, wd0, N, 1e-3) <= 1e-4, "dh0 elem err %g",
                  elem_err(dh0, wd0, N, 1e-3));
    ck_assert_msg(elem_err(dh1, wd1, N, 1e-30) <= 1e-6, "dh1 elem err %g",
                  elem_err(dh1, wd1, N, 1e-30));
    ck_assert_msg(tu_rel_err_fd(dh0, fd0, N) <= 1e-5, "dh0 vs FD %g", tu_rel_err_fd(dh0, fd0, N));
    ck_assert_msg(tu_rel_err_fd(dh1, fd1, N) <= 1e-5, "dh1 vs FD %g", tu_rel_err_fd(dh1, fd1, N));
}
END_TEST

// ---- RMSNorm -------------------------------------------------------------------------

#define REF_RMS_EPS 1e-6 // DESIGN.md §2, written out (not the header's macro)

// y = x / sqrt(mean x^2 + eps) * scale for one row, in double.
static void ref_rms_row(int d, const double* x, const double* scale, double* y) {
    double ss = 0;
    for (int j = 0; j < d; j++) ss += x[j] * x[j];
    double r = 1.0 / sqrt(ss / d + REF_RMS_EPS);
    for (int j = 0; j < d; j++) y[j] = x[j] * r * scale[j];
}

// L = sum_j c_j y_j(x, scale) for one row.
static double ref_rms_loss(int d, const double* x, const double* scale, const float* c) {
    double y[64], L = 0;
    ref_rms_row(d, x, scale, y);
    for (int j = 0; j < d; j++) L += c[j] * y[j];
    return L;
}

START_TEST(test_rmsnorm) {
    static const int dims[] = {1, 7, 33, 64};
    enum { T = 6 };
    for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++) {
        int d = dims[di];
        float x[T * 64], scale[64], y[T * 64], rinv[T], dy[T * 64], dx[T * 64], ds[64];
        double want[T * 64], wrinv[T], fdx[T * 64], fds[64], wds[64];
        tu_fill_normal(x, (long)T * d, 10 + d, 1.5f);
        tu_fill_normal(scale, d, 20 + d, 0.5f);
        for (int j = 0; j < d; j++) scale[j] += 1.0f;
        tu_fill_normal(dy, (long)T * d, 30 + d, 1.0f);
        x[d] *= 1e-3f;                                     // a tiny entry in row 1
        for (int j = 0; j < d; j++) x[2 * d + j] *= 1e-3f; // row 2: mean x^2 ~ eps
        rmsnorm_forward(T, d, x, scale, y, rinv);
        rmsnorm_backward(T, d, x, scale, rinv, dy, dx);
        for (int j = 0; j < d; j++) ds[j] = NAN;
        rmsnorm_dscale(T, d, x, rinv, dy, ds);

        double xs[64], sc[64];
        for (int j = 0; j < d; j++) sc[j] = scale[j], wds[j] = 0, fds[j] = 0;
        for (int t = 0; t < T; t++) {
            for (int j = 0; j < d; j++) xs[j] = x[t * d + j];
            ref_rms_row(d, xs, sc, want + t * d);
            double ss = 0;
            for (int j = 0; j < d; j++) ss += xs[j] * xs[j];
            wrinv[t] = 1.0 / sqrt(ss / d + REF_RMS_EPS);
            for (int j = 0; j < d; j++) wds[j] += dy[t * d + j] * xs[j] * wrinv[t];
            // FD in x and in scale of L_t = <dy_t, y_t>
            for (int j = 0; j < d; j++) {
                double keep = xs[j], h = 1e-6 * (fabs(keep) + 1e-2);
                xs[j] = keep + h;
                double Lp = ref_rms_loss(d, xs, sc, dy + t * d);
                xs[j] = keep - h;
                double Lm = ref_rms_loss(d, xs, sc, dy + t * d);
                xs[j] = keep;
                fdx[t * d + j] = (Lp - Lm) / (2 * h);
                keep = sc[j], h = 1e-6;
                sc[j] = keep + h;
                Lp = ref_rms_loss(d, xs, sc, dy + t * d);
                sc[j] = keep - h;
                Lm = ref_rms_loss(d, xs, sc, dy + t * d);
                sc[j] = keep;
                fds[j] += (Lp - Lm) / (2 * h);
            }
        }
        double ey = tu_rel_err_fd(y, want, (long)T * d), er = tu_rel_err_fd(rinv, wrinv, T);
        double ex = tu_rel_err_fd(dx, fdx, (long)T * d), es = tu_rel_err_fd(ds, wds, d);
        double esf = tu_rel_err_fd(ds, fds, d);
        ck_assert_msg(ey <= 1e-6, "d=%d: y rel err %g", d, ey);
        ck_assert_msg(er <= 1e-6, "d=%d: rinv rel err %g", d, er);
        ck_assert_msg(ex <= 1e-5, "d=%d: dx vs FD rel err %g", d, ex);
        ck_assert_msg(es <= 1e-6, "d=%d: dscale rel err %g", d, es);
        ck_assert_msg(esf <= 1e-5, "d=%d: dscale vs FD rel err %g", d, esf);
        // row by row as well, so that a small row cannot hide behind a large one: relative
        // to the size of the two terms of dx that cancel (at d = 1 dx is ~eps of them)
        for (int t = 0; t < T; t++) {
            double terms = 0, err = 0;
            for (int j = 0; j < d; j++) {
                terms = fmax(terms, wrinv[t] * fabs(scale[j] * dy[t * d + j]));
                err = fmax(err, fabs(dx[t * d + j] - fdx[t * d + j]));
            }
            ck_assert_msg(err <= 1e-5 * terms, "d=%d row %d: dx vs FD err %g of %g", d, t, err,
                          terms);
        }
    }
}
END_TEST

// ---- MSE -----------------------------------------------------------------------------

START_TEST(test_mse) {
    enum { N = 777 };
    float h[N], y[N], dh[N];
    tu_fill_normal(h, N, 5, 1.0f);
    tu_fill_normal(y, N, 6, 1.0f);
    double want = 0;
    for (int i = 0; i < N; i++) want += ((double)h[i] - y[i]) * ((double)h[i] - y[i]);
    double got = mse_block_sum(N, h, y);
    ck_assert_msg(fabs(got - want) <= 1e-13 * want, "sum %.17g want %.17g", got, want);
    ck_assert(mse_block_sum(0, h, y) == 0.0);
    // the local block is 777 of 2000 elements: dh = 2 (h - y) / 2000, and it is the
    // gradient of mse_block_sum / 2000
    const double ng = 2000;
    mse_backward(N, h, y, ng, dh);
    double wd[N], fd[N];
    for (int i = 0; i < N; i++) {
        wd[i] = 2.0 * ((double)h[i] - y[i]) / ng;
        double e = (double)h[i] - y[i], step = 1e-3;
        fd[i] = ((e + step) * (e + step) - (e - step) * (e - step)) / (2 * step) / ng;
    }
    ck_assert_msg(elem_err(dh, wd, N, 1e-30) <= 1e-6, "dh elem err %g", elem_err(dh, wd, N, 1e-30));
    ck_assert_msg(tu_rel_err_fd(dh, fd, N) <= 1e-6, "dh vs FD %g", tu_rel_err_fd(dh, fd, N));
}
END_TEST

// ---- grouped GEMMs -------------------------------------------------------------------

#define NG 6
static const int group_rows[NG] = {0, 1, 5, 0, 17, 64};

// Relative error of group g of a [G, r, c] weight gradient; exact zero for an empty group.
static void check_wgrad(const char* what, const char* isa, int d, int f, const float* got,
                        const double* want, long per, int g, int rows) {
    if (rows == 0) {
        for (long i = 0; i < per; i++)
            ck_assert_msg(got[g * per + i] == 0.0f, "%s %s d=%d f=%d: empty group %d not zero", isa,
                          what, d, f, g);
        return;
    }
    double e = tu_rel_err_fd(got + g * per, want + g * per, per);
    ck_assert_msg(e <= 1e-5, "%s %s d=%d f=%d group %d (%d rows): rel err %g", isa, what, d, f, g,
                  rows, e);
}

// Group g of the rows [off, off + n) of a [N, w] buffer within 1e-5 of the reference.
static void check_rows(const char* what, const char* isa, int d, int f, const float* got,
                       const double* want, long N, int w) {
    double e = tu_rel_err_fd(got, want, N * w);
    ck_assert_msg(e <= 1e-5, "%s %s d=%d f=%d: rel err %g", isa, what, d, f, e);
    // each row on its own (rows of small groups are no smaller, but be strict anyway)
    for (long r = 0; r < N; r++) {
        double er = tu_rel_err_fd(got + r * w, want + r * w, w);
        ck_assert_msg(er <= 1e-5, "%s %s d=%d f=%d row %ld: rel err %g", isa, what, d, f, r, er);
    }
}

static void check_gmm(const kern_table_t* kt, int d, int f) {
    ck_assert_int_eq(kern_select(kt->isa), 0);
    ck_assert_ptr_eq(kern, kt);
    int offs[NG + 1] = {0};
    for (int g = 0; g < NG; g++) offs[g + 1] = offs[g] + group_rows[g];
    long N = offs[NG];
    gmm_shape_t s = {.n_groups = NG, .offs = offs, .d = d, .f = f};
    long wsz = (long)NG * d * f;
    float* x = malloc(sizeof(float) * N * d);   // [N, d]
    float* w0 = malloc(sizeof(float) * wsz);    // [G, d, f]
    float* w1 = malloc(sizeof(float) * wsz);    // [G, d, f]
    float* wo = malloc(sizeof(float) * wsz);    // [G, f, d]
    float* h0 = malloc(sizeof(float) * N * f);  // [N, f]
    float* h1 = malloc(sizeof(float) * N * f);  // [N, f]
    float* a = malloc(sizeof(float) * N * f);   // [N, f]
    float* y = malloc(sizeof(float) * N * d);   // [N, d]
    float* dy = malloc(sizeof(float) * N * d);  // [N, d]
    float* da = malloc(sizeof(float) * N * f);  // [N, f]
    float* dh0 = malloc(sizeof(float) * N * f); // [N, f]
    float* dh1 = malloc(sizeof(float) * N * f); // [N, f]
    float* dx = malloc(sizeof(float) * N * d);  // [N, d]
    float* dw0 = malloc(sizeof(float) * wsz);   // [G, d, f]
    float* dw1 = malloc(sizeof(float) * wsz);   // [G, d, f]
    float* dwo = malloc(sizeof(float) * wsz);   // [G, f, d]
    double* r_nf = malloc(sizeof(double) * N * f);
    double* r_nf2 = malloc(sizeof(double) * N * f);
    double* r_nd = malloc(sizeof(double) * N * d);
    double* r_w = malloc(sizeof(double) * wsz);
    double* r_w2 = malloc(sizeof(double) * wsz);
    tu_fill_normal(x, N * d, 1, 1.0f);
    tu_fill_normal(w0, wsz, 2, 1.0f / sqrtf((float)d));
    tu_fill_normal(w1, wsz, 3, 1.0f / sqrtf((float)d));
    tu_fill_normal(wo, wsz, 4, 1.0f / sqrtf((float)f));
    tu_fill_normal(dy, N * d, 5, 1.0f);
    const char* isa = kt->name;

    // up: h0 = x W0_g, h1 = x W1_g, a = silu(h0) h1
    gmm_up_forward(&s, x, w0, w1, h0, h1, a);
    for (int g = 0; g < NG; g++) {
        long r0 = offs[g], n = group_rows[g];
        tu_dgemm(n, f, d, x + r0 * d, d, 1, w0 + (long)g * d * f, f, 1, r_nf + r0 * f, f);
        tu_dgemm(n, f, d, x + r0 * d, d, 1, w1 + (long)g * d * f, f, 1, r_nf2 + r0 * f, f);
    }
    check_rows("h0", isa, d, f, h0, r_nf, N, f);
    check_rows("h1", isa, d, f, h1, r_nf2, N, f);
    // the fused path has the unfused one's bits: per-group sgemm, then swiglu_fwd over all rows
    {
        float* u = malloc(sizeof(float) * (3 * N * f + 1)); // [3][N, f]: h0, h1, a unfused
        for (int g = 0; g < NG; g++) {
            long r0 = offs[g], n = group_rows[g];
            if (n == 0) continue;
            kern->sgemm(n, f, d, x + r0 * d, d, 1, w0 + (long)g * d * f, f, 1, u + r0 * f, f, 0);
            kern->sgemm(n, f, d, x + r0 * d, d, 1, w1 + (long)g * d * f, f, 1, u + (N + r0) * f, f,
                        0);
        }
        kern->swiglu_fwd(N * f, u, u + N * f, u + 2 * N * f);
        ck_assert_msg(memcmp(h0, u, sizeof(float) * N * f) == 0 &&
                          memcmp(h1, u + N * f, sizeof(float) * N * f) == 0 &&
                          memcmp(a, u + 2 * N * f, sizeof(float) * N * f) == 0,
                      "%s d=%d f=%d: fused gmm_up differs from sgemm + swiglu_fwd", isa, d, f);
        free(u);
    }
    for (long i = 0; i < N * f; i++) r_nf[i] = dsilu(r_nf[i]) * r_nf2[i];
    check_rows("a", isa, d, f, a, r_nf, N, f);

    // down: y = a Wo_g (from the float a the stage produced)
    gmm_down_forward(&s, a, wo, y);
    for (int g = 0; g < NG; g++) {
        long r0 = offs[g], n = group_rows[g];
        tu_dgemm(n, d, f, a + r0 * f, f, 1, wo + (long)g * f * d, d, 1, r_nd + r0 * d, d);
    }
    check_rows("y", isa, d, f, y, r_nd, N, d);

    // down backward: da = dy Wo_gᵀ, dWo_g = a_gᵀ dy_g (zero for an empty group)
    for (long i = 0; i < wsz; i++) dwo[i] = NAN;
    gmm_down_backward(&s, a, wo, dy, da, dwo);
    for (int g = 0; g < NG; g++) {
        long r0 = offs[g], n = group_rows[g];
        const float* wog = wo + (long)g * f * d;
        tu_dgemm(n, f, d, dy + r0 * d, d, 1, wog, 1, d, r_nf + r0 * f, f);
        tu_dgemm(f, d, n, a + r0 * f, 1, f, dy + r0 * d, d, 1, r_w + (long)g * f * d, d);
    }
    check_rows("da", isa, d, f, da, r_nf, N, f);
    for (int g = 0; g < NG; g++)
        check_wgrad("dwo", isa, d, f, dwo, r_w, (long)f * d, g, group_rows[g]);

    // up backward: dh0 = da h1 silu'(h0), dh1 = da silu(h0), dx = dh0 W0ᵀ + dh1 W1ᵀ,
    // dW0 = xᵀ dh0, dW1 = xᵀ dh1 (all from the float h0, h1, da of the stages)
    for (long i = 0; i < wsz; i++) dw0[i] = dw1[i] = NAN;
    gmm_up_backward(&s, x, w0, w1, h0, h1, da, dh0, dh1, dx, dw0, dw1);
    for (long i = 0; i < N * f; i++) {
        double z = h0[i], sg = dsigm(z);
        r_nf[i] = (double)da[i] * h1[i] * sg * (1 + z * (1 - sg));
        r_nf2[i] = (double)da[i] * dsilu(z);
    }
    check_rows("dh0", isa, d, f, dh0, r_nf, N, f);
    check_rows("dh1", isa, d, f, dh1, r_nf2, N, f);
    // reference products from the double dh (the float dh are within 1e-7 of them)
    for (int g = 0; g < NG; g++) {
        long r0 = offs[g], n = group_rows[g];
        const float* w0g = w0 + (long)g * d * f;
        const float* w1g = w1 + (long)g * d * f;
        for (long r = r0; r < r0 + n; r++)
            for (int j = 0; j < d; j++) {
                double acc = 0;
                for (int i = 0; i < f; i++)
                    acc += r_nf[r * f + i] * w0g[j * f + i] + r_nf2[r * f + i] * w1g[j * f + i];
                r_nd[r * d + j] = acc;
            }
        for (int j = 0; j < d; j++)
            for (int i = 0; i < f; i++) {
                double a0 = 0, a1 = 0;
                for (long r = r0; r < r0 + n; r++) {
                    a0 += (double)x[r * d + j] * r_nf[r * f + i];
                    a1 += (double)x[r * d + j] * r_nf2[r * f + i];
                }
                r_w[(long)g * d * f + j * f + i] = a0;
                r_w2[(long)g * d * f + j * f + i] = a1;
            }
    }
    check_rows("dx", isa, d, f, dx, r_nd, N, d);
    for (int g = 0; g < NG; g++) {
        check_wgrad("dw0", isa, d, f, dw0, r_w, (long)d * f, g, group_rows[g]);
        check_wgrad("dw1", isa, d, f, dw1, r_w2, (long)d * f, g, group_rows[g]);
    }

    free(x), free(w0), free(w1), free(wo), free(h0), free(h1), free(a), free(y), free(dy);
    free(da), free(dh0), free(dh1), free(dx), free(dw0), free(dw1), free(dwo);
    free(r_nf), free(r_nf2), free(r_nd), free(r_w), free(r_w2);
}

START_TEST(test_gmm) {
    ck_assert_int_eq(kern_init(1), 0);
    static const int shapes[][2] = {{13, 29}, {32, 64}, {1, 7}, {33, 17}};
    int n_isa = 0;
    for (int isa = 0; isa < KERN_N_ISA; isa++) {
        const kern_table_t* kt = kern_table_for((kern_isa_t)isa);
        if (!kt) continue;
        n_isa++;
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
            check_gmm(kt, shapes[si][0], shapes[si][1]);
    }
    ck_assert_int_ge(n_isa, 1); // ref at least
    ck_assert_int_eq(kern_select(-1), 0);
    kern_shutdown();
}
END_TEST

// The four grouped GEMMs give the same bits for any thread count, whether kern_for_groups
// splits a group among the threads or hands groups out whole (many small groups), and with
// weights packed on the fly or pre-packed.
enum { GT_OUT = 11 };

static void set_threads(int t) {
#ifdef _OPENMP
    omp_set_num_threads(t);
#else
    (void)t;
#endif
}

static void run_gmm_all(const gmm_shape_t* s, const float* in[5], float* out[GT_OUT]) {
    // in: x, w0, w1, wo, dy; out: h0, h1, a, y, da, dwo, dh0, dh1, dx, dw0, dw1
    gmm_up_forward(s, in[0], in[1], in[2], out[0], out[1], out[2]);
    gmm_down_forward(s, out[2], in[3], out[3]);
    gmm_down_backward(s, out[2], in[3], in[4], out[4], out[5]);
    gmm_up_backward(s, in[0], in[1], in[2], out[0], out[1], out[4], out[6], out[7], out[8], out[9],
                    out[10]);
}

static void check_gmm_threads(const kern_table_t* kt, int G, const int* rows, int prepack) {
    ck_assert_int_eq(kern_select(kt->isa), 0);
    const int d = 33, f = 70;
    int offs[65] = {0};
    for (int g = 0; g < G; g++) offs[g + 1] = offs[g] + rows[g];
    long N = offs[G], wsz = (long)G * d * f;
    long in_n[5] = {N * d, wsz, wsz, wsz, N * d};
    long out_n[GT_OUT] = {N * f, N * f, N * f, N * d, N * f, wsz, N * f, N * f, N * d, wsz, wsz};
    const float* in[5];
    for (int i = 0; i < 5; i++) {
        float* b = malloc(sizeof(float) * in_n[i]);
        tu_fill_normal(b, in_n[i], 40 + i, i >= 1 && i <= 3 ? 0.2f : 1.0f);
        in[i] = b;
    }
    gmm_packed_t pk;
    float* pmem = NULL;
    gmm_shape_t s = {.n_groups = G, .offs = offs, .d = d, .f = f};
    if (prepack) {
        pmem = aligned_alloc(64, (gmm_packed_floats(G, d, f, 1) * sizeof(float) + 63) / 64 * 64);
        gmm_packed_bind(&pk, G, d, f, 1, pmem);
        gmm_pack(&pk, in[1], in[2], in[3]);
        s.packed = &pk;
    }
    float* one[GT_OUT]; // [threads = 1]
    float* out[GT_OUT];
    for (int i = 0; i < GT_OUT; i++) {
        one[i] = malloc(sizeof(float) * out_n[i]);
        out[i] = malloc(sizeof(float) * out_n[i]);
    }
    set_threads(1);
    run_gmm_all(&s, in, one);
    static const int threads[] = {2, 3, 4, 16};
    for (size_t ti = 0; ti < sizeof threads / sizeof threads[0]; ti++) {
        int th = threads[ti];
        for (int i = 0; i < GT_OUT; i++) memset(out[i], 0xff, sizeof(float) * out_n[i]);
        set_threads(th);
        run_gmm_all(&s, in, out);
        set_threads(1);
        for (int i = 0; i < GT_OUT; i++)
            ck_assert_msg(memcmp(one[i], out[i], sizeof(float) * out_n[i]) == 0,
                          "%s G=%d prepack=%d: output %d differs at %d threads from 1", kt->name, G,
                          prepack, i, th);
    }
    for (int i = 0; i < GT_OUT; i++) free(one[i]), free(out[i]);
    for (int i = 0; i < 5; i++) free((float*)in[i]);
    free(pmem);
}

START_TEST(test_gmm_threads) {
    ck_assert_int_eq(kern_init(16), 0);
    // 48 small groups, some empty, one of 1 row: handed out whole from 2 threads on
    int small[48];
    for (int g = 0; g < 48; g++) small[g] = g % 7 == 3 ? 0 : g % 11 == 5 ? 1 : 3 + g % 9;
    // two large groups split among the threads, the small ones handed out
    int mixed[20] = {150, 0, 1, 4, 2, 4, 130, 3, 4, 2, 1, 4, 3, 4, 2, 3, 4, 4, 2, 3};
    // 8 equal large groups, each split among all the threads in turn (up to 16 rectangles)
    int large[8] = {512, 512, 512, 512, 512, 512, 512, 512};
    for (int isa = 0; isa < KERN_N_ISA; isa++) {
        const kern_table_t* kt = kern_table_for((kern_isa_t)isa);
        if (!kt) continue;
        for (int prepack = 0; prepack < 2; prepack++) {
            check_gmm_threads(kt, 48, small, prepack);
            check_gmm_threads(kt, 20, mixed, prepack);
            check_gmm_threads(kt, 8, large, prepack);
        }
    }
    ck_assert_int_eq(kern_select(-1), 0);
    kern_shutdown();
}
END_TEST

START_TEST(test_gmm_flops) { ck_assert(gmm_forward_flops(10, 3, 5) == 2.0 * 10 * 3 * 5 * 3); }
END_TEST

static Suite* stages_suite(void) {
    Suite* s = suite_create("stages");
    TCase* tc = tcase_create("stages");
    tcase_add_test(tc, test_swiglu);
    tcase_add_test(tc, test_rmsnorm);
    tcase_add_test(tc, test_mse);
    tcase_add_test(tc, test_gmm);
    tcase_add_test(tc, test_gmm_threads);
    tcase_add_test(tc, test_gmm_flops);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner* sr = srunner_create(stages_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? 0 : 1;
}
