// comm.dispatcher = alltoallv_chunked gives losses and weights bit-identical to alltoallv:
// two layers, skewed routing (a router bias pulls every token towards expert 0 and keeps
// the upper half of the experts empty, so at P = 2 and 4 whole ranks receive zero rows),
// and chunk counts that do not divide the local tokens (5 chunks of 66, 132 or 264 tokens),
// one chunk, and one token per chunk (P = 2, 4; 256 chunks at P = 1).
// moed-test-ranks: 1 2 4
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/common/testutil.h"

static int g_rank;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "rank %d: %s:%d: CHECK(%s) failed: ", g_rank, __FILE__, __LINE__,      \
                    #cond);                                                                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            MPI_Abort(MPI_COMM_WORLD, 1);                                                          \
        }                                                                                          \
    } while (0)

enum { T = 264, STEPS = 3 };

typedef struct {
    double loss[STEPS];
    uint64_t digest;
    long n_recv_min; // fewest expert-side rows on any rank and layer (last step)
} outcome_t;

static outcome_t train(const char* dispatcher, int chunks) {
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
    int P;
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    CHECK(cfg_validate(&c, P, err, sizeof err) == 0, "%s", err);

    static train_t tr;
    arena_t a;
    CHECK(tu_train_new(&tr, &a, &c, MPI_COMM_WORLD) == 0, "set-up");
    model_t* m = &tr.model;
    // Skew: expert 0 wins every token's first slot; experts E/2.. are never chosen.
    for (int l = 0; l < m->L; l++) {
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
        CHECK(train_step(&tr, xg + (long)tr.t0 * m->d, yg + (long)tr.t0 * m->d, 1e-2, &st) == 0,
              "step %d", s);
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

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    int P;
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    outcome_t ref = train("alltoallv", 1);
    if (P > 1) CHECK(ref.n_recv_min == 0, "the skew leaves some rank without rows");
    int Tl = T / P;
    int chunk_counts[] = {5, 1, Tl < 256 ? Tl : 256};
    for (int i = 0; i < 3; i++) {
        outcome_t o = train("alltoallv_chunked", chunk_counts[i]);
        for (int s = 0; s < STEPS; s++)
            CHECK(o.loss[s] == ref.loss[s], "chunks %d step %d loss %.17g vs alltoallv %.17g",
                  chunk_counts[i], s, o.loss[s], ref.loss[s]);
        CHECK(o.digest == ref.digest, "chunks %d weights digest %016llx vs %016llx",
              chunk_counts[i], (unsigned long long)o.digest, (unsigned long long)ref.digest);
        if (g_rank == 0)
            printf("P=%d chunks=%d: %d losses and the weights bit-identical to alltoallv\n", P,
                   chunk_counts[i], STEPS);
    }
    MPI_Finalize();
    return 0;
}
