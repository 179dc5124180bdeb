// comm.dispatcher = auto: before the first step, every strategy runs forward + backward
// (train_grad, no optimizer update, so the run's results are exactly those of the strategy
// it keeps) on the first batch; the fastest is kept. Each strategy gets one untimed warm-up
// and AUTO_REPS timed passes; a pass's time is the slowest rank's, the median counts, rank
// 0 decides and broadcasts, so every rank switches to the same strategy.
#include <stdio.h>

#include "config/status.h"
#include "daemon/layer_alt.h"

enum { AUTO_REPS = 3 };

typedef struct {
    int kind, axis;
    const char* name;
} candidate_t;

static const candidate_t candidates[] = {
    {CFG_DISPATCH_ALLTOALLV, CFG_CHUNK_TOKENS, "alltoallv"},
    {CFG_DISPATCH_ALLTOALLV_CHUNKED, CFG_CHUNK_TOKENS, "alltoallv_chunked"},
    {CFG_DISPATCH_RING, CFG_CHUNK_TOKENS, "ring"},
    {CFG_DISPATCH_RING, CFG_CHUNK_EMBED, "ring"},
};
enum { N_CAND = sizeof candidates / sizeof candidates[0] };

// The limits cfg_validate checks for an explicit choice.
static int allowed(const train_t* tr, const candidate_t* c) {
    if (c->kind == CFG_DISPATCH_ALLTOALLV_CHUNKED) return tr->disp.C <= tr->Tl;
    if (c->kind == CFG_DISPATCH_RING && c->axis == CFG_CHUNK_EMBED)
        return tr->disp.C <= tr->model.d;
    return 1;
}

static double insertion_median(double* x, int n) {
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && x[j - 1] > x[j]; j--) {
            double t = x[j];
            x[j] = x[j - 1], x[j - 1] = t;
        }
    return x[n / 2];
}

int dispatch_autotune(train_t* tr, const float* x, const float* y, FILE* out) {
    dispatch_t* ds = &tr->disp;
    MPI_Comm comm = tr->comm.comm;
    double ms[N_CAND] = {0};
    step_stats_t st;
    int status = MOED_OK;
    double t[N_CAND][AUTO_REPS];
    // Round robin, so that a drift of the machine's speed (other jobs, caches warming up)
    // touches every strategy alike.
    for (int r = -1; r < AUTO_REPS; r++)
        for (int i = 0; i < N_CAND; i++) {
            if (!allowed(tr, &candidates[i])) continue;
            ds->kind = candidates[i].kind, ds->axis = candidates[i].axis;
            MPI_Barrier(comm);
            double t0 = MPI_Wtime();
            int rc = train_grad(tr, x, y, &st);
            double dt = MPI_Wtime() - t0;
            MPI_Allreduce(MPI_IN_PLACE, &dt, 1, MPI_DOUBLE, MPI_MAX, comm);
            if (rc != MOED_OK) status = rc;
            if (r >= 0) t[i][r] = dt;
        }
    for (int i = 0; i < N_CAND; i++)
        if (allowed(tr, &candidates[i])) ms[i] = 1e3 * insertion_median(t[i], AUTO_REPS);
    int best = 0;
    if (tr->rank == 0)
        for (int i = 1; i < N_CAND; i++)
            if (ms[i] > 0 && ms[i] < ms[best]) best = i;
    MPI_Bcast(&best, 1, MPI_INT, 0, comm);
    ds->kind = candidates[best].kind, ds->axis = candidates[best].axis;
    if (out) {
        fprintf(out, "moed: comm.dispatcher = auto, forward+backward on the first batch:");
        for (int i = 0; i < N_CAND; i++) {
            const candidate_t* c = &candidates[i];
            fprintf(out, "%s %s%s %s", i ? "," : "", c->name,
                    c->kind == CFG_DISPATCH_RING ? c->axis ? " (embed)" : " (tokens)" : "",
                    ms[i] > 0 ? "" : "skipped (comm.chunks too large)");
            if (ms[i] > 0) fprintf(out, "%.2f ms", ms[i]);
        }
        fprintf(out, "; using comm.dispatcher=%s", candidates[best].name);
        if (candidates[best].kind == CFG_DISPATCH_RING)
            fprintf(out, " comm.chunk_axis=%s", candidates[best].axis ? "embed" : "tokens");
        fprintf(out, "\n");
        fflush(out);
    }
    return status;
}
