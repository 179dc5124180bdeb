// AdamW exactly as torch.optim.AdamW (decoupled weight decay, bias correction), global-norm
// clipping as torch.nn.utils.clip_grad_norm_, and the warm-up + cosine schedule (DESIGN §2).
#ifndef MOED_OPTIM_H
#define MOED_OPTIM_H

typedef struct {
    double lr, beta1, beta2, eps, weight_decay;
} adamw_opts_t;

// Learning rate of the step numbered `step` (0-based).
double lr_schedule(long step, long steps, long warmup, double lr, double lr_min);

// One AdamW update of n parameters for optimizer step number t (1-based, as torch counts).
// decay = 0 skips weight decay for this tensor (norm scales).
void adamw_update(const adamw_opts_t* o, long t, long n, int decay, float* p, const float* g,
                  float* m, float* v);

// The per-step constants of adamw_update, and the update of n elements with them on the
// calling thread (adamw_update = these two, split over threads). The optimizer's fused
// repack (gmm_adamw_pack) updates a weight matrix a few rows at a time with them.
typedef struct {
    float b1, b2, omb1, omb2, step_size, bc2_sqrt, eps, wd;
} adamw_coef_t;
adamw_coef_t adamw_coef(const adamw_opts_t* o, long t, int decay);
void adamw_apply(const adamw_coef_t* c, long n, float* p, const float* g, float* m, float* v);

// Sum of squares in double, in element order (one term of the global gradient norm).
double sumsq(long n, const float* g);
// torch's factor: min(1, max_norm / (total_norm + 1e-6)); 1 when max_norm = 0 (off).
float clip_factor(double total_norm, double max_norm);
void scale_inplace(long n, float* g, float c);

#endif
