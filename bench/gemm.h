// moed-bench gemm, shared by its three files: gemm.c (shapes, the products table, options),
// gemm_run.c (the three implementations: ours, OpenBLAS, oneDNN, looped over the groups) and
// gemm_ffn.c (the expert FFN forward, fused and pre-packed).
#ifndef MOED_BENCH_GEMM_H
#define MOED_BENCH_GEMM_H

#include <dnnl.h>

#include "bench/bench.h"

enum { GBENCH_MAX_E = 64 }; // most groups of any shape

// Token groups x model width: E groups, d_model, d_ff. Even: every group has `rows` tokens
// (sizes NULL). Uneven: group e has sizes[e] tokens and `rows` is their total.
typedef struct {
    int E, rows, d, f;
    const int* sizes; // [E] or NULL
} gbench_shape_t;

static inline int gbench_rows(const gbench_shape_t* s, int e) {
    return s->sizes ? s->sizes[e] : s->rows;
}

// One product of the layer, per group: C[m, n] = op(A)[m, k] op(B)[k, n], A and B as stored
// in training (element (i, p) of op(A) at a[i*rsa + p*csa], likewise B), C row-major. The
// group's rows are m, or k when rows_is_k (dW = X^T dH); m, k here are for `rows` rows.
typedef struct {
    const char* name;
    const char* formula;
    int m, n, k;
    long rsa, csa, rsb, csb;
    int rows_is_k;
} gbench_product_t;

enum { GBENCH_N_PRODUCTS = 5 };

// The five products for groups of `rows` rows (m or k of each follows the group's rows).
void gbench_products(int rows, int d, int f, gbench_product_t p[GBENCH_N_PRODUCTS]);

// One product over all groups of a shape: per-group m, k and offsets of A, B, C in the
// buffers, each group's operands stored one after the other as the layer stores them.
typedef struct {
    const gbench_product_t* p;
    int E;
    int m[GBENCH_MAX_E], k[GBENCH_MAX_E]; // per group; 0 rows: the group is skipped
    long ao[GBENCH_MAX_E + 1], bo[GBENCH_MAX_E + 1], co[GBENCH_MAX_E + 1]; // [E]: totals
    int ro[GBENCH_MAX_E + 1]; // the groups' row offsets, as the layer's kern_for_groups gets them
    const float* a;           // [ao[E]] in the stored layout
    const float* b;           // [bo[E]]
    float* c;                 // [co[E]]
} gbench_job_t;

// Per-group dims and offsets of product p over shape s (buffers set separately).
void gbench_job_init(gbench_job_t* j, const gbench_product_t* p, const gbench_shape_t* s);
// 2 x the multiply-adds of the groups' real rows.
double gbench_job_flops(const gbench_job_t* j);

// oneDNN: one matmul primitive per distinct group shape (cached by m, k, created outside the
// timed loop), memory objects per group.
typedef struct {
    dnnl_primitive_t* prim; // [E] (borrowed from uniq; NULL: 0-row group)
    dnnl_primitive_t* uniq; // [n_uniq] owned
    int* uniq_m;            // [E] m, k of uniq[i]
    int* uniq_k;            // [E]
    dnnl_memory_t* mem;     // [E][3]: src, weights, dst
    int E, n_uniq;
    double create_s; // seconds to create the primitives
} gbench_dnnl_t;

int gbench_dnnl_prepare(const gbench_job_t* j, gbench_dnnl_t* dj);
void gbench_dnnl_release(gbench_dnnl_t* dj);
void gbench_dnnl_shutdown(void);

enum { GBENCH_OPENBLAS = 0, GBENCH_DNNL = 1, GBENCH_OURS = 2 }; // ours: + isa index
enum { GBENCH_MAX_IMPLS = GBENCH_OURS + KERN_N_ISA };

// Runs every group of j through implementation impl (dj: for oneDNN).
void gbench_run(int impl, const gbench_job_t* j, const gbench_dnnl_t* dj);

typedef struct {
    int reps;
    int with_peers;
    int ffn;      // also the expert FFN forward (fused, pre-packed)
    int products; // the table of the five products (off: --ffn-only)
    int check;    // compare every implementation's C with OpenBLAS's (--check)
    int isa_on[KERN_N_ISA];
} gbench_opts_t;

// floats of 64-byte (in fact 2 MiB) aligned memory on huge pages where the kernel gives them;
// exits on failure.
float* gbench_alloc(size_t floats);
void gbench_fill(float* x, long n, unsigned seed);
void gbench_set_threads(int threads);
// Median of x[n], leaving x in its round order.
double gbench_median_of(const double* x, int n);
// The median over rounds of each round's ratio num/den.
double gbench_paired(const double* num, const double* den, int reps);
// Which of n contenders takes turn q of round r (r < 0: the warm-up, as round 0): the order
// rotates every round and runs backwards every other cycle of n rounds, so that none always
// runs right after the same one (each leaves the caches full of its dirty output).
int gbench_turn(int q, int r, int n);

// The expert FFN forward through table t (gemm_ffn.c); even shapes only.
void gbench_ffn(const gbench_shape_t* s, int threads, const kern_table_t* t,
                const gbench_opts_t* o);

#endif
