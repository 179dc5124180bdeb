// Threads over the groups of a grouped GEMM (kern_for_groups in kernels.h).
//
// Splitting one group's product among T threads gives each thread a rectangle of C, and each
// thread packs the whole A rows and B columns of its rectangle: with a small group (32 tokens
// on 16 threads: one row of rectangles, each 2 panels wide) every thread packs all of A, so
// A is read and packed T times and each packed element feeds a few dozen FMAs. Handing whole
// groups to threads instead packs everything once and needs no synchronisation inside a
// product. Between the two, a group can go to a team of s threads that splits it s ways
// while other teams run other groups: 8 groups of 512 rows on 16 threads run best as 8 teams
// of 2, each thread packing a quarter of what a 16-way split has it pack per multiply-add.
//
// Three plans, the cheapest by a model of the threads' work wins (choose_plan):
// - in order: every group split among all T threads, one after another;
// - large and pool: groups with at least 1 / (2T) of the rows in order on all threads, the
//   rest handed out whole, a group at a time to whichever thread is free, when that keeps the
//   threads about evenly busy (below);
// - teams: the threads cut into teams of about equal size, every group given to one team
//   (longest first, each to the team that would finish it first), each team running its
//   groups in turn; kern_team tells the kernels which part of each product is the caller's.
// A group's products run the same code whichever plan, and the kernels' bits depend neither
// on the thread count nor on the partition (DESIGN.md §3), so neither does the result.
#include <stdlib.h>

#include "compute/kernels/kernels.h"

#ifdef _OPENMP
#include <omp.h>
#endif

// The calling thread's team inside kern_for_groups' team plan; {1, 0} everywhere else.
static _Thread_local int team_size = 1, team_idx = 0;

int kern_team(int* idx) {
    *idx = team_idx;
    return team_size;
}

#ifndef _OPENMP
void kern_for_groups(int n, const int* offs, kern_group_fn fn, void* ctx) {
    (void)offs; // one thread: in order
    for (int g = 0; g < n; g++) fn(g, ctx);
}
#else

// Threads the plans simulate; a rank with more threads than this runs its groups in order.
#define POOL_MAX_THREADS 1024
// Groups the team plan sorts; a product with more of them does without it.
#define TEAM_MAX_GROUPS 4096
// Team counts tried: all up to this, then powers of two and T itself.
#define TEAM_TRY_ALL 64
static int next_teams(int t, int T) {
    if (t < TEAM_TRY_ALL) return t + 1;
    return t < T && 2 * t > T ? T : 2 * t;
}

typedef struct {
    const int* offs;
    long total, small; // work of all groups, of the small ones
    int threads;
    int mr; // the selected table's micro-tile rows, for the cost model
} groups_t;

static long work(const groups_t* G, int g) { return (long)G->offs[g + 1] - G->offs[g]; }

// Small: below 1 / (2T) of the whole product. The small groups go out in two passes, those of
// at least half a thread's share of them first, an approximation of longest-first that needs
// no sorting.
static int is_small(const groups_t* G, int g) { return work(G, g) * 2 * G->threads < G->total; }
static int pass_of(const groups_t* G, int g) {
    return work(G, g) * 2 * G->threads >= G->small ? 0 : 1;
}

// The model of a group's time on s threads: the cost per step of k that driver.h's partition
// minimises over the grids of thread rectangles (a rectangle's multiply-adds plus 2 x MR per
// element of A and B it packs), for a product of the group's rows and MODEL_COLS columns.
// The layer's products are 512-5632 columns wide (d, f, 2f); the plans only compare the model
// with itself, and the column count only sets how much packing a split adds.
#define MODEL_COLS 1024L
static long model_cost(const groups_t* G, long rows, int s) {
    if (rows <= 0) return 0;
    long mr = G->mr > 0 ? G->mr : 1, pack = 2 * mr;
    long tiles = (rows + mr - 1) / mr, best = -1;
    for (int mt = 1; mt <= s && mt <= tiles; mt++) {
        long nt = s / mt;
        long r = (tiles + mt - 1) / mt * mr, c = (MODEL_COLS + nt - 1) / nt;
        long cost = r * c + pack * (r + c);
        if (best < 0 || cost < best) best = cost;
    }
    return best;
}

// When the threads take the small groups in that order, one at a time as each becomes free
// (the dynamic schedule below), the time the last one finishes: in rows (modelled = 0), or
// in the cost model's units.
static long pooled_span(int n, const groups_t* G, int modelled) {
    long load[POOL_MAX_THREADS] = {0}, span = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int g = 0; g < n; g++) {
            if (!is_small(G, g) || pass_of(G, g) != pass) continue;
            int t = 0; // the thread that is free first
            for (int i = 1; i < G->threads; i++)
                if (load[i] < load[t]) t = i;
            load[t] += modelled ? model_cost(G, work(G, g), 1) : work(G, g);
            if (load[t] > span) span = load[t];
        }
    return span;
}

// Team i of `teams` over T threads: its size and first thread (the first T % teams teams
// have one thread more).
static int team_of(int T, int teams, int i, int* first) {
    int base = T / teams, rem = T % teams;
    *first = i * base + (i < rem ? i : rem);
    return base + (i < rem);
}

// The team plan with `teams` teams: each group, longest first (order), to the team that
// would finish it first; assign[g] its team. Returns the modelled span.
static long team_plan(int n, const groups_t* G, const int* order, int teams, int* assign) {
    long load[POOL_MAX_THREADS] = {0}, span = 0;
    for (int i = 0; i < n; i++) {
        int g = order[i], best = 0, first;
        long best_end = -1;
        for (int t = 0; t < teams; t++) {
            long end = load[t] + model_cost(G, work(G, g), team_of(G->threads, teams, t, &first));
            if (best_end < 0 || end < best_end) best_end = end, best = t;
        }
        assign[g] = best;
        load[best] = best_end;
        if (best_end > span) span = best_end;
    }
    return span;
}

static _Thread_local const groups_t* sort_groups; // qsort's comparator has no context
static int by_work_desc(const void* x, const void* y) {
    int a = *(const int*)x, b = *(const int*)y;
    long wa = work(sort_groups, a), wb = work(sort_groups, b);
    return wa != wb ? (wa < wb) - (wa > wb) : a - b; // ties by index: the same plan every run
}

void kern_for_groups(int n, const int* offs, kern_group_fn fn, void* ctx) {
    groups_t G = {.offs = offs, .total = (long)offs[n] - offs[0], .threads = 1};
    G.mr = kern ? kern->mr : 1;
    if (!omp_in_parallel()) G.threads = omp_get_max_threads();
    if (G.threads > kern_pack_threads()) G.threads = kern_pack_threads();
    int T = G.threads, n_small = 0;
    if (T <= 1 || T > POOL_MAX_THREADS) {
        for (int g = 0; g < n; g++) fn(g, ctx);
        return;
    }
    for (int g = 0; g < n; g++)
        if (is_small(&G, g)) G.small += work(&G, g), n_small++;
    // The small groups are handed out when that keeps the threads about as busy as splitting
    // each among them would: the last finishes within (1 + T/32) of an even share. Splitting
    // a group has every thread pack the A rows its columns need, about T/n more packing per
    // multiply-add, which at the layer's widths (n >= 512) and the ~16-30 multiply-adds a
    // packed element costs is about T/32 of the product's time (plus a fork and a join).
    int pool = n_small > 1 && pooled_span(n, &G, 0) * T * 32 <= G.small * (32 + T);

    // The modelled span of that plan, against the team plans'. A team plan must win by 1/16,
    // the model's precision on the 16-core AVX-512 machine, since the first plan's pool is
    // dynamic (it absorbs the noise of a shared machine) and was measured on both machines.
    long span = pool ? pooled_span(n, &G, 1) : 0;
    for (int g = 0; g < n; g++)
        if (!pool || !is_small(&G, g)) span += model_cost(&G, work(&G, g), T);
    int teams = 0, order[TEAM_MAX_GROUPS], assign[TEAM_MAX_GROUPS], best_assign[TEAM_MAX_GROUPS];
    if (n >= 2 && n <= TEAM_MAX_GROUPS) {
        for (int g = 0; g < n; g++) order[g] = g;
        sort_groups = &G;
        qsort(order, (size_t)n, sizeof order[0], by_work_desc);
        long best = span - span / 16;
        for (int t = 2; t <= T; t = next_teams(t, T)) {
            long s = team_plan(n, &G, order, t, assign);
            if (s < best) {
                best = s, teams = t;
                for (int g = 0; g < n; g++) best_assign[g] = assign[g];
            }
        }
    }

    if (teams) {
#pragma omp parallel num_threads(T)
        {
            int tid = omp_get_thread_num();
            if (omp_get_num_threads() == T) {
                int tm = 0, first = 0, size = team_of(T, teams, 0, &first);
                while (tid >= first + size) size = team_of(T, teams, ++tm, &first);
                team_size = size, team_idx = tid - first;
                for (int i = 0; i < n; i++)
                    if (best_assign[order[i]] == tm) fn(order[i], ctx);
                team_size = 1, team_idx = 0;
            } else { // a smaller team than asked for: whole groups, one per free thread
#pragma omp for schedule(dynamic, 1)
                for (int i = 0; i < n; i++) fn(order[i], ctx);
            }
        }
        return;
    }
    for (int g = 0; g < n; g++) // the large groups (all of them without a pool), in order
        if (!pool || !is_small(&G, g)) fn(g, ctx);
    if (!pool) return;
#pragma omp parallel num_threads(T)
    { // each call inside sees omp_in_parallel(): single-threaded, on its own pack buffers
#pragma omp for schedule(dynamic, 1) nowait
        for (int g = 0; g < n; g++)
            if (is_small(&G, g) && pass_of(&G, g) == 0) fn(g, ctx);
#pragma omp for schedule(dynamic, 1)
        for (int g = 0; g < n; g++)
            if (is_small(&G, g) && pass_of(&G, g) == 1) fn(g, ctx);
    }
}
#endif
