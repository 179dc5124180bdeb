// RMSNorm: y = x / sqrt(mean_j x_j^2 + 1e-6) * scale (DESIGN.md §2).
#ifndef MOED_RMSNORM_H
#define MOED_RMSNORM_H

#define RMSNORM_EPS 1e-6

void rmsnorm_forward(int T, int d, const float* x, // [T, d]
                     const float* scale,           // [d]
                     float* y,                     // [T, d]
                     float* rinv);                 // [T] 1/rms, kept for backward
// dx[t] = d y / d x applied to dy (overwrites dx). dscale is NOT accumulated here: the
// scale gradient is a sum over tokens and goes through rmsnorm_dscale per token block.
void rmsnorm_backward(int T, int d, const float* x, const float* scale, const float* rinv,
                      const float* dy, // [T, d]
                      float* dx);      // [T, d]
// dscale[j] = sum over the T tokens of dy[t,j] * x[t,j] * rinv[t], summed in double in
// token order (one token block of the deterministic reduction).
void rmsnorm_dscale(int T, int d, const float* x, const float* rinv, const float* dy,
                    float* dscale); // [d]

#endif
