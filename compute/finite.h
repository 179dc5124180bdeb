// Finding NaN and Inf in float arrays: checkpoints, training data and inference inputs are
// checked with it before they reach the model.
#ifndef MOED_FINITE_H
#define MOED_FINITE_H

// The index of the first NaN or Inf in x[n], or n when every value is finite.
long finite_scan(const float* x, long n);

#endif
