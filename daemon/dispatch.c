// Dispatcher state, nonblocking-exchange bookkeeping and the progress-driving sgemm.
#include "daemon/dispatch.h"

#include "compute/kernels/kernels.h"
#include "config/config.h"

#define ALLOC(a, type, n) ((type*)arena_alloc((a), sizeof(type) * (size_t)(n)))

void dispatch_layout(dispatch_t* ds, int kind, int chunks, int L, int T, int E, int k, int P,
                     arena_t* a) {
    (void)T, (void)k;
    ds->kind = kind;
    ds->C = chunks;
    if (kind != CFG_DISPATCH_ALLTOALLV_CHUNKED) return;
    int C = chunks, El = E / P;
    ds->reqs = ALLOC(a, MPI_Request, 2 * C);
    ds->chunks = ALLOC(a, comm_chunks_t, L);
    for (int l = 0; l < L; l++) {
        comm_chunks_t tmp = {0}, *ch = ds->chunks ? &ds->chunks[l] : &tmp;
        ch->C = C;
        ch->send_ec = ALLOC(a, int, (long)C* E);
        ch->recv_ec = ALLOC(a, int, (long)P* C* El);
        ch->tmp = ALLOC(a, int, (long)P* C* El);
        ch->counts = ALLOC(a, int, (long)C * 4 * P);
        ch->send_off = ALLOC(a, long, C + 1);
        ch->recv_off = ALLOC(a, long, C + 1);
        ch->fpos = ALLOC(a, int, (long)C* P* El);
    }
    if (ds->reqs)
        for (int i = 0; i < 2 * C; i++) ds->reqs[i] = MPI_REQUEST_NULL;
}

void dispatch_started(dispatch_t* ds) {
    if (ds->active++ == 0) ds->t_since = MPI_Wtime();
}

static void finished(dispatch_t* ds, int n) {
    ds->active -= n;
    if (n > 0 && ds->active == 0) ds->t_inflight += MPI_Wtime() - ds->t_since;
}

void dispatch_wait(dispatch_t* ds, int i) {
    if (ds->reqs[i] == MPI_REQUEST_NULL) return; // completed by an earlier progress call
    double t0 = MPI_Wtime();
    MPI_Wait(&ds->reqs[i], MPI_STATUS_IGNORE);
    ds->t_wait += MPI_Wtime() - t0;
    finished(ds, 1);
}

void dispatch_progress(dispatch_t* ds) {
    if (ds->active == 0) return;
    // Each MPI_Test is one turn of MPICH's progress engine as well as the check itself.
    for (int i = 0; i < 2 * ds->C; i++) {
        if (ds->reqs[i] == MPI_REQUEST_NULL) continue;
        int done = 0;
        MPI_Test(&ds->reqs[i], &done, MPI_STATUS_IGNORE);
        if (done) finished(ds, 1);
    }
}

void dispatch_sgemm(dispatch_t* ds, int m, int n, int k, const float* a, long rsa, long csa,
                    const float* b, long rsb, long csb, float* c, long ldc, int accumulate) {
    if (m == 0 || n == 0) return;
    for (int i = 0; i < m; i += DISPATCH_TILE_M) {
        int mi = m - i < DISPATCH_TILE_M ? m - i : DISPATCH_TILE_M;
        for (int j = 0; j < n; j += DISPATCH_TILE_N) {
            int nj = n - j < DISPATCH_TILE_N ? n - j : DISPATCH_TILE_N;
            kern->sgemm(mi, nj, k, a + i * rsa, rsa, csa, b + j * csb, rsb, csb, c + i * ldc + j,
                        ldc, accumulate);
            dispatch_progress(ds);
        }
    }
}
