// Dispatcher state, nonblocking-exchange bookkeeping and the progress-driving sgemm.
#include "daemon/dispatch.h"

#include "compute/kernels/kernels.h"
#include "config/config.h"

#define ALLOC(a, type, n) ((type*)arena_alloc((a), sizeof(type) * (size_t)(n)))

static void layout_chunked(dispatch_t* ds, int L, int E, int P, arena_t* a) {
    int C = ds->C, El = E / P;
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
}

static void layout_ring(dispatch_t* ds, int any, int L, int Tl, int E, int k, int P, int d,
                        long Nmax, arena_t* a) {
    long T = (long)Tl * P, El = E / P;
    ds->ring = ALLOC(a, ring_layer_t, L);
    for (int l = 0; l < L; l++) {
        ring_layer_t tmp = {0}, *R = ds->ring ? &ds->ring[l] : &tmp;
        R->sel = ALLOC(a, int, T* k);
        R->gates = ALLOC(a, float, T* k);
        R->row = ALLOC(a, int, T* k);
        R->pos = ALLOC(a, int, P* El);
        R->cnt = ALLOC(a, int, P* El);
        R->ye = ALLOC(a, float, Nmax* d);
    }
    ds->xbuf = ALLOC(a, float, 2L * Tl * d);
    ds->psend = ALLOC(a, float, T*(d + k));
    ds->precv = ALLOC(a, float, T*(d + k));
    if (ds->axis == CFG_CHUNK_EMBED || any) {
        long w = (d + ds->C - 1) / ds->C;
        ds->slice_send = ALLOC(a, float, 2L * Tl * w);
        ds->slice_recv = ALLOC(a, float, 2L * T * w);
    }
    ds->dg_acc = ALLOC(a, double, Nmax);
}

void dispatch_layout(dispatch_t* ds, int kind, int chunks, int axis, int L, int T, int E, int k,
                     int P, int d, long Nmax, arena_t* a) {
    ds->kind = kind == CFG_DISPATCH_AUTO ? CFG_DISPATCH_ALLTOALLV : kind; // until tuned
    ds->C = chunks;
    ds->axis = axis;
    int any = kind == CFG_DISPATCH_AUTO;
    ds->nreq = 0;
    if (any || kind == CFG_DISPATCH_ALLTOALLV_CHUNKED) {
        layout_chunked(ds, L, E, P, a);
        ds->nreq = 2 * chunks;
    }
    if (any || kind == CFG_DISPATCH_RING) {
        layout_ring(ds, any, L, T, E, k, P, d, Nmax, a);
        if (2 + 2 * P > ds->nreq) ds->nreq = 2 + 2 * P;
    }
    ds->reqs = ALLOC(a, MPI_Request, ds->nreq);
    ds->pend = ALLOC(a, int, ds->nreq);
    if (ds->reqs)
        for (int i = 0; i < ds->nreq; i++) ds->reqs[i] = MPI_REQUEST_NULL, ds->pend[i] = 0;
}

void dispatch_started(dispatch_t* ds, int i) {
    if (ds->thread)
        dispatch_thread_hand(ds, i);
    else if (ds->active++ == 0)
        ds->t_since = MPI_Wtime();
}

static void finished(dispatch_t* ds, int n) {
    ds->active -= n;
    if (n > 0 && ds->active == 0) ds->t_inflight += MPI_Wtime() - ds->t_since;
}

void dispatch_wait(dispatch_t* ds, int i) {
    if (ds->thread) {
        dispatch_thread_wait(ds, i);
        return;
    }
    if (ds->reqs[i] == MPI_REQUEST_NULL) return; // completed by an earlier progress call
    double t0 = MPI_Wtime();
    MPI_Wait(&ds->reqs[i], MPI_STATUS_IGNORE);
    ds->t_wait += MPI_Wtime() - t0;
    finished(ds, 1);
}

void dispatch_progress(dispatch_t* ds) {
    if (ds->thread || ds->active == 0) return; // the thread's job, or nothing in flight
    // Each MPI_Test is one turn of MPICH's progress engine as well as the check itself.
    for (int i = 0; i < ds->nreq; i++) {
        if (ds->reqs[i] == MPI_REQUEST_NULL) continue;
        int done = 0;
        MPI_Test(&ds->reqs[i], &done, MPI_STATUS_IGNORE);
        if (done) finished(ds, 1);
    }
}

void dispatch_sgemm(dispatch_t* ds, int m, int n, int k, const float* a, long rsa, long csa,
                    const float* b, long rsb, long csb, float* c, long ldc, int accumulate) {
    if (m == 0 || n == 0) return;
    // Tiles only serve MPI_Test: with the progress thread, or nothing in flight, one call
    // (no B panel repacked per tile, no tile edges; the same bits either way).
    if (ds->thread || ds->active == 0) {
        kern->sgemm(m, n, k, a, rsa, csa, b, rsb, csb, c, ldc, accumulate);
        return;
    }
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

// Rows per tile of a product on a packed B: all of them when no MPI_Test is due (see
// dispatch_sgemm), else DISPATCH_TILE_M.
static int row_step(const dispatch_t* ds, int m) {
    return ds->thread || ds->active == 0 ? m : DISPATCH_TILE_M;
}

void dispatch_sgemm_packed(dispatch_t* ds, int m, int n, int k, const float* a, long rsa, long csa,
                           const float* bp, float* c, long ldc, int accumulate) {
    if (m == 0 || n == 0) return;
    int step = row_step(ds, m);
    for (int i = 0; i < m; i += step) {
        int mi = m - i < step ? m - i : step;
        kern->sgemm_packed(mi, n, k, a + i * rsa, rsa, csa, bp, c + i * ldc, ldc, accumulate);
        if (step < m) dispatch_progress(ds);
    }
}

void dispatch_gemm_swiglu_packed(dispatch_t* ds, int m, int n, int k, const float* a, long rsa,
                                 const float* bp, float* h0, float* h1, float* out, long ldc) {
    if (m == 0 || n == 0) return;
    int step = row_step(ds, m);
    for (int i = 0; i < m; i += step) {
        int mi = m - i < step ? m - i : step;
        long o = (long)i * ldc;
        kern->gemm_swiglu(mi, n, k, a + i * rsa, rsa, 1, NULL, NULL, 0, 0, bp, h0 + o, h1 + o,
                          out + o, ldc);
        if (step < m) dispatch_progress(ds);
    }
}
