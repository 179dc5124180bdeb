// The training step and the set-up of everything it touches.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "compute/capacity.h"
#include "compute/gmm.h"
#include "compute/loss.h"
#include "compute/optim.h"
#include "compute/rmsnorm.h"
#include "config/status.h"
#include "daemon/train.h"

static long gcd(long a, long b) { return b ? gcd(b, a % b) : a; }

#define ALLOC(a, type, n) ((type*)arena_alloc((a), sizeof(type) * (size_t)(n)))

void train_layout(train_t* tr, const cfg_t* c, int rank, int nranks, arena_t* a) {
    memset(tr, 0, sizeof *tr);
    tr->cfg = *c;
    tr->rank = rank, tr->nranks = nranks;
    model_layout(&tr->model, c, rank, nranks, a);
    const model_t* m = &tr->model;
    int d = m->d, f = m->f, E = m->E, k = m->k, L = m->L;
    tr->T = c->train.global_batch_tokens;
    tr->Tl = tr->T / nranks;
    tr->t0 = rank * tr->Tl;
    // Reduction leaves: every valid P divides gcd(E, T), so blocks of T/gcd(E, T) tokens
    // never straddle two ranks, at any P.
    tr->tb = (int)(tr->T / gcd(E, tr->T));
    tr->nleaf = tr->Tl / tr->tb;
    // Dropless: one rank's experts may receive every slot. With a capacity, at most C each.
    tr->cap = capacity_slots(c->model.capacity_factor, tr->T, k, E);
    tr->Nmax = (long)tr->T * k;
    if (tr->cap > 0 && (long)m->El * tr->cap < tr->Nmax) tr->Nmax = (long)m->El * tr->cap;
    tr->ropt = (router_opts_t){d,
                               E,
                               k,
                               c->model.router == CFG_ROUTER_SIGMOID,
                               c->model.norm_topk,
                               (float)c->model.routed_scaling,
                               c->model.n_groups,
                               c->model.topk_groups};
    long Tl = tr->Tl, Nmax = tr->Nmax, slots = Tl * k;

    tr->acts = ALLOC(a, layer_acts_t, L);
    for (int l = 0; l < L; l++) {
        layer_acts_t tmp = {0}, *A = tr->acts ? &tr->acts[l] : &tmp;
        A->xn = ALLOC(a, float, Tl* d);
        A->rinv = ALLOC(a, float, Tl);
        A->logits = ALLOC(a, float, Tl* E);
        A->probs = ALLOC(a, float, Tl* E);
        A->lse = ALLOC(a, float, Tl);
        A->sel = ALLOC(a, int, slots);
        A->gates = ALLOC(a, float, slots);
        A->slot_pos = ALLOC(a, int, slots);
        A->kept = tr->cap > 0 ? ALLOC(a, int, slots) : NULL;
        if (m->S > 0) {
            A->sh0 = ALLOC(a, float, m->S* Tl* f);
            A->sh1 = ALLOC(a, float, m->S* Tl* f);
            A->sa = ALLOC(a, float, m->S* Tl* f);
        }
        A->xe = ALLOC(a, float, Nmax* d);
        A->h0 = ALLOC(a, float, Nmax* f);
        A->h1 = ALLOC(a, float, Nmax* f);
        A->a = ALLOC(a, float, Nmax* f);
        A->yslot = ALLOC(a, float, slots* d);
        A->load = ALLOC(a, int64_t, E);
    }
    tr->h = ALLOC(a, float, (L + 1) * Tl * d);
    tr->xs = ALLOC(a, float, slots* d);
    tr->ye = ALLOC(a, float, Nmax* d);
    tr->de = ALLOC(a, float, Nmax* d);
    tr->da = ALLOC(a, float, Nmax* f);
    tr->dh0 = ALLOC(a, float, Nmax* f);
    tr->dh1 = ALLOC(a, float, Nmax* f);
    tr->dslot = ALLOC(a, float, slots* d);
    tr->dgates = ALLOC(a, float, slots);
    tr->dlogits = ALLOC(a, float, Tl* E);
    tr->dxn = ALLOC(a, float, Tl* d);
    tr->dnorm = ALLOC(a, float, Tl* d);
    tr->dh = ALLOC(a, float, 2 * Tl * d);
    tr->grad_leaves = ALLOC(a, float, (long)tr->nleaf * m->n_repl);
    tr->nstat = 1 + L * (E + 1);
    tr->stat_leaves = ALLOC(a, double, (long)tr->nleaf * tr->nstat);
    tr->stat_sum = ALLOC(a, double, tr->nstat);
    tr->expert_sq = ALLOC(a, double, 3L * L * E);
    tr->expert_sq_local = ALLOC(a, double, 3L * L * m->El);
    tr->counts_scratch = ALLOC(a, int, E);
    if (tr->cap > 0) {
        tr->cap_local = ALLOC(a, int, k* E);
        tr->cap_counts = ALLOC(a, int, (long)nranks* k* E);
    }
    if (m->S > 0) {
        tr->sda = ALLOC(a, float, Tl* f);
        tr->sdh0 = ALLOC(a, float, Tl* f);
        tr->sdh1 = ALLOC(a, float, Tl* f);
        tr->sy = ALLOC(a, float, Tl* d);
    }
    tr->idle_steps = ALLOC(a, long, (long)L* E);
    // Pre-packed weights serve alltoallv's whole-group products and alltoallv_chunked's
    // per-chunk ones (and `auto`, which may pick either); ring packs as it goes.
    int kind = c->comm.dispatcher;
    if (c->compute.prepack != CFG_PREPACK_OFF && kind != CFG_DISPATCH_RING) {
        int bwd = c->compute.prepack == CFG_PREPACK_ALL;
        tr->packed = ALLOC(a, gmm_packed_t, L);
        for (int l = 0; l < L; l++) {
            float* mem = ALLOC(a, float, gmm_packed_floats(m->El, d, f, bwd));
            if (tr->packed) gmm_packed_bind(&tr->packed[l], m->El, d, f, bwd, mem);
        }
    }
    dispatch_layout(&tr->disp, c->comm.dispatcher, c->comm.chunks, c->comm.chunk_axis, L, tr->Tl, E,
                    k, nranks, d, Nmax, a);
}

int train_setup(train_t* tr, MPI_Comm comm) {
    const model_t* m = &tr->model;
    long tree = (long)tr->nleaf * (m->n_repl > tr->nstat ? m->n_repl : tr->nstat);
    int rc = comm_init(&tr->comm, comm, m->E, tr->Nmax, m->d, tree);
    for (int l = 0; rc == MPI_SUCCESS && l < m->L; l++)
        rc = comm_route_alloc(&tr->comm, &tr->acts[l].route);
    if (rc != MPI_SUCCESS) return MOED_ERR_OTHER;
    char err[160];
    const cfg_t* c = &tr->cfg;
    if ((rc = dispatch_start(&tr->disp, c->comm.dispatcher, c->comm.progress, c->compute.threads,
                             comm, err, sizeof err))) {
        fprintf(stderr, "moed: error: rank %d: %s\n", tr->rank, err);
        return rc;
    }
    model_init(&tr->model, (uint64_t)tr->cfg.train.seed);
    train_repack(tr);
    tr->step = 0;
    return MOED_OK;
}

void train_repack(train_t* tr) {
    const model_t* m = &tr->model;
    if (!tr->packed) return;
    for (int l = 0; l < m->L; l++) {
        layer_params_t P = model_layer(m, m->w, l);
        gmm_pack(&tr->packed[l], P.w0, P.w1, P.wo);
    }
}

void train_free(train_t* tr) {
    dispatch_stop(&tr->disp);
    for (int l = 0; l < tr->model.L; l++) comm_route_free(&tr->acts[l].route);
    comm_free(&tr->comm);
}

void train_forward(train_t* tr, const float* x) {
    long n = (long)tr->Tl * tr->model.d;
    memcpy(tr->h, x, sizeof(float) * n);
    for (int l = 0; l < tr->model.L; l++) layer_forward(tr, l, tr->h + l * n, tr->h + (l + 1) * n);
}

// Loss statistics of each local leaf: squared error and, per layer, the router's
// probability sums and squared logsumexps.
static void stat_leaves(train_t* tr, const float* y) {
    const model_t* m = &tr->model;
    int d = m->d, E = m->E;
    const float* out = tr->h + (long)m->L * tr->Tl * d;
    for (int j = 0; j < tr->nleaf; j++) {
        long r0 = (long)j * tr->tb;
        double* s = tr->stat_leaves + (long)j * tr->nstat;
        memset(s, 0, sizeof(double) * tr->nstat);
        s[0] = mse_block_sum((long)tr->tb * d, out + r0 * d, y + r0 * d);
        for (int l = 0; l < m->L; l++) {
            const layer_acts_t* A = &tr->acts[l];
            double* sl = s + 1 + (long)l * (E + 1);
            router_stats(&tr->ropt, tr->tb, A->probs + r0 * E, A->lse + r0, sl, sl + E);
        }
    }
}

// Loss and aux terms from the reduced statistics (identical on every rank).
static void loss_from_stats(train_t* tr, step_stats_t* st) {
    const model_t* m = &tr->model;
    int E = m->E, k = m->k;
    double T = tr->T, aux = 0;
    st->imbalance = 0;
    st->dropped = 0;
    for (int l = 0; l < m->L; l++) {
        st->dropped += tr->acts[l].dropped;
        const double* sl = tr->stat_sum + 1 + (long)l * (E + 1);
        const int64_t* load = tr->acts[l].load;
        double sw = 0, mx = 0;
        for (int e = 0; e < E; e++) {
            sw += ((double)load[e] / (T * k)) * (sl[e] / T);
            if (load[e] > mx) mx = (double)load[e];
        }
        aux += tr->cfg.train.aux_loss_coef * E * sw + tr->cfg.train.z_loss_coef * sl[E] / T;
        double imb = mx / (T * k / E);
        if (imb > st->imbalance) st->imbalance = imb;
    }
    st->mse = tr->stat_sum[0] / (T * m->d);
    st->aux = aux;
    st->loss = st->mse + aux;
}

// Global gradient norm: replicated tensors are identical on every rank; expert tensors
// are summed per expert, gathered, and added in global expert order.
static double grad_norm(train_t* tr) {
    const model_t* m = &tr->model;
    double total = 0;
    int ns = 0;
    double* local = tr->expert_sq_local;
    for (int i = 0; i < m->n_params; i++) {
        const param_t* p = &m->params[i];
        if (!p->sharded) {
            total += sumsq(p->numel, m->g + p->offset);
            continue;
        }
        long per = (long)p->rows * p->cols;
        for (int e = 0; e < m->El; e++) {
            local[(long)ns * m->El + e] = sumsq(per, m->g + p->offset + e * per);
        }
        ns++;
    }
    long nloc = (long)ns * m->El;
    MPI_Allgather(local, (int)nloc, MPI_DOUBLE, tr->expert_sq, (int)nloc, MPI_DOUBLE,
                  tr->comm.comm);
    // tr->expert_sq is [P, ns, El]: walk it as (tensor, rank, local expert) = global order
    for (int s = 0; s < ns; s++)
        for (int r = 0; r < tr->nranks; r++)
            for (int e = 0; e < m->El; e++)
                total += tr->expert_sq[(long)r * nloc + (long)s * m->El + e];
    return sqrt(total);
}

static void update_bias(train_t* tr) {
    const model_t* m = &tr->model;
    double rate = tr->cfg.train.bias_update_rate;
    if (rate <= 0) return;
    double mean = (double)tr->T * m->k / m->E;
    for (int l = 0; l < m->L; l++)
        for (int e = 0; e < m->E; e++) {
            double load = (double)tr->acts[l].load[e];
            float sgn = load < mean ? 1.0f : load > mean ? -1.0f : 0.0f;
            m->bias[(long)l * m->E + e] += (float)rate * sgn;
        }
}

int train_grad(train_t* tr, const float* x, const float* y, step_stats_t* st) {
    model_t* m = &tr->model;
    long n = (long)tr->Tl * m->d;
    double t_start = MPI_Wtime();
    tr->t_comm_acc = 0;
    dispatch_reset_times(&tr->disp);
    memset(st, 0, sizeof *st);

    train_forward(tr, x);
    stat_leaves(tr, y);

    float* dcur = tr->dh;
    float* dnext = tr->dh + n;
    mse_backward(n, tr->h + (long)m->L * n, y, (double)tr->T * m->d, dcur);
    for (int l = m->L - 1; l >= 0; l--) {
        layer_backward(tr, l, tr->h + l * n, dcur, dnext);
        float* t = dcur;
        dcur = dnext, dnext = t;
    }
    tr->dx = dcur;

    double t0 = MPI_Wtime();
    comm_tree_sum_d(&tr->comm, tr->stat_leaves, tr->nleaf, tr->nstat, tr->stat_sum);
    comm_tree_sum_f(&tr->comm, tr->grad_leaves, tr->nleaf, m->n_repl, m->g);
    tr->t_comm_acc += MPI_Wtime() - t0;
    loss_from_stats(tr, st);

    t0 = MPI_Wtime();
    st->grad_norm = grad_norm(tr);
    tr->t_comm_acc += MPI_Wtime() - t0;

    // forward + backward (2x forward) of the kept slots, the shared experts and the router
    double kept = (double)tr->T * m->k * m->L - st->dropped;
    st->flops = 3.0 * (gmm_forward_flops(1, m->d, m->f) * (kept + (double)tr->T * m->S * m->L) +
                       2.0 * tr->T * m->d * m->E * m->L);
    st->t_comm = tr->t_comm_acc + tr->disp.t_wait; // exposed: the rank waited on it
    st->t_comm_overlap = dispatch_overlap(&tr->disp);
    st->t_compute = MPI_Wtime() - t_start - st->t_comm;
    return isfinite(st->loss) && isfinite(st->grad_norm) ? MOED_OK : MOED_ERR_NUMERIC;
}

void train_apply(train_t* tr, double lr, step_stats_t* st) {
    model_t* m = &tr->model;
    double t0 = MPI_Wtime();
    float c = clip_factor(st->grad_norm, tr->cfg.train.clip);
    adamw_opts_t o = {lr, tr->cfg.train.beta1, tr->cfg.train.beta2, tr->cfg.train.eps,
                      tr->cfg.train.weight_decay};
    for (int i = 0; i < m->n_params; i++) {
        const param_t* p = &m->params[i];
        if (tr->packed && p->sharded) { // a layer's W0, W1, Wo together, repacked on the way
            if (p->kind != PK_W0) continue;
            layer_params_t P = model_layer(m, m->w, p->layer);
            gmm_adamw_pack(&tr->packed[p->layer], &o, tr->step + 1, p->decay, c, m->w, m->g, m->m,
                           m->v, P.w0 - m->w, P.w1 - m->w, P.wo - m->w);
            continue;
        }
        scale_inplace(p->numel, m->g + p->offset, c);
        adamw_update(&o, tr->step + 1, p->numel, p->decay, m->w + p->offset, m->g + p->offset,
                     m->m + p->offset, m->v + p->offset);
    }
    update_bias(tr);
    for (long i = 0; i < (long)m->L * m->E; i++)
        tr->idle_steps[i] = tr->acts[i / m->E].load[i % m->E] ? 0 : tr->idle_steps[i] + 1;
    tr->step++;
    st->lr = lr;
    st->t_compute += MPI_Wtime() - t0;
}

int train_step(train_t* tr, const float* x, const float* y, double lr, step_stats_t* st) {
    int rc = train_grad(tr, x, y, st);
    if (rc == MOED_OK) train_apply(tr, lr, st);
    return rc;
}
