// Shared experts (DeepSeek-V2/V3, DESIGN.md §2 step 6): dense SwiGLU FFNs of the routed
// experts' shape that every token passes through with weight 1, replicated on every rank.
// Their weight gradients are sums over tokens of a replicated tensor, so like the router's
// they are formed per reduction leaf (tr->tb tokens) and summed by the fixed tree in
// train_grad: the result is the same at every P.
#include "compute/gmm.h"
#include "compute/kernels/kernels.h"
#include "daemon/train.h"

void shared_forward(train_t* tr, int l, const float* xn, float* hout) {
    const model_t* m = &tr->model;
    if (m->S == 0) return;
    layer_acts_t* A = &tr->acts[l];
    layer_params_t P = model_layer(m, m->w, l);
    int Tl = tr->Tl, d = m->d, f = m->f;
    int offs[2] = {0, Tl}; // one group: every local token
    gmm_shape_t gs = {1, offs, d, f, NULL};
    for (int s = 0; s < m->S; s++) {
        long act = (long)s * Tl * f, wt = (long)s * d * f;
        gmm_up_forward(&gs, xn, P.sw0 + wt, P.sw1 + wt, A->sh0 + act, A->sh1 + act, A->sa + act);
        gmm_down_forward(&gs, A->sa + act, P.swo + wt, tr->sy);
        for (long i = 0; i < (long)Tl * d; i++) hout[i] += tr->sy[i];
    }
}

void shared_backward(train_t* tr, int l, const float* xn, const float* dout, float* dxn) {
    const model_t* m = &tr->model;
    if (m->S == 0) return;
    const layer_acts_t* A = &tr->acts[l];
    layer_params_t P = model_layer(m, m->w, l);
    int Tl = tr->Tl, d = m->d, f = m->f, tb = tr->tb;
    for (int s = 0; s < m->S; s++) {
        long act = (long)s * Tl * f, wt = (long)s * d * f;
        const float *w0 = P.sw0 + wt, *w1 = P.sw1 + wt, *wo = P.swo + wt;
        const float* sa = A->sa + act;
        // the same offsets into each leaf's partial gradients as into the weights
        long o0 = w0 - m->w, o1 = w1 - m->w, oo = wo - m->w;
        // da[Tl,f] = dout·Woᵀ
        kern->sgemm(Tl, f, d, dout, d, 1, wo, 1, d, tr->sda, f, 0);
        kern->swiglu_bwd((long)Tl * f, A->sh0 + act, A->sh1 + act, tr->sda, tr->sdh0, tr->sdh1);
        // dxn += dh0·W0ᵀ + dh1·W1ᵀ
        kern->sgemm(Tl, d, f, tr->sdh0, f, 1, w0, 1, f, dxn, d, 1);
        kern->sgemm(Tl, d, f, tr->sdh1, f, 1, w1, 1, f, dxn, d, 1);
        for (int j = 0; j < tr->nleaf; j++) {
            long r0 = (long)j * tb;
            float* leaf = tr->grad_leaves + (long)j * m->n_repl;
            // dWo[f,d] = aᵀ·dout, dW0[d,f] = xnᵀ·dh0, dW1[d,f] = xnᵀ·dh1 over the leaf
            kern->sgemm(f, d, tb, sa + r0 * f, 1, f, dout + r0 * d, d, 1, leaf + oo, d, 0);
            kern->sgemm(d, f, tb, xn + r0 * d, 1, d, tr->sdh0 + r0 * f, f, 1, leaf + o0, f, 0);
            kern->sgemm(d, f, tb, xn + r0 * d, 1, d, tr->sdh1 + r0 * f, f, 1, leaf + o1, f, 0);
        }
    }
}
