// Chunked token exchange (comm.dispatcher = alltoallv_chunked): the local tokens split into C
// chunks, each chunk dispatched and combined with its own nonblocking MPI_Ialltoallv, so the
// exchange of one chunk overlaps the expert compute of another.
//
// Token side: slots are ordered (chunk, global expert, token), so chunk c's rows are one
// contiguous range [send_off[c], send_off[c+1]) of the send buffer, grouped by destination.
// Expert side: rows land in the SAME final layout as comm_dispatch gives, (local expert e,
// source p, token), because chunks are contiguous token ranges: block (c, p, e) of chunk c
// goes to row fpos[c, p, e] = start of e + rows of e from sources < p + rows of (p, e) in
// chunks < c. Every expert therefore holds its rows in global token order whatever C is,
// which keeps sums over tokens (the weight gradients) bit-identical to alltoallv.
#ifndef MOED_COMM_CHUNKED_H
#define MOED_COMM_CHUNKED_H

#include "comm/comm.h"

typedef struct {
    int C;          // chunks
    int* send_ec;   // [C, E]      rows this rank sends per chunk to each global expert
    int* recv_ec;   // [P, C, El]  rows from source p, chunk c, for local expert e
    int* tmp;       // [P, C, El]  send side of the count exchange (send_ec by destination)
    int* counts;    // [C, 4, P]   per chunk: send counts, send displs, recv counts, recv displs
                    //             (rows, relative to the chunk's own base row)
    long* send_off; // [C + 1]     first token-side row of each chunk
    long* recv_off; // [C + 1]     first staging row of each chunk on the expert side
    int* fpos;      // [C, P, El]  final expert-side row of block (c, p, e)
} comm_chunks_t;

// First local token of chunk c (balanced split: C need not divide T).
static inline int comm_chunk_token(int T, int C, int c) { return (int)((long)c * T / C); }

// Token-side plan of chunk order. sel: [T, k] global experts; slot_pos: [T, k] on entry the
// rows of any plan where a negative value marks a dropped slot, on exit the row of each kept
// slot in (chunk, expert, token) order (dropped stay -1). Fills send_ec and send_off.
void comm_chunk_plan(comm_chunks_t* ch, int T, int k, int E, const int* sel, int* slot_pos);

// Exchanges the per-chunk counts (one MPI_Alltoall) and fills every other field of `ch` and
// the totals of `route` (the same fields comm_exchange_counts fills, so code reading the
// route sees no difference). Errors are agreed as in comm_exchange_counts. Collective.
int comm_chunk_counts(comm_ctx_t* ctx, comm_chunks_t* ch, comm_route_t* route);

// Starts the dispatch of chunk c: rows send[send_off[c] ...] to stage[recv_off[c] ...], in
// (source, local expert, token) order as MPI delivers them. Collective (nonblocking).
int comm_chunk_dispatch_start(comm_ctx_t* ctx, const comm_chunks_t* ch, int c, const float* send,
                              float* stage, int width, MPI_Request* req);
// Copies chunk c's staged rows to their final expert-side rows (after the dispatch completed).
void comm_chunk_unpack(const comm_ctx_t* ctx, const comm_chunks_t* ch, int c, const float* stage,
                       float* rows, int width);
// The inverse: chunk c's rows of the final layout back into its staging range, in the order
// the sources expect them.
void comm_chunk_pack(const comm_ctx_t* ctx, const comm_chunks_t* ch, int c, const float* rows,
                     float* stage, int width);
// Starts the combine of chunk c: stage[recv_off[c] ...] back to back[send_off[c] ...].
int comm_chunk_combine_start(comm_ctx_t* ctx, const comm_chunks_t* ch, int c, const float* stage,
                             float* back, int width, MPI_Request* req);

#endif
