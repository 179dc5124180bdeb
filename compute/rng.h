// Counter-based random numbers (Philox4x32-10, Salmon et al. 2011): a value is a pure
// function of (seed, stream, index, element), so initial weights and synthetic data never
// depend on the rank count or on the order in which ranks draw them.
//   stream:  which tensor (RNG_STREAM_* below, plus the layer number where it matters)
//   index:   global expert or token index
//   element: position inside that expert's matrix or that token's vector
#ifndef MOED_RNG_H
#define MOED_RNG_H

#include <stdint.h>

// A stream is (what, layer): the tensor kind in the high bits, the layer in the low 20.
enum {
    RNG_ROUTER = 1,
    RNG_W0 = 2,
    RNG_W1 = 3,
    RNG_WO = 4,
    RNG_DATA_X = 5,
    RNG_SHARED = 6,
};
#define RNG_STREAM(kind, layer) (((uint32_t)(kind) << 20) | (uint32_t)(layer))

// Philox4x32-10 of counter (element lo/hi, index, stream) under key (seed lo/hi).
void rng_philox(uint64_t seed, uint32_t stream, uint32_t index, uint64_t element, uint32_t out[4]);
// Uniform in (0, 1), never 0 or 1.
double rng_uniform(uint64_t seed, uint32_t stream, uint32_t index, uint64_t element);
// Standard normal (Box-Muller on the first two Philox words).
float rng_normal(uint64_t seed, uint32_t stream, uint32_t index, uint64_t element);

#endif
