#include "daemon/model.h"

#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <string.h>

#include "compute/rng.h"

static void add_param(model_t* m, int* i, int layer, int kind, const char* what, int sharded,
                      int decay, int n_mat, int rows, int cols) {
    param_t* p = m->params ? &m->params[*i] : NULL;
    long numel = (long)rows * cols * n_mat;
    if (p) {
        snprintf(p->name, sizeof p->name, "%d/%s", layer, what);
        p->layer = layer, p->kind = kind, p->sharded = sharded, p->decay = decay;
        p->n_mat = n_mat, p->rows = rows, p->cols = cols;
        p->offset = m->n_local, p->numel = numel;
    }
    m->n_local += numel;
    (*i)++;
}

// Walks the layout once; with m->params NULL it only counts.
static void walk_layout(model_t* m) {
    int i = 0;
    m->n_local = 0;
    for (int l = 0; l < m->L; l++) {
        add_param(m, &i, l, PK_ROUTER, "router/weight", 0, 1, 1, m->d, m->E);
        if (m->residual) add_param(m, &i, l, PK_NORM, "norm/scale", 0, 0, 1, 1, m->d);
        if (m->S > 0) {
            add_param(m, &i, l, PK_SW0, "shared/w0", 0, 1, m->S, m->d, m->f);
            add_param(m, &i, l, PK_SW1, "shared/w1", 0, 1, m->S, m->d, m->f);
            add_param(m, &i, l, PK_SWO, "shared/wo", 0, 1, m->S, m->f, m->d);
        }
    }
    m->n_repl = m->n_local;
    for (int l = 0; l < m->L; l++) {
        add_param(m, &i, l, PK_W0, "experts/w0", 1, 1, m->El, m->d, m->f);
        add_param(m, &i, l, PK_W1, "experts/w1", 1, 1, m->El, m->d, m->f);
        add_param(m, &i, l, PK_WO, "experts/wo", 1, 1, m->El, m->f, m->d);
    }
    m->n_params = i;
}

void model_layout(model_t* m, const cfg_t* c, int rank, int nranks, arena_t* a) {
    memset(m, 0, sizeof *m);
    m->d = c->model.d_model, m->f = c->model.d_ff, m->E = c->model.n_experts;
    m->k = c->model.top_k, m->L = c->model.n_layers, m->residual = c->model.residual;
    m->S = c->model.n_shared_experts;
    m->rank = rank, m->nranks = nranks;
    m->El = m->E / nranks, m->e0 = rank * m->El;
    walk_layout(m);
    m->params = arena_alloc(a, sizeof(param_t) * m->n_params);
    if (m->params) walk_layout(m);
    m->w = arena_alloc(a, sizeof(float) * m->n_local);
    m->g = arena_alloc(a, sizeof(float) * m->n_local);
    m->m = arena_alloc(a, sizeof(float) * m->n_local);
    m->v = arena_alloc(a, sizeof(float) * m->n_local);
    m->bias = arena_alloc(a, sizeof(float) * m->L * m->E);
}

static uint32_t kind_stream(int kind) {
    switch (kind) {
    case PK_ROUTER: return RNG_ROUTER;
    case PK_W0: return RNG_W0;
    case PK_W1: return RNG_W1;
    case PK_WO: return RNG_WO;
    default: return RNG_SHARED;
    }
}

void model_init(model_t* m, uint64_t seed) {
    for (int i = 0; i < m->n_params; i++) {
        const param_t* p = &m->params[i];
        float* w = m->w + p->offset;
        if (p->kind == PK_NORM) {
            for (long j = 0; j < p->numel; j++) w[j] = 1.0f;
            continue;
        }
        // Fan-in scaling: each output starts with unit variance for unit-variance inputs;
        // the router starts small so early routing is near uniform.
        float std = 1.0f / sqrtf((float)p->rows);
        if (p->kind == PK_ROUTER) std *= 0.1f;
        uint32_t stream = RNG_STREAM(kind_stream(p->kind), p->layer);
        long per = (long)p->rows * p->cols;
        for (int e = 0; e < p->n_mat; e++) {
            // index: the global expert; shared expert s of tensor w0/w1/wo is 3s+0/1/2
            uint32_t ge = p->sharded          ? (uint32_t)(m->e0 + e)
                          : p->kind >= PK_SW0 ? (uint32_t)(3 * e + p->kind - PK_SW0)
                                              : 0;
            for (long j = 0; j < per; j++) w[e * per + j] = std * rng_normal(seed, stream, ge, j);
        }
    }
    memset(m->g, 0, sizeof(float) * m->n_local);
    memset(m->m, 0, sizeof(float) * m->n_local);
    memset(m->v, 0, sizeof(float) * m->n_local);
    memset(m->bias, 0, sizeof(float) * m->L * m->E);
}

layer_params_t model_layer(const model_t* m, const float* base, int l) {
    layer_params_t lp = {0};
    for (int i = 0; i < m->n_params; i++) {
        const param_t* p = &m->params[i];
        if (p->layer != l) continue;
        float* t = (float*)base + p->offset;
        switch (p->kind) {
        case PK_ROUTER: lp.wr = t; break;
        case PK_NORM: lp.scale = t; break;
        case PK_W0: lp.w0 = t; break;
        case PK_W1: lp.w1 = t; break;
        case PK_WO: lp.wo = t; break;
        case PK_SW0: lp.sw0 = t; break;
        case PK_SW1: lp.sw1 = t; break;
        case PK_SWO: lp.swo = t; break;
        }
    }
    return lp;
}

static uint64_t fnv1a(uint64_t h, const void* data, size_t n) {
    const unsigned char* b = data;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

uint64_t model_digest(const model_t* m, const float* base) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < m->n_params; i++) {
        const param_t* p = &m->params[i];
        const float* t = base + p->offset;
        if (!p->sharded) {
            h = fnv1a(h, t, sizeof(float) * p->numel);
            continue;
        }
        // Hash each expert locally, gather the per-expert hashes in global expert order.
        long per = (long)p->rows * p->cols;
        uint64_t local[4096], all[4096]; // [El], [E] (E <= 4096, validated)
        for (int e = 0; e < m->El; e++)
            local[e] = fnv1a(0xcbf29ce484222325ull, t + e * per, sizeof(float) * per);
        MPI_Allgather(local, m->El, MPI_UINT64_T, all, m->El, MPI_UINT64_T, MPI_COMM_WORLD);
        h = fnv1a(h, all, sizeof(uint64_t) * m->E);
    }
    return h;
}
