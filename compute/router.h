// Router: logits -> selection scores -> top-k experts and gate weights (DESIGN.md §2 steps
// 1-4), and its backward including the switch aux loss and the router z-loss.
// All functions work on this rank's T local tokens; nothing here talks to other ranks.
#ifndef MOED_ROUTER_H
#define MOED_ROUTER_H

typedef struct {
    int d, E, k;               // model dim, experts, top-k
    int sigmoid;               // 0: softmax scores, 1: sigmoid scores
    int norm_topk;             // renormalise the k gate weights to sum to 1
    float routed_scaling;      // gate multiplier after renormalisation
    int n_groups, topk_groups; // group-limited routing (n_groups = 1: off)
} router_opts_t;

// probs[t,e] = score of expert e for token t (softmax or sigmoid of logits).
// sel[t,i] = i-th selected expert (by s + bias, descending; ties to the lower index;
// only experts of the best topk_groups groups are eligible). gates[t,i] = its gate weight.
// lse[t] = logsumexp(logits[t]) (for the z-loss).
void router_forward(const router_opts_t* o, int T,
                    const float* logits, // [T, E]
                    const float* bias,   // [E] selection bias (may be NULL)
                    float* probs,        // [T, E]
                    float* lse,          // [T]
                    int* sel,            // [T, k]
                    float* gates);       // [T, k]

// Per-token statistics summed over a block of tokens, for the aux and z losses:
// psum[e] += sum_t probs[t,e] / sum_e' probs[t,e'], *zsum += sum_t lse[t]^2.
void router_stats(const router_opts_t* o, int T, const float* probs, const float* lse, double* psum,
                  double* zsum);

// Backward to the logits. dgates: [T, k] gradient w.r.t. the final gate weights.
// load_frac[e] = f_e (fraction of all T_global*k slots routed to e, global, no gradient).
// aux_coef = alpha, z_coef = beta, T_global normalises the token means.
void router_backward(const router_opts_t* o, int T, const float* logits, const float* probs,
                     const float* lse, const int* sel, const float* dgates, const double* load_frac,
                     double aux_coef, double z_coef, long T_global,
                     float* dlogits); // [T, E]

#endif
