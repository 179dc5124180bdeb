#include "compute/router.h"

#include <math.h>

// Scores and logsumexp of one token. Sums run in double in index order so the result is a
// function of the token's logits only.
static void token_scores(const router_opts_t* o, const float* l, float* s, float* lse) {
    int E = o->E;
    float m = l[0];
    for (int e = 1; e < E; e++) m = l[e] > m ? l[e] : m;
    double z = 0;
    for (int e = 0; e < E; e++) z += exp((double)l[e] - m);
    *lse = (float)(m + log(z));
    for (int e = 0; e < E; e++)
        s[e] = o->sigmoid ? (float)(1.0 / (1.0 + exp(-(double)l[e])))
                          : (float)(exp((double)l[e] - m) / z);
}

// Top-n indices of v over the entries with ok[i] != 0, descending, ties to the lower index.
// O(n·len) selection is right for the small n and len of routing.
static void top_n(const float* v, const unsigned char* ok, int len, int n, int* out) {
    for (int i = 0; i < n; i++) {
        int best = -1;
        for (int e = 0; e < len; e++) {
            if (!ok[e]) continue;
            int taken = 0;
            for (int j = 0; j < i; j++) taken |= out[j] == e;
            if (taken) continue;
            if (best < 0 || v[e] > v[best]) best = e;
        }
        out[i] = best;
    }
}

// Experts eligible under group-limited routing: a group's score is the sum of its two best
// selection scores; only the topk_groups best groups stay eligible.
static void eligible_experts(const router_opts_t* o, const float* v, unsigned char* ok) {
    int E = o->E, G = o->n_groups;
    if (G <= 1) {
        for (int e = 0; e < E; e++) ok[e] = 1;
        return;
    }
    int per = E / G;
    float gscore[4096]; // [G] (G <= E <= 4096, validated)
    unsigned char all[4096];
    int best[4096];
    for (int g = 0; g < G; g++) {
        int two[2];
        unsigned char okg[4096];
        for (int i = 0; i < per; i++) okg[i] = 1;
        top_n(v + g * per, okg, per, 2, two);
        gscore[g] = v[g * per + two[0]] + v[g * per + two[1]];
        all[g] = 1;
    }
    top_n(gscore, all, G, o->topk_groups, best);
    for (int e = 0; e < E; e++) ok[e] = 0;
    for (int i = 0; i < o->topk_groups; i++)
        for (int e = best[i] * per; e < (best[i] + 1) * per; e++) ok[e] = 1;
}

void router_forward(const router_opts_t* o, int T, const float* logits, const float* bias,
                    float* probs, float* lse, int* sel, float* gates) {
    int E = o->E, k = o->k;
    for (int t = 0; t < T; t++) {
        const float* l = logits + (long)t * E;
        float* s = probs + (long)t * E;
        token_scores(o, l, s, &lse[t]);
        float v[4096]; // [E] selection scores (validated: E <= 4096)
        unsigned char ok[4096];
        for (int e = 0; e < E; e++) v[e] = bias ? s[e] + bias[e] : s[e];
        eligible_experts(o, v, ok);
        int* st = sel + (long)t * k;
        float* g = gates + (long)t * k;
        top_n(v, ok, E, k, st);
        double sum = 0;
        for (int i = 0; i < k; i++) sum += s[st[i]];
        for (int i = 0; i < k; i++) {
            double gi = o->norm_topk ? s[st[i]] / sum : s[st[i]];
            g[i] = (float)(gi * o->routed_scaling);
        }
    }
}

void router_stats(const router_opts_t* o, int T, const float* probs, const float* lse, double* psum,
                  double* zsum) {
    int E = o->E;
    for (int t = 0; t < T; t++) {
        const float* s = probs + (long)t * E;
        double tot = 0;
        for (int e = 0; e < E; e++) tot += s[e];
        for (int e = 0; e < E; e++) psum[e] += s[e] / tot;
        *zsum += (double)lse[t] * lse[t];
    }
}

void router_backward(const router_opts_t* o, int T, const float* logits, const float* probs,
                     const float* lse, const int* sel, const float* dgates, const double* load_frac,
                     double aux_coef, double z_coef, long T_global, float* dlogits) {
    int E = o->E, k = o->k;
    for (int t = 0; t < T; t++) {
        const float* l = logits + (long)t * E;
        const float* s = probs + (long)t * E;
        const int* st = sel + (long)t * k;
        const float* dg = dgates + (long)t * k;
        double ds[4096]; // [E] gradient w.r.t. the scores s
        for (int e = 0; e < E; e++) ds[e] = 0;

        // gates: g_i = scaling * s_i / S (S = sum of selected scores when norm_topk)
        double S = 0, dot = 0;
        for (int i = 0; i < k; i++) S += s[st[i]];
        for (int i = 0; i < k; i++) {
            double dgn = (double)dg[i] * o->routed_scaling;
            if (o->norm_topk) dot += dgn * (s[st[i]] / S);
        }
        for (int i = 0; i < k; i++) {
            double dgn = (double)dg[i] * o->routed_scaling;
            ds[st[i]] += o->norm_topk ? (dgn - dot) / S : dgn;
        }

        // switch aux loss: alpha*E*sum_e f_e * mean_t(s_e / sum s)
        if (aux_coef != 0) {
            double tot = 0, cs = 0;
            for (int e = 0; e < E; e++) tot += s[e];
            double c[4096];
            for (int e = 0; e < E; e++) {
                c[e] = aux_coef * E * load_frac[e] / (double)T_global;
                cs += c[e] * s[e];
            }
            for (int e = 0; e < E; e++) ds[e] += c[e] / tot - cs / (tot * tot);
        }

        // through the score function, plus the z-loss beta*mean_t lse_t^2, whose gradient
        // is 2*beta*lse/T * softmax(logits)
        double sd = 0, zc = 2.0 * z_coef * lse[t] / (double)T_global;
        for (int e = 0; e < E; e++) sd += s[e] * ds[e];
        float* dl = dlogits + (long)t * E;
        for (int e = 0; e < E; e++) {
            double g = o->sigmoid ? ds[e] * s[e] * (1.0 - s[e]) : s[e] * (ds[e] - sd);
            if (z_coef != 0) g += zc * exp((double)l[e] - lse[t]);
            dl[e] = (float)g;
        }
    }
}
