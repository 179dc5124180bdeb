// The dispatch strategies other than plain alltoallv (comm.dispatcher): their start-up
// buffers, the progress engine that keeps nonblocking exchanges moving while kernels run,
// and the split of communication time into exposed and overlapped parts (DESIGN.md §6).
//
// Progress (comm.progress): MPICH (ch4:ucx here) advances a nonblocking exchange only inside
// MPI calls, and within a node the bytes are copied by the CPU inside those calls.
// - test: MPI_Test between sgemm tiles (dispatch_sgemm). Costs well under 1% of the
//   compute, but the copies run on the computing core: hidden comm is still on the critical
//   path.
// - thread: one progress thread per rank (dispatch_thread.c), started with the training
//   state, asleep on a condition variable while nothing is in flight. A posted request is
//   handed to it (dispatch_started); it alone calls MPI_Test on it until it completes, and
//   dispatch_wait sleeps until then, so no request is ever touched by two threads. The
//   main thread still posts, concurrently with the thread's MPI_Test: MPI_THREAD_MULTIPLE.
#ifndef MOED_DISPATCH_H
#define MOED_DISPATCH_H

#include <pthread.h>

#include "comm/chunked.h"
#include "daemon/arena.h"

// Largest C tile of a product between two progress calls. Splitting the output never
// changes a bit (the kernel contract: an element is one k-chain in fixed KC order), and a
// 256 x 256 tile over k = 1024 is ~3 ms of one core: the B panel is repacked once per row
// tile, ~2% of the tile's work.
#define DISPATCH_TILE_M 256
#define DISPATCH_TILE_N 256

// Per-layer state of the ring dispatcher, kept from forward for backward.
typedef struct {
    int* sel;     // [T, k]  global expert of every slot of every rank's tokens (-1: dropped)
    float* gates; // [T, k]
    int* row;     // [T, k]  expert-side row of each slot routed to a local expert, else -1
    int* pos;     // [P, El] first expert-side row of block b's rows for local expert e
    int* cnt;     // [P, El] rows of block b (rank b's tokens) for local expert e
    float* ye;    // [Nmax, d] expert outputs (backward needs them for the gate gradients)
} ring_layer_t;

typedef struct {
    int kind;              // CFG_DISPATCH_* in use now
    comm_chunks_t* chunks; // [L] chunk plans kept from forward for backward (alltoallv_chunked)
    int C;                 // comm.chunks
    MPI_Request* reqs;     // [nreq] chunked: C dispatches then C combines; ring: 2 + 2P
    int nreq;
    int active; // exchanges in flight (thread mode: under mu)
    // progress thread (comm.progress = thread); `thread` is 0 in test mode
    int thread;          // 1 while the progress thread runs
    int* pend;           // [nreq] 1 while request i is the thread's (atomic)
    int quit;            // under mu: the thread exits
    pthread_t th;        //
    pthread_mutex_t mu;  // guards active, quit and the times below in thread mode
    pthread_cond_t wake; // main -> thread: a request was handed over, or quit
    pthread_cond_t done; // thread -> main: a request completed
    // ring (daemon/layer_ring.c)
    int axis;           // comm.chunk_axis
    ring_layer_t* ring; // [L]
    float* xbuf;        // [2, Tl, d] token blocks travelling round the ring
    float* psend;       // [P, Tl, d + k] partial results by destination rank (own: kept)
    float* precv;       // [P, Tl, d + k] partial results received, by source rank
    float* slice_send;  // [2, Tl, ceil(d / C)] embed axis: this rank's slices, packed
    float* slice_recv;  // [2, T, ceil(d / C)] embed axis: gathered slices
    double* dg_acc;     // [Nmax] gate-gradient dot product of each expert-side row
    // communication time of the current step (seconds)
    double t_wait;     // blocked in MPI_Wait on a nonblocking exchange (exposed)
    double t_inflight; // at least one nonblocking exchange in flight
    double t_since;    // start of the current in-flight stretch
} dispatch_t;

// Carves the dispatcher's buffers from `a` for L layers, T local tokens, E experts, k, P
// ranks, width d and Nmax expert-side rows (counting pass: a NULL-returning arena, as
// train_layout). `auto` lays out every strategy.
void dispatch_layout(dispatch_t* ds, int kind, int chunks, int axis, int L, int T, int E, int k,
                     int P, int d, long Nmax, arena_t* a);

// Starts the progress thread when comm.progress (cfg_progress) asks for it and the
// dispatcher posts nonblocking exchanges (not plain alltoallv); resolves auto from the
// ranks on this node, `threads` compute threads each and the online cores. MOED_OK, or
// MOED_ERR_CONFIG (thread without MPI_THREAD_MULTIPLE) / MOED_ERR_OTHER with `err` set.
// Collective over comm (it counts the ranks on each node).
int dispatch_start(dispatch_t* ds, int cfg_dispatcher, int cfg_progress, int threads, MPI_Comm comm,
                   char* err, int errlen);
// Stops and joins the progress thread (nothing when none runs). Safe to call twice.
void dispatch_stop(dispatch_t* ds);

// Nonblocking exchange bookkeeping: call dispatch_started after posting request slot i,
// dispatch_wait to complete it, dispatch_progress between kernels to drive MPI (test mode;
// returns at once in thread mode).
void dispatch_started(dispatch_t* ds, int i);
void dispatch_wait(dispatch_t* ds, int i);
void dispatch_progress(dispatch_t* ds);
// Thread mode (dispatch_thread.c): hand request i to the thread / sleep until it completed.
void dispatch_thread_hand(dispatch_t* ds, int i);
void dispatch_thread_wait(dispatch_t* ds, int i);
// Seconds of the step's exchanges that overlapped compute (in flight, not waited on).
static inline double dispatch_overlap(const dispatch_t* ds) {
    double t = ds->t_inflight - ds->t_wait;
    return t > 0 ? t : 0;
}
static inline void dispatch_reset_times(dispatch_t* ds) { ds->t_wait = ds->t_inflight = 0; }

// kern->sgemm (same arguments) in tiles of at most DISPATCH_TILE_M x DISPATCH_TILE_N of C,
// with dispatch_progress between tiles. Bit-identical to one call.
void dispatch_sgemm(dispatch_t* ds, int m, int n, int k, const float* a, long rsa, long csa,
                    const float* b, long rsb, long csb, float* c, long ldc, int accumulate);

// The same on a B pre-packed by kern->pack_b (compute.prepack), in tiles of at most
// DISPATCH_TILE_M rows (a packed B is not sliced by columns). Bit-identical to one call and
// to dispatch_sgemm on the unpacked B.
void dispatch_sgemm_packed(dispatch_t* ds, int m, int n, int k, const float* a, long rsa, long csa,
                           const float* bp, float* c, long ldc, int accumulate);
// kern->gemm_swiglu on the packed pair bp, in row tiles likewise.
void dispatch_gemm_swiglu_packed(dispatch_t* ds, int m, int n, int k, const float* a, long rsa,
                                 const float* bp, float* h0, float* h1, float* out, long ldc);

#endif
