#include "compute/rmsnorm.h"

#include <math.h>

void rmsnorm_forward(int T, int d, const float* x, const float* scale, float* y, float* rinv) {
    for (int t = 0; t < T; t++) {
        const float* xt = x + (long)t * d;
        double ss = 0;
        for (int j = 0; j < d; j++) ss += (double)xt[j] * xt[j];
        float r = (float)(1.0 / sqrt(ss / d + RMSNORM_EPS));
        rinv[t] = r;
        for (int j = 0; j < d; j++) y[(long)t * d + j] = xt[j] * r * scale[j];
    }
}

void rmsnorm_backward(int T, int d, const float* x, const float* scale, const float* rinv,
                      const float* dy, float* dx) {
    for (int t = 0; t < T; t++) {
        const float* xt = x + (long)t * d;
        const float* g = dy + (long)t * d;
        double r = rinv[t], dot = 0;
        for (int j = 0; j < d; j++) dot += (double)g[j] * scale[j] * xt[j];
        // y_j = x_j r s_j, r = (mean x^2 + eps)^(-1/2):  dx_j = r s_j g_j - x_j r^3 dot / d
        double c = r * r * r * dot / d;
        for (int j = 0; j < d; j++) dx[(long)t * d + j] = (float)(r * scale[j] * g[j] - xt[j] * c);
    }
}

void rmsnorm_dscale(int T, int d, const float* x, const float* rinv, const float* dy,
                    float* dscale) {
    for (int j = 0; j < d; j++) {
        double s = 0;
        for (int t = 0; t < T; t++) s += (double)dy[(long)t * d + j] * x[(long)t * d + j] * rinv[t];
        dscale[j] = (float)s;
    }
}
