// Mean-squared-error loss against the targets, L = mean over T·d of (h - y)^2.
#ifndef MOED_LOSS_H
#define MOED_LOSS_H

// Sum of squared errors over a block of tokens, in double, in element order.
double mse_block_sum(long n, const float* h, const float* y);
// dh = 2 (h - y) / n_global for n local elements.
void mse_backward(long n, const float* h, const float* y, double n_global, float* dh);

#endif
