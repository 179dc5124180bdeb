// moed-bench comm (run under mpiexec.mpich -n P): the token exchange of every dispatcher.
//
// Part 1, OSU-style: dispatch + combine of a real routed batch (d = 1024, E = 16, uniform and
// Zipf-skewed routing, 512..8192 tokens per rank, k = 2 and 8) per strategy, beside raw
// MPI_Alltoallv of the same row counts. Each iteration starts after a barrier, and the
// strategies take turns iteration by iteration; after warm-up rounds, a rank's time is the
// mean over the timed ones, and min/avg/max are taken across ranks. GB/s per rank counts the bytes
// a rank sends in both directions (dispatch rows + combine rows), as OSU counts a message once. The
// count exchange, the same for all strategies, is left out. "alltoallv" is what that dispatcher
// runs: the token rows packed and sent in one call (comm_dispatch_tokens), the combine, and the
// weighted unpermute; "... no unpermute" leaves out the unpermute (compute, not packing): its ratio
// to raw is the permute/pack overhead. "Alltoallw, types" is the same exchange with MPI
// derived datatypes (the alternative exchange.c measured and rejected). --alltoallv-only
// prints just those and raw.
//
// "ring (traffic)" moves what the ring dispatcher moves (routing and token rows all-gathered,
// partial outputs exchanged and summed in rank order) with MPI collectives of the same
// sizes; the ring itself (messages overlapped with compute) is timed in part 2.
//
// Part 2: a full training step (one layer) per strategy: step time (max over ranks, median
// over repetitions) against compute and communication parts measured by the blocking
// alltoallv step itself (its compute time and its exposed comm time), their sum and their
// max; every step also reports the comm it hid behind compute (dispatch.h's accounting).
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"
#include "comm/chunked.h"
#include "compute/omp_compat.h"
#include "compute/permute.h"
#include "compute/rng.h"
#include "config/config.h"
#include "daemon/train.h"

enum { D = 1024, NE = 16, CHUNKS = 4 };

static int g_rank, g_P;

static void die(const char* what) {
    fprintf(stderr, "moed-bench comm: rank %d: %s\n", g_rank, what);
    MPI_Abort(MPI_COMM_WORLD, 1);
}

static void* xalloc(size_t bytes) {
    void* p = malloc(bytes ? bytes : 1);
    if (!p) die("out of memory");
    memset(p, 0, bytes);
    return p;
}

// k distinct experts per token from the global token index: uniform, or Zipf (weight of
// expert e is 1/(e+1)), which sends most rows to the first ranks.
static void make_routing(int Tl, int k, int skew, int* sel, float* gates) {
    double cdf[NE], z = 0;
    for (int e = 0; e < NE; e++) cdf[e] = (z += skew ? 1.0 / (e + 1) : 1.0);
    for (int t = 0; t < Tl; t++) {
        uint32_t g = (uint32_t)((long)g_rank * Tl + t);
        for (int i = 0, draw = 0; i < k; draw++) {
            double u = rng_uniform(99, 0x600 + skew, g, (uint64_t)draw) * z;
            int e = 0;
            while (e < NE - 1 && cdf[e] < u) e++;
            int dup = 0;
            for (int j = 0; j < i; j++) dup |= sel[(long)t * k + j] == e;
            if (!dup) sel[(long)t * k + i] = e, gates[(long)t * k + i] = 1.0f / k, i++;
        }
    }
}

// Mean seconds per iteration of `fn` on this rank, after `warm` untimed iterations.
typedef struct {
    int* sel;         // [Tl, k]
    int* sel_all;     // [P * Tl, k]
    float* gates_all; // [P * Tl, k]
    float* xall;      // [P * Tl, d]
    float* part;      // [P, Tl, d]
    float* part_recv; // [P, Tl, d]
    int* row;         // [P * Tl, k] expert-side row of each local slot, else -1
} ring_bufs_t;

// The derived-datatype alternative to the block messages (MPI_Alltoallw): per destination
// an indexed-block type picking its rows from the token rows (a token once per slot), per
// source an indexed type placing its expert blocks in the expert layout.
typedef struct {
    int* row_token;                      // [n_send] token of each send row
    int *blk_len, *blk_row;              // [P, El] rows and expert-side start of block (p, e)
    int *ones, *zeros, *displs;          // [P] Alltoallw counts and byte displacements
    MPI_Datatype *tok_t, *exp_t, *row_t; // [P]
} w_bufs_t;

typedef struct {
    comm_ctx_t* cx;
    ring_bufs_t rg;
    w_bufs_t w;
    comm_route_t* route;
    comm_chunks_t* ch;
    int Tl, k;
    int *slot_pos, *slot_pos_chunked;
    float *gates, *xn, *xs, *xe, *yslot, *out;
    MPI_Request* reqs;
} ex_t;

static void run_raw(ex_t* x) {
    MPI_Datatype row;
    comm_row_type(x->cx, D, &row);
    const comm_route_t* r = x->route;
    MPI_Alltoallv(x->xs, r->send_counts, r->send_displs, row, x->xe, r->recv_counts, r->recv_displs,
                  row, x->cx->comm);
    MPI_Alltoallv(x->xe, r->recv_counts, r->recv_displs, row, x->yslot, r->send_counts,
                  r->send_displs, row, x->cx->comm);
}

// The exchange of the alltoallv dispatcher: token rows packed and sent, combined back.
static void run_exchange(ex_t* x) {
    comm_dispatch_tokens(x->cx, x->route, x->Tl, x->k, x->slot_pos, x->xn, x->xs, x->xe, D);
    comm_combine(x->cx, x->route, x->xe, x->yslot, D);
}

// The same exchange with its blocks posted in plain rank order (the order before the
// scattered one; exchange.c, peer), for the comparison at P >= 4.
static void run_exchange_rank_order(ex_t* x) {
    x->cx->post_rank_order = 1;
    run_exchange(x);
    x->cx->post_rank_order = 0;
}

static void run_alltoallv(ex_t* x) {
    run_exchange(x);
    unpermute_forward(x->Tl, x->k, D, x->slot_pos, x->gates, x->yslot, x->out);
}

static void run_chunked(ex_t* x) {
    comm_chunks_t* ch = x->ch;
    float* stage = x->cx->row_scratch;
    permute_rows(x->Tl, x->k, D, x->slot_pos_chunked, x->xn, x->xs);
    for (int c = 0; c < ch->C; c++)
        comm_chunk_dispatch_start(x->cx, ch, c, x->xs, stage, D, &x->reqs[c]);
    for (int c = 0; c < ch->C; c++) {
        MPI_Wait(&x->reqs[c], MPI_STATUS_IGNORE);
        comm_chunk_unpack(x->cx, ch, c, stage, x->xe, D);
        comm_chunk_pack(x->cx, ch, c, x->xe, stage, D);
        comm_chunk_combine_start(x->cx, ch, c, stage, x->yslot, D, &x->reqs[ch->C + c]);
    }
    for (int c = 0; c < ch->C; c++) MPI_Wait(&x->reqs[ch->C + c], MPI_STATUS_IGNORE);
    unpermute_forward(x->Tl, x->k, D, x->slot_pos_chunked, x->gates, x->yslot, x->out);
}

// dispatch + combine with MPI_Alltoallw and derived types. The types depend on the step's
// counts, so they are built, committed and freed every iteration, as a step would have to.
static void run_alltoallw(ex_t* x) {
    w_bufs_t* w = &x->w;
    const comm_route_t* r = x->route;
    int El = NE / g_P;
    MPI_Datatype row;
    comm_row_type(x->cx, D, &row);
    for (int p = 0; p < g_P; p++) {
        MPI_Type_create_indexed_block(r->send_counts[p], 1, w->row_token + r->send_displs[p], row,
                                      &w->tok_t[p]);
        MPI_Type_indexed(El, w->blk_len + p * El, w->blk_row + p * El, row, &w->exp_t[p]);
        MPI_Type_commit(&w->tok_t[p]);
        MPI_Type_commit(&w->exp_t[p]);
    }
    MPI_Alltoallw(x->xn, w->ones, w->zeros, w->tok_t, x->xe, w->ones, w->zeros, w->exp_t,
                  x->cx->comm);
    MPI_Alltoallw(x->xe, w->ones, w->zeros, w->exp_t, x->yslot, r->send_counts, w->displs, w->row_t,
                  x->cx->comm);
    for (int p = 0; p < g_P; p++) MPI_Type_free(&w->tok_t[p]), MPI_Type_free(&w->exp_t[p]);
}

// Sets up run_alltoallw's arrays and checks that it lands exactly what run_exchange lands.
static void alltoallw_setup(ex_t* x) {
    w_bufs_t* w = &x->w;
    const comm_route_t* r = x->route;
    int El = NE / g_P;
    long slots = (long)x->Tl * x->k, n_recv = r->n_recv > 0 ? r->n_recv : 1;
    w->row_token = xalloc(sizeof(int) * (slots ? slots : 1));
    for (long s = 0; s < slots; s++) w->row_token[x->slot_pos[s]] = (int)(s / x->k);
    w->blk_len = xalloc(sizeof(int) * g_P * El);
    w->blk_row = xalloc(sizeof(int) * g_P * El);
    for (int e = 0; e < El; e++)
        for (int p = 0, at = r->expert_offsets[e]; p < g_P; p++) {
            w->blk_len[p * El + e] = r->recv_expert_counts[p * El + e];
            w->blk_row[p * El + e] = at;
            at += w->blk_len[p * El + e];
        }
    w->ones = xalloc(sizeof(int) * g_P), w->zeros = xalloc(sizeof(int) * g_P);
    w->displs = xalloc(sizeof(int) * g_P);
    w->tok_t = xalloc(sizeof(MPI_Datatype) * g_P), w->exp_t = xalloc(sizeof(MPI_Datatype) * g_P);
    w->row_t = xalloc(sizeof(MPI_Datatype) * g_P);
    for (int p = 0; p < g_P; p++) {
        w->ones[p] = 1;
        w->displs[p] = (int)((long)r->send_displs[p] * D * sizeof(float)); // < 2^31: bench sizes
        comm_row_type(x->cx, D, &w->row_t[p]);
    }
    float* want = xalloc(sizeof(float) * n_recv * D);
    run_exchange(x);
    memcpy(want, x->xe, sizeof(float) * n_recv * D);
    memset(x->xe, 0, sizeof(float) * n_recv * D);
    run_alltoallw(x);
    if (memcmp(want, x->xe, sizeof(float) * r->n_recv * D)) die("Alltoallw rows differ");
    free(want);
}

static void alltoallw_free(w_bufs_t* w) {
    free(w->row_token), free(w->blk_len), free(w->blk_row), free(w->ones), free(w->zeros);
    free(w->displs), free(w->tok_t), free(w->exp_t), free(w->row_t);
}

// The ring dispatcher's traffic and copies, with MPI collectives of the same sizes in place
// of its ring of messages: routing and token rows all-gathered, local slots' rows placed on
// the expert side, per-rank partial outputs (gate-weighted sums of the local slots' rows)
// exchanged pairwise and summed in rank order.
static void run_ring(ex_t* x) {
    ring_bufs_t* g = &x->rg;
    long Tk = (long)x->Tl * x->k, n = (long)x->Tl * D;
    MPI_Allgather(g->sel, (int)Tk, MPI_INT, g->sel_all, (int)Tk, MPI_INT, MPI_COMM_WORLD);
    MPI_Allgather(x->gates, (int)Tk, MPI_FLOAT, g->gates_all, (int)Tk, MPI_FLOAT, MPI_COMM_WORLD);
    MPI_Allgather(x->xn, (int)n, MPI_FLOAT, g->xall, (int)n, MPI_FLOAT, MPI_COMM_WORLD);
    for (long s = 0; s < Tk * g_P; s++)
        if (g->row[s] >= 0)
            memcpy(x->xe + (long)g->row[s] * D, g->xall + s / x->k * D, sizeof(float) * D);
    for (long t = 0; t < (long)x->Tl * g_P; t++) {
        float* o = g->part + t * D;
        memset(o, 0, sizeof(float) * D);
        for (int i = 0; i < x->k; i++) {
            int r = g->row[t * x->k + i];
            if (r < 0) continue;
            float w = g->gates_all[t * x->k + i];
            const float* y = x->xe + (long)r * D;
            for (int j = 0; j < D; j++) o[j] += w * y[j];
        }
    }
    MPI_Alltoall(g->part, (int)n, MPI_FLOAT, g->part_recv, (int)n, MPI_FLOAT, MPI_COMM_WORLD);
    for (long t = 0; t < x->Tl; t++) {
        float* o = x->out + t * D;
        memcpy(o, g->part_recv + t * D, sizeof(float) * D);
        for (int p = 1; p < g_P; p++)
            for (int j = 0; j < D; j++) o[j] += g->part_recv[p * n + t * D + j];
    }
}

// Mean seconds per iteration of each of the n strategies on this rank, after `warm` untimed
// rounds. The strategies take turns within every round (a barrier before each), so a change
// in the machine's load during the run hits all of them alike and their ratios stay fair.
static void time_all(int n, void (*const fn[])(ex_t*), ex_t* x, int warm, int iters, double* t) {
    for (int j = 0; j < n; j++) t[j] = 0;
    // Every other iteration runs the strategies in reverse, so that each follows both of its
    // neighbours in turn: one run after another that has just warmed the same buffers
    // measured 10-12% faster (P = 2, where the two posting orders are the same code).
    for (int i = 0; i < warm + iters; i++)
        for (int jj = 0; jj < n; jj++) {
            int j = i % 2 ? n - 1 - jj : jj;
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = MPI_Wtime();
            fn[j](x);
            if (i >= warm) t[j] += MPI_Wtime() - t0;
        }
    for (int j = 0; j < n; j++) t[j] /= iters;
}

// min/avg/max across ranks of t; printed with GB/s of the average and the ratio to raw.
static void report(const char* name, double t, double bytes, double raw_avg, double* avg_out) {
    double mn, mx, sum;
    MPI_Reduce(&t, &mn, 1, MPI_DOUBLE, MPI_MIN, 0, MPI_COMM_WORLD);
    MPI_Reduce(&t, &mx, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    MPI_Reduce(&t, &sum, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
    double bsum;
    MPI_Reduce(&bytes, &bsum, 1, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
    if (g_rank) return;
    double avg = sum / g_P;
    if (avg_out) *avg_out = avg;
    printf("    %-18s %9.3f %9.3f %9.3f  %8.2f  %6.3f\n", name, 1e3 * mn, 1e3 * avg, 1e3 * mx,
           bsum / g_P / avg / 1e9, raw_avg > 0 ? avg / raw_avg : 1.0);
}

// ring: every rank's routing, and the expert-side row of each slot on a local expert.
static void ring_setup(ex_t* x, int* sel) {
    int Tl = x->Tl, k = x->k, El = NE / g_P;
    long slots = (long)Tl * k;
    ring_bufs_t* rg = &x->rg;
    long T = (long)Tl * g_P;
    rg->sel = sel;
    rg->sel_all = xalloc(sizeof(int) * T * k);
    rg->gates_all = xalloc(sizeof(float) * T * k);
    rg->xall = xalloc(sizeof(float) * T * D);
    rg->part = xalloc(sizeof(float) * T * D);
    rg->part_recv = xalloc(sizeof(float) * T * D);
    rg->row = xalloc(sizeof(int) * T * k);
    MPI_Allgather(sel, (int)slots, MPI_INT, rg->sel_all, (int)slots, MPI_INT, MPI_COMM_WORLD);
    long ring_rows = 0;
    for (int e = g_rank * El; e < (g_rank + 1) * El; e++)
        for (long s = 0; s < T * k; s++)
            if (rg->sel_all[s] == e) rg->row[s] = (int)ring_rows++;
    for (long s = 0; s < T * k; s++)
        if (rg->sel_all[s] / El != g_rank) rg->row[s] = -1;
}

static void exchange_case(int Tl, int k, int skew, int warm, int iters, int alltoallv_only) {
    long slots = (long)Tl * k;
    ex_t x = {.Tl = Tl, .k = k};
    int* sel = xalloc(sizeof(int) * slots);
    x.gates = xalloc(sizeof(float) * slots);
    x.slot_pos = xalloc(sizeof(int) * slots);
    x.slot_pos_chunked = xalloc(sizeof(int) * slots);
    make_routing(Tl, k, skew, sel, x.gates);

    comm_ctx_t cx;
    comm_route_t route;
    long max_rows = slots * g_P;
    if (comm_init(&cx, MPI_COMM_WORLD, NE, max_rows, D, 1) || comm_route_alloc(&cx, &route))
        die("comm set-up failed (out of memory?)");
    x.cx = &cx, x.route = &route;
    permute_plan(Tl, k, NE, sel, route.send_expert_counts, x.slot_pos);
    if (comm_exchange_counts(&cx, &route)) die("count exchange failed");

    int El = NE / g_P;
    comm_chunks_t ch = {.C = CHUNKS};
    ch.send_ec = xalloc(sizeof(int) * CHUNKS * NE);
    ch.recv_ec = xalloc(sizeof(int) * g_P * CHUNKS * El);
    ch.tmp = xalloc(sizeof(int) * g_P * CHUNKS * El);
    ch.counts = xalloc(sizeof(int) * CHUNKS * 4 * g_P);
    ch.send_off = xalloc(sizeof(long) * (CHUNKS + 1));
    ch.recv_off = xalloc(sizeof(long) * (CHUNKS + 1));
    ch.fpos = xalloc(sizeof(int) * CHUNKS * g_P * El);
    memcpy(x.slot_pos_chunked, x.slot_pos, sizeof(int) * slots);
    comm_chunk_plan(&ch, Tl, k, NE, sel, x.slot_pos_chunked);
    comm_route_t route2;
    if (comm_route_alloc(&cx, &route2) || comm_chunk_counts(&cx, &ch, &route2))
        die("chunk count exchange failed");
    x.ch = &ch;
    x.reqs = xalloc(sizeof(MPI_Request) * 2 * CHUNKS);

    x.xn = xalloc(sizeof(float) * Tl * D);
    for (long i = 0; i < (long)Tl * D; i++) x.xn[i] = (float)(i % 1000) * 1e-3f;
    x.xs = xalloc(sizeof(float) * slots * D);
    x.xe = xalloc(sizeof(float) * (route.n_recv > 0 ? route.n_recv : 1) * D);
    x.yslot = xalloc(sizeof(float) * slots * D);
    x.out = xalloc(sizeof(float) * Tl * D);
    permute_rows(Tl, k, D, x.slot_pos, x.xn, x.xs);

    double bytes = (double)(route.n_send + route.n_recv) * D * sizeof(float);
    long nr_min = route.n_recv, nr_max = route.n_recv;
    MPI_Allreduce(MPI_IN_PLACE, &nr_min, 1, MPI_LONG, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &nr_max, 1, MPI_LONG, MPI_MAX, MPI_COMM_WORLD);
    if (g_rank == 0)
        printf("  %-7s tokens/rank %5d  k %d  rows received per rank %ld..%ld\n",
               skew ? "skewed" : "uniform", Tl, k, nr_min, nr_max);
    alltoallw_setup(&x);
    if (!alltoallv_only) ring_setup(&x, sel);
    static const char* name[] = {"raw MPI_Alltoallv", "alltoallv",          "  ... no unpermute",
                                 "  ... rank order",  "  Alltoallw, types", "alltoallv_chunked",
                                 "ring (traffic)"};
    void (*const fn[])(ex_t*) = {
        run_raw,       run_alltoallv, run_exchange, run_exchange_rank_order,
        run_alltoallw, run_chunked,   run_ring};
    enum { RING = 6 };
    double t[7], raw = 0;
    int n = alltoallv_only ? 5 : 7;
    time_all(n, fn, &x, warm, iters, t);
    // ring moves (P-1)/P of all token rows and of all partial outputs, whatever k is: its
    // GB/s counts those bytes, its ratio is to raw Alltoallv of the routed rows.
    double ring_bytes = 2.0 * (g_P - 1) * Tl * D * sizeof(float);
    for (int j = 0; j < n; j++) {
        report(name[j], t[j], j == RING ? ring_bytes : bytes, raw, j == 0 ? &raw : NULL);
        if (j == 0) MPI_Bcast(&raw, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    }
    alltoallw_free(&x.w);

    free(sel), free(x.gates), free(x.slot_pos), free(x.slot_pos_chunked);
    free(ch.send_ec), free(ch.recv_ec), free(ch.tmp), free(ch.counts), free(ch.send_off);
    free(ch.recv_off), free(ch.fpos), free(x.reqs);
    free(x.xn), free(x.xs), free(x.xe), free(x.yslot), free(x.out);
    ring_bufs_t* rg = &x.rg; // NULL members when ring_setup did not run
    free(rg->sel_all), free(rg->gates_all), free(rg->xall), free(rg->part), free(rg->part_recv);
    free(rg->row);
    comm_route_free(&route), comm_route_free(&route2);
    comm_free(&cx);
}

// ---- part 2: full steps ----

typedef struct {
    double step, compute, comm, overlap; // seconds, medians over repetitions
} step_time_t;

// comm.progress of the overlapping strategies (--progress): test, thread or auto
static const char* g_progress = "test";
// compute.prepack of every strategy's steps (--prepack): off, forward or all
static const char* g_prepack = "off";

static step_time_t time_steps(const char* dispatcher, const char* axis, int chunks, int Tl, int f,
                              int reps) {
    cfg_t c;
    char err[CFG_ERRLEN], set[96], set2[96], set3[96], set4[96];
    cfg_defaults(&c);
    snprintf(set, sizeof set, "comm.dispatcher=%s", dispatcher);
    snprintf(set2, sizeof set2, "comm.chunk_axis=%s", axis);
    snprintf(set3, sizeof set3, "comm.progress=%s", g_progress);
    snprintf(set4, sizeof set4, "compute.prepack=%s", g_prepack);
    const char* fixed[] = {
        "model.d_model=1024", "model.n_experts=16", "model.top_k=2", set, set2, set3, set4};
    for (int i = 0; i < 7; i++)
        if (cfg_set(&c, fixed[i], err, sizeof err)) die(err);
    c.model.d_ff = f;
    c.train.global_batch_tokens = Tl * g_P;
    c.comm.chunks = chunks;
    if (cfg_validate(&c, g_P, err, sizeof err)) die(err);
    static train_t tr;
    arena_t a;
    arena_begin_count(&a);
    train_layout(&tr, &c, g_rank, g_P, &a);
    if (arena_reserve(&a) != 0) die("out of memory for the training state");
    train_layout(&tr, &c, g_rank, g_P, &a);
    if (train_setup(&tr, MPI_COMM_WORLD) != 0) die("train_setup failed");
    long n = (long)Tl * c.model.d_model;
    float* x = xalloc(sizeof(float) * n);
    float* y = xalloc(sizeof(float) * n);
    for (long i = 0; i < n; i++) {
        x[i] = rng_normal(7, RNG_STREAM(RNG_DATA_X, 0), (uint32_t)g_rank, (uint64_t)i);
        y[i] = rng_normal(8, RNG_STREAM(RNG_DATA_X, 0), (uint32_t)g_rank, (uint64_t)i);
    }
    step_stats_t st;
    double t[4][32]; // reps <= 32 (bench_comm)
    if (g_rank == 0 && strcmp(dispatcher, "alltoallv"))
        printf("    (%s: progress %s)\n", dispatcher, tr.disp.thread ? "thread" : "test");
    train_step(&tr, x, y, 1e-5, &st); // warm-up
    for (int r = 0; r < reps; r++) {
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = MPI_Wtime();
        train_step(&tr, x, y, 1e-5, &st);
        double v[4] = {MPI_Wtime() - t0, st.t_compute, st.t_comm, st.t_comm_overlap};
        MPI_Allreduce(MPI_IN_PLACE, v, 4, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        for (int j = 0; j < 4; j++) t[j][r] = v[j];
    }
    step_time_t out = {bench_median(t[0], reps), bench_median(t[1], reps), bench_median(t[2], reps),
                       bench_median(t[3], reps)};
    free(x), free(y);
    train_free(&tr);
    arena_free(&a);
    return out;
}

static void step_line(const char* name, step_time_t t, double mx) {
    printf("    %-18s step %8.1f ms  %5.2f x max  exposed comm %6.1f ms  hidden comm %6.1f ms\n",
           name, 1e3 * t.step, t.step / mx, 1e3 * t.comm, 1e3 * t.overlap);
}

static void step_case(int Tl, int f, int reps) {
    step_time_t base = time_steps("alltoallv", "tokens", CHUNKS, Tl, f, reps);
    step_time_t chk = time_steps("alltoallv_chunked", "tokens", CHUNKS, Tl, f, reps);
    step_time_t chk8 = time_steps("alltoallv_chunked", "tokens", 2 * CHUNKS, Tl, f, reps);
    step_time_t rt = time_steps("ring", "tokens", CHUNKS, Tl, f, reps);
    step_time_t re = time_steps("ring", "embed", CHUNKS, Tl, f, reps);
    if (g_rank) return;
    double sum = base.compute + base.comm, mx = base.compute > base.comm ? base.compute : base.comm;
    printf("  d 1024 f %4d E 16 k 2 tokens/rank %5d: compute %.1f ms, comm %.1f ms "
           "(sum %.1f, max %.1f)\n",
           f, Tl, 1e3 * base.compute, 1e3 * base.comm, 1e3 * sum, 1e3 * mx);
    step_line("alltoallv", base, mx);
    step_line("alltoallv_chunked", chk, mx);
    step_line("  ... 8 chunks", chk8, mx);
    step_line("ring (tokens)", rt, mx);
    step_line("ring (embed)", re, mx);
}

int bench_comm(int argc, char** argv) {
    // 0: not given; --quick then picks the shorter defaults whatever the options' order.
    int quick = 0, iters = 0, reps = 0, steps_only = 0, tokens = 0, ff = 0, alltoallv_only = 0;
    for (int i = 0; i < argc; i++) {
        const char* o = argv[i];
        int bad = 0;
        if (!strcmp(o, "--quick"))
            quick = 1;
        else if (!strcmp(o, "--steps-only"))
            steps_only = 1;
        else if (!strcmp(o, "--alltoallv-only")) // raw and alltoallv rows, no steps
            alltoallv_only = 1;
        else if (!strcmp(o, "--iters") && i + 1 < argc)
            bad = bench_int_arg("comm", o, argv[++i], 1, 100000, &iters);
        else if (!strcmp(o, "--reps") && i + 1 < argc) // full steps timed per strategy
            bad = bench_int_arg("comm", o, argv[++i], 1, 32, &reps);
        else if (!strcmp(o, "--tokens") && i + 1 < argc) // full steps: tokens per rank
            bad = bench_int_arg("comm", o, argv[++i], 1, 1 << 20, &tokens);
        else if (!strcmp(o, "--ff") && i + 1 < argc) // full steps: one d_ff only
            bad = bench_int_arg("comm", o, argv[++i], 1, 1 << 16, &ff);
        else if (!strcmp(o, "--progress") && i + 1 < argc) // comm.progress
            g_progress = argv[++i];
        else if (!strcmp(o, "--prepack") && i + 1 < argc) // compute.prepack
            g_prepack = argv[++i];
        else {
            return bench_unknown("comm", o);
        }
        if (bad) return 2;
    }
    int warm = quick ? 1 : 3;
    if (!iters) iters = quick ? 4 : 10;
    if (!reps) reps = quick ? 3 : 5;
    if (strcmp(g_progress, "test") && strcmp(g_progress, "thread") && strcmp(g_progress, "auto")) {
        fprintf(stderr, "moed-bench comm: --progress must be test, thread or auto\n");
        return 2;
    }
    if (strcmp(g_prepack, "off") && strcmp(g_prepack, "forward") && strcmp(g_prepack, "all")) {
        fprintf(stderr, "moed-bench comm: --prepack must be off, forward or all\n");
        return 2;
    }
    int provided;
    MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_P);
    if (NE % g_P) {
        if (g_rank == 0) fprintf(stderr, "moed-bench comm: P must divide %d\n", NE);
        MPI_Finalize();
        return 2;
    }
    // One thread per rank, as the steps' configs say (compute.threads = 1) and as moed run
    // sets it: left at the OpenMP default, every element-wise parallel loop (AdamW, packing)
    // would start a team of all the node's cores in each rank.
    omp_set_num_threads(1);
    if (kern_select(-1) != 0 || kern_init(1) != 0) die("kernel set-up failed");
    if (g_rank == 0) {
        printf("moed-bench comm: P = %d, d = %d, E = %d, %d chunks, isa %s; %d warm-up + %d "
               "timed iterations\n",
               g_P, D, NE, CHUNKS, kern->name, warm, iters);
        printf("  dispatch + combine per iteration, ms over ranks; GB/s per rank (avg)\n");
        printf("    %-18s %9s %9s %9s  %8s  %6s\n", "strategy", "min", "avg", "max", "GB/s",
               "x raw");
    }
    int tls[] = {512, 2048, 8192}, ks[] = {2, 8};
    for (int ti = 0; ti < (steps_only ? 0 : quick ? 2 : 3); ti++)
        for (int ki = 0; ki < 2; ki++)
            for (int skew = 0; skew < 2; skew++)
                exchange_case(tls[ti], ks[ki], skew, warm, iters, alltoallv_only);
    if (g_rank == 0 && !alltoallv_only)
        printf("full training step (1 layer), medians of %d steps, --progress %s, --prepack "
               "%s:\n",
               reps, g_progress, g_prepack);
    int fs[] = {64, 256}, nf = alltoallv_only ? 0 : quick ? 1 : 2;
    if (ff > 0 && nf > 0) fs[0] = ff, nf = 1;
    for (int fi = 0; fi < nf; fi++)
        step_case(tokens > 0 ? tokens : quick ? 512 : 2048, fs[fi], reps);
    kern_shutdown();
    MPI_Finalize();
    return 0;
}
