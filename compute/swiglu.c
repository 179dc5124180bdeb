#include "compute/swiglu.h"

#include <math.h>

void swiglu_forward(long n, const float* h0, const float* h1, float* a) {
    for (long i = 0; i < n; i++) {
        float sg = 1.0f / (1.0f + expf(-h0[i]));
        a[i] = h0[i] * sg * h1[i];
    }
}

void swiglu_backward(long n, const float* h0, const float* h1, const float* da, float* dh0,
                     float* dh1) {
    for (long i = 0; i < n; i++) {
        float sg = 1.0f / (1.0f + expf(-h0[i]));
        float silu = h0[i] * sg;
        float g = da[i];
        // d silu/dx = sg * (1 + x * (1 - sg))
        dh0[i] = g * h1[i] * sg * (1.0f + h0[i] * (1.0f - sg));
        dh1[i] = g * silu;
    }
}
