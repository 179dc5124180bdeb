// The layer's dispatch -> experts -> combine part for dispatchers other than alltoallv;
// daemon/layer.c branches to these after the route stage.
#ifndef MOED_LAYER_ALT_H
#define MOED_LAYER_ALT_H

#include <stdio.h>

#include "daemon/train.h"

// alltoallv_chunked (daemon/layer_chunked.c). Forward: from the route stage's sel and
// slot_pos (rewritten to chunk order) to the unpermuted output `out` [Tl, d] (no residual);
// fills the route and the loads' exchange as layer.c's own stages do. Backward: from dout
// to tr->dgates and tr->dxn (the expert path's share), as layer.c's stages leave them.
void layer_chunked_forward(train_t* tr, int l, float* out);
void layer_chunked_backward(train_t* tr, int l, const float* dout);

// ring (daemon/layer_ring.c), either comm.chunk_axis. Forward: from the route stage (sel,
// gates; slot_pos < 0 marks a dropped slot) to `out` [Tl, d] (no residual). Backward: from
// dout to tr->dgates and tr->dxn, as alltoallv_chunked.
void layer_ring_forward(train_t* tr, int l, float* out);
void layer_ring_backward(train_t* tr, int l, const float* dout);

// comm.dispatcher = auto (daemon/dispatch_auto.c): times forward + backward on the batch
// x, y with every strategy (no weight update), switches tr->disp to the fastest (the same
// on every rank) and prints the timings and the choice to `out` (NULL: silent). Returns
// MOED_OK or MOED_ERR_NUMERIC when a pass gave a non-finite loss. Collective.
int dispatch_autotune(train_t* tr, const float* x, const float* y, FILE* out);

// Expert compute on a run of rows [r0, r0 + n) of local expert e (daemon/expert_rows.c).
// Forward: h0, h1, a from A->xe, outputs into y [Nmax, d]. Backward (dy in tr->ye): da,
// then dh0, dh1 and dx (tr->de); _da and _dx are its two halves. Weights: dWo, dW0, dW1 of
// every local expert over its whole group (A->route.expert_offsets), from A->a, A->xe,
// tr->ye, tr->dh0, tr->dh1.
void expert_rows_forward(train_t* tr, int l, int e, long r0, long n, float* y);
void expert_rows_backward(train_t* tr, int l, int e, long r0, long n);
void expert_rows_backward_da(train_t* tr, int l, int e, long r0, long n);
void expert_rows_backward_dx(train_t* tr, int l, int e, long r0, long n);
void expert_weights_backward(train_t* tr, int l);

#endif
