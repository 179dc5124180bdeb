// Chunked dispatch/combine: per-chunk plans, one count exchange for all chunks, and the
// nonblocking MPI_Ialltoallv of each chunk (comm/chunked.h).
#include "comm/chunked.h"

#include <limits.h>
#include <string.h>

void comm_chunk_plan(comm_chunks_t* ch, int T, int k, int E, const int* sel, int* slot_pos) {
    int C = ch->C;
    long row = 0;
    for (int c = 0; c < C; c++) {
        int t0 = comm_chunk_token(T, C, c), t1 = comm_chunk_token(T, C, c + 1);
        int* cnt = ch->send_ec + (long)c * E; // [E]
        for (int e = 0; e < E; e++) cnt[e] = 0;
        for (long s = (long)t0 * k; s < (long)t1 * k; s++)
            if (slot_pos[s] >= 0) cnt[sel[s]]++;
        ch->send_off[c] = row;
        // A stable counting sort inside the chunk, as permute_plan does for the whole batch:
        // each expert's rows stay in token order. cnt becomes each expert's next free row
        // for the walk and is restored to counts after it.
        long start = row;
        for (int e = 0; e < E; e++) {
            int n = cnt[e];
            cnt[e] = (int)(start - row);
            start += n;
        }
        for (long s = (long)t0 * k; s < (long)t1 * k; s++)
            if (slot_pos[s] >= 0) slot_pos[s] = (int)(row + cnt[sel[s]]++);
        for (int e = E - 1; e > 0; e--) cnt[e] -= cnt[e - 1];
        row = start;
    }
    ch->send_off[C] = row;
}

int comm_chunk_counts(comm_ctx_t* ctx, comm_chunks_t* ch, comm_route_t* route) {
    int P = ctx->nranks, El = ctx->experts_per_rank, C = ch->C, E = ctx->n_experts;
    int CEl = C * El;
    // tmp [P, C, El]: destination q gets the counts of its experts for every chunk.
    for (int q = 0; q < P; q++)
        for (int c = 0; c < C; c++)
            memcpy(ch->tmp + ((long)q * C + c) * El, ch->send_ec + (long)c * E + (long)q * El,
                   sizeof(int) * El);
    int rc = MPI_Alltoall(ch->tmp, CEl, MPI_INT, ch->recv_ec, CEl, MPI_INT, ctx->comm);
    if (rc != MPI_SUCCESS) return rc;

    int bad = 0;
    // Per-chunk MPI counts; totals accumulate in long so a wrap is caught, not sent.
    long recv_row = 0;
    for (int c = 0; c < C; c++) {
        int* sc = ch->counts + (long)c * 4 * P; // [4, P]
        int *sd = sc + P, *rcn = sc + 2 * P, *rd = sc + 3 * P;
        long s = 0, r = 0;
        for (int q = 0; q < P; q++) {
            long rows = 0;
            for (int e = 0; e < El; e++) rows += ch->send_ec[(long)c * E + (long)q * El + e];
            sd[q] = (int)(s <= INT_MAX ? s : 0);
            sc[q] = (int)(rows >= 0 && rows <= INT_MAX ? rows : 0);
            if (rows < 0) bad = 1;
            s += rows;
        }
        for (int p = 0; p < P; p++) {
            long rows = 0;
            for (int e = 0; e < El; e++) {
                int n = ch->recv_ec[((long)p * C + c) * El + e];
                if (n < 0) bad = 1;
                rows += n;
            }
            rd[p] = (int)(r <= INT_MAX ? r : 0);
            rcn[p] = (int)(rows >= 0 && rows <= INT_MAX ? rows : 0);
            r += rows;
        }
        if (s > INT_MAX || r > INT_MAX) bad = 1;
        ch->recv_off[c] = recv_row;
        recv_row += r;
    }
    ch->recv_off[C] = recv_row;

    // Totals over chunks: the route comm_exchange_counts would have produced.
    for (int e = 0; e < E; e++) {
        long n = 0;
        for (int c = 0; c < C; c++) n += ch->send_ec[(long)c * E + e];
        route->send_expert_counts[e] = (int)(n <= INT_MAX ? n : -1);
    }
    for (int p = 0; p < P; p++)
        for (int e = 0; e < El; e++) {
            long n = 0;
            for (int c = 0; c < C; c++) n += ch->recv_ec[((long)p * C + c) * El + e];
            route->recv_expert_counts[p * El + e] = (int)(n <= INT_MAX ? n : -1);
        }
    bad |= comm_route_totals(ctx, route);

    // Final rows of every (chunk, source, expert) block: expert e's group is (source p, then
    // chunk c, then token), which is global token order.
    for (int e = 0; e < El; e++) {
        long pos = route->expert_offsets[e];
        for (int p = 0; p < P; p++)
            for (int c = 0; c < C; c++) {
                ch->fpos[((long)c * P + p) * El + e] = (int)(pos <= INT_MAX ? pos : 0);
                pos += ch->recv_ec[((long)p * C + c) * El + e];
            }
    }

    int any_bad;
    rc = MPI_Allreduce(&bad, &any_bad, 1, MPI_INT, MPI_MAX, ctx->comm);
    if (rc != MPI_SUCCESS) return rc;
    return any_bad ? MPI_ERR_COUNT : MPI_SUCCESS;
}

static inline const int* chunk_counts(const comm_chunks_t* ch, int P, int c) {
    return ch->counts + (long)c * 4 * P;
}

int comm_chunk_dispatch_start(comm_ctx_t* ctx, const comm_chunks_t* ch, int c, const float* send,
                              float* stage, int width, MPI_Request* req) {
    MPI_Datatype row;
    int rc = comm_row_type(ctx, width, &row);
    if (rc != MPI_SUCCESS) return rc;
    int P = ctx->nranks;
    const int* n = chunk_counts(ch, P, c);
    return MPI_Ialltoallv(send + ch->send_off[c] * width, n, n + P, row,
                          stage + ch->recv_off[c] * width, n + 2 * P, n + 3 * P, row, ctx->comm,
                          req);
}

int comm_chunk_combine_start(comm_ctx_t* ctx, const comm_chunks_t* ch, int c, const float* stage,
                             float* back, int width, MPI_Request* req) {
    MPI_Datatype row;
    int rc = comm_row_type(ctx, width, &row);
    if (rc != MPI_SUCCESS) return rc;
    int P = ctx->nranks;
    const int* n = chunk_counts(ch, P, c);
    // The send and receive roles swap on the way back.
    return MPI_Ialltoallv(stage + ch->recv_off[c] * width, n + 2 * P, n + 3 * P, row,
                          back + ch->send_off[c] * width, n, n + P, row, ctx->comm, req);
}

// Walks chunk c's (source, expert) blocks in staging order; to_stage picks the copy direction.
static void chunk_copy(const comm_ctx_t* ctx, const comm_chunks_t* ch, int c, float* stage,
                       float* rows, int width, int to_stage) {
    int P = ctx->nranks, El = ctx->experts_per_rank, C = ch->C;
    size_t w = (size_t)width;
    long src = ch->recv_off[c];
    for (int p = 0; p < P; p++)
        for (int e = 0; e < El; e++) {
            int n = ch->recv_ec[((long)p * C + c) * El + e];
            float* s = stage + (size_t)src * w;
            float* r = rows + (size_t)ch->fpos[((long)c * P + p) * El + e] * w;
            if (n > 0) memcpy(to_stage ? s : r, to_stage ? r : s, sizeof(float) * n * w);
            src += n;
        }
}

void comm_chunk_unpack(const comm_ctx_t* ctx, const comm_chunks_t* ch, int c, const float* stage,
                       float* rows, int width) {
    chunk_copy(ctx, ch, c, (float*)stage, rows, width, 0);
}

void comm_chunk_pack(const comm_ctx_t* ctx, const comm_chunks_t* ch, int c, const float* rows,
                     float* stage, int width) {
    chunk_copy(ctx, ch, c, stage, (float*)rows, width, 1);
}
