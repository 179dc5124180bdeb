// The model's parameters on one rank: one flat buffer for weights, one each for gradients
// and the two Adam moments, all with the same layout. Replicated tensors (router weights,
// norm scales) come first so that their gradients form one contiguous prefix for the
// deterministic tree reduction; this rank's expert shards follow. Shared experts are
// replicated, so they belong to the prefix.
#ifndef MOED_MODEL_H
#define MOED_MODEL_H

#include <stdint.h>

#include "config/config.h"
#include "daemon/arena.h"

enum {
    PK_ROUTER = 0,
    PK_NORM = 1,
    PK_W0 = 2,
    PK_W1 = 3,
    PK_WO = 4,
    PK_SW0 = 5,
    PK_SW1 = 6,
    PK_SWO = 7
};

typedef struct {
    char name[48];   // checkpoint path below /layers, e.g. "0/experts/w0"
    int layer, kind; // PK_*
    int sharded;     // 1: [El, rows, cols] slice of the global [E, rows, cols]
    int decay;       // AdamW weight decay applies
    int n_mat;       // stacked matrices: El (sharded), S (shared experts), else 1
    int rows, cols;  // of one matrix
    long offset;     // into the flat buffers
    long numel;      // local elements
} param_t;

typedef struct {
    float* wr;        // [d, E] router weight
    float* scale;     // [d] RMSNorm scale (NULL without residual)
    float *w0, *w1;   // [El, d, f]
    float* wo;        // [El, f, d]
    float *sw0, *sw1; // [S, d, f] shared experts (NULL when S = 0)
    float* swo;       // [S, f, d]
} layer_params_t;

typedef struct {
    int d, f, E, El, k, L, residual;
    int S;                // shared experts per layer
    int rank, nranks, e0; // e0 = first global expert of this rank
    int n_params;
    param_t* params; // [n_params] in layout order
    long n_local;    // floats in each flat buffer
    long n_repl;     // floats in the replicated prefix
    float* w;        // [n_local] weights
    float* g;        // [n_local] gradients
    float *m, *v;    // [n_local] Adam moments
    float* bias;     // [L, E] selection bias (aux-loss-free balancing, not trained)
} model_t;

void model_layout(model_t* m, const cfg_t* c, int rank, int nranks, arena_t* a);
// Initial weights from the counter-based RNG keyed by (seed, tensor, global expert,
// element): identical for every rank count. Moments and gradients start at zero.
void model_init(model_t* m, uint64_t seed);
layer_params_t model_layer(const model_t* m, const float* base, int l);
// FNV-1a of every tensor in global order (experts by global index): the same value for
// the same weights at any P. Collective.
uint64_t model_digest(const model_t* m, const float* base);

#endif
