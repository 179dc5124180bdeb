#include "compute/gmm.h"

#include "compute/kernels/kernels.h"

// Each function's per-group work is one fn(g, ctx) for kern_for_groups, which shares the
// groups among the threads; a group writes only its own rows and weight gradients.
typedef struct {
    const gmm_shape_t* s;
    const float *x, *w0, *w1, *wo, *a, *dy, *dh0, *dh1;   // what the products read
    float *h0, *h1, *act, *y, *da, *dx, *dw0, *dw1, *dwo; // what they write (act: up's a)
} gmm_ctx_t;

static void up_forward_group(int g, void* v) {
    const gmm_ctx_t* c = v;
    const gmm_shape_t* s = c->s;
    int d = s->d, f = s->f;
    long r0 = s->offs[g], n = s->offs[g + 1] - r0;
    if (n == 0) return;
    long wo = (long)g * d * f;
    const float* bp = s->packed ? s->packed->up + g * s->packed->up_n : NULL;
    kern->gemm_swiglu(n, f, d, c->x + r0 * d, d, 1, c->w0 + wo, c->w1 + wo, f, 1, bp,
                      c->h0 + r0 * f, c->h1 + r0 * f, c->act + r0 * f, f);
}

void gmm_up_forward(const gmm_shape_t* s, const float* x, const float* w0, const float* w1,
                    float* h0, float* h1, float* a) {
    gmm_ctx_t c = {.s = s, .x = x, .w0 = w0, .w1 = w1, .h0 = h0, .h1 = h1, .act = a};
    kern_for_groups(s->n_groups, s->offs, up_forward_group, &c);
}

static void down_forward_group(int g, void* v) {
    const gmm_ctx_t* c = v;
    const gmm_shape_t* s = c->s;
    int d = s->d, f = s->f;
    long r0 = s->offs[g], n = s->offs[g + 1] - r0;
    if (n == 0) return;
    if (s->packed)
        kern->sgemm_packed(n, d, f, c->a + r0 * f, f, 1, s->packed->down + g * s->packed->down_n,
                           c->y + r0 * d, d, 0);
    else
        kern->sgemm(n, d, f, c->a + r0 * f, f, 1, c->wo + (long)g * f * d, d, 1, c->y + r0 * d, d,
                    0);
}

void gmm_down_forward(const gmm_shape_t* s, const float* a, const float* wo, float* y) {
    gmm_ctx_t c = {.s = s, .a = a, .wo = wo, .y = y};
    kern_for_groups(s->n_groups, s->offs, down_forward_group, &c);
}

static void down_backward_group(int g, void* v) {
    const gmm_ctx_t* c = v;
    const gmm_shape_t* s = c->s;
    int d = s->d, f = s->f;
    long r0 = s->offs[g], n = s->offs[g + 1] - r0;
    const float* wog = c->wo + (long)g * f * d;
    // da[n,f] = dy[n,d] · Woᵀ: B(p=j_d, j=i_f) = Wo[i_f*d + j_d]
    const gmm_packed_t* pk = s->packed;
    if (n > 0 && pk && pk->da)
        kern->sgemm_packed(n, f, d, c->dy + r0 * d, d, 1, pk->da + g * pk->da_n, c->da + r0 * f, f,
                           0);
    else if (n > 0)
        kern->sgemm(n, f, d, c->dy + r0 * d, d, 1, wog, 1, d, c->da + r0 * f, f, 0);
    // dWo[f,d] = aᵀ[f,n] · dy[n,d]; k = n = 0 writes zeros
    kern->sgemm(f, d, n, c->a + r0 * f, 1, f, c->dy + r0 * d, d, 1, c->dwo + (long)g * f * d, d, 0);
}

void gmm_down_backward(const gmm_shape_t* s, const float* a, const float* wo, const float* dy,
                       float* da, float* dwo) {
    gmm_ctx_t c = {.s = s, .a = a, .wo = wo, .dy = dy, .da = da, .dwo = dwo};
    kern_for_groups(s->n_groups, s->offs, down_backward_group, &c);
}

static void up_backward_group(int g, void* v) {
    const gmm_ctx_t* c = v;
    const gmm_shape_t* s = c->s;
    int d = s->d, f = s->f;
    long r0 = s->offs[g], n = s->offs[g + 1] - r0;
    const float* xg = c->x + r0 * d;
    const float* w0g = c->w0 + (long)g * d * f;
    const float* w1g = c->w1 + (long)g * d * f;
    const float *dh0 = c->dh0 + r0 * f, *dh1 = c->dh1 + r0 * f;
    float* dx = c->dx + r0 * d;
    const gmm_packed_t* pk = s->packed;
    if (n > 0 && pk && pk->dx0) {
        kern->sgemm_packed(n, d, f, dh0, f, 1, pk->dx0 + g * pk->dx_n, dx, d, 0);
        kern->sgemm_packed(n, d, f, dh1, f, 1, pk->dx1 + g * pk->dx_n, dx, d, 1);
    } else if (n > 0) {
        // dx[n,d] = dh0·W0ᵀ + dh1·W1ᵀ: B(p=i_f, j=j_d) = W[j_d*f + i_f]
        kern->sgemm(n, d, f, dh0, f, 1, w0g, 1, f, dx, d, 0);
        kern->sgemm(n, d, f, dh1, f, 1, w1g, 1, f, dx, d, 1);
    }
    // dW[d,f] = xᵀ[d,n] · dh[n,f]
    kern->sgemm(d, f, n, xg, 1, d, dh0, f, 1, c->dw0 + (long)g * d * f, f, 0);
    kern->sgemm(d, f, n, xg, 1, d, dh1, f, 1, c->dw1 + (long)g * d * f, f, 0);
}

void gmm_up_backward(const gmm_shape_t* s, const float* x, const float* w0, const float* w1,
                     const float* h0, const float* h1, const float* da, float* dh0, float* dh1,
                     float* dx, float* dw0, float* dw1) {
    long N = s->offs[s->n_groups];
    kern->swiglu_bwd(N * s->f, h0, h1, da, dh0, dh1);
    gmm_ctx_t c = {.s = s,
                   .x = x,
                   .w0 = w0,
                   .w1 = w1,
                   .dh0 = dh0,
                   .dh1 = dh1,
                   .dx = dx,
                   .dw0 = dw0,
                   .dw1 = dw1};
    kern_for_groups(s->n_groups, s->offs, up_backward_group, &c);
}

double gmm_forward_flops(long N, int d, int f) { return 2.0 * N * d * f * 3; }
