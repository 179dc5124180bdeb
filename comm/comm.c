// Communication context: scratch allocated once at start-up, the route block, the cached row
// datatypes and error agreement. The exchanges live in exchange.c, the deterministic
// reductions in reduce.c.
#include "comm/comm.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "config/status.h"

// Bytes for `count` elements of `size` bytes, or 0 when that overflows size_t.
static size_t array_bytes(long count, size_t size) {
    if (count < 0 || (unsigned long)count > SIZE_MAX / size) return 0;
    return (size_t)count * size;
}

// malloc that never returns NULL for a valid empty array (so NULL always means failure).
static void* alloc_array(long count, size_t size) {
    if (count == 0) return malloc(size);
    size_t bytes = array_bytes(count, size);
    return bytes ? malloc(bytes) : NULL;
}

int comm_init(comm_ctx_t* ctx, MPI_Comm comm, int n_experts, long max_rows, int max_width,
              long max_tree) {
    memset(ctx, 0, sizeof(*ctx));
    ctx->comm = MPI_COMM_NULL;
    for (int i = 0; i < COMM_ROW_TYPES; i++) ctx->row_types[i] = MPI_DATATYPE_NULL;

    // A private communicator: our collectives never match someone else's messages, and the
    // error handler we set does not change the behaviour of the caller's communicator.
    int rc = MPI_Comm_dup(comm, &ctx->comm);
    if (rc != MPI_SUCCESS) return rc;
    MPI_Comm_set_errhandler(ctx->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(ctx->comm, &ctx->rank);
    MPI_Comm_size(ctx->comm, &ctx->nranks);
    int P = ctx->nranks;

    // Arguments are the same on every rank, but an allocation can fail on one rank only, so
    // the outcome is agreed below and every rank returns the same code.
    int status = MPI_SUCCESS;
    if (n_experts <= 0 || n_experts % P != 0 || max_rows < 0 || max_width < 0 || max_tree < 0)
        status = MPI_ERR_ARG;
    else if (max_width != 0 && max_rows > LONG_MAX / max_width)
        status = MPI_ERR_ARG; // [max_rows, max_width] floats overflow a long
    else if (max_tree > (INT_MAX - (long)COMM_MAX_PIECES * P) / 2)
        status = MPI_ERR_ARG; // tree-sum counts and displacements are ints (reduce.c)
    if (status == MPI_SUCCESS) {
        ctx->n_experts = n_experts;
        ctx->experts_per_rank = n_experts / P;
        ctx->max_rows = max_rows;
        ctx->max_width = max_width;
        ctx->max_tree = max_tree;
        int El = ctx->experts_per_rank;
        ctx->row_scratch = alloc_array(max_rows * max_width, sizeof(float));
        ctx->tree_scratch = alloc_array(comm_tree_scratch_len(max_tree, P), sizeof(double));
        ctx->int_scratch = alloc_array(4L * P * El + 8L * P, sizeof(int));
        ctx->reqs = alloc_array(2L * P * El, sizeof(MPI_Request));
        if (!ctx->row_scratch || !ctx->tree_scratch || !ctx->int_scratch || !ctx->reqs)
            status = MPI_ERR_NO_MEM;
    }

    int agreed;
    rc = MPI_Allreduce(&status, &agreed, 1, MPI_INT, MPI_MAX, ctx->comm);
    if (rc != MPI_SUCCESS) agreed = rc;
    if (agreed != MPI_SUCCESS) comm_free(ctx);
    return agreed;
}

// Safe on a context that comm_init failed on (it frees and resets it) and on a freed one.
void comm_free(comm_ctx_t* ctx) {
    for (int i = 0; i < COMM_ROW_TYPES; i++)
        if (ctx->row_type_widths[i] != 0) MPI_Type_free(&ctx->row_types[i]);
    free(ctx->row_scratch);
    free(ctx->tree_scratch);
    free(ctx->int_scratch);
    free(ctx->reqs);
    if (ctx->comm != MPI_COMM_NULL) MPI_Comm_free(&ctx->comm);
    memset(ctx, 0, sizeof(*ctx));
    ctx->comm = MPI_COMM_NULL;
}

int comm_row_type(comm_ctx_t* ctx, int width, MPI_Datatype* type) {
    if (width <= 0 || width > ctx->max_width) return MPI_ERR_ARG;
    for (int i = 0; i < COMM_ROW_TYPES; i++)
        if (ctx->row_type_widths[i] == width) {
            *type = ctx->row_types[i];
            return MPI_SUCCESS;
        }
    // Not cached: replace the oldest slot. No exchange is in flight on the old type (all
    // our calls are blocking), so freeing it here is safe.
    int slot = ctx->row_type_next;
    ctx->row_type_next = (slot + 1) % COMM_ROW_TYPES;
    if (ctx->row_type_widths[slot] != 0) {
        MPI_Type_free(&ctx->row_types[slot]);
        ctx->row_type_widths[slot] = 0;
    }
    int rc = MPI_Type_contiguous(width, MPI_FLOAT, &ctx->row_types[slot]);
    if (rc == MPI_SUCCESS) rc = MPI_Type_commit(&ctx->row_types[slot]);
    if (rc != MPI_SUCCESS) return rc;
    ctx->row_type_widths[slot] = width;
    *type = ctx->row_types[slot];
    return MPI_SUCCESS;
}

int comm_route_alloc(const comm_ctx_t* ctx, comm_route_t* route) {
    int P = ctx->nranks, E = ctx->n_experts, El = ctx->experts_per_rank;
    memset(route, 0, sizeof(*route));
    // Sizes in the order of the fields below; one block so a route is one malloc/free.
    long total = (long)E + P + P + (long)P * El + P + P + El + (El + 1);
    int* p = calloc((size_t)total, sizeof(int));
    if (!p) return MPI_ERR_NO_MEM;
    route->block_ = p;
    route->send_expert_counts = p, p += E;
    route->send_counts = p, p += P;
    route->send_displs = p, p += P;
    route->recv_expert_counts = p, p += (long)P * El;
    route->recv_counts = p, p += P;
    route->recv_displs = p, p += P;
    route->expert_counts = p, p += El;
    route->expert_offsets = p;
    return MPI_SUCCESS;
}

void comm_route_free(comm_route_t* route) {
    free(route->block_);
    memset(route, 0, sizeof(*route));
}

int comm_agree(comm_ctx_t* ctx, int status) {
    int agreed;
    int rc = MPI_Allreduce(&status, &agreed, 1, MPI_INT, MPI_MAX, ctx->comm);
    // If even the agreement fails, no rank can trust the others: report "other" at least.
    if (rc != MPI_SUCCESS) return status > MOED_ERR_OTHER ? status : MOED_ERR_OTHER;
    return agreed;
}
