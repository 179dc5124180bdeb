// Deterministic sums over ranks (DESIGN.md §3): a fixed binary tree over the G global leaves,
// so the result depends on the leaf values only, never on P or on message timing.
//
// The tree: at stride s = 1, 2, 4, ..., leaf i += leaf i+s for every i that is a multiple of
// 2s with i+s < G; the sum ends up in leaf 0. Equivalently node [i, i+2s) = node [i, i+s) +
// node [i+s, i+2s), the right part cut off at G (a node with nothing on its right is just
// its left part).
//
// Distribution: the n-vector is cut into P slices; rank q finishes the tree for slice q and
// an MPI_Allgatherv hands every rank the whole result. Before the exchange each rank sums
// the largest aligned power-of-two blocks inside its own leaf range [r*nl, (r+1)*nl). Those
// blocks are nodes of the global tree and their sums use exactly the global tree's
// additions, so only the block sums ("pieces", at most ~2·log2(nl) per rank instead of nl
// leaves) need to travel. The slice owner then completes the tree above the pieces.
#include <string.h>

#include "comm/comm.h"

typedef struct {
    long start, size; // leaves [start, start+size): a node of the global tree
} piece_t;

// Splits leaves [a, b) into the fewest aligned power-of-two blocks, left to right: at each
// position take the largest block that both starts on a multiple of its size and fits.
// Every rank can recompute any other rank's split, so pieces need no metadata on the wire.
static int split_pieces(long a, long b, piece_t pieces[COMM_MAX_PIECES]) {
    int np = 0;
    for (long x = a; x < b; x += pieces[np - 1].size) {
        long s = 1;
        while (x % (2 * s) == 0 && 2 * s <= b - x) s *= 2;
        if (np == COMM_MAX_PIECES) return -1; // cannot happen for b - a < 2^31
        pieces[np++] = (piece_t){x, s};
    }
    return np;
}

// Slice q of the n-vector is elements [slice_start(q), slice_start(q+1)); lengths differ by
// at most one and some are empty when n < P.
static inline long slice_start(long n, int P, int q) { return n * q / P; }

// dst[i] = dst[i] + src[i]: the one operation of the tree (left + right).
static inline void add_row(double* dst, const double* src, long len) {
    for (long i = 0; i < len; i++) dst[i] = dst[i] + src[i];
}

// Sums one piece in place. rows: [size, len] doubles, the piece's leaves restricted to one
// slice. Stride doubling inside an aligned block makes exactly the additions the global tree
// makes there (the block never reaches G, so no cut-off applies); the sum lands in row 0.
static void sum_piece(double* rows, long size, long len) {
    for (long s = 1; s < size; s *= 2)
        for (long t = 0; t + s < size; t += 2 * s)
            add_row(rows + t * len, rows + (t + s) * len, len);
}

// Completes the tree over the pieces of all G leaves for one slice and leaves the total in
// rows[0]. rows: [n_pieces, len] in global leaf order (ranks in order, each rank's pieces in
// order), where rank p's pieces are those of split_pieces(p*nl, (p+1)*nl).
//
// A stack walks the pieces left to right and merges the top two nodes whenever they are
// the two halves of one parent (equal size, the left one aligned to twice that size).
// Every node below the top waits for a right sibling that covers everything above it, so
// sizes strictly decrease upwards and the depth stays below 64. What is left at the end is
// the right edge of the tree, whose right siblings are cut off at G: folding it from the
// top down is exactly the cut-off rule.
static int finish_tree(double* rows, long len, int P, int nl) {
    struct {
        long start, size;
        double* row;
    } stack[64];
    int depth = 0;
    piece_t pieces[COMM_MAX_PIECES];
    double* row = rows;
    for (int p = 0; p < P; p++) {
        int np = split_pieces((long)p * nl, (long)(p + 1) * nl, pieces);
        for (int k = 0; k < np; k++, row += len) {
            if (depth == 64) return MPI_ERR_INTERN; // cannot happen, see above
            stack[depth].start = pieces[k].start;
            stack[depth].size = pieces[k].size;
            stack[depth].row = row;
            depth++;
            while (depth >= 2 && stack[depth - 2].size == stack[depth - 1].size &&
                   stack[depth - 2].start % (2 * stack[depth - 2].size) == 0) {
                add_row(stack[depth - 2].row, stack[depth - 1].row, len);
                stack[depth - 2].size *= 2;
                depth--;
            }
        }
    }
    for (int i = depth - 2; i >= 0; i--) add_row(stack[i].row, stack[i + 1].row, len);
    // The bottom of the stack is always the piece starting at leaf 0, i.e. rows[0].
    return MPI_SUCCESS;
}

// One of leaves_f / leaves_d is set; so is one of out_f / out_d.
static int tree_sum(comm_ctx_t* ctx, const float* leaves_f, const double* leaves_d, int nl, long n,
                    float* out_f, double* out_d) {
    int P = ctx->nranks, r = ctx->rank;
    if (nl < 0 || n < 0 || n > ctx->max_tree || (long)nl * n > ctx->max_tree) return MPI_ERR_ARG;
    if (n == 0) return MPI_SUCCESS;
    if (nl == 0) { // no leaves anywhere: the empty sum (same outcome on every rank)
        for (long i = 0; i < n; i++) {
            if (out_d)
                out_d[i] = 0.0;
            else
                out_f[i] = 0.0f;
        }
        return MPI_SUCCESS;
    }

    // work: [P, nl, len_q] local leaves grouped by destination slice q (block q starts at
    // nl * slice_start(q)); after the local sums it holds [P, np, len_q] piece sums at the
    // front (block q at np * slice_start(q)). Needs nl * n <= max_tree doubles.
    double* work = ctx->tree_scratch;
    // recv: [sum over sources p of np(p), len_r] piece sums of my slice, in global leaf order.
    // At most min(nl, 64) * (n + P - 1) <= max_tree + 64 * P doubles.
    double* recv = ctx->tree_scratch + ctx->max_tree;
    long recv_cap = comm_tree_scratch_len(ctx->max_tree, P) - ctx->max_tree;
    int* sendcounts = ctx->int_scratch; // [P] the four Alltoallv arrays, in doubles
    int* sdispls = sendcounts + P;      // [P]
    int* recvcounts = sdispls + P;      // [P]
    int* rdispls = recvcounts + P;      // [P]

    piece_t pieces[COMM_MAX_PIECES];
    long a = (long)r * nl;
    int np = split_pieces(a, a + nl, pieces);
    if (np < 0) return MPI_ERR_INTERN;

    for (int q = 0; q < P; q++) {
        long s0 = slice_start(n, P, q), len = slice_start(n, P, q + 1) - s0;
        double* blk = work + nl * s0; // [nl, len]
        // Transpose by destination and widen to double (exact for float leaves).
        for (int j = 0; j < nl; j++) {
            double* dst = blk + j * len;
            if (leaves_d)
                memcpy(dst, leaves_d + (long)j * n + s0, (size_t)len * sizeof(double));
            else
                for (long i = 0; i < len; i++) dst[i] = (double)leaves_f[(long)j * n + s0 + i];
        }
        for (int k = 0; k < np; k++)
            sum_piece(blk + (pieces[k].start - a) * len, pieces[k].size, len);
        // Compact the piece sums to the front. Destinations never pass a source not yet
        // read (np <= nl, piece k starts at leaf >= k), so memmove front to back is safe.
        for (int k = 0; k < np; k++)
            memmove(work + np * s0 + k * len, blk + (pieces[k].start - a) * len,
                    (size_t)len * sizeof(double));
        sendcounts[q] = (int)(np * len);
        sdispls[q] = (int)(np * s0);
    }

    long my0 = slice_start(n, P, r), mylen = slice_start(n, P, r + 1) - my0;
    long total = 0;
    for (int p = 0; p < P; p++) {
        int npp = split_pieces((long)p * nl, (long)(p + 1) * nl, pieces);
        if (npp < 0) return MPI_ERR_INTERN;
        recvcounts[p] = (int)(npp * mylen);
        rdispls[p] = (int)total;
        total += npp * mylen;
    }
    if (total > recv_cap) return MPI_ERR_INTERN; // cannot happen, see the bound above

    int rc = MPI_Alltoallv(work, sendcounts, sdispls, MPI_DOUBLE, recv, recvcounts, rdispls,
                           MPI_DOUBLE, ctx->comm);
    if (rc != MPI_SUCCESS) return rc;
    if (mylen > 0) {
        rc = finish_tree(recv, mylen, P, nl);
        if (rc != MPI_SUCCESS) return rc;
    }

    // Every rank gets every slice: recv[0, mylen) holds my slice of the total.
    for (int q = 0; q < P; q++) {
        long s0 = slice_start(n, P, q);
        recvcounts[q] = (int)(slice_start(n, P, q + 1) - s0);
        rdispls[q] = (int)s0;
    }
    if (out_d)
        return MPI_Allgatherv(recv, (int)mylen, MPI_DOUBLE, out_d, recvcounts, rdispls, MPI_DOUBLE,
                              ctx->comm);
    // Float result: gather the double sums into work ([n] <= max_tree) and round once.
    rc = MPI_Allgatherv(recv, (int)mylen, MPI_DOUBLE, work, recvcounts, rdispls, MPI_DOUBLE,
                        ctx->comm);
    if (rc != MPI_SUCCESS) return rc;
    for (long i = 0; i < n; i++) out_f[i] = (float)work[i];
    return MPI_SUCCESS;
}

int comm_tree_sum_d(comm_ctx_t* ctx, const double* leaves, int nleaf_local, long n, double* out) {
    return tree_sum(ctx, NULL, leaves, nleaf_local, n, NULL, out);
}

int comm_tree_sum_f(comm_ctx_t* ctx, const float* leaves, int nleaf_local, long n, float* out) {
    return tree_sum(ctx, leaves, NULL, nleaf_local, n, out, NULL);
}
