#include "daemon/data.h"

#include <math.h>
#include <string.h>

#include "compute/gmm.h"
#include "compute/kernels/kernels.h"
#include "compute/permute.h"
#include "compute/rmsnorm.h"
#include "compute/rng.h"
#include "config/status.h"

#define ALLOC(a, type, n) ((type*)arena_alloc((a), sizeof(type) * (size_t)(n)))
#define TEACHER_LAYER 0xFFFFF // a stream layer id no student layer uses

void data_layout(data_t* D, const cfg_t* c, int Tl, arena_t* a) {
    memset(D, 0, sizeof *D);
    D->source = c->data.source;
    D->d = c->model.d_model, D->Tl = Tl;
    if (D->source != CFG_DATA_SYNTHETIC) return;
    D->f = c->data.teacher_d_ff;
    D->Et = c->data.teacher_experts, D->kt = c->data.teacher_top_k;
    D->residual = c->model.residual;
    D->seed = (unsigned long)c->data.teacher_seed;
    D->skew = (float)c->data.skew;
    D->ropt = (router_opts_t){D->d, D->Et, D->kt, 0, 1, 1.0f, 1, 1};
    int d = D->d, f = D->f, Et = D->Et;
    long slots = (long)Tl * D->kt;
    D->wr = ALLOC(a, float, (long)d* Et);
    D->w0 = ALLOC(a, float, (long)Et* d* f);
    D->w1 = ALLOC(a, float, (long)Et* d* f);
    D->wo = ALLOC(a, float, (long)Et* f* d);
    D->xn = ALLOC(a, float, (long)Tl* d);
    D->rinv = ALLOC(a, float, Tl);
    D->ones = ALLOC(a, float, d);
    D->skew_dir = ALLOC(a, float, d);
    D->logits = ALLOC(a, float, (long)Tl* Et);
    D->probs = ALLOC(a, float, (long)Tl* Et);
    D->lse = ALLOC(a, float, Tl);
    D->sel = ALLOC(a, int, slots);
    D->gates = ALLOC(a, float, slots);
    D->slot_pos = ALLOC(a, int, slots);
    D->counts = ALLOC(a, int, Et);
    D->offs = ALLOC(a, int, Et + 1);
    D->xe = ALLOC(a, float, slots* d);
    D->h0 = ALLOC(a, float, slots* f);
    D->h1 = ALLOC(a, float, slots* f);
    D->a = ALLOC(a, float, slots* f);
    D->ye = ALLOC(a, float, slots* d);
}

static void fill(float* w, long n, unsigned long seed, int kind, uint32_t index, float std) {
    for (long j = 0; j < n; j++)
        w[j] = std * rng_normal(seed, RNG_STREAM(kind, TEACHER_LAYER), index, (uint64_t)j);
}

static void teacher_init(data_t* D) {
    int d = D->d, f = D->f;
    long per = (long)d * f;
    fill(D->wr, (long)d * D->Et, D->seed, RNG_ROUTER, 0, 1.0f / sqrtf((float)d));
    for (int e = 0; e < D->Et; e++) {
        fill(D->w0 + e * per, per, D->seed, RNG_W0, e, 1.0f / sqrtf((float)d));
        fill(D->w1 + e * per, per, D->seed, RNG_W1, e, 1.0f / sqrtf((float)d));
        fill(D->wo + e * per, per, D->seed, RNG_WO, e, 1.0f / sqrtf((float)f));
    }
    for (int j = 0; j < d; j++) D->ones[j] = 1.0f;
    // index 1 of the input stream: token inputs use index 0 with a global element counter
    for (int j = 0; j < d; j++)
        D->skew_dir[j] = rng_normal(D->seed, RNG_STREAM(RNG_DATA_X, 0), 1, (uint64_t)j);
}

int data_open(data_t* D, const cfg_t* c, int rank, int nranks, MPI_Comm comm, char* err,
              size_t errlen) {
    if (D->source == CFG_DATA_SYNTHETIC) {
        teacher_init(D);
        return MOED_OK;
    }
    return data_hdf5_open(&D->h5, c->data.path, D->d, c->train.global_batch_tokens, rank, nranks,
                          comm, err, errlen);
}

void data_close(data_t* D) {
    if (D->source == CFG_DATA_HDF5) data_hdf5_close(&D->h5);
}

int data_batch(data_t* D, long step, long T, long t0, float* x, float* y, char* err,
               size_t errlen) {
    if (D->source == CFG_DATA_HDF5) return data_hdf5_batch(&D->h5, step, x, y, err, errlen);
    int d = D->d, Tl = D->Tl, Et = D->Et, kt = D->kt;
    uint64_t first = ((uint64_t)step * T + t0) * d; // global element index of x[0, 0]
    for (long i = 0; i < (long)Tl * d; i++)
        x[i] = rng_normal(D->seed, RNG_STREAM(RNG_DATA_X, 0), 0, first + i);
    if (D->skew != 0)
        for (long i = 0; i < (long)Tl * d; i++) x[i] += D->skew * D->skew_dir[i % d];

    // The teacher is one MoE layer run locally; every row's result depends on that token
    // alone, so y does not depend on how tokens are split across ranks.
    if (D->residual)
        rmsnorm_forward(Tl, d, x, D->ones, D->xn, D->rinv);
    else
        memcpy(D->xn, x, sizeof(float) * Tl * d);
    kern->sgemm(Tl, Et, d, D->xn, d, 1, D->wr, Et, 1, D->logits, Et, 0);
    router_forward(&D->ropt, Tl, D->logits, NULL, D->probs, D->lse, D->sel, D->gates);
    permute_plan(Tl, kt, Et, D->sel, D->counts, D->slot_pos);
    D->offs[0] = 0;
    for (int e = 0; e < Et; e++) D->offs[e + 1] = D->offs[e] + D->counts[e];
    permute_rows(Tl, kt, d, D->slot_pos, D->xn, D->xe);
    gmm_shape_t gs = {Et, D->offs, d, D->f, NULL};
    gmm_up_forward(&gs, D->xe, D->w0, D->w1, D->h0, D->h1, D->a);
    gmm_down_forward(&gs, D->a, D->wo, D->ye);
    unpermute_forward(Tl, kt, d, D->slot_pos, D->gates, D->ye, y);
    if (D->residual)
        for (long i = 0; i < (long)Tl * d; i++) y[i] = x[i] + y[i];
    return MOED_OK;
}
