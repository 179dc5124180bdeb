// Threads over the groups of a grouped GEMM (kern_for_groups in kernels.h).
//
// Splitting one group's product among T threads gives each thread a rectangle of C, and each
// thread packs the whole A rows and B columns of its rectangle: with a small group (32 tokens
// on 16 threads: one row of rectangles, each 2 panels wide) every thread packs all of A, so
// A is read and packed T times and each packed element feeds a few dozen FMAs. Handing whole
// groups to threads instead packs everything once and needs no synchronisation inside a
// product. So: groups that are a large share of the work (at least 1 / (2T) of it) keep
// all the threads each, one after another, and the rest are handed out whole, a group at a
// time to whichever thread is free, when there are enough of them to keep the threads about
// evenly busy (below). A group's product runs the same code either way, and the
// kernels' bits do not depend on the thread count (DESIGN.md §3), so neither does the result.
#include "compute/kernels/kernels.h"

#ifdef _OPENMP
#include <omp.h>
#endif

// Threads pooled_span follows; a rank with more threads than this runs its groups in order.
#define POOL_MAX_THREADS 1024

typedef struct {
    const int* offs;
    long total, small; // work of all groups, of the small ones
    int threads;
} groups_t;

static long work(const groups_t* G, int g) { return (long)G->offs[g + 1] - G->offs[g]; }

// Small: below 1 / (2T) of the whole product. The small groups go out in two passes, those of
// at least half a thread's share of them first, an approximation of longest-first that needs
// no sorting.
static int is_small(const groups_t* G, int g) { return work(G, g) * 2 * G->threads < G->total; }
static int pass_of(const groups_t* G, int g) {
    return work(G, g) * 2 * G->threads >= G->small ? 0 : 1;
}

// When the threads take the small groups in that order, one at a time as each becomes free
// (the dynamic schedule below), the time the last one finishes, in units of work.
static long pooled_span(int n, const groups_t* G) {
    long load[POOL_MAX_THREADS] = {0}, span = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int g = 0; g < n; g++) {
            if (!is_small(G, g) || pass_of(G, g) != pass) continue;
            int t = 0; // the thread that is free first
            for (int i = 1; i < G->threads; i++)
                if (load[i] < load[t]) t = i;
            load[t] += work(G, g);
            if (load[t] > span) span = load[t];
        }
    return span;
}

void kern_for_groups(int n, const int* offs, kern_group_fn fn, void* ctx) {
    groups_t G = {.offs = offs, .total = (long)offs[n] - offs[0], .threads = 1};
#ifdef _OPENMP
    if (!omp_in_parallel()) G.threads = omp_get_max_threads();
    if (G.threads > kern_pack_threads()) G.threads = kern_pack_threads();
#endif
    int n_small = 0;
    for (int g = 0; g < n; g++)
        if (is_small(&G, g)) G.small += work(&G, g), n_small++;
    // The small groups are handed out when that keeps the threads about as busy as splitting
    // each among them would: the last finishes within (1 + T/32) of an even share. Splitting
    // a group has every thread pack the A rows its columns need, about T/n more packing per
    // multiply-add, which at the layer's widths (n >= 512) and the ~16-30 multiply-adds a
    // packed element costs is about T/32 of the product's time (plus a fork and a join).
    int T = G.threads, pool = T > 1 && T <= POOL_MAX_THREADS && n_small > 1 &&
                              pooled_span(n, &G) * T * 32 <= G.small * (32 + T);
    for (int g = 0; g < n; g++) // the large groups (all of them without a pool), in order
        if (!pool || !is_small(&G, g)) fn(g, ctx);
    if (!pool) return;
#ifdef _OPENMP
#pragma omp parallel num_threads(T)
    { // each call inside sees omp_in_parallel(): single-threaded, on its own pack buffers
#pragma omp for schedule(dynamic, 1) nowait
        for (int g = 0; g < n; g++)
            if (is_small(&G, g) && pass_of(&G, g) == 0) fn(g, ctx);
#pragma omp for schedule(dynamic, 1)
        for (int g = 0; g < n; g++)
            if (is_small(&G, g) && pass_of(&G, g) == 1) fn(g, ctx);
    }
#endif
}
