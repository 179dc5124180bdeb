// One MoE layer as a pipeline of stages: norm -> route (with capacity) -> dispatch -> gmm_up
// -> gmm_down -> combine -> unpermute -> + shared experts (+ residual), and the same stages in
// reverse for backward. Dispatchers other than alltoallv replace dispatch .. unpermute
// (daemon/layer_alt.h); everything around it is common to all of them.
#include <string.h>

#include "compute/capacity.h"
#include "compute/gmm.h"
#include "compute/kernels/kernels.h"
#include "compute/permute.h"
#include "compute/rmsnorm.h"
#include "daemon/layer_alt.h"

// Wall time spent inside communication, for the progress line's comm share.
#define TIMED_COMM(tr, call)                                                                       \
    do {                                                                                           \
        double t_ = MPI_Wtime();                                                                   \
        call;                                                                                      \
        (tr)->t_comm_acc += MPI_Wtime() - t_;                                                      \
    } while (0)

// Global per-expert loads (before dropping: they feed the aux loss, the bias update and the
// metrics) and, with a capacity, the slots this rank keeps. Loads are integers, so an MPI
// sum is exact and P-independent; capacity needs every rank's per-choice counts instead.
static void route_capacity_and_loads(train_t* tr, layer_acts_t* A) {
    const model_t* m = &tr->model;
    int Tl = tr->Tl, E = m->E, k = m->k;
    if (tr->cap > 0) {
        capacity_count(Tl, k, E, A->sel, tr->cap_local);
        TIMED_COMM(tr, MPI_Allgather(tr->cap_local, k * E, MPI_INT, tr->cap_counts, k * E, MPI_INT,
                                     tr->comm.comm));
        capacity_keep(Tl, k, E, A->sel, tr->cap_counts, tr->rank, tr->nranks, tr->cap, A->kept);
        A->dropped = capacity_loads(k, E, tr->cap_counts, tr->nranks, tr->cap, A->load);
        return;
    }
    for (int e = 0; e < E; e++) tr->counts_scratch[e] = 0;
    for (long s = 0; s < (long)Tl * k; s++) tr->counts_scratch[A->sel[s]]++;
    TIMED_COMM(tr,
               MPI_Allreduce(MPI_IN_PLACE, tr->counts_scratch, E, MPI_INT, MPI_SUM, tr->comm.comm));
    for (int e = 0; e < E; e++) A->load[e] = tr->counts_scratch[e];
    A->dropped = 0;
}

void layer_forward(train_t* tr, int l, const float* hin, float* hout) {
    const model_t* m = &tr->model;
    layer_acts_t* A = &tr->acts[l];
    layer_params_t P = model_layer(m, m->w, l);
    int Tl = tr->Tl, d = m->d, E = m->E, k = m->k;

    if (m->residual)
        rmsnorm_forward(Tl, d, hin, P.scale, A->xn, A->rinv);
    else
        memcpy(A->xn, hin, sizeof(float) * Tl * d);

    // route
    kern->sgemm(Tl, E, d, A->xn, d, 1, P.wr, E, 1, A->logits, E, 0);
    router_forward(&tr->ropt, Tl, A->logits, m->bias + (long)l * E, A->probs, A->lse, A->sel,
                   A->gates);
    route_capacity_and_loads(tr, A);
    // dropped slots get slot_pos -1: no row in any dispatcher
    permute_plan(Tl, k, E, tr->cap > 0 ? A->kept : A->sel, A->route.send_expert_counts,
                 A->slot_pos);
    if (tr->disp.kind != CFG_DISPATCH_ALLTOALLV) { // dispatch .. unpermute, other strategies
        if (tr->disp.kind == CFG_DISPATCH_RING)
            layer_ring_forward(tr, l, hout);
        else
            layer_chunked_forward(tr, l, hout);
        goto shared;
    }
    TIMED_COMM(tr, comm_exchange_counts(&tr->comm, &A->route));

    // dispatch: token rows packed (tr->xs) and exchanged in one call, no permuted copy first
    TIMED_COMM(tr, comm_dispatch_tokens(&tr->comm, &A->route, Tl, k, A->slot_pos, A->xn, tr->xs,
                                        A->xe, d));

    // experts
    gmm_shape_t gs = {m->El, A->route.expert_offsets, d, m->f, tr->packed ? &tr->packed[l] : NULL};
    gmm_up_forward(&gs, A->xe, P.w0, P.w1, A->h0, A->h1, A->a);
    gmm_down_forward(&gs, A->a, P.wo, tr->ye);

    // combine, unpermute, residual
    TIMED_COMM(tr, comm_combine(&tr->comm, &A->route, tr->ye, A->yslot, d));
    unpermute_forward(Tl, k, d, A->slot_pos, A->gates, A->yslot, hout);
shared:
    shared_forward(tr, l, A->xn, hout);
    if (m->residual)
        for (long i = 0; i < (long)Tl * d; i++) hout[i] = hin[i] + hout[i];
}

void layer_backward(train_t* tr, int l, const float* hin, const float* dout, float* din) {
    model_t* m = &tr->model;
    layer_acts_t* A = &tr->acts[l];
    layer_params_t P = model_layer(m, m->w, l);
    layer_params_t G = model_layer(m, m->g, l);
    int Tl = tr->Tl, d = m->d, E = m->E, k = m->k, f = m->f;

    if (tr->disp.kind != CFG_DISPATCH_ALLTOALLV) { // unpermute .. permute backward
        if (tr->disp.kind == CFG_DISPATCH_RING)
            layer_ring_backward(tr, l, dout);
        else
            layer_chunked_backward(tr, l, dout);
        goto router;
    }
    // unpermute: gate gradients and per-slot output gradients
    unpermute_backward(Tl, k, d, A->slot_pos, A->gates, A->yslot, dout, tr->dgates, tr->dslot);
    TIMED_COMM(tr, comm_dispatch(&tr->comm, &A->route, tr->dslot, tr->ye, d));

    // experts
    gmm_shape_t gs = {m->El, A->route.expert_offsets, d, f, tr->packed ? &tr->packed[l] : NULL};
    gmm_down_backward(&gs, A->a, P.wo, tr->ye, tr->da, G.wo);
    gmm_up_backward(&gs, A->xe, P.w0, P.w1, A->h0, A->h1, tr->da, tr->dh0, tr->dh1, tr->de, G.w0,
                    G.w1);
    TIMED_COMM(tr, comm_combine(&tr->comm, &A->route, tr->de, tr->dslot, d));
    permute_rows_backward(Tl, k, d, A->slot_pos, tr->dslot, tr->dxn);

router:
    shared_backward(tr, l, A->xn, dout, tr->dxn);
    // router: dlogits, then its share of dxn and the leaf partials of dWr
    double frac[4096]; // [E] global load fractions f_e (E <= 4096, validated)
    for (int e = 0; e < E; e++) frac[e] = (double)A->load[e] / ((double)tr->T * k);
    router_backward(&tr->ropt, Tl, A->logits, A->probs, A->lse, A->sel, tr->dgates, frac,
                    tr->cfg.train.aux_loss_coef, tr->cfg.train.z_loss_coef, tr->T, tr->dlogits);
    kern->sgemm(Tl, d, E, tr->dlogits, E, 1, P.wr, 1, E, tr->dxn, d, 1);
    long wr_off = P.wr - m->w;
    for (int j = 0; j < tr->nleaf; j++) {
        long r0 = (long)j * tr->tb;
        float* leaf = tr->grad_leaves + (long)j * m->n_repl;
        kern->sgemm(d, E, tr->tb, A->xn + r0 * d, 1, d, tr->dlogits + r0 * E, E, 1, leaf + wr_off,
                    E, 0);
    }

    if (!m->residual) {
        memcpy(din, tr->dxn, sizeof(float) * Tl * d);
        return;
    }
    long sc_off = P.scale - m->w;
    for (int j = 0; j < tr->nleaf; j++) {
        long r0 = (long)j * tr->tb;
        rmsnorm_dscale(tr->tb, d, hin + r0 * d, A->rinv + r0, tr->dxn + r0 * d,
                       tr->grad_leaves + (long)j * m->n_repl + sc_off);
    }
    rmsnorm_backward(Tl, d, hin, P.scale, A->rinv, tr->dxn, tr->dnorm);
    for (long i = 0; i < (long)Tl * d; i++) din[i] = dout[i] + tr->dnorm[i];
}
