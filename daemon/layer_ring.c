// comm.dispatcher = ring: the ring of experts. Every rank sees every token: routing is
// all-gathered, token rows travel round the ring one rank's block per step (chunk_axis =
// tokens) or are all-gathered in slices of d_model (chunk_axis = embed); each rank runs its
// own experts on every token routed to them and sends each token block's partial output
// (sum over the token's slots on this rank's experts) to the block's owner, which sums the
// P partials in rank order: a reduce-scatter by pairwise messages, posted as soon as a
// block is done, so it overlaps the remaining compute. Backward transposes it: output
// gradients travel like the tokens did, partial input gradients (and the gate gradients)
// come back the same way.
//
// Expert groups hold their rows in global token order, as with alltoallv, so the expert
// outputs, gate gradients and weight gradients (given the same layer inputs and output
// gradients) are bit-identical to alltoallv on the tokens axis;
// only the sum over a token's k slots is split by rank and so reordered. Results match
// alltoallv within ~1e-6 relative and are bit-identical run to run at a fixed P (and to
// alltoallv at P = 1 on the tokens axis). The embed axis also splits gmm_up's (and da's)
// inner sum by slice.
#include <string.h>

#include "compute/kernels/kernels.h"
#include "daemon/layer_alt.h"

enum { TAG_RING = 0x7a1, TAG_PART = 0x7a2 };
// Request slots: 0 ring send, 1 ring receive (embed: the two slices in flight), then the
// partials: 2 + p receive from rank p, 2 + P + p send to rank p.
enum { REQ_SEND = 0, REQ_RECV = 1, REQ_PART = 2 };

// All-gathers routing and lays out the expert side: local expert e's group is every slot
// routed to it in global token order, so block b's rows for e are contiguous at pos[b, e].
static void ring_route(train_t* tr, int l) {
    const model_t* m = &tr->model;
    layer_acts_t* A = &tr->acts[l];
    ring_layer_t* R = &tr->disp.ring[l];
    int P = tr->nranks, El = m->El, k = m->k, e0 = m->e0;
    long Tk = (long)tr->Tl * k, T = tr->T;
    for (long s = 0; s < Tk; s++) {
        R->sel[tr->t0 * (long)k + s] = A->slot_pos[s] >= 0 ? A->sel[s] : -1;
        R->gates[tr->t0 * (long)k + s] = A->gates[s];
    }
    double t0 = MPI_Wtime();
    MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, R->sel, (int)Tk, MPI_INT, tr->comm.comm);
    MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, R->gates, (int)Tk, MPI_FLOAT, tr->comm.comm);
    tr->t_comm_acc += MPI_Wtime() - t0;

    memset(R->cnt, 0, sizeof(int) * P * El);
    for (long s = 0; s < T * k; s++) {
        int e = R->sel[s] - e0;
        if (e >= 0 && e < El) R->cnt[(s / Tk) * El + e]++;
    }
    int* off = A->route.expert_offsets;
    int* next = tr->comm.int_scratch; // [El]
    long row = 0;
    for (int e = 0; e < El; e++) {
        off[e] = (int)row, next[e] = (int)row;
        A->route.expert_counts[e] = 0;
        for (int b = 0; b < P; b++) {
            R->pos[b * El + e] = (int)row;
            row += R->cnt[b * El + e];
            A->route.expert_counts[e] += R->cnt[b * El + e];
        }
    }
    off[El] = (int)row;
    A->route.n_recv = row;
    for (long s = 0; s < T * k; s++) {
        int e = R->sel[s] - e0;
        R->row[s] = e >= 0 && e < El ? next[e]++ : -1;
    }
}

// Request slot i was just posted (rc: the posting call's status).
static void post(dispatch_t* ds, int i, int rc) {
    (void)rc; // as layer.c, exchange errors are not reported mid-step
    dispatch_started(ds, i);
}

// Receives of the P - 1 partials this rank's tokens get, `w` floats per token.
static void post_partial_recvs(train_t* tr, int w) {
    dispatch_t* ds = &tr->disp;
    long n = (long)tr->Tl * w;
    for (int p = 0; p < tr->nranks; p++)
        if (p != tr->rank)
            post(ds, REQ_PART + p,
                 MPI_Irecv(ds->precv + p * n, (int)n, MPI_FLOAT, p, TAG_PART, tr->comm.comm,
                           &ds->reqs[REQ_PART + p]));
}

// Block b's partial is complete in psend[b]: send it to its owner (the own one stays).
static void send_partial(train_t* tr, int b, int w) {
    dispatch_t* ds = &tr->disp;
    if (b == tr->rank) return;
    long n = (long)tr->Tl * w;
    post(ds, REQ_PART + tr->nranks + b,
         MPI_Isend(ds->psend + b * n, (int)n, MPI_FLOAT, b, TAG_PART, tr->comm.comm,
                   &ds->reqs[REQ_PART + tr->nranks + b]));
}

// out[t, :w] = sum over ranks p in order of the partials (own one from psend).
static void sum_partials(train_t* tr, int w, float* out, int ldo, float* extra, int wx) {
    dispatch_t* ds = &tr->disp;
    int P = tr->nranks, Tl = tr->Tl, W = w + wx;
    for (int i = 0; i < 2 * P; i++) dispatch_wait(ds, REQ_PART + i);
    long n = (long)Tl * W;
    for (int t = 0; t < Tl; t++) {
        float* o = out + (long)t * ldo;
        float* x = extra ? extra + (long)t * wx : NULL;
        for (int p = 0; p < P; p++) {
            const float* src = (p == tr->rank ? ds->psend : ds->precv) + p * n + (long)t * W;
            if (p == 0) {
                memcpy(o, src, sizeof(float) * w);
                if (x) memcpy(x, src + w, sizeof(float) * wx);
                continue;
            }
            for (int j = 0; j < w; j++) o[j] += src[j];
            for (int j = 0; j < wx; j++) x[j] += src[w + j];
        }
    }
}

// Expert-side rows of block b get x's rows (or a slice of columns [c0, c0 + w) of them,
// x then being [Tl, w]).
static void scatter_rows(train_t* tr, int l, int b, const float* x, int c0, int w) {
    const ring_layer_t* R = &tr->disp.ring[l];
    int k = tr->model.k, d = tr->model.d;
    float* xe = tr->acts[l].xe;
    for (long t = 0; t < tr->Tl; t++)
        for (int i = 0; i < k; i++) {
            int row = R->row[((long)b * tr->Tl + t) * k + i];
            if (row >= 0) memcpy(xe + (long)row * d + c0, x + t * w, sizeof(float) * w);
        }
}

// Block b's forward partial: psend[b][t] = sum over the token's local slots, in slot order,
// of gate * expert output (as unpermute_forward, restricted to this rank's experts).
static void partial_forward(train_t* tr, int l, int b) {
    const ring_layer_t* R = &tr->disp.ring[l];
    int k = tr->model.k, d = tr->model.d;
    float* ps = tr->disp.psend + (long)b * tr->Tl * d;
    for (long t = 0; t < tr->Tl; t++) {
        float* o = ps + t * d;
        memset(o, 0, sizeof(float) * d);
        for (int i = 0; i < k; i++) {
            long s = ((long)b * tr->Tl + t) * k + i;
            if (R->row[s] < 0) continue;
            float g = R->gates[s];
            const float* y = R->ye + (long)R->row[s] * d;
            for (int j = 0; j < d; j++) o[j] += g * y[j];
        }
    }
}

// Ring step s of the tokens axis: the block rank r holds is rank (r - s)'s; it forwards it
// to r + 1 and receives the next from r - 1. Returns the block's rows; `own` is step 0's.
static const float* ring_advance(train_t* tr, int s, const float* cur, const float* own) {
    dispatch_t* ds = &tr->disp;
    int P = tr->nranks, r = tr->rank;
    long n = (long)tr->Tl * tr->model.d;
    if (s == 0) cur = own;
    if (s + 1 < P) {
        float* next = ds->xbuf + ((s + 1) % 2) * n;
        dispatch_wait(ds, REQ_SEND); // step s-1 sent from the buffer `next` is about to take
        post(ds, REQ_RECV,
             MPI_Irecv(next, (int)n, MPI_FLOAT, (r - 1 + P) % P, TAG_RING, tr->comm.comm,
                       &ds->reqs[REQ_RECV]));
        post(ds, REQ_SEND,
             MPI_Isend(cur, (int)n, MPI_FLOAT, (r + 1) % P, TAG_RING, tr->comm.comm,
                       &ds->reqs[REQ_SEND]));
    }
    return cur;
}

static void ring_tokens_forward(train_t* tr, int l) {
    const model_t* m = &tr->model;
    ring_layer_t* R = &tr->disp.ring[l];
    int P = tr->nranks, r = tr->rank, El = m->El;
    const float* blk = NULL;
    for (int s = 0; s < P; s++) {
        int b = (r - s + P) % P;
        blk = ring_advance(tr, s, blk, tr->acts[l].xn);
        scatter_rows(tr, l, b, blk, 0, m->d);
        for (int e = 0; e < El; e++)
            if (R->cnt[b * El + e] > 0)
                expert_rows_forward(tr, l, e, R->pos[b * El + e], R->cnt[b * El + e], R->ye);
        partial_forward(tr, l, b);
        send_partial(tr, b, m->d);
        if (s + 1 < P) {
            dispatch_wait(&tr->disp, REQ_RECV);
            blk = tr->disp.xbuf + ((s + 1) % 2) * (long)tr->Tl * m->d;
        }
    }
    dispatch_wait(&tr->disp, REQ_SEND);
}

// Embed axis: slice j of d_model is columns [j*d/C, (j+1)*d/C).
static int slice_col(int d, int C, int j) { return (int)((long)j * d / C); }

// Starts the all-gather of slice j of `src` ([Tl, d]) into slice_recv[j % 2] ([T, w]).
static void slice_start(train_t* tr, const float* src, int j) {
    dispatch_t* ds = &tr->disp;
    int d = tr->model.d, C = ds->C, Tl = tr->Tl;
    int c0 = slice_col(d, C, j), w = slice_col(d, C, j + 1) - c0;
    long wmax = (d + C - 1) / C;
    float* pack = ds->slice_send + (j % 2) * (long)Tl * wmax;
    for (long t = 0; t < Tl; t++) memcpy(pack + t * w, src + t * d + c0, sizeof(float) * w);
    post(ds, j % 2,
         MPI_Iallgather(pack, Tl * w, MPI_FLOAT, ds->slice_recv + (j % 2) * tr->T * wmax, Tl * w,
                        MPI_FLOAT, tr->comm.comm, &ds->reqs[j % 2]));
}

static const float* slice_wait(train_t* tr, int j) {
    dispatch_t* ds = &tr->disp;
    dispatch_wait(ds, j % 2);
    long wmax = (tr->model.d + ds->C - 1) / ds->C;
    return ds->slice_recv + (j % 2) * tr->T * wmax;
}

static void ring_embed_forward(train_t* tr, int l) {
    const model_t* m = &tr->model;
    layer_acts_t* A = &tr->acts[l];
    layer_params_t W = model_layer(m, m->w, l);
    ring_layer_t* R = &tr->disp.ring[l];
    dispatch_t* ds = &tr->disp;
    int P = tr->nranks, El = m->El, d = m->d, f = m->f, C = ds->C, Tl = tr->Tl;
    const int* off = A->route.expert_offsets;
    slice_start(tr, A->xn, 0);
    for (int j = 0; j < C; j++) {
        if (j + 1 < C) slice_start(tr, A->xn, j + 1);
        const float* sl = slice_wait(tr, j);
        int c0 = slice_col(d, C, j), w = slice_col(d, C, j + 1) - c0;
        for (int b = 0; b < P; b++) scatter_rows(tr, l, b, sl + (long)b * Tl * w, c0, w);
        // h += x[:, slice] · W[slice, :], one product per expert group and slice
        for (int e = 0; e < El; e++) {
            long r0 = off[e], n = off[e + 1] - r0;
            const float* x = A->xe + r0 * d + c0;
            long wo = (long)e * d * f + (long)c0 * f;
            dispatch_sgemm(ds, n, f, w, x, d, 1, W.w0 + wo, f, 1, A->h0 + r0 * f, f, j > 0);
            dispatch_sgemm(ds, n, f, w, x, d, 1, W.w1 + wo, f, 1, A->h1 + r0 * f, f, j > 0);
        }
    }
    kern->swiglu_fwd((long)off[El] * f, A->h0, A->h1, A->a);
    // gmm_down block by block, the other ranks' blocks first, so their partials travel
    // while the rest computes.
    for (int s = 1; s <= P; s++) {
        int b = (tr->rank + s) % P;
        for (int e = 0; e < El; e++) {
            long r0 = R->pos[b * El + e], n = R->cnt[b * El + e];
            dispatch_sgemm(ds, n, d, f, A->a + r0 * f, f, 1, W.wo + (long)e * f * d, d, 1,
                           R->ye + r0 * d, d, 0);
        }
        partial_forward(tr, l, b);
        send_partial(tr, b, d);
    }
}

void layer_ring_forward(train_t* tr, int l, float* out) {
    ring_route(tr, l);
    post_partial_recvs(tr, tr->model.d);
    if (tr->disp.axis == CFG_CHUNK_EMBED)
        ring_embed_forward(tr, l);
    else
        ring_tokens_forward(tr, l);
    sum_partials(tr, tr->model.d, out, tr->model.d, NULL, 0);
}

// ---- backward ----

// dy rows and gate-gradient dots of block b from its output gradients g_out ([Tl, w], the
// columns [c0, c0 + w)); dots accumulate in dg (double, in column order: the same sum as
// unpermute_backward's when the slices come in order).
static void dy_rows(train_t* tr, int l, int b, const float* g_out, int c0, int w, double* dg) {
    const ring_layer_t* R = &tr->disp.ring[l];
    int k = tr->model.k, d = tr->model.d;
    for (long t = 0; t < tr->Tl; t++)
        for (int i = 0; i < k; i++) {
            long s = ((long)b * tr->Tl + t) * k + i;
            int row = R->row[s];
            if (row < 0) continue;
            const float* go = g_out + t * w;
            const float* y = R->ye + (long)row * d + c0;
            float* dy = tr->ye + (long)row * d + c0;
            float g = R->gates[s];
            double dot = dg[row];
            for (int j = 0; j < w; j++) {
                dot += (double)go[j] * y[j];
                dy[j] = g * go[j];
            }
            dg[row] = dot;
        }
}

// Block b's backward partial, [Tl, d + k] per token: the sum of dx over the token's local
// slots (in slot order, as permute_rows_backward) and the gate gradients of its local
// slots (zero elsewhere; exactly one rank contributes each, so the sum is exact).
static void partial_backward(train_t* tr, int l, int b, const double* dg) {
    const ring_layer_t* R = &tr->disp.ring[l];
    int k = tr->model.k, d = tr->model.d, W = d + k;
    float* ps = tr->disp.psend + (long)b * tr->Tl * W;
    for (long t = 0; t < tr->Tl; t++) {
        float* o = ps + t * W;
        memset(o, 0, sizeof(float) * W);
        for (int i = 0; i < k; i++) {
            int row = R->row[((long)b * tr->Tl + t) * k + i];
            if (row < 0) continue;
            const float* dx = tr->de + (long)row * d;
            for (int j = 0; j < d; j++) o[j] += dx[j];
            o[d + i] = (float)dg[row];
        }
    }
}

// Zeroes the gate-gradient accumulators of block b's rows.
static void dg_clear(train_t* tr, int l, int b) {
    const ring_layer_t* R = &tr->disp.ring[l];
    int El = tr->model.El;
    for (int e = 0; e < El; e++)
        memset(tr->disp.dg_acc + R->pos[b * El + e], 0, sizeof(double) * R->cnt[b * El + e]);
}

static void ring_tokens_backward(train_t* tr, int l, const float* dout) {
    const model_t* m = &tr->model;
    ring_layer_t* R = &tr->disp.ring[l];
    int P = tr->nranks, r = tr->rank, El = m->El, d = m->d;
    const float* blk = NULL;
    for (int s = 0; s < P; s++) {
        int b = (r - s + P) % P;
        blk = ring_advance(tr, s, blk, dout);
        dg_clear(tr, l, b);
        dy_rows(tr, l, b, blk, 0, d, tr->disp.dg_acc);
        for (int e = 0; e < El; e++)
            if (R->cnt[b * El + e] > 0)
                expert_rows_backward(tr, l, e, R->pos[b * El + e], R->cnt[b * El + e]);
        partial_backward(tr, l, b, tr->disp.dg_acc);
        send_partial(tr, b, d + m->k);
        if (s + 1 < P) {
            dispatch_wait(&tr->disp, REQ_RECV);
            blk = tr->disp.xbuf + ((s + 1) % 2) * (long)tr->Tl * d;
        }
    }
    dispatch_wait(&tr->disp, REQ_SEND);
}

static void ring_embed_backward(train_t* tr, int l, const float* dout) {
    const model_t* m = &tr->model;
    layer_acts_t* A = &tr->acts[l];
    layer_params_t W = model_layer(m, m->w, l);
    ring_layer_t* R = &tr->disp.ring[l];
    dispatch_t* ds = &tr->disp;
    int P = tr->nranks, El = m->El, d = m->d, f = m->f, C = ds->C, Tl = tr->Tl;
    const int* off = A->route.expert_offsets;
    for (int b = 0; b < P; b++) dg_clear(tr, l, b);
    slice_start(tr, dout, 0);
    for (int j = 0; j < C; j++) {
        if (j + 1 < C) slice_start(tr, dout, j + 1);
        const float* sl = slice_wait(tr, j);
        int c0 = slice_col(d, C, j), w = slice_col(d, C, j + 1) - c0;
        for (int b = 0; b < P; b++) dy_rows(tr, l, b, sl + (long)b * Tl * w, c0, w, ds->dg_acc);
        // da += dy[:, slice] · Wo[:, slice]ᵀ, one product per expert group and slice
        for (int e = 0; e < El; e++) {
            long r0 = off[e], n = off[e + 1] - r0;
            dispatch_sgemm(ds, n, f, w, tr->ye + r0 * d + c0, d, 1, W.wo + (long)e * f * d + c0, 1,
                           d, tr->da + r0 * f, f, j > 0);
        }
    }
    for (int s = 1; s <= P; s++) {
        int b = (tr->rank + s) % P;
        for (int e = 0; e < El; e++)
            if (R->cnt[b * El + e] > 0)
                expert_rows_backward_dx(tr, l, e, R->pos[b * El + e], R->cnt[b * El + e]);
        partial_backward(tr, l, b, ds->dg_acc);
        send_partial(tr, b, d + m->k);
    }
}

void layer_ring_backward(train_t* tr, int l, const float* dout) {
    int d = tr->model.d, k = tr->model.k;
    post_partial_recvs(tr, d + k);
    if (tr->disp.axis == CFG_CHUNK_EMBED)
        ring_embed_backward(tr, l, dout);
    else
        ring_tokens_backward(tr, l, dout);
    // The partials travel while the weight gradients compute.
    expert_weights_backward(tr, l);
    sum_partials(tr, d, tr->dxn, d, tr->dgates, k);
}
