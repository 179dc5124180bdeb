// The training state of one rank and the training step: forward through the stack, loss,
// backward, the deterministic reductions of replicated gradients and statistics, clipping,
// AdamW and the bias update (DESIGN.md §2, §3).
#ifndef MOED_TRAIN_H
#define MOED_TRAIN_H

#include <stdint.h>

#include "comm/comm.h"
#include "compute/gmm.h"
#include "compute/router.h"
#include "config/config.h"
#include "daemon/arena.h"
#include "daemon/dispatch.h"
#include "daemon/model.h"

// Activations of one layer kept from forward for backward.
typedef struct {
    float* xn;     // [Tl, d] normed input (the layer input itself without residual)
    float* rinv;   // [Tl] 1/rms of the input
    float* logits; // [Tl, E]
    float* probs;  // [Tl, E]
    float* lse;    // [Tl]
    int* sel;      // [Tl, k] selected global experts
    float* gates;  // [Tl, k]
    int* kept;     // [Tl, k] sel with the slots dropped by capacity set to -1 (capacity only)
    int* slot_pos; // [Tl, k] row of each slot in the send order (-1: dropped)
    comm_route_t route;
    float* xe;       // [Nmax, d] expert-side inputs, grouped by local expert
    float *h0, *h1;  // [Nmax, f] pre-activations
    float* a;        // [Nmax, f] SwiGLU output
    float* yslot;    // [Tl*k, d] expert outputs back in slot order
    int64_t* load;   // [E] slots routed to each expert this step, all ranks (before dropping)
    int64_t dropped; // slots dropped by capacity this step, all ranks
    // shared experts (S = model.n_shared_experts; NULL when 0)
    float *sh0, *sh1; // [S, Tl, f] pre-activations
    float* sa;        // [S, Tl, f] SwiGLU outputs
} layer_acts_t;

typedef struct {
    double loss, mse, aux; // aux = sum over layers of aux_l + z_l
    double lr, grad_norm;
    double t_compute, t_comm; // seconds in this step (t_comm: exposed, the rank waited)
    double t_comm_overlap;    // seconds exchanges were in flight while the rank computed
    double flops;             // floating-point operations of the step, all ranks
    double imbalance;         // max/mean expert load, worst layer
    int64_t dropped;          // slots dropped by capacity, all layers
} step_stats_t;

typedef struct {
    cfg_t cfg;
    int rank, nranks;
    int T, Tl, t0; // global tokens, local tokens, first global token of this rank
    int tb, nleaf; // tokens per reduction leaf, leaves on this rank
    long Nmax;     // expert-side rows reserved per layer (worst case: all T*k slots, or
                   // El*C with capacity)
    long cap;      // expert capacity C in slots (0: dropless)
    router_opts_t ropt;
    model_t model;
    comm_ctx_t comm;
    layer_acts_t* acts; // [L]
    float* h;           // [L+1, Tl, d] layer inputs; h[L] is the output
    // backward and exchange scratch, shared by all layers
    float* xs;                // [Tl*k, d] slot rows (send side)
    float* ye;                // [Nmax, d] expert outputs / expert-side gradients
    float* de;                // [Nmax, d]
    float* da;                // [Nmax, f]
    float *dh0, *dh1;         // [Nmax, f]
    float* dslot;             // [Tl*k, d]
    float* dgates;            // [Tl, k]
    float* dlogits;           // [Tl, E]
    float* dxn;               // [Tl, d]
    float* dnorm;             // [Tl, d]
    float* dh;                // [2, Tl, d] ping-pong gradient of the layer outputs
    float* dx;                // -> the half of dh holding dL/dx after train_grad
    float* grad_leaves;       // [nleaf, n_repl] per-leaf partial gradients of replicated tensors
    double* stat_leaves;      // [nleaf, nstat] per-leaf loss statistics
    int nstat;                // 1 + L*(E+1): mse, then per layer sum_t q_e and sum_t lse^2
    double* stat_sum;         // [nstat]
    double* expert_sq_local;  // [3L, El] squared gradient norm of each local expert tensor
    double* expert_sq;        // [P, 3L, El] the same, gathered from all ranks
    int* counts_scratch;      // [E]
    int* cap_local;           // [k, E] this rank's slots per (choice, expert), capacity only
    int* cap_counts;          // [P, k, E] the same from every rank
    float *sda, *sdh0, *sdh1; // [Tl, f] shared-expert backward scratch
    float* sy;                // [Tl, d] one shared expert's output
    long* idle_steps;         // [L, E] steps in a row each expert has received no tokens
    long step;                // optimizer steps completed
    double t_comm_acc;        // comm seconds accumulated in the current step
    dispatch_t disp;          // state of comm.dispatcher's strategy (daemon/dispatch.h)
    gmm_packed_t* packed;     // [L] pre-packed expert weights (compute.prepack), or NULL
} train_t;

// Sizes and carves every buffer from `a` (call twice: counting pass, then for real).
void train_layout(train_t* tr, const cfg_t* c, int rank, int nranks, arena_t* a);
// After the arena is reserved and laid out: comm set-up and weight initialisation.
int train_setup(train_t* tr, MPI_Comm comm);

// Shared experts (daemon/shared.c): hout += sum_s FFN_s(xn) over the local tokens, and the
// backward: dxn += the shared experts' input gradient, their weight gradients into the
// per-leaf partials (summed over tokens by the deterministic tree like every replicated
// gradient).
void shared_forward(train_t* tr, int l, const float* xn, float* hout);
void shared_backward(train_t* tr, int l, const float* xn, const float* dout, float* dxn);

// The layer pipeline (daemon/layer.c).
void layer_forward(train_t* tr, int l, const float* hin, float* hout);
// dout: gradient of this layer's output; writes the gradient of its input into din and
// this layer's gradients into the model's gradient buffer and the leaf partials.
void layer_backward(train_t* tr, int l, const float* hin, const float* dout, float* din);

// Forward, loss and backward on this rank's batch x, y ([Tl, d] each): leaves the reduced,
// unclipped gradients in model.g, dL/dx in tr->dx, and the loss in st. Returns MOED_OK or
// MOED_ERR_NUMERIC when the loss or the gradient norm is not finite.
int train_grad(train_t* tr, const float* x, const float* y, step_stats_t* st);
// Clipping, AdamW with learning rate lr, and the router-bias update; counts one step.
void train_apply(train_t* tr, double lr, step_stats_t* st);
// train_grad then, when it succeeded, train_apply (weights untouched on failure).
int train_step(train_t* tr, const float* x, const float* y, double lr, step_stats_t* st);
// Repacks the pre-packed expert weights (compute.prepack) from model.w: after anything but
// the optimizer writes the weights (initialisation and checkpoint load do it themselves).
void train_repack(train_t* tr);
// Releases the communication state (collective).
void train_free(train_t* tr);
// Forward only: the loss of the batch (for tests and the golden harness).
void train_forward(train_t* tr, const float* x);

#endif
