#include "compute/loss.h"

double mse_block_sum(long n, const float* h, const float* y) {
    double s = 0;
    for (long i = 0; i < n; i++) {
        double e = (double)h[i] - y[i];
        s += e * e;
    }
    return s;
}

void mse_backward(long n, const float* h, const float* y, double n_global, float* dh) {
    double c = 2.0 / n_global;
    for (long i = 0; i < n; i++) dh[i] = (float)(c * ((double)h[i] - y[i]));
}
