// The dispatchers against alltoallv, with two layers and skewed routing (a router bias pulls
// every token towards expert 0 and keeps the upper half of the experts empty, so at P = 2
// and 4 whole ranks receive zero rows):
// - alltoallv_chunked: losses and weights bit-identical, with chunk counts that do not
//   divide the local tokens (5 chunks of 66, 132 or 264 tokens), one chunk, and one token
//   per chunk (P = 2, 4; 256 chunks at P = 1);
// - ring, both chunk axes (embed: 5 slices of d = 32), skewed and near-uniform with k = 3:
//   losses and first-step gradients within 1e-5 relative, and bit-identical from one run to
//   the next; on the tokens axis at P = 1 (one partial per token) bit-identical to
//   alltoallv;
// - comm.progress = thread (a progress thread completes the exchanges): every case above
//   again, bit-identical to the same strategy with MPI_Test between tiles (progress never
//   changes data), and the thread really ran; comm.progress = auto once, picking the
//   thread exactly when the node's ranks, two threads each, fit this process's cores.
// moed-test-ranks: 1 2 4
#define _GNU_SOURCE // sched_getaffinity, CPU_COUNT
#include <math.h>
#include <mpi.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/common/mpi_check.h"
#include "tests/common/testutil.h"

static int g_rank;

#define CHECK(cond, ...) TU_MPI_CHECK(g_rank, cond, __VA_ARGS__)

enum { T = 264, STEPS = 3 };

typedef struct {
    double loss[STEPS];
    uint64_t digest;
    long n_recv_min; // fewest expert-side rows on any rank and layer (last step)
    float* g;        // [n_local] first step's gradients (caller frees)
    long ng;
} outcome_t;

static const char* g_progress = "test"; // comm.progress of the next train()

// What comm.progress = auto must pick with compute.threads = 1: the thread when the node's
// ranks, two threads each, fit the cores this process may run on.
static int auto_thread(void) {
    MPI_Comm node;
    int n;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
    MPI_Comm_size(node, &n);
    MPI_Comm_free(&node);
    cpu_set_t set;
    CHECK(sched_getaffinity(0, sizeof set, &set) == 0, "sched_getaffinity");
    return 2 * n <= CPU_COUNT(&set);
}

static outcome_t train(const char* dispatcher, int chunks, const char* axis, int skew) {
    char err[CFG_ERRLEN], kv[64];
    cfg_t c;
    cfg_defaults(&c);
    const char* sets[] = {"model.n_layers=2", "train.global_batch_tokens=264", "train.clip=0.5"};
    for (size_t i = 0; i < sizeof sets / sizeof *sets; i++)
        CHECK(cfg_set(&c, sets[i], err, sizeof err) == 0, "%s", err);
    snprintf(kv, sizeof kv, "comm.dispatcher=%s", dispatcher);
    CHECK(cfg_set(&c, kv, err, sizeof err) == 0, "%s", err);
    snprintf(kv, sizeof kv, "comm.chunks=%d", chunks);
    CHECK(cfg_set(&c, kv, err, sizeof err) == 0, "%s", err);
    snprintf(kv, sizeof kv, "comm.chunk_axis=%s", axis);
    CHECK(cfg_set(&c, kv, err, sizeof err) == 0, "%s", err);
    snprintf(kv, sizeof kv, "comm.progress=%s", g_progress);
    CHECK(cfg_set(&c, kv, err, sizeof err) == 0, "%s", err);
    // Without the skew, k = 3: a sum of two slot terms is the same in either order, three
    // are not, so ring's per-rank partial sums really reorder the k-slot sum.
    if (!skew) CHECK(cfg_set(&c, "model.top_k=3", err, sizeof err) == 0, "%s", err);
    int P;
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    CHECK(cfg_validate(&c, P, err, sizeof err) == 0, "%s", err);

    static train_t tr;
    arena_t a;
    CHECK(tu_train_new(&tr, &a, &c, MPI_COMM_WORLD) == 0, "set-up");
    int want_thread =
        strcmp(dispatcher, "alltoallv") &&
        (!strcmp(g_progress, "thread") || (!strcmp(g_progress, "auto") && auto_thread()));
    CHECK(tr.disp.thread == want_thread, "%s progress %s: thread running %d", dispatcher,
          g_progress, tr.disp.thread);
    model_t* m = &tr.model;
    // Skew: expert 0 wins every token's first slot; experts E/2.. are never chosen.
    for (int l = 0; skew && l < m->L; l++) {
        m->bias[(long)l * m->E] = 1.0f;
        for (int e = m->E / 2; e < m->E; e++) m->bias[(long)l * m->E + e] = -10.0f;
    }
    float* xg = malloc(sizeof(float) * T * m->d);
    float* yg = malloc(sizeof(float) * T * m->d);
    outcome_t o = {.n_recv_min = 1L << 40};
    for (int s = 0; s < STEPS; s++) {
        tu_fill_normal(xg, (long)T * m->d, 100 + s, 1.0f);
        tu_fill_normal(yg, (long)T * m->d, 200 + s, 0.5f);
        step_stats_t st;
        CHECK(train_grad(&tr, xg + (long)tr.t0 * m->d, yg + (long)tr.t0 * m->d, &st) == 0,
              "step %d", s);
        if (s == 0) {
            o.ng = m->n_local;
            o.g = malloc(sizeof(float) * o.ng);
            memcpy(o.g, m->g, sizeof(float) * o.ng);
        }
        train_apply(&tr, 1e-2, &st);
        o.loss[s] = st.loss;
    }
    for (int l = 0; l < m->L; l++) {
        long r = tr.acts[l].route.n_recv;
        MPI_Allreduce(MPI_IN_PLACE, &r, 1, MPI_LONG, MPI_MIN, MPI_COMM_WORLD);
        if (r < o.n_recv_min) o.n_recv_min = r;
    }
    o.digest = model_digest(m, m->w);
    free(xg), free(yg);
    tu_train_free(&tr, &a);
    return o;
}

// Largest relative difference of the losses and of the first step's gradients (max over
// ranks). Not of the weights after several AdamW steps: AdamW's m/sqrt(v) turns a 1e-9
// difference in a near-zero gradient into a full step of the other sign.
static double max_rel(const outcome_t* a, const outcome_t* b) {
    double r = tu_rel_err_ff(a->g, b->g, a->ng);
    for (int s = 0; s < STEPS; s++) {
        double d = fabs(a->loss[s] - b->loss[s]) / fabs(b->loss[s]);
        if (!(d <= r)) r = d; // NaN fails
    }
    MPI_Allreduce(MPI_IN_PLACE, &r, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return r;
}

static int identical(const outcome_t* a, const outcome_t* b) {
    for (int s = 0; s < STEPS; s++)
        if (a->loss[s] != b->loss[s]) return 0;
    return a->digest == b->digest;
}

// The chunked and ring cases of the header, with MPI_Test progress and with the thread.
static void dispatcher_cases(void);

int main(int argc, char** argv) {
    int provided;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    CHECK(provided == MPI_THREAD_MULTIPLE, "MPI_THREAD_MULTIPLE not provided (%d)", provided);
    dispatcher_cases();
    MPI_Finalize();
    return 0;
}

static void dispatcher_cases(void) {
    int P;
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    outcome_t ref = train("alltoallv", 1, "tokens", 1);
    if (P > 1) CHECK(ref.n_recv_min == 0, "the skew leaves some rank without rows");
    int Tl = T / P;
    int chunk_counts[] = {5, 1, Tl < 256 ? Tl : 256};
    const char* progress[] = {"test", "thread", "auto"};
    for (int pr = 0; pr < 3; pr++)
        for (int i = 0; i < (pr < 2 ? 3 : 1); i++) {
            g_progress = progress[pr];
            outcome_t o = train("alltoallv_chunked", chunk_counts[i], "tokens", 1);
            g_progress = "test";
            for (int s = 0; s < STEPS; s++)
                CHECK(o.loss[s] == ref.loss[s],
                      "chunks %d progress %s step %d loss %.17g vs alltoallv %.17g",
                      chunk_counts[i], progress[pr], s, o.loss[s], ref.loss[s]);
            CHECK(o.digest == ref.digest, "chunks %d progress %s weights digest %016llx vs %016llx",
                  chunk_counts[i], progress[pr], (unsigned long long)o.digest,
                  (unsigned long long)ref.digest);
            if (g_rank == 0)
                printf("P=%d chunks=%d progress %s: %d losses and the weights bit-identical to "
                       "alltoallv\n",
                       P, chunk_counts[i], progress[pr], STEPS);
            free(o.g);
        }
    // ring, on the skewed routing and on the initial near-uniform one with k = 3 (where a
    // token's slots often sit on two or three ranks)
    outcome_t uref = train("alltoallv", 1, "tokens", 0);
    const char* axes[] = {"tokens", "embed"};
    for (int skew = 0; skew < 2; skew++)
        for (int i = 0; i < 2; i++) {
            const outcome_t* base = skew ? &ref : &uref;
            outcome_t o = train("ring", 5, axes[i], skew), again = train("ring", 5, axes[i], skew);
            double rel = max_rel(&o, base);
            CHECK(rel <= 1e-5, "ring %s: losses/gradients differ from alltoallv by %.3g relative",
                  axes[i], rel);
            CHECK(identical(&o, &again), "ring %s: two runs differ", axes[i]);
            g_progress = "thread";
            outcome_t th = train("ring", 5, axes[i], skew);
            g_progress = "test";
            CHECK(identical(&o, &th), "ring %s: the progress thread changed the results", axes[i]);
            if (P == 1 && i == 0)
                CHECK(identical(&o, base), "ring tokens at P = 1: not bit-identical to alltoallv");
            if (g_rank == 0)
                printf("P=%d ring %s %s: losses and gradients within %.2g of alltoallv, "
                       "bit-identical run to run and with the progress thread%s\n",
                       P, axes[i], skew ? "skewed" : "uniform", rel,
                       P == 1 && i == 0 ? " and to alltoallv" : "");
            free(o.g), free(again.g), free(th.g);
        }
    free(ref.g), free(uref.g);
}
