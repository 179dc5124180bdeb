// comm_exchange_counts + comm_dispatch + comm_combine: each local expert receives exactly
// the rows routed to it, in increasing global token order, whatever P is; combine undoes
// dispatch bit for bit; comm_dispatch_tokens equals permute_rows + comm_dispatch; bad routes
// and widths fail on every rank instead of hanging.
//
// Routing is a function of the global token index only (rng_uniform keyed by token), so the
// expected rows of an expert do not depend on P. Each row encodes its token and slot in its
// first two values and carries reproducible noise in the rest, so the expert side can
// rebuild and compare every row.
// moed-test-ranks: 1 2 4
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "compute/permute.h"
#include "compute/rng.h"
#include "tests/common/mpi_check.h"
#include "tests/common/testutil.h"

static int g_rank;

#define CHECK(cond, ...) TU_MPI_CHECK(g_rank, cond, __VA_ARGS__)

enum { T = 64, E = 8, K = 2, MAX_WIDTH = 33 };
static const uint64_t SEED = 0xd15a7c;

enum {
    ROUTE_UNIFORM,      // every slot to a uniformly drawn expert (two distinct per token)
    ROUTE_ONE_EXPERT,   // every token's slot 0 to expert 3, slot 1 dropped: most ranks get 0
    ROUTE_SILENT_RANK,  // tokens [0, T/4) dropped entirely: rank 0 sends nothing at P = 4
    ROUTE_SINGLE_TOKEN, // expert 6 gets exactly one row (token 37, slot 1)
    ROUTE_DROPS,        // uniform with 30% of the slots dropped (capacity-style)
    N_ROUTES
};

static const char* route_name[N_ROUTES] = {"uniform", "one-expert", "silent-rank", "single-token",
                                           "drops"};

// route: [T, K] global expert of each (token, slot), -1 when dropped; identical on all ranks.
static void make_routing(int kase, int* route) {
    for (int t = 0; t < T; t++) {
        double u0 = rng_uniform(SEED, 0x5100 + kase, (uint32_t)t, 0);
        double u1 = rng_uniform(SEED, 0x5100 + kase, (uint32_t)t, 1);
        int e0 = (int)(u0 * E), e1 = (e0 + 1 + (int)(u1 * (E - 1))) % E;
        switch (kase) {
        case ROUTE_ONE_EXPERT: e0 = 3, e1 = -1; break;
        case ROUTE_SILENT_RANK:
            if (t < T / 4) e0 = e1 = -1;
            break;
        case ROUTE_SINGLE_TOKEN: {
            // Two distinct experts among the seven that are not 6, then token 37 slot 1 -> 6.
            int i0 = (int)(u0 * 7), i1 = (i0 + 1 + (int)(u1 * 6)) % 7;
            e0 = i0 < 6 ? i0 : 7, e1 = i1 < 6 ? i1 : 7;
            if (t == 37) e1 = 6;
            break;
        }
        case ROUTE_DROPS:
            if (rng_uniform(SEED, 0x5100 + kase, (uint32_t)t, 2) < 0.3) e0 = -1;
            if (rng_uniform(SEED, 0x5100 + kase, (uint32_t)t, 3) < 0.3) e1 = -1;
            break;
        }
        route[t * K + 0] = e0, route[t * K + 1] = e1;
    }
}

// row: [width] the values slot `slot` of global token t carries.
static void make_row(int t, int slot, int width, float* row) {
    row[0] = (float)t, row[1] = (float)slot;
    for (int c = 2; c < width; c++)
        row[c] = rng_normal(SEED, 0x5200, (uint32_t)t, (uint64_t)(slot * 1000 + c));
}

// comm_dispatch_tokens (token rows packed and sent in one call) lands exactly what
// permute_rows followed by comm_dispatch lands, bit for bit, dropped slots included. The
// route `rt` was exchanged for this routing by check_case.
static void check_tokens(comm_ctx_t* ctx, comm_route_t* rt, const int* route, int kase, int width) {
    int P = ctx->nranks, r = ctx->rank, Tl = T / P;
    const char* name = route_name[kase];
    float* x = malloc(sizeof(float) * Tl * width);         // [Tl, width]
    float* send = malloc(sizeof(float) * Tl * K * width);  // [n_send, width]
    float* stage = malloc(sizeof(float) * Tl * K * width); // [n_send, width]
    float* want = malloc(sizeof(float) * T * K * width);   // [n_recv, width]
    float* got = malloc(sizeof(float) * T * K * width);    // [n_recv, width]
    int counts[E], slot_pos[T * K];
    CHECK(x && send && stage && want && got, "out of memory");
    for (int t = 0; t < Tl; t++) make_row(r * Tl + t, 0, width, x + (long)t * width);
    permute_plan(Tl, K, E, route + r * Tl * K, counts, slot_pos);
    for (int e = 0; e < E; e++)
        CHECK(counts[e] == rt->send_expert_counts[e], "%s: permute_plan count of expert %d", name,
              e);

    permute_rows(Tl, K, width, slot_pos, x, send);
    memset(want, 0xff, sizeof(float) * T * K * width);
    int rc = comm_dispatch(ctx, rt, rt->n_send ? send : NULL, rt->n_recv ? want : NULL, width);
    CHECK(rc == MPI_SUCCESS, "%s: comm_dispatch rc=%d", name, rc);
    memset(got, 0xff, sizeof(float) * T * K * width);
    rc = comm_dispatch_tokens(ctx, rt, Tl, K, slot_pos, x, rt->n_send ? stage : NULL,
                              rt->n_recv ? got : NULL, width);
    CHECK(rc == MPI_SUCCESS, "%s: comm_dispatch_tokens rc=%d", name, rc);
    CHECK(memcmp(got, want, sizeof(float) * rt->n_recv * width) == 0,
          "%s w=%d: comm_dispatch_tokens differs from permute_rows + comm_dispatch", name, width);
    free(x), free(send), free(stage), free(want), free(got);
}

// Runs one routing case at one width through exchange, dispatch and combine.
static void check_case(comm_ctx_t* ctx, comm_route_t* rt, const int* route, int kase, int width) {
    int P = ctx->nranks, r = ctx->rank, El = ctx->experts_per_rank;
    int t0 = r * (T / P), t1 = (r + 1) * (T / P); // my global tokens [t0, t1)
    const char* name = route_name[kase];

    float* send = malloc(sizeof(float) * T * K * width); // [n_send, width]
    float* recv = malloc(sizeof(float) * T * K * width); // [n_recv, width]
    float* back = malloc(sizeof(float) * T * K * width); // [n_send, width]
    float* want = malloc(sizeof(float) * width);         // [width]
    CHECK(send && recv && back && want, "out of memory");

    // Token side: rows sorted by (global expert, token), as the permute stage produces them.
    long n_send = 0;
    for (int e = 0; e < E; e++) {
        rt->send_expert_counts[e] = 0;
        for (int t = t0; t < t1; t++)
            for (int s = 0; s < K; s++)
                if (route[t * K + s] == e) {
                    make_row(t, s, width, send + n_send * width);
                    rt->send_expert_counts[e]++;
                    n_send++;
                }
    }
    int rc = comm_exchange_counts(ctx, rt);
    CHECK(rc == MPI_SUCCESS, "%s: comm_exchange_counts rc=%d", name, rc);
    CHECK(rt->n_send == n_send, "%s: n_send %ld want %ld", name, rt->n_send, n_send);

    // Empty sides pass NULL: MPI must never touch a buffer with zero count.
    memset(recv, 0xff, sizeof(float) * T * K * width);
    rc = comm_dispatch(ctx, rt, n_send ? send : NULL, rt->n_recv ? recv : NULL, width);
    CHECK(rc == MPI_SUCCESS, "%s: comm_dispatch rc=%d", name, rc);

    // Expert side: local expert el's group holds, in increasing global token order, exactly
    // the (token, slot) pairs routed to global expert r*El + el from all tokens.
    long row = 0;
    for (int el = 0; el < El; el++) {
        int e = r * El + el;
        CHECK(rt->expert_offsets[el] == row, "%s: expert %d offset %d want %ld", name, e,
              rt->expert_offsets[el], row);
        long start = row;
        for (int t = 0; t < T; t++)
            for (int s = 0; s < K; s++) {
                if (route[t * K + s] != e) continue;
                CHECK(row < rt->n_recv, "%s w=%d: expert %d is missing rows (n_recv %ld)", name,
                      width, e, rt->n_recv);
                const float* got = recv + row * width;
                CHECK(got[0] == (float)t && got[1] == (float)s,
                      "%s w=%d: expert %d row %ld is token %g slot %g, want token %d slot %d", name,
                      width, e, row - start, (double)got[0], (double)got[1], t, s);
                make_row(t, s, width, want);
                CHECK(memcmp(got, want, sizeof(float) * width) == 0,
                      "%s w=%d: expert %d token %d slot %d: values differ", name, width, e, t, s);
                row++;
            }
        CHECK(rt->expert_counts[el] == row - start, "%s: expert %d count %d want %ld", name, e,
              rt->expert_counts[el], row - start);
    }
    CHECK(rt->n_recv == row, "%s: n_recv %ld want %ld", name, rt->n_recv, row);
    CHECK(rt->expert_offsets[El] == row, "%s: expert_offsets[El] %d want %ld", name,
          rt->expert_offsets[El], row);

    // combine(dispatch(x)) == x, bit for bit.
    memset(back, 0xff, sizeof(float) * T * K * width);
    rc = comm_combine(ctx, rt, rt->n_recv ? recv : NULL, n_send ? back : NULL, width);
    CHECK(rc == MPI_SUCCESS, "%s: comm_combine rc=%d", name, rc);
    CHECK(memcmp(back, send, sizeof(float) * n_send * width) == 0,
          "%s w=%d: combine did not return the rows sent", name, width);

    check_tokens(ctx, rt, route, kase, width);
    free(send), free(recv), free(back), free(want);
}

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    int P;
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &P);

    // Worst case on the expert side: every slot of every token lands on one rank.
    comm_ctx_t ctx;
    int rc = comm_init(&ctx, MPI_COMM_WORLD, E, (long)T * K, MAX_WIDTH, 16);
    CHECK(rc == MPI_SUCCESS, "comm_init rc=%d", rc);
    comm_route_t rt;
    rc = comm_route_alloc(&ctx, &rt);
    CHECK(rc == MPI_SUCCESS, "comm_route_alloc rc=%d", rc);

    int route[T * K]; // [T, K]
    static const int widths[2] = {5, MAX_WIDTH};
    // Both posting orders of the exchange's blocks: the scattered one, and plain rank order
    // (kept for moed-bench comm's comparison); each must deliver every row to its place.
    for (int order = 0; order < 2; order++) {
        ctx.post_rank_order = order;
        for (int kase = 0; kase < N_ROUTES; kase++) {
            make_routing(kase, route);
            for (int w = 0; w < 2; w++) check_case(&ctx, &rt, route, kase, widths[w]);
        }
    }
    ctx.post_rank_order = 0;

    // Errors are agreed: a negative count on the last rank only, or more rows than max_rows
    // arriving at rank 0 only, make every rank return MPI_ERR_COUNT (nobody is left
    // waiting in an exchange).
    for (int e = 0; e < E; e++) rt.send_expert_counts[e] = 0;
    if (g_rank == P - 1) rt.send_expert_counts[E - 1] = -1;
    rc = comm_exchange_counts(&ctx, &rt);
    CHECK(rc == MPI_ERR_COUNT, "negative count: rc=%d, want MPI_ERR_COUNT", rc);
    for (int e = 0; e < E; e++) rt.send_expert_counts[e] = 0;
    rt.send_expert_counts[0] = T * K / P + 1; // rank 0 would receive T*K + P rows
    rc = comm_exchange_counts(&ctx, &rt);
    CHECK(rc == MPI_ERR_COUNT, "overfull route: rc=%d, want MPI_ERR_COUNT", rc);
    // A width the scratch was not sized for is refused before any message moves.
    for (int e = 0; e < E; e++) rt.send_expert_counts[e] = 0;
    rc = comm_exchange_counts(&ctx, &rt);
    CHECK(rc == MPI_SUCCESS, "empty route: rc=%d", rc);
    float dummy[1];
    rc = comm_dispatch(&ctx, &rt, dummy, dummy, MAX_WIDTH + 1);
    CHECK(rc == MPI_ERR_ARG, "width > max_width: rc=%d, want MPI_ERR_ARG", rc);
    int no_slots[1] = {-1};
    rc = comm_dispatch_tokens(&ctx, &rt, 1, 1, no_slots, dummy, dummy, dummy, MAX_WIDTH + 1);
    CHECK(rc == MPI_ERR_ARG, "tokens, width > max_width: rc=%d, want MPI_ERR_ARG", rc);
    rc = comm_combine(&ctx, &rt, dummy, dummy, 0);
    CHECK(rc == MPI_ERR_ARG, "combine, width 0: rc=%d, want MPI_ERR_ARG", rc);

    comm_route_free(&rt);
    comm_free(&ctx);
    MPI_Finalize();
    return 0;
}
