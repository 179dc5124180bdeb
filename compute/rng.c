#include "compute/rng.h"

#include <math.h>

static inline uint32_t mulhilo(uint32_t a, uint32_t b, uint32_t* hi) {
    uint64_t p = (uint64_t)a * b;
    *hi = (uint32_t)(p >> 32);
    return (uint32_t)p;
}

void rng_philox(uint64_t seed, uint32_t stream, uint32_t index, uint64_t element, uint32_t out[4]) {
    uint32_t c0 = (uint32_t)element, c1 = (uint32_t)(element >> 32), c2 = index, c3 = stream;
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int round = 0; round < 10; round++) {
        uint32_t hi0, hi1;
        uint32_t lo0 = mulhilo(0xD2511F53u, c0, &hi0);
        uint32_t lo1 = mulhilo(0xCD9E8D57u, c2, &hi1);
        uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
        c0 = n0, c1 = n1, c2 = n2, c3 = n3;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

static inline double to_open01(uint32_t u) { return ((double)u + 0.5) * (1.0 / 4294967296.0); }

double rng_uniform(uint64_t seed, uint32_t stream, uint32_t index, uint64_t element) {
    uint32_t r[4];
    rng_philox(seed, stream, index, element, r);
    return to_open01(r[0]);
}

float rng_normal(uint64_t seed, uint32_t stream, uint32_t index, uint64_t element) {
    uint32_t r[4];
    rng_philox(seed, stream, index, element, r);
    double u1 = to_open01(r[0]), u2 = to_open01(r[1]);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}
