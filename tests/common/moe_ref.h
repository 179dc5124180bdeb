// An independent, naive double-precision reference of the whole MoE stack (DESIGN.md §2):
// forward, loss (MSE + per-layer aux and z losses) and a hand-written backward to every
// parameter and to the input. All experts are global (no MPI, no permutation, no
// capacity): each token simply visits its k experts one after the other. Written for
// clarity and checked by finite differences (tests/unit/test_fd.c), so the fp32 training
// path can be checked against it (tests/unit/test_fp32_vs_ref.c).
#ifndef MOED_MOE_REF_H
#define MOED_MOE_REF_H

#define MREF_EMAX 1024 // largest E the reference accepts
#define MREF_DMAX 4096 // largest d the reference accepts

typedef struct {
    int T, d, f, E, k, L;
    int residual;          // 1: h_{l+1} = h_l + MoE_l(RMSNorm_l(h_l)); 0: h_{l+1} = MoE_l(h_l)
    int sigmoid;           // router scores: 0 softmax, 1 sigmoid
    int norm_topk;         // divide the k gates by their sum
    double routed_scaling; // gate multiplier (after norm_topk)
    int n_groups;          // expert groups (<= 1: off)
    int topk_groups;       // groups kept eligible per token
    double aux_coef;       // alpha of the switch aux loss
    double z_coef;         // beta of the router z-loss
} mref_cfg_t;

// The tensors of one layer (weights, or their gradients). Row-major, same layout as the
// checkpoint and as model_t at P = 1.
enum { MREF_WR = 0, MREF_SCALE = 1, MREF_W0 = 2, MREF_W1 = 3, MREF_WO = 4, MREF_NKIND = 5 };
typedef struct {
    double* wr;    // [d, E] router weight
    double* scale; // [d] RMSNorm scale (allocated but unused when residual = 0)
    double* w0;    // [E, d, f]
    double* w1;    // [E, d, f]
    double* wo;    // [E, f, d]
} mref_params_t;

typedef struct {
    mref_cfg_t c;
    // inputs: set these before mref_forward
    mref_params_t* w; // [L] weights
    double* bias;     // [L, E] selection bias (enters selection only; not trained)
    double* x;        // [T, d] input h_0
    double* y;        // [T, d] target
    // results of mref_forward
    double loss;   // mse + sum_l (aux[l] + z[l])
    double mse;    // mean over T*d of (h_L - y)^2
    double* aux;   // [L] alpha * E * sum_e f_e * P_e
    double* z;     // [L] beta * mean_t lse_t^2
    double margin; // smallest routing decision gap seen (see mref_route)
    double* h;     // [L+1, T, d] h[0] = x, h[L] = output
    // per-layer activations kept for the backward
    double* xn;     // [L, T, d] layer input after RMSNorm (= h_l without residual)
    double* rinv;   // [L, T] 1 / rms(h_l)
    double* logits; // [L, T, E]
    double* s;      // [L, T, E] router scores (softmax or sigmoid)
    double* lse;    // [L, T] logsumexp(logits)
    int* sel;       // [L, T, k] selected experts, best first
    double* gate;   // [L, T, k] final gate weights
    double* h0;     // [L, T, k, f] x·W0_e of each slot
    double* h1;     // [L, T, k, f] x·W1_e
    double* act;    // [L, T, k, f] silu(h0) * h1
    double* yexp;   // [L, T, k, d] FFN_e(x) of each slot (before the gate)
    long* load;     // [L, E] slots routed to each expert
    // results of mref_backward
    mref_params_t* g; // [L] dLoss/d(weights)
    double* dx;       // [T, d] dLoss/dx
    // scratch for the backward
    double *dh, *dnext; // [T, d]
} mref_t;

// Allocates everything (zeroed; scales start at 1). Returns 0, or -1 on bad shapes / OOM.
int mref_alloc(mref_t* r, const mref_cfg_t* c);
void mref_free(mref_t* r);
// Elements of one tensor kind of one layer, and the tensor itself within a parameter set.
long mref_numel(const mref_cfg_t* c, int kind);
double* mref_tensor(const mref_params_t* p, int kind);
const char* mref_kind_name(int kind);

// Routing of one token: v[E] = selection scores (s + bias). Writes the k selected experts,
// best first (ties to the lower index; with n_groups > 1 only the topk_groups best groups,
// by the sum of their two best scores, ties to the lower group, are eligible). Returns the
// decision margin: the smallest gap that a perturbation would have to close to change the
// selected set (k-th vs (k+1)-th eligible score; last kept vs first dropped group score).
double mref_route(const mref_cfg_t* c, const double* v, int* sel);

// Forward through the stack and the loss; keeps what the backward needs. Returns r->loss.
double mref_forward(mref_t* r);
// Backward of the last forward: fills r->g and r->dx.
void mref_backward(mref_t* r);

#endif
