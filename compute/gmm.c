#include "compute/gmm.h"

#include "compute/kernels/kernels.h"

void gmm_up_forward(const gmm_shape_t* s, const float* x, const float* w0, const float* w1,
                    float* h0, float* h1, float* a) {
    int d = s->d, f = s->f;
    for (int g = 0; g < s->n_groups; g++) {
        long r0 = s->offs[g], n = s->offs[g + 1] - r0;
        if (n == 0) continue;
        long wo = (long)g * d * f;
        const float* bp = s->packed ? s->packed->up + g * s->packed->up_n : NULL;
        kern->gemm_swiglu(n, f, d, x + r0 * d, d, 1, w0 + wo, w1 + wo, f, 1, bp, h0 + r0 * f,
                          h1 + r0 * f, a + r0 * f, f);
    }
}

void gmm_down_forward(const gmm_shape_t* s, const float* a, const float* wo, float* y) {
    int d = s->d, f = s->f;
    for (int g = 0; g < s->n_groups; g++) {
        long r0 = s->offs[g], n = s->offs[g + 1] - r0;
        if (n == 0) continue;
        if (s->packed)
            kern->sgemm_packed(n, d, f, a + r0 * f, f, 1, s->packed->down + g * s->packed->down_n,
                               y + r0 * d, d, 0);
        else
            kern->sgemm(n, d, f, a + r0 * f, f, 1, wo + (long)g * f * d, d, 1, y + r0 * d, d, 0);
    }
}

void gmm_down_backward(const gmm_shape_t* s, const float* a, const float* wo, const float* dy,
                       float* da, float* dwo) {
    int d = s->d, f = s->f;
    for (int g = 0; g < s->n_groups; g++) {
        long r0 = s->offs[g], n = s->offs[g + 1] - r0;
        const float* wog = wo + (long)g * f * d;
        // da[n,f] = dy[n,d] · Woᵀ: B(p=j_d, j=i_f) = Wo[i_f*d + j_d]
        const gmm_packed_t* pk = s->packed;
        if (n > 0 && pk && pk->da)
            kern->sgemm_packed(n, f, d, dy + r0 * d, d, 1, pk->da + g * pk->da_n, da + r0 * f, f,
                               0);
        else if (n > 0)
            kern->sgemm(n, f, d, dy + r0 * d, d, 1, wog, 1, d, da + r0 * f, f, 0);
        // dWo[f,d] = aᵀ[f,n] · dy[n,d]; k = n = 0 writes zeros
        kern->sgemm(f, d, n, a + r0 * f, 1, f, dy + r0 * d, d, 1, dwo + (long)g * f * d, d, 0);
    }
}

void gmm_up_backward(const gmm_shape_t* s, const float* x, const float* w0, const float* w1,
                     const float* h0, const float* h1, const float* da, float* dh0, float* dh1,
                     float* dx, float* dw0, float* dw1) {
    int d = s->d, f = s->f;
    long N = s->offs[s->n_groups];
    kern->swiglu_bwd(N * f, h0, h1, da, dh0, dh1);
    for (int g = 0; g < s->n_groups; g++) {
        long r0 = s->offs[g], n = s->offs[g + 1] - r0;
        const float* xg = x + r0 * d;
        const float* w0g = w0 + (long)g * d * f;
        const float* w1g = w1 + (long)g * d * f;
        const gmm_packed_t* pk = s->packed;
        if (n > 0 && pk && pk->dx0) {
            kern->sgemm_packed(n, d, f, dh0 + r0 * f, f, 1, pk->dx0 + g * pk->dx_n, dx + r0 * d, d,
                               0);
            kern->sgemm_packed(n, d, f, dh1 + r0 * f, f, 1, pk->dx1 + g * pk->dx_n, dx + r0 * d, d,
                               1);
        } else if (n > 0) {
            // dx[n,d] = dh0·W0ᵀ + dh1·W1ᵀ: B(p=i_f, j=j_d) = W[j_d*f + i_f]
            kern->sgemm(n, d, f, dh0 + r0 * f, f, 1, w0g, 1, f, dx + r0 * d, d, 0);
            kern->sgemm(n, d, f, dh1 + r0 * f, f, 1, w1g, 1, f, dx + r0 * d, d, 1);
        }
        // dW[d,f] = xᵀ[d,n] · dh[n,f]
        kern->sgemm(d, f, n, xg, 1, d, dh0 + r0 * f, f, 1, dw0 + (long)g * d * f, f, 0);
        kern->sgemm(d, f, n, xg, 1, d, dh1 + r0 * f, f, 1, dw1 + (long)g * d * f, f, 0);
    }
}

double gmm_forward_flops(long N, int d, int f) { return 2.0 * N * d * f * 3; }
