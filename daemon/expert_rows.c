// Expert compute on runs of expert-side rows, for the dispatchers that process rows as they
// arrive (chunks, ring steps) instead of whole groups at once. Every product goes through
// dispatch_sgemm, which drives MPI progress between tiles. Row-wise products do not depend
// on which rows share a call, so a run gives the bits gmm.c gives for the whole group; the
// weight gradients sum over rows and run once per whole group (expert_weights_backward).
// With compute.prepack the weight products read the pre-packed copies, so a chunk's few rows
// do not repack the expert's weights (the same bits).
#include "compute/kernels/kernels.h"
#include "daemon/layer_alt.h"

void expert_rows_forward(train_t* tr, int l, int e, long r0, long n, float* y) {
    const model_t* m = &tr->model;
    layer_acts_t* A = &tr->acts[l];
    layer_params_t W = model_layer(m, m->w, l);
    dispatch_t* ds = &tr->disp;
    int d = m->d, f = m->f;
    const float* x = A->xe + r0 * d;
    float *h0 = A->h0 + r0 * f, *h1 = A->h1 + r0 * f, *a = A->a + r0 * f;
    const gmm_packed_t* pk = tr->packed ? &tr->packed[l] : NULL;
    if (pk) { // compute.prepack: the fused up-projection and the down-projection on the copies
        dispatch_gemm_swiglu_packed(ds, n, f, d, x, d, pk->up + e * pk->up_n, h0, h1, a, f);
        dispatch_sgemm_packed(ds, n, d, f, a, f, 1, pk->down + e * pk->down_n, y + r0 * d, d, 0);
        return;
    }
    dispatch_sgemm(ds, n, f, d, x, d, 1, W.w0 + (long)e * d * f, f, 1, h0, f, 0);
    dispatch_sgemm(ds, n, f, d, x, d, 1, W.w1 + (long)e * d * f, f, 1, h1, f, 0);
    kern->swiglu_fwd(n * f, h0, h1, a);
    dispatch_sgemm(ds, n, d, f, a, f, 1, W.wo + (long)e * f * d, d, 1, y + r0 * d, d, 0);
}

void expert_rows_backward_da(train_t* tr, int l, int e, long r0, long n) {
    const model_t* m = &tr->model;
    layer_params_t W = model_layer(m, m->w, l);
    int d = m->d, f = m->f;
    const gmm_packed_t* pk = tr->packed ? &tr->packed[l] : NULL;
    if (pk && pk->da) {
        dispatch_sgemm_packed(&tr->disp, n, f, d, tr->ye + r0 * d, d, 1, pk->da + e * pk->da_n,
                              tr->da + r0 * f, f, 0);
        return;
    }
    // da[n,f] = dy[n,d] · Woᵀ: B(p=j_d, j=i_f) = Wo[i_f*d + j_d]
    dispatch_sgemm(&tr->disp, n, f, d, tr->ye + r0 * d, d, 1, W.wo + (long)e * f * d, 1, d,
                   tr->da + r0 * f, f, 0);
}

void expert_rows_backward_dx(train_t* tr, int l, int e, long r0, long n) {
    const model_t* m = &tr->model;
    layer_acts_t* A = &tr->acts[l];
    layer_params_t W = model_layer(m, m->w, l);
    dispatch_t* ds = &tr->disp;
    int d = m->d, f = m->f;
    long ho = r0 * f;
    kern->swiglu_bwd(n * f, A->h0 + ho, A->h1 + ho, tr->da + ho, tr->dh0 + ho, tr->dh1 + ho);
    const gmm_packed_t* pk = tr->packed ? &tr->packed[l] : NULL;
    if (pk && pk->dx0) {
        dispatch_sgemm_packed(ds, n, d, f, tr->dh0 + ho, f, 1, pk->dx0 + e * pk->dx_n,
                              tr->de + r0 * d, d, 0);
        dispatch_sgemm_packed(ds, n, d, f, tr->dh1 + ho, f, 1, pk->dx1 + e * pk->dx_n,
                              tr->de + r0 * d, d, 1);
        return;
    }
    // dx[n,d] = dh0·W0ᵀ + dh1·W1ᵀ, the second product added as gmm_up_backward adds it
    dispatch_sgemm(ds, n, d, f, tr->dh0 + ho, f, 1, W.w0 + (long)e * d * f, 1, f, tr->de + r0 * d,
                   d, 0);
    dispatch_sgemm(ds, n, d, f, tr->dh1 + ho, f, 1, W.w1 + (long)e * d * f, 1, f, tr->de + r0 * d,
                   d, 1);
}

void expert_rows_backward(train_t* tr, int l, int e, long r0, long n) {
    expert_rows_backward_da(tr, l, e, r0, n);
    expert_rows_backward_dx(tr, l, e, r0, n);
}

void expert_weights_backward(train_t* tr, int l) {
    const model_t* m = &tr->model;
    layer_acts_t* A = &tr->acts[l];
    layer_params_t G = model_layer(m, m->g, l);
    dispatch_t* ds = &tr->disp;
    int d = m->d, f = m->f;
    const int* off = A->route.expert_offsets;
    for (int e = 0; e < m->El; e++) {
        long r0 = off[e], n = off[e + 1] - r0; // n = 0 (k = 0) writes zeros, as in gmm.c
        const float* x = A->xe + r0 * d;
        // dWo = aᵀ·dy, dW0 = xᵀ·dh0, dW1 = xᵀ·dh1
        dispatch_sgemm(ds, f, d, n, A->a + r0 * f, 1, f, tr->ye + r0 * d, d, 1,
                       G.wo + (long)e * f * d, d, 0);
        dispatch_sgemm(ds, d, f, n, x, 1, d, tr->dh0 + r0 * f, f, 1, G.w0 + (long)e * d * f, f, 0);
        dispatch_sgemm(ds, d, f, n, x, 1, d, tr->dh1 + r0 * f, f, 1, G.w1 + (long)e * d * f, f, 0);
    }
}
