// Count exchange, dispatch (token side -> expert side) and combine (the way back), all with
// MPI_Alltoallv. Rows travel as one datatype of `width` floats, so counts and displacements
// are row counts (< 2^31) even when the bytes moved exceed 2^31.
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

// Bytes of `rows` rows of `width` floats, as size_t: the product overflows int long before
// it overflows size_t.
static inline size_t row_bytes(long rows, int width) {
    return (size_t)rows * (size_t)width * sizeof(float);
}

int comm_dispatch(comm_ctx_t* ctx, const comm_route_t* route, const float* send, float* recv,
                  int width) {
    MPI_Datatype row;
    int rc = comm_row_type(ctx, width, &row);
    if (rc != MPI_SUCCESS) return rc;
    int P = ctx->nranks, El = ctx->experts_per_rank;
    // With one rank or one expert per rank, (source, expert) order is (expert, source)
    // order: the rows can land in place, without the reorder pass.
    if (P == 1 || El == 1)
        return MPI_Alltoallv(send, route->send_counts, route->send_displs, row, recv,
                             route->recv_counts, route->recv_displs, row, ctx->comm);

    // scratch: [n_recv, width] in (source p, local expert e, token) order, as MPI delivers it.
    float* scratch = ctx->row_scratch;
    rc = MPI_Alltoallv(send, route->send_counts, route->send_displs, row, scratch,
                       route->recv_counts, route->recv_displs, row, ctx->comm);
    if (rc != MPI_SUCCESS) return rc;

    // Reorder to (local expert e, source p, token): each expert's group becomes one
    // contiguous [expert_counts[e], width] matrix for the grouped GEMM, and because sources
    // hold contiguous token ranges in rank order, the group is in global token order.
    int* next = ctx->int_scratch; // [El] next free row of each expert's group in recv
    for (int e = 0; e < El; e++) next[e] = route->expert_offsets[e];
    long src = 0; // walks scratch front to back: (p, e) blocks are stored in that order
    for (int p = 0; p < P; p++) {
        for (int e = 0; e < El; e++) {
            int c = route->recv_expert_counts[p * El + e];
            if (c > 0) // NULL buffers are allowed when a side has no rows
                memcpy(recv + (size_t)next[e] * width, scratch + (size_t)src * width,
                       row_bytes(c, width));
            next[e] += c;
            src += c;
        }
    }
    return MPI_SUCCESS;
}

int comm_combine(comm_ctx_t* ctx, const comm_route_t* route, const float* expert_rows, float* back,
                 int width) {
    MPI_Datatype row;
    int rc = comm_row_type(ctx, width, &row);
    if (rc != MPI_SUCCESS) return rc;
    int P = ctx->nranks, El = ctx->experts_per_rank;
    if (P == 1 || El == 1) // no reorder needed, as in comm_dispatch
        return MPI_Alltoallv(expert_rows, route->recv_counts, route->recv_displs, row, back,
                             route->send_counts, route->send_displs, row, ctx->comm);

    // The inverse of dispatch's reorder: expert_rows [n_recv, width] in (e, p, token) order
    // go back to scratch [n_recv, width] in (p, e, token) order, the layout each source
    // expects to receive its rows in (its own send order).
    float* scratch = ctx->row_scratch;
    int* next = ctx->int_scratch; // [El] next unread row of each expert's group
    for (int e = 0; e < El; e++) next[e] = route->expert_offsets[e];
    long dst = 0;
    for (int p = 0; p < P; p++) {
        for (int e = 0; e < El; e++) {
            int c = route->recv_expert_counts[p * El + e];
            if (c > 0)
                memcpy(scratch + (size_t)dst * width, expert_rows + (size_t)next[e] * width,
                       row_bytes(c, width));
            next[e] += c;
            dst += c;
        }
    }
    // The send and receive roles of the route swap on the way back.
    return MPI_Alltoallv(scratch, route->recv_counts, route->recv_displs, row, back,
                         route->send_counts, route->send_displs, row, ctx->comm);
}
