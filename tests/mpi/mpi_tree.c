// comm_tree_sum_f / _d give, on every rank and for every P, bit for bit the sum of a serial
// stride-doubling tree over all G global leaves; comm_agree returns the maximum status.
//
// Leaves mix magnitudes (±1e17 next to O(1) and O(1e-3) values) so that any other
// summation order changes the low bits; the test checks that a plain left-to-right sum
// really does differ, so a passing run means the order was followed, not luck.
// moed-test-ranks: 1 2 4
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "compute/rng.h"
#include "tests/common/mpi_check.h"
#include "tests/common/testutil.h"

static int g_rank;

#define CHECK(cond, ...) TU_MPI_CHECK(g_rank, cond, __VA_ARGS__)

// Value of global leaf g, element i: a P-independent function of (g, i). Element i % 13 == 5
// is -0.0 on every leaf (the sum must stay -0.0: -0 + -0 = -0, while +0 would appear if the
// tree ever added a +0.0 pad).
static double leaf_value(long g, long i) {
    static const double mags[8] = {1e17, 1.0, -1e17, 3.0, 0.5, -7e16, 1e-3, 2.5};
    if (i % 13 == 5) return -0.0;
    double u = rng_uniform(0x7eee, 0x77, (uint32_t)g, (uint64_t)i);
    return mags[(g * 3 + i) % 8] * (0.75 + 0.5 * u);
}

// Float leaves are the double leaves rounded: still 1e17-scale next to O(1).
static float leaf_value_f(long g, long i) { return (float)leaf_value(g, i); }

// The reference: stride doubling over all G leaves (leaf i += leaf i+s for i % 2s == 0).
// all: [G, n] in, destroyed; returns the sum in all[0, n).
static void serial_tree(double* all, long G, long n) {
    for (long s = 1; s < G; s *= 2)
        for (long i = 0; i + s < G; i += 2 * s)
            for (long e = 0; e < n; e++) all[i * n + e] = all[i * n + e] + all[(i + s) * n + e];
}

static int same_bits_d(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }
static int same_bits_f(float a, float b) { return memcmp(&a, &b, sizeof a) == 0; }

// One case: G global leaves (nl = G / P on each rank), vectors of n elements.
static void check_case(comm_ctx_t* ctx, long G, long n) {
    int P = ctx->nranks, r = ctx->rank;
    int nl = (int)(G / P);
    CHECK(nl * (long)P == G, "G=%ld not divisible by P=%d", G, P);

    double* ld = malloc(sizeof(double) * (size_t)(nl * n + 1)); // [nl, n] my leaves
    float* lf = malloc(sizeof(float) * (size_t)(nl * n + 1));   // [nl, n] my leaves
    double* all = malloc(sizeof(double) * (size_t)(G * n + 1)); // [G, n] every leaf
    double* ref_d = malloc(sizeof(double) * (size_t)n);         // [n]
    float* ref_f = malloc(sizeof(float) * (size_t)n);           // [n]
    double* out_d = malloc(sizeof(double) * (size_t)n);         // [n]
    float* out_f = malloc(sizeof(float) * (size_t)n);           // [n]
    CHECK(ld && lf && all && ref_d && ref_f && out_d && out_f, "out of memory");

    for (int j = 0; j < nl; j++)
        for (long i = 0; i < n; i++) {
            ld[j * n + i] = leaf_value((long)r * nl + j, i);
            lf[j * n + i] = leaf_value_f((long)r * nl + j, i);
        }

    // Double leaves.
    for (long g = 0; g < G; g++)
        for (long i = 0; i < n; i++) all[g * n + i] = leaf_value(g, i);
    long order_visible = 0; // elements where a left-to-right sum differs from the tree
    for (long i = 0; i < n; i++) {
        double seq = 0.0;
        for (long g = 0; g < G; g++) seq += all[g * n + i];
        ref_d[i] = seq; // overwritten below, compared first
    }
    serial_tree(all, G, n);
    for (long i = 0; i < n; i++) {
        if (!same_bits_d(ref_d[i], all[i])) order_visible++;
        ref_d[i] = all[i];
    }
    memset(out_d, 0xff, sizeof(double) * (size_t)n); // NaN garbage: every element must be set
    int rc = comm_tree_sum_d(ctx, ld, nl, n, out_d);
    CHECK(rc == MPI_SUCCESS, "comm_tree_sum_d rc=%d (G=%ld n=%ld)", rc, G, n);
    for (long i = 0; i < n; i++)
        CHECK(same_bits_d(out_d[i], ref_d[i]), "double G=%ld n=%ld elem %ld: got %.17g want %.17g",
              G, n, i, out_d[i], ref_d[i]);
    // -0.0 stays -0.0.
    if (n > 5) CHECK(signbit(out_d[5]) && out_d[5] == 0.0, "sum of -0.0 lost its sign");
    // With G >= 4 and many elements the mixed magnitudes must make the order visible.
    if (G >= 4 && n >= 1000) CHECK(order_visible > 0, "leaves do not expose summation order");

    // Float leaves: summed in double, rounded to float once.
    for (long g = 0; g < G; g++)
        for (long i = 0; i < n; i++) all[g * n + i] = (double)leaf_value_f(g, i);
    serial_tree(all, G, n);
    for (long i = 0; i < n; i++) ref_f[i] = (float)all[i];
    memset(out_f, 0xff, sizeof(float) * (size_t)n);
    rc = comm_tree_sum_f(ctx, lf, nl, n, out_f);
    CHECK(rc == MPI_SUCCESS, "comm_tree_sum_f rc=%d (G=%ld n=%ld)", rc, G, n);
    for (long i = 0; i < n; i++)
        CHECK(same_bits_f(out_f[i], ref_f[i]), "float G=%ld n=%ld elem %ld: got %.9g want %.9g", G,
              n, i, (double)out_f[i], (double)ref_f[i]);

    free(ld), free(lf), free(all), free(ref_d), free(ref_f), free(out_d), free(out_f);
}

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    int P;
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &P);

    // Largest case below: G = 28 leaves of n = 1000 at P = 1 -> nl * n <= 28 * 1000.
    comm_ctx_t ctx;
    int rc = comm_init(&ctx, MPI_COMM_WORLD, 4, 16, 4, 28 * 1000);
    CHECK(rc == MPI_SUCCESS, "comm_init rc=%d", rc);

    static const long ns[3] = {1, 7, 1000};
    for (int c = 0; c < 3; c++) {
        // The brief's fixed G = 8: nl = 8, 4, 2 at P = 1, 2, 4; the result must not move.
        check_case(&ctx, 8, ns[c]);
        // G = 12: blocks of 12, 6 or 3 leaves that are not power-of-two subtrees, so ranks
        // pre-sum uneven pieces (e.g. [0,2)+[2,3) and [3,4)+[4,6) at P = 4).
        check_case(&ctx, 12, ns[c]);
        // One leaf per rank and a P-dependent leaf count (G = 3P): the tree differs per P,
        // but must still match the serial tree over those leaves.
        check_case(&ctx, P, ns[c]);
        check_case(&ctx, 3L * P, ns[c]);
        // G = 28 = 0b11100 (and 7P): three cut-off right edges, so the last nodes of the tree
        // fold right to left ((a + (b + c)), not ((a + b) + c)).
        check_case(&ctx, 28, ns[c]);
        check_case(&ctx, 7L * P, ns[c]);
    }

    // Wrong sizes are refused on every rank alike (arguments are uniform), before any
    // collective, so nobody hangs.
    double dummy[1] = {0.0};
    rc = comm_tree_sum_d(&ctx, dummy, 29, 1000, dummy);
    CHECK(rc == MPI_ERR_ARG, "oversized tree sum rc=%d, want MPI_ERR_ARG", rc);

    // comm_agree: the maximum status wins on every rank.
    int st = (g_rank == P - 1) ? 3 : g_rank % 2;
    int agreed = comm_agree(&ctx, st);
    CHECK(agreed == 3, "comm_agree gave %d, want 3", agreed);
    agreed = comm_agree(&ctx, 0);
    CHECK(agreed == 0, "comm_agree gave %d, want 0", agreed);

    comm_free(&ctx);
    MPI_Finalize();
    return 0;
}
