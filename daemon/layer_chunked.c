// comm.dispatcher = alltoallv_chunked: the dispatch -> experts -> combine part of the layer
// (daemon/layer.c) as a pipeline over C chunks of the local tokens. While chunk c's experts
// compute, the dispatch of chunk c+1 and the combine of chunk c-1 are in flight
// (MPI_Ialltoallv, progressed between sgemm tiles by dispatch_sgemm).
//
// Bit-identical to alltoallv: expert-side rows land in the same (local expert, source,
// token) layout (comm/chunked.h); the row-wise products (gmm forward, da, dx) do not depend
// on which other rows share a call; and the weight gradients, which sum over tokens, run
// once per expert over its whole group after the last chunk, in global token order.
#include "compute/permute.h"
#include "daemon/layer_alt.h"

// One block of rows of a local expert: chunk c's rows from source p for local expert e.
typedef struct {
    int e;   // local expert
    long r0; // first expert-side row
    long n;  // rows
} run_t;

static run_t chunk_run(const train_t* tr, const comm_chunks_t* ch, int c, int p, int e) {
    int P = tr->nranks, El = tr->model.El, C = ch->C;
    return (run_t){e, ch->fpos[((long)c * P + p) * El + e],
                   ch->recv_ec[((long)p * C + c) * El + e]};
}

static void run_forward(train_t* tr, int l, run_t r) {
    expert_rows_forward(tr, l, r.e, r.r0, r.n, tr->ye);
}

static void run_backward(train_t* tr, int l, run_t r) {
    expert_rows_backward(tr, l, r.e, r.r0, r.n);
}

// The pipeline shared by forward and backward: dispatch `send` rows chunk by chunk into
// `rows` (expert side), run `step` on each chunk's runs, combine `out` rows back into `back`.
// Request slot c is chunk c's dispatch, C + c its combine.
static void pipeline(train_t* tr, int l, const float* send, float* rows, const float* out,
                     float* back, void (*step)(train_t*, int, run_t)) {
    dispatch_t* ds = &tr->disp;
    comm_chunks_t* ch = &ds->chunks[l];
    comm_ctx_t* cx = &tr->comm;
    float* stage = cx->row_scratch; // [n_recv, d]: chunk c's rows at recv_off[c]
    int C = ch->C, P = tr->nranks, El = tr->model.El, d = tr->model.d;
    comm_chunk_dispatch_start(cx, ch, 0, send, stage, d, &ds->reqs[0]);
    dispatch_started(ds, 0);
    for (int c = 0; c < C; c++) {
        if (c + 1 < C) {
            comm_chunk_dispatch_start(cx, ch, c + 1, send, stage, d, &ds->reqs[c + 1]);
            dispatch_started(ds, c + 1);
        }
        dispatch_wait(ds, c);
        comm_chunk_unpack(cx, ch, c, stage, rows, d);
        for (int e = 0; e < El; e++)
            for (int p = 0; p < P; p++) {
                run_t r = chunk_run(tr, ch, c, p, e);
                if (r.n > 0) step(tr, l, r);
            }
        // Chunk c's staging rows were consumed by the unpack: they carry its combine.
        comm_chunk_pack(cx, ch, c, out, stage, d);
        comm_chunk_combine_start(cx, ch, c, stage, back, d, &ds->reqs[C + c]);
        dispatch_started(ds, C + c);
    }
}

static void wait_combines(train_t* tr, int C) {
    for (int c = 0; c < C; c++) dispatch_wait(&tr->disp, C + c);
}

void layer_chunked_forward(train_t* tr, int l, float* out) {
    const model_t* m = &tr->model;
    layer_acts_t* A = &tr->acts[l];
    comm_chunks_t* ch = &tr->disp.chunks[l];
    int Tl = tr->Tl, d = m->d, k = m->k;
    comm_chunk_plan(ch, Tl, k, m->E, A->sel, A->slot_pos);
    double t0 = MPI_Wtime();
    comm_chunk_counts(&tr->comm, ch, &A->route);
    tr->t_comm_acc += MPI_Wtime() - t0;
    permute_rows(Tl, k, d, A->slot_pos, A->xn, tr->xs);
    pipeline(tr, l, tr->xs, A->xe, tr->ye, A->yslot, run_forward);
    wait_combines(tr, ch->C);
    unpermute_forward(Tl, k, d, A->slot_pos, A->gates, A->yslot, out);
}

void layer_chunked_backward(train_t* tr, int l, const float* dout) {
    const model_t* m = &tr->model;
    layer_acts_t* A = &tr->acts[l];
    int Tl = tr->Tl, d = m->d, k = m->k;
    unpermute_backward(Tl, k, d, A->slot_pos, A->gates, A->yslot, dout, tr->dgates, tr->dslot);
    pipeline(tr, l, tr->dslot, tr->ye, tr->de, tr->dslot, run_backward);
    // The last combines travel while the weight gradients compute.
    expert_weights_backward(tr, l);
    wait_combines(tr, tr->disp.chunks[l].C);
    permute_rows_backward(Tl, k, d, A->slot_pos, tr->dslot, tr->dxn);
}
