// Token exchange between ranks and the deterministic reductions (DESIGN.md §2, §3).
//
// Rank r owns global experts [r*El, (r+1)*El) (El = E/P). A rank's outgoing rows (one per
// routed slot) are sorted by global expert, then by global token index, so they are
// already grouped by destination rank. comm_dispatch lands them on the expert side in
// (local expert, source rank, token) order, which is global token order inside each
// expert's group, so every expert sees its tokens in the same order whatever P is.
#ifndef MOED_COMM_H
#define MOED_COMM_H

#include <mpi.h>
#include <stdint.h>

#define COMM_ROW_TYPES 4 // cached row datatypes (distinct widths) per context
// A rank's block of leaves splits into at most this many aligned power-of-two subtrees of
// the global reduction tree (about 2·log2(nleaf_local)), which it pre-sums locally.
#define COMM_MAX_PIECES 64

typedef struct {
    MPI_Comm comm;
    int rank, nranks;
    int n_experts, experts_per_rank; // E, El = E / P
    // Scratch allocated once by comm_init, sized for the largest exchange.
    long max_rows;        // rows on either side of any exchange
    int max_width;        // floats per row
    long max_tree;        // largest nleaf_local * n passed to a tree sum
    float* row_scratch;   // [max_rows, max_width]
    double* tree_scratch; // tree reduction work space
    int* int_scratch;     // [4 * P * El + 8 * P]
    MPI_Request* reqs;    // [2 * P * El] one per block of a dispatch or combine
    // Row datatypes (`width` contiguous floats) committed on first use and freed by
    // comm_free. A few widths only ever occur (d_model forward and backward), so a tiny
    // cache replaced round-robin keeps type creation out of the steady state.
    MPI_Datatype row_types[COMM_ROW_TYPES];
    int row_type_widths[COMM_ROW_TYPES]; // 0 = empty slot
    int row_type_next;                   // slot to replace next
    // 1: dispatch and combine post their blocks in plain rank order, as before the scattered
    // order (exchange.c, peer); only moed-bench comm sets it, to time the two side by side.
    int post_rank_order;
} comm_ctx_t;

// Send/receive plan for one exchange (one layer, one step). Arrays are owned by the caller
// and sized as commented; comm_route_alloc allocates them in one block at start-up.
typedef struct {
    int* send_expert_counts; // [E]        rows this rank sends to each global expert (input)
    int* send_counts;        // [P]        rows to each destination rank
    int* send_displs;        // [P]
    int* recv_expert_counts; // [P, El]    rows from source p for local expert e
    int* recv_counts;        // [P]        rows from each source rank
    int* recv_displs;        // [P]
    int* expert_counts;      // [El]       rows per local expert: the gmm group sizes
    int* expert_offsets;     // [El + 1]   start row of each local expert's group
    long n_send, n_recv;     // total rows sent, received
    void* block_;            // the single allocation
} comm_route_t;

// All return MPI_SUCCESS (0) or an MPI error code.
int comm_init(comm_ctx_t* ctx, MPI_Comm comm, int n_experts, long max_rows, int max_width,
              long max_tree);
void comm_free(comm_ctx_t* ctx);
int comm_route_alloc(const comm_ctx_t* ctx, comm_route_t* route);
void comm_route_free(comm_route_t* route);

// From route->send_expert_counts, fills every other field of `route` (one MPI_Alltoall of
// the per-expert counts). Collective.
int comm_exchange_counts(comm_ctx_t* ctx, comm_route_t* route);

// Token side -> expert side. send: [n_send, width] rows sorted by (global expert, token).
// recv: [n_recv, width] in (local expert, source rank, token) order. Collective (one
// message per nonempty (rank pair, local expert) block, rows sent as a contiguous datatype
// of `width` floats, so counts never overflow int; exchange.c says why not MPI_Alltoallv).
int comm_dispatch(comm_ctx_t* ctx, const comm_route_t* route, const float* send, float* recv,
                  int width);
// comm_dispatch of the token rows themselves, without building `send` first: slot (t, i)
// carries row x[t] and has send row slot_pos[t*k+i] (negative: dropped), as permute_plan
// gives. Rows for other ranks are packed at their send rows of stage [n_send, width]; rows
// for this rank's experts are copied from x straight to recv. recv ends bit-identical to
// permute_rows into `send` followed by comm_dispatch.
int comm_dispatch_tokens(comm_ctx_t* ctx, const comm_route_t* route, int T, int k,
                         const int* slot_pos, // [T, k]
                         const float* x,      // [T, width]
                         float* stage,        // [n_send, width]
                         float* recv,         // [n_recv, width]
                         int width);
// Expert side -> token side, the inverse of comm_dispatch: rows [n_recv, width] in
// (local expert, source, token) order travel back to [n_send, width] in send order.
int comm_combine(comm_ctx_t* ctx, const comm_route_t* route, const float* expert_rows, float* back,
                 int width);

// Deterministic sum over G = nleaf_local * P leaves (leaf j of rank r is global leaf
// r*nleaf_local + j). leaves: [nleaf_local, n] on each rank; out: [n], identical on every
// rank. Leaves are summed in double along a fixed binary tree over the global leaf index
// (stride doubling: at stride s = 1, 2, 4, ..., leaf i += leaf i+s for i a multiple of 2s),
// so the result depends on the leaf values only, never on P. Collective.
int comm_tree_sum_d(comm_ctx_t* ctx, const double* leaves, int nleaf_local, long n, double* out);
// The same for float leaves: summed in double, rounded to float once at the end.
int comm_tree_sum_f(comm_ctx_t* ctx, const float* leaves, int nleaf_local, long n, float* out);

// Agreement on an error code: every rank gets the maximum of all ranks' `status`.
int comm_agree(comm_ctx_t* ctx, int status);

// ---- Additions ----------------------------------------------------------------------------
//
// Notes on the calls above:
// - comm_init works on a private MPI_Comm_dup of `comm` (ctx->comm) with MPI_ERRORS_RETURN,
//   so exchanges never match other traffic and the caller's error handler is untouched; its
//   result (bad arguments, out of memory) is agreed, the same on every rank. comm_free
//   releases the duplicate; it is collective for that reason.
// - comm_agree returns at least MOED_ERR_OTHER if the agreement itself fails.
// - comm_exchange_counts also agrees on errors (a second, one-int MPI_Allreduce): a negative
//   count, more than INT_MAX rows on either side, or n_recv > max_rows on any rank makes it
//   return MPI_ERR_COUNT on every rank, so no rank is left waiting in the next exchange.
// - comm_dispatch/comm_dispatch_tokens/comm_combine need 1 <= width <= max_width (MPI_ERR_ARG
//   otherwise, before any message moves) and a route filled by comm_exchange_counts;
//   `x`/`send`/`stage`/`recv`/`back` must not alias each other. All ranks must pass the
//   same width. An MPI error while posting the blocks is returned after the blocks that
//   did post have completed, so peers are not left waiting for them.
// - comm_tree_sum_*: nleaf_local and n must be the same on every rank and
//   nleaf_local * n <= max_tree (MPI_ERR_ARG otherwise); max_tree must stay below about
//   2^30 doubles because slice counts travel as ints. Each rank sums the aligned
//   power-of-two subtrees of the global tree that lie inside its own block of leaves before
//   the exchange, with exactly the additions the global tree makes there, so the result is
//   the same as summing all G leaves on one rank while far fewer rows travel.

// Every field of `route` from its send_expert_counts and recv_expert_counts (the second
// half of comm_exchange_counts, shared with the chunked exchange). Local; returns 1 when a
// count is negative or a total exceeds INT_MAX rows or max_rows (to be agreed on), else 0.
int comm_route_totals(const comm_ctx_t* ctx, comm_route_t* route);

// The committed datatype of `width` contiguous floats (one row), cached in `ctx`; do not
// free it. MPI_ERR_ARG unless 1 <= width <= max_width.
int comm_row_type(comm_ctx_t* ctx, int width, MPI_Datatype* type);

// Doubles of ctx->tree_scratch that comm_init allocates for `max_tree` on `nranks` ranks:
// the local leaves transposed by destination slice [nleaf_local * n] and the received
// subtree sums [at most max_tree + COMM_MAX_PIECES * P].
static inline long comm_tree_scratch_len(long max_tree, int nranks) {
    return 2 * max_tree + (long)COMM_MAX_PIECES * nranks;
}

#endif
