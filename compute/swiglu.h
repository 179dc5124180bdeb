// SwiGLU activation of the expert FFN: a = silu(h0) * h1, silu(x) = x * sigmoid(x).
#ifndef MOED_SWIGLU_H
#define MOED_SWIGLU_H

void swiglu_forward(long n, const float* h0, const float* h1, float* a); // all [n]
// da -> dh0, dh1 (dh0/dh1 may alias da only if both do not).
void swiglu_backward(long n, const float* h0, const float* h1, const float* da, float* dh0,
                     float* dh1);

#endif
