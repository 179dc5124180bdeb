// Count exchange (MPI_Alltoall), dispatch (token side -> expert side) and combine (the way
// back). Rows travel as one datatype of `width` floats, so counts are row counts (< 2^31)
// even when the bytes moved exceed 2^31.
//
// Dispatch and combine are point-to-point: one message per nonempty (rank pair, local
// expert) block, received straight into (or sent straight from) its place in the expert
// layout, so no reorder pass runs on either side (an MPI_Alltoallv delivers (source, expert)
// order and needed a memcpy pass to (expert, source) order each way). Rows a rank routes to
// its own experts never enter MPI: one memcpy per expert block, or, for
// comm_dispatch_tokens, one copy straight from the token rows. MPI derived datatypes
// (MPI_Alltoallw with indexed types) would express the same layouts, but MPICH 4.0 packs
// them through its datatype engine far slower than the memcpy passes they replace (2-5.5x
// raw MPI_Alltoallv at P = 2, `moed-bench comm`, docs/performance.md), and they would be
// created and freed every step.
#include <limits.h>
#include <string.h>

#include "comm/comm.h"

int comm_route_totals(const comm_ctx_t* ctx, comm_route_t* route) {
    int P = ctx->nranks, El = ctx->experts_per_rank;
    // Sums run in long: MPI takes int counts and displacements (in rows), so a total past
    // INT_MAX rows is an error rather than a silent wrap.
    int bad = 0;
    long n_send = 0;
    for (int q = 0; q < P; q++) {
        long rows = 0;
        for (int e = 0; e < El; e++) {
            int c = route->send_expert_counts[q * El + e];
            if (c < 0) bad = 1;
            rows += c;
        }
        route->send_displs[q] = (int)(n_send <= INT_MAX ? n_send : 0);
        route->send_counts[q] = (int)(rows <= INT_MAX && rows >= 0 ? rows : 0);
        n_send += rows;
    }
    long n_recv = 0;
    for (int p = 0; p < P; p++) {
        long rows = 0;
        for (int e = 0; e < El; e++) {
            int c = route->recv_expert_counts[p * El + e];
            if (c < 0) bad = 1;
            rows += c;
        }
        route->recv_displs[p] = (int)(n_recv <= INT_MAX ? n_recv : 0);
        route->recv_counts[p] = (int)(rows <= INT_MAX && rows >= 0 ? rows : 0);
        n_recv += rows;
    }
    if (n_send > INT_MAX || n_recv > INT_MAX || n_recv > ctx->max_rows) bad = 1;
    // Group sizes of the local experts (summed over sources) and their start rows.
    long offset = 0;
    for (int e = 0; e < El; e++) {
        long rows = 0;
        for (int p = 0; p < P; p++) rows += route->recv_expert_counts[p * El + e];
        route->expert_offsets[e] = (int)(offset <= INT_MAX ? offset : 0);
        route->expert_counts[e] = (int)(rows <= INT_MAX && rows >= 0 ? rows : 0);
        offset += rows;
    }
    route->expert_offsets[El] = (int)(offset <= INT_MAX ? offset : 0);
    route->n_send = n_send;
    route->n_recv = n_recv;
    return bad;
}

int comm_exchange_counts(comm_ctx_t* ctx, comm_route_t* route) {
    int El = ctx->experts_per_rank;
    // Rank r sends rank q the El counts of q's experts: send_expert_counts is [P, El] when
    // read by destination, and recv_expert_counts comes back as [P sources, El].
    int rc = MPI_Alltoall(route->send_expert_counts, El, MPI_INT, route->recv_expert_counts, El,
                          MPI_INT, ctx->comm);
    if (rc != MPI_SUCCESS) return rc;
    int bad = comm_route_totals(ctx, route);

    // A bad route may show on one rank only (it is that rank's receive side); agreeing here
    // makes every rank return the error instead of some of them entering the Alltoallv.
    int any_bad;
    rc = MPI_Allreduce(&bad, &any_bad, 1, MPI_INT, MPI_MAX, ctx->comm);
    if (rc != MPI_SUCCESS) return rc;
    return any_bad ? MPI_ERR_COUNT : MPI_SUCCESS;
}

// MPI tag of the block for local expert e (one message per pair and expert per exchange;
// the ring dispatcher's tags, 0x7a1 and 0x7a2, lie below this range).
enum { TAG_BLOCK = 0x2000 };

// Bytes of `rows` rows of `width` floats, as size_t: the product overflows int long before
// it overflows size_t.
static inline size_t row_bytes(long rows, int width) {
    return (size_t)rows * (size_t)width * sizeof(float);
}

// Start row of every (source p, local expert e) block in the expert layout (local expert,
// source, token): expert_offsets[e] + rows of e from sources before p. Returns
// ctx->int_scratch, [P, El].
static int* expert_block_rows(comm_ctx_t* ctx, const comm_route_t* route) {
    int P = ctx->nranks, El = ctx->experts_per_rank;
    int* start = ctx->int_scratch;
    for (int e = 0; e < El; e++) {
        int row = route->expert_offsets[e];
        for (int p = 0; p < P; p++) {
            start[p * El + e] = row;
            row += route->recv_expert_counts[p * El + e];
        }
    }
    return start;
}

// One exchange in flight: posted requests and the first error, if any. A failed post does
// not stop the others (the peers wait for every block they were promised), so the call
// always ends waiting for every posted block and returns the first error.
typedef struct {
    MPI_Request* reqs; // [2 * P * El]
    int n, rc;
} flight_t;

static void post(flight_t* f, int rc) {
    if (rc != MPI_SUCCESS && f->rc == MPI_SUCCESS) f->rc = rc;
    if (rc == MPI_SUCCESS) f->n++;
}

// MPI_Wait in turn rather than MPI_Waitall(..., MPI_STATUSES_IGNORE), which gcc 12's
// access checks misread as writing a zero-sized array; every wait progresses all blocks.
static int land(flight_t* f) {
    int rc = MPI_SUCCESS;
    for (int i = 0; i < f->n; i++) {
        int w = MPI_Wait(&f->reqs[i], MPI_STATUS_IGNORE);
        if (rc == MPI_SUCCESS) rc = w;
    }
    return f->rc != MPI_SUCCESS ? f->rc : rc;
}

// The peer of step i = 1..P-1 of an exchange: receive from rank + i, send to rank - i, as
// MPICH's scattered Alltoallv posts them, so that at each step every rank sends to a
// different rank (posted in plain rank order, every rank's first message would go to rank 0,
// and the ranks' last ones all to rank P-1). The peer a rank receives from at step i sends
// to it at step i too. ctx->post_rank_order keeps the plain order, for the benchmark.
static inline int peer(const comm_ctx_t* ctx, int i, int is_recv) {
    int P = ctx->nranks;
    if (ctx->post_rank_order) return i - 1 < ctx->rank ? i - 1 : i; // every rank but this one
    return is_recv ? (ctx->rank + i) % P : (ctx->rank - i + P) % P;
}

// Posts the expert side of an exchange with every other rank: a receive (dispatch) or a send
// (combine) per nonempty block (p, e), in place in `rows` [n_recv, width].
static void post_expert_side(comm_ctx_t* ctx, const comm_route_t* route, const int* start,
                             float* rows, int width, MPI_Datatype row, int is_recv, flight_t* f) {
    int P = ctx->nranks, El = ctx->experts_per_rank;
    for (int i = 1; i < P; i++) {
        int p = peer(ctx, i, is_recv);
        for (int e = 0; e < El; e++) {
            int c = route->recv_expert_counts[p * El + e];
            if (c == 0) continue;
            float* at = rows + (size_t)start[p * El + e] * width;
            if (is_recv)
                post(f, MPI_Irecv(at, c, row, p, TAG_BLOCK + e, ctx->comm, f->reqs + f->n));
            else
                post(f, MPI_Isend(at, c, row, p, TAG_BLOCK + e, ctx->comm, f->reqs + f->n));
        }
    }
}

// The token side: a send (dispatch) or receive (combine) per nonempty block (q, e) of
// `rows` [n_send, width] in send order (global expert q*El+e, token).
static void post_token_side(comm_ctx_t* ctx, const comm_route_t* route, float* rows, int width,
                            MPI_Datatype row, int is_send, flight_t* f) {
    int P = ctx->nranks, El = ctx->experts_per_rank;
    for (int i = 1; i < P; i++) {
        int q = peer(ctx, i, !is_send);
        long at = route->send_displs[q];
        for (int e = 0; e < El; e++) {
            int c = route->send_expert_counts[q * El + e];
            float* r = rows + (size_t)at * width;
            at += c;
            if (c == 0) continue;
            if (is_send)
                post(f, MPI_Isend(r, c, row, q, TAG_BLOCK + e, ctx->comm, f->reqs + f->n));
            else
                post(f, MPI_Irecv(r, c, row, q, TAG_BLOCK + e, ctx->comm, f->reqs + f->n));
        }
    }
}

// Rows this rank routes to its own experts: block (rank, e) of the send order is block
// (rank, e) of the expert layout. to_expert picks the direction.
static void copy_self(const comm_ctx_t* ctx, const comm_route_t* route, const int* start,
                      float* token_rows, float* expert_rows, int width, int to_expert) {
    int El = ctx->experts_per_rank, r = ctx->rank;
    long at = route->send_displs[r];
    for (int e = 0; e < El; e++) {
        int c = route->send_expert_counts[r * El + e];
        if (c > 0) { // NULL buffers are allowed when a side has no rows
            float* t = token_rows + (size_t)at * width;
            float* x = expert_rows + (size_t)start[r * El + e] * width;
            if (to_expert)
                memcpy(x, t, row_bytes(c, width));
            else
                memcpy(t, x, row_bytes(c, width));
        }
        at += c;
    }
}

// Validates width and prepares an exchange: the row type, the expert-side block starts and
// an empty flight.
static int begin(comm_ctx_t* ctx, const comm_route_t* route, int width, MPI_Datatype* row,
                 const int** start, flight_t* f) {
    int rc = comm_row_type(ctx, width, row);
    if (rc != MPI_SUCCESS) return rc;
    *start = expert_block_rows(ctx, route);
    *f = (flight_t){ctx->reqs, 0, MPI_SUCCESS};
    return MPI_SUCCESS;
}

// Dispatch (to_expert) or combine: receives posted first so that senders' rows find their
// destination, then the sends, then this rank's own blocks copied while those travel. The
// sending side's buffer is only read (the casts drop const for the shared helpers).
static int exchange(comm_ctx_t* ctx, const comm_route_t* route, float* token_rows,
                    float* expert_rows, int width, int to_expert) {
    MPI_Datatype row;
    const int* start;
    flight_t f;
    int rc = begin(ctx, route, width, &row, &start, &f);
    if (rc != MPI_SUCCESS) return rc;
    if (to_expert) {
        post_expert_side(ctx, route, start, expert_rows, width, row, 1, &f);
        post_token_side(ctx, route, token_rows, width, row, 1, &f);
    } else {
        post_token_side(ctx, route, token_rows, width, row, 0, &f);
        post_expert_side(ctx, route, start, expert_rows, width, row, 0, &f);
    }
    copy_self(ctx, route, start, token_rows, expert_rows, width, to_expert);
    return land(&f);
}

int comm_dispatch(comm_ctx_t* ctx, const comm_route_t* route, const float* send, float* recv,
                  int width) {
    return exchange(ctx, route, (float*)send, recv, width, 1);
}

int comm_combine(comm_ctx_t* ctx, const comm_route_t* route, const float* expert_rows, float* back,
                 int width) {
    return exchange(ctx, route, back, (float*)expert_rows, width, 0);
}

int comm_dispatch_tokens(comm_ctx_t* ctx, const comm_route_t* route, int T, int k,
                         const int* slot_pos, const float* x, float* stage, float* recv,
                         int width) {
    MPI_Datatype row;
    const int* start;
    flight_t f;
    int rc = begin(ctx, route, width, &row, &start, &f);
    if (rc != MPI_SUCCESS) return rc;
    int El = ctx->experts_per_rank, r = ctx->rank;
    post_expert_side(ctx, route, start, recv, width, row, 1, &f);

    // One pass over the slots in token order (each token row read once, written k times):
    // a slot bound for another rank is packed at its send-order row of `stage`; a slot of
    // this rank's own experts goes straight to its expert-side row. Send rows
    // [self0, self0 + self_rows) are this rank's own, (rank, e) blocks in order of e.
    long self0 = route->send_displs[r], self_rows = route->send_counts[r];
    int* self_end = ctx->int_scratch + (long)ctx->nranks * El; // [El] end of send block (r, e)
    int* shift = self_end + El;                                // [El] expert row - send row
    long at = self0;
    for (int e = 0; e < El; e++) {
        shift[e] = (int)(start[r * El + e] - at);
        at += route->send_expert_counts[r * El + e];
        self_end[e] = (int)at;
    }
    for (long s = 0; s < (long)T * k; s++) {
        int p = slot_pos[s];
        if (p < 0) continue; // dropped slot
        const float* src = x + (size_t)(s / k) * width;
        if (p - self0 >= 0 && p - self0 < self_rows) {
            int lo = 0, hi = El - 1; // the first local expert whose block ends past p
            while (lo < hi) {
                int mid = (lo + hi) / 2;
                if (p < self_end[mid])
                    hi = mid;
                else
                    lo = mid + 1;
            }
            int e = lo;
            memcpy(recv + (size_t)(p + shift[e]) * width, src, row_bytes(1, width));
        } else {
            memcpy(stage + (size_t)p * width, src, row_bytes(1, width));
        }
    }
    post_token_side(ctx, route, stage, width, row, 1, &f);
    return land(&f);
}
