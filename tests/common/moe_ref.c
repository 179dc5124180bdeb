// Naive double-precision MoE stack: see moe_ref.h. Every loop is the formula of DESIGN.md §2
// written out per token and per slot; nothing is fused, blocked or permuted.
#include "tests/common/moe_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define RMS_EPS 1e-6

long mref_numel(const mref_cfg_t* c, int kind) {
    switch (kind) {
    case MREF_WR: return (long)c->d * c->E;
    case MREF_SCALE: return c->d;
    case MREF_W0:
    case MREF_W1:
    case MREF_WO: return (long)c->E * c->d * c->f;
    default: return 0;
    }
}

double* mref_tensor(const mref_params_t* p, int kind) {
    switch (kind) {
    case MREF_WR: return p->wr;
    case MREF_SCALE: return p->scale;
    case MREF_W0: return p->w0;
    case MREF_W1: return p->w1;
    case MREF_WO: return p->wo;
    default: return NULL;
    }
}

const char* mref_kind_name(int kind) {
    static const char* names[MREF_NKIND] = {"router/weight", "norm/scale", "experts/w0",
                                            "experts/w1", "experts/wo"};
    return kind >= 0 && kind < MREF_NKIND ? names[kind] : "?";
}

static double* dalloc(long n, int* fail) {
    double* p = calloc((size_t)(n > 0 ? n : 1), sizeof(double));
    if (!p) *fail = 1;
    return p;
}

static int params_alloc(mref_params_t* p, const mref_cfg_t* c) {
    int fail = 0;
    for (int kind = 0; kind < MREF_NKIND; kind++) {
        double* t = dalloc(mref_numel(c, kind), &fail);
        switch (kind) {
        case MREF_WR: p->wr = t; break;
        case MREF_SCALE: p->scale = t; break;
        case MREF_W0: p->w0 = t; break;
        case MREF_W1: p->w1 = t; break;
        case MREF_WO: p->wo = t; break;
        }
    }
    return fail ? -1 : 0;
}

static void params_free(mref_params_t* p) {
    for (int kind = 0; kind < MREF_NKIND; kind++) free(mref_tensor(p, kind));
}

int mref_alloc(mref_t* r, const mref_cfg_t* c) {
    memset(r, 0, sizeof *r);
    int G = c->n_groups > 1 ? c->n_groups : 1;
    if (c->T < 1 || c->d < 1 || c->d > MREF_DMAX || c->f < 1 || c->E < 1 || c->E > MREF_EMAX ||
        c->k < 1 || c->k > c->E || c->L < 1 || c->E % G != 0 || (G > 1 && c->E / G < 2) ||
        (G > 1 && (c->topk_groups < 1 || c->topk_groups > G)))
        return -1;
    r->c = *c;
    long T = c->T, d = c->d, f = c->f, E = c->E, k = c->k, L = c->L;
    int fail = 0;
    r->w = calloc((size_t)L, sizeof *r->w);
    r->g = calloc((size_t)L, sizeof *r->g);
    if (!r->w || !r->g) return mref_free(r), -1;
    for (long l = 0; l < L; l++) {
        fail |= params_alloc(&r->w[l], c) | params_alloc(&r->g[l], c);
        if (!fail)
            for (long j = 0; j < d; j++) r->w[l].scale[j] = 1.0;
    }
    r->bias = dalloc(L * E, &fail);
    r->x = dalloc(T * d, &fail);
    r->y = dalloc(T * d, &fail);
    r->aux = dalloc(L, &fail);
    r->z = dalloc(L, &fail);
    r->h = dalloc((L + 1) * T * d, &fail);
    r->xn = dalloc(L * T * d, &fail);
    r->rinv = dalloc(L * T, &fail);
    r->logits = dalloc(L * T * E, &fail);
    r->s = dalloc(L * T * E, &fail);
    r->lse = dalloc(L * T, &fail);
    r->sel = calloc((size_t)(L * T * k), sizeof(int));
    r->gate = dalloc(L * T * k, &fail);
    r->h0 = dalloc(L * T * k * f, &fail);
    r->h1 = dalloc(L * T * k * f, &fail);
    r->act = dalloc(L * T * k * f, &fail);
    r->yexp = dalloc(L * T * k * d, &fail);
    r->load = calloc((size_t)(L * E), sizeof(long));
    r->dx = dalloc(T * d, &fail);
    r->dh = dalloc(T * d, &fail);
    r->dnext = dalloc(T * d, &fail);
    if (fail || !r->sel || !r->load) return mref_free(r), -1;
    return 0;
}

void mref_free(mref_t* r) {
    for (int l = 0; l < r->c.L; l++) {
        if (r->w) params_free(&r->w[l]);
        if (r->g) params_free(&r->g[l]);
    }
    free(r->w), free(r->g);
    double* arrays[] = {r->bias, r->x,      r->y,  r->aux, r->z,    r->h,  r->xn,
                        r->rinv, r->logits, r->s,  r->lse, r->gate, r->h0, r->h1,
                        r->act,  r->yexp,   r->dx, r->dh,  r->dnext};
    for (size_t i = 0; i < sizeof arrays / sizeof arrays[0]; i++) free(arrays[i]);
    free(r->sel), free(r->load);
    memset(r, 0, sizeof *r);
}

// ---------------------------------------------------------------------------------------
// routing

// a ranks before b: higher score first, equal scores by the lower index.
static int ranks_before(const double* v, int a, int b) {
    return v[a] > v[b] || (v[a] == v[b] && a < b);
}

// Insertion sort of the indices idx[0..n) by ranks_before.
static void sort_by_rank(const double* v, int* idx, int n) {
    for (int i = 1; i < n; i++) {
        int x = idx[i], j = i;
        while (j > 0 && ranks_before(v, x, idx[j - 1])) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = x;
    }
}

double mref_route(const mref_cfg_t* c, const double* v, int* sel) {
    int E = c->E, G = c->n_groups > 1 ? c->n_groups : 1, per = E / G;
    int eligible[MREF_EMAX];
    double margin = INFINITY;
    for (int e = 0; e < E; e++) eligible[e] = 1;
    if (G > 1) {
        double gscore[MREF_EMAX];
        int gorder[MREF_EMAX], members[MREF_EMAX];
        for (int g = 0; g < G; g++) {
            for (int i = 0; i < per; i++) members[i] = g * per + i;
            sort_by_rank(v, members, per);
            gscore[g] = v[members[0]] + v[members[1]];
            gorder[g] = g;
        }
        sort_by_rank(gscore, gorder, G);
        for (int e = 0; e < E; e++) eligible[e] = 0;
        for (int i = 0; i < c->topk_groups; i++)
            for (int e = gorder[i] * per; e < (gorder[i] + 1) * per; e++) eligible[e] = 1;
        if (c->topk_groups < G)
            margin = gscore[gorder[c->topk_groups - 1]] - gscore[gorder[c->topk_groups]];
    }
    int cand[MREF_EMAX], n = 0;
    for (int e = 0; e < E; e++)
        if (eligible[e]) cand[n++] = e;
    sort_by_rank(v, cand, n);
    for (int i = 0; i < c->k; i++) sel[i] = cand[i];
    if (c->k < n) {
        double gap = v[cand[c->k - 1]] - v[cand[c->k]];
        if (gap < margin) margin = gap;
    }
    return margin;
}

// ---------------------------------------------------------------------------------------
// forward

static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

// One layer: hin [T, d] -> hout [T, d]; fills layer l's activations.
static void layer_forward(mref_t* r, int l, const double* hin, double* hout) {
    const mref_cfg_t* c = &r->c;
    const mref_params_t* p = &r->w[l];
    int T = c->T, d = c->d, f = c->f, E = c->E, k = c->k;
    for (int e = 0; e < E; e++) r->load[(long)l * E + e] = 0;
    for (int t = 0; t < T; t++) {
        long lt = (long)l * T + t;
        const double* u = hin + (long)t * d;
        double* xn = r->xn + lt * d;
        // RMSNorm (or the identity without residual)
        if (c->residual) {
            double ms = 0;
            for (int j = 0; j < d; j++) ms += u[j] * u[j];
            ms /= d;
            r->rinv[lt] = 1.0 / sqrt(ms + RMS_EPS);
            for (int j = 0; j < d; j++) xn[j] = u[j] * r->rinv[lt] * p->scale[j];
        } else {
            r->rinv[lt] = 1.0;
            for (int j = 0; j < d; j++) xn[j] = u[j];
        }
        // router logits, scores, logsumexp
        double* lg = r->logits + lt * E;
        double* s = r->s + lt * E;
        for (int e = 0; e < E; e++) {
            lg[e] = 0;
            for (int j = 0; j < d; j++) lg[e] += xn[j] * p->wr[(long)j * E + e];
        }
        double mx = lg[0];
        for (int e = 1; e < E; e++) mx = fmax(mx, lg[e]);
        double se = 0;
        for (int e = 0; e < E; e++) se += exp(lg[e] - mx);
        r->lse[lt] = mx + log(se);
        for (int e = 0; e < E; e++) s[e] = c->sigmoid ? sigmoid(lg[e]) : exp(lg[e] - r->lse[lt]);
        // selection on s + bias, gates from s alone
        double v[MREF_EMAX];
        for (int e = 0; e < E; e++) v[e] = s[e] + r->bias[(long)l * E + e];
        int* sel = r->sel + lt * k;
        double m = mref_route(c, v, sel);
        if (m < r->margin) r->margin = m;
        double* gate = r->gate + lt * k;
        double sum = 0;
        for (int i = 0; i < k; i++) sum += s[sel[i]];
        for (int i = 0; i < k; i++)
            gate[i] = (c->norm_topk ? s[sel[i]] / sum : s[sel[i]]) * c->routed_scaling;
        // experts
        double* out = hout + (long)t * d;
        for (int j = 0; j < d; j++) out[j] = c->residual ? u[j] : 0.0;
        for (int i = 0; i < k; i++) {
            int e = sel[i];
            r->load[(long)l * E + e]++;
            long slot = lt * k + i;
            double* h0 = r->h0 + slot * f;
            double* h1 = r->h1 + slot * f;
            double* a = r->act + slot * f;
            double* ye = r->yexp + slot * d;
            const double* w0 = p->w0 + (long)e * d * f;
            const double* w1 = p->w1 + (long)e * d * f;
            const double* wo = p->wo + (long)e * f * d;
            for (int q = 0; q < f; q++) {
                h0[q] = h1[q] = 0;
                for (int j = 0; j < d; j++) {
                    h0[q] += xn[j] * w0[(long)j * f + q];
                    h1[q] += xn[j] * w1[(long)j * f + q];
                }
                a[q] = h0[q] * sigmoid(h0[q]) * h1[q];
            }
            for (int j = 0; j < d; j++) {
                ye[j] = 0;
                for (int q = 0; q < f; q++) ye[j] += a[q] * wo[(long)q * d + j];
                out[j] += gate[i] * ye[j];
            }
        }
    }
}

double mref_forward(mref_t* r) {
    const mref_cfg_t* c = &r->c;
    long T = c->T, d = c->d, E = c->E, k = c->k, n = T * d;
    r->margin = INFINITY;
    memcpy(r->h, r->x, sizeof(double) * n);
    for (int l = 0; l < c->L; l++) layer_forward(r, l, r->h + l * n, r->h + (l + 1) * n);
    const double* out = r->h + c->L * n;
    r->mse = 0;
    for (long i = 0; i < n; i++) r->mse += (out[i] - r->y[i]) * (out[i] - r->y[i]);
    r->mse /= (double)n;
    r->loss = r->mse;
    for (int l = 0; l < c->L; l++) {
        // aux = alpha * E * sum_e f_e P_e, f_e = load_e / (T k), P_e = mean_t s_e / sum s
        double aux = 0;
        for (long e = 0; e < E; e++) {
            double fe = (double)r->load[l * E + e] / (double)(T * k), Pe = 0;
            for (long t = 0; t < T; t++) {
                const double* s = r->s + (l * T + t) * E;
                double tot = 0;
                for (long e2 = 0; e2 < E; e2++) tot += s[e2];
                Pe += s[e] / tot;
            }
            aux += fe * (Pe / (double)T);
        }
        r->aux[l] = c->aux_coef * (double)E * aux;
        double zz = 0;
        for (long t = 0; t < T; t++) zz += r->lse[l * T + t] * r->lse[l * T + t];
        r->z[l] = c->z_coef * zz / (double)T;
        r->loss += r->aux[l] + r->z[l];
    }
    return r->loss;
}

// ---------------------------------------------------------------------------------------
// backward

// dout [T, d] = dLoss/dh_{l+1} -> din [T, d] = dLoss/dh_l; accumulates layer l's gradients.
static void layer_backward(mref_t* r, int l, const double* hin, const double* dout, double* din) {
    const mref_cfg_t* c = &r->c;
    const mref_params_t* p = &r->w[l];
    const mref_params_t* g = &r->g[l];
    int T = c->T, d = c->d, f = c->f, E = c->E, k = c->k;
    // f_e (no gradient) for the aux loss
    double frac[MREF_EMAX];
    for (int e = 0; e < E; e++) frac[e] = (double)r->load[(long)l * E + e] / ((double)T * k);
    for (int t = 0; t < T; t++) {
        long lt = (long)l * T + t;
        const double* u = hin + (long)t * d;
        const double* xn = r->xn + lt * d;
        const double* s = r->s + lt * E;
        const double* lg = r->logits + lt * E;
        const int* sel = r->sel + lt * k;
        const double* gate = r->gate + lt * k;
        const double* dy = dout + (long)t * d;
        double dxn[MREF_DMAX], dgate[MREF_EMAX], ds[MREF_EMAX], dlg[MREF_EMAX];
        for (int j = 0; j < d; j++) dxn[j] = 0;
        for (int e = 0; e < E; e++) ds[e] = 0;

        // out_t = sum_i gate_i * FFN_{e_i}(xn)
        for (int i = 0; i < k; i++) {
            int e = sel[i];
            long slot = lt * k + i;
            const double* h0 = r->h0 + slot * f;
            const double* h1 = r->h1 + slot * f;
            const double* a = r->act + slot * f;
            const double* ye = r->yexp + slot * d;
            const double* w0 = p->w0 + (long)e * d * f;
            const double* w1 = p->w1 + (long)e * d * f;
            const double* wo = p->wo + (long)e * f * d;
            double* gw0 = g->w0 + (long)e * d * f;
            double* gw1 = g->w1 + (long)e * d * f;
            double* gwo = g->wo + (long)e * f * d;
            dgate[i] = 0;
            for (int j = 0; j < d; j++) dgate[i] += dy[j] * ye[j];
            // ye = a · Wo
            for (int q = 0; q < f; q++) {
                double da = 0;
                for (int j = 0; j < d; j++) {
                    double dye = gate[i] * dy[j];
                    gwo[(long)q * d + j] += a[q] * dye;
                    da += wo[(long)q * d + j] * dye;
                }
                // a = silu(h0) * h1, silu'(x) = sig(x) + x sig(x) (1 - sig(x))
                double sg = sigmoid(h0[q]);
                double dh0 = da * h1[q] * (sg + h0[q] * sg * (1.0 - sg));
                double dh1 = da * h0[q] * sg;
                // h0 = xn · W0, h1 = xn · W1
                for (int j = 0; j < d; j++) {
                    gw0[(long)j * f + q] += xn[j] * dh0;
                    gw1[(long)j * f + q] += xn[j] * dh1;
                    dxn[j] += w0[(long)j * f + q] * dh0 + w1[(long)j * f + q] * dh1;
                }
            }
        }

        // gate_i = scaling * s_{e_i} / S, S = sum_j s_{e_j} (S = 1 without norm_topk)
        double S = 1;
        if (c->norm_topk) {
            S = 0;
            for (int i = 0; i < k; i++) S += s[sel[i]];
        }
        for (int i = 0; i < k; i++) {
            ds[sel[i]] += c->routed_scaling * dgate[i] / S;
            if (c->norm_topk)
                for (int j = 0; j < k; j++)
                    ds[sel[j]] -= c->routed_scaling * dgate[i] * s[sel[i]] / (S * S);
        }

        // aux = alpha E sum_e f_e (1/T) sum_t s_e / tot,  tot = sum_e' s_e'
        double tot = 0, fs = 0;
        for (int e = 0; e < E; e++) tot += s[e], fs += frac[e] * s[e];
        for (int e = 0; e < E; e++)
            ds[e] += c->aux_coef * E / T * (frac[e] / tot - fs / (tot * tot));

        // scores -> logits
        for (int e = 0; e < E; e++) {
            if (c->sigmoid) {
                dlg[e] = ds[e] * s[e] * (1.0 - s[e]);
            } else { // ds_e/dl_j = s_e (delta_ej - s_j)
                dlg[e] = 0;
                for (int e2 = 0; e2 < E; e2++)
                    dlg[e] += ds[e2] * s[e2] * ((e2 == e ? 1.0 : 0.0) - s[e]);
            }
            // z = beta/T sum_t lse_t^2, dlse/dl_e = softmax_e
            dlg[e] += c->z_coef / T * 2.0 * r->lse[lt] * exp(lg[e] - r->lse[lt]);
        }
        // logits = xn · Wr
        for (int j = 0; j < d; j++)
            for (int e = 0; e < E; e++) {
                g->wr[(long)j * E + e] += xn[j] * dlg[e];
                dxn[j] += p->wr[(long)j * E + e] * dlg[e];
            }

        // norm (or identity), plus the residual path
        double* di = din + (long)t * d;
        if (!c->residual) {
            for (int j = 0; j < d; j++) di[j] = dxn[j];
            continue;
        }
        // xn_j = u_j * rho * scale_j, rho = (sum u^2 / d + eps)^(-1/2), drho/du_j = -rho^3 u_j/d
        double rho = r->rinv[lt], drho = 0;
        for (int j = 0; j < d; j++) {
            g->scale[j] += dxn[j] * u[j] * rho;
            drho += dxn[j] * u[j] * p->scale[j];
        }
        for (int j = 0; j < d; j++)
            di[j] = dy[j] + dxn[j] * rho * p->scale[j] - drho * rho * rho * rho * u[j] / d;
    }
}

void mref_backward(mref_t* r) {
    const mref_cfg_t* c = &r->c;
    long n = (long)c->T * c->d;
    for (int l = 0; l < c->L; l++)
        for (int kind = 0; kind < MREF_NKIND; kind++)
            memset(mref_tensor(&r->g[l], kind), 0, sizeof(double) * mref_numel(c, kind));
    const double* out = r->h + c->L * n;
    for (long i = 0; i < n; i++) r->dh[i] = 2.0 * (out[i] - r->y[i]) / (double)n;
    for (int l = c->L - 1; l >= 0; l--) {
        layer_backward(r, l, r->h + l * n, r->dh, r->dnext);
        double* t = r->dh;
        r->dh = r->dnext, r->dnext = t;
    }
    memcpy(r->dx, r->dh, sizeof(double) * n);
}
