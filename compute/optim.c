#include "compute/optim.h"

#include <math.h>

double lr_schedule(long step, long steps, long warmup, double lr, double lr_min) {
    if (step < warmup) return lr * (double)(step + 1) / (double)warmup;
    if (steps <= warmup) return lr;
    double progress = (double)(step - warmup) / (double)(steps - warmup);
    return lr_min + (lr - lr_min) * (1.0 + cos(M_PI * progress)) / 2.0;
}

adamw_coef_t adamw_coef(const adamw_opts_t* o, long t, int decay) {
    // Scalars in double as torch computes them on the host; the per-element arithmetic is
    // float, in the same order as torch's single-tensor AdamW.
    // 1 - beta is a host scalar in torch (double, then float): rounding beta first and
    // subtracting in float would be off by up to 1e-5 relative (beta2 = 0.999).
    double bc1 = 1.0 - pow(o->beta1, (double)t);
    double bc2 = 1.0 - pow(o->beta2, (double)t);
    return (adamw_coef_t){
        .b1 = (float)o->beta1,
        .b2 = (float)o->beta2,
        .omb1 = (float)(1.0 - o->beta1),
        .omb2 = (float)(1.0 - o->beta2),
        .step_size = (float)(o->lr / bc1),
        .bc2_sqrt = (float)sqrt(bc2),
        .eps = (float)o->eps,
        .wd = decay ? (float)(1.0 - o->lr * o->weight_decay) : 1.0f,
    };
}

static inline void adamw_elem(const adamw_coef_t* c, float* p, const float* g, float* m, float* v) {
    float pi = *p * c->wd;
    float mi = *m * c->b1 + *g * c->omb1;
    float vi = *v * c->b2 + *g * *g * c->omb2;
    float denom = sqrtf(vi) / c->bc2_sqrt + c->eps;
    *p = pi - c->step_size * (mi / denom);
    *m = mi;
    *v = vi;
}

void adamw_apply(const adamw_coef_t* c, long n, float* p, const float* g, float* m, float* v) {
    for (long i = 0; i < n; i++) adamw_elem(c, p + i, g + i, m + i, v + i);
}

void adamw_update(const adamw_opts_t* o, long t, long n, int decay, float* p, const float* g,
                  float* m, float* v) {
    adamw_coef_t c = adamw_coef(o, t, decay);
    // Element-wise: threads split the range without changing any result.
#pragma omp parallel for schedule(static) if (n >= 1 << 16)
    for (long i = 0; i < n; i++) adamw_elem(&c, p + i, g + i, m + i, v + i);
}

double sumsq(long n, const float* g) {
    // Four interleaved accumulators: a fixed order (so the same bits at any P or thread
    // count) that does not serialise on one add's latency.
    double s[4] = {0, 0, 0, 0};
    long i = 0;
    for (; i + 4 <= n; i += 4)
        for (int j = 0; j < 4; j++) s[j] += (double)g[i + j] * g[i + j];
    for (; i < n; i++) s[0] += (double)g[i] * g[i];
    return (s[0] + s[1]) + (s[2] + s[3]);
}

float clip_factor(double total_norm, double max_norm) {
    if (max_norm <= 0) return 1.0f;
    double c = max_norm / (total_norm + 1e-6);
    return c < 1.0 ? (float)c : 1.0f;
}

void scale_inplace(long n, float* g, float c) {
    if (c == 1.0f) return;
    for (long i = 0; i < n; i++) g[i] *= c;
}
