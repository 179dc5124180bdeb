// moed-bench gemm: the five products of the layer and the three implementations that run
// them group by group: ours (kern tables), OpenBLAS cblas_sgemm, and oneDNN matmul.
//
// Uneven groups give oneDNN 2.6 two choices: one primitive with runtime dims
// (DNNL_RUNTIME_DIM_VAL for M or K, given at execution), or one primitive per distinct shape.
// We create one per distinct (m, k), cached, before the timed loop: that is what a user who
// cares about speed does, and it gives oneDNN its best case (it picks and JITs its kernel for
// the exact shape; with runtime dims it can only use the implementations that accept them).
// The creation time is printed beside the table; training, whose group sizes change every
// step, would pay it (or oneDNN's primitive cache lookups) at run time.
#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "bench/gemm.h"

// Every operand in 2 MiB-aligned blocks backed by transparent huge pages where the kernel has
// them, as the arena (daemon/arena.c) holds the layer's weights and activations and
// dispatch.c the pack buffers: a product reads a weight a row run at a time, 11 KiB apart,
// one 4 KiB page per row with small pages.
float* gbench_alloc(size_t floats) {
    const size_t huge = (size_t)2 << 20;
    size_t bytes = (floats * sizeof(float) + huge - 1) & ~(huge - 1);
    if (bytes == 0) bytes = huge; // aligned_alloc(_, 0) may return NULL
    float* p = aligned_alloc(huge, bytes);
    if (!p) {
        fprintf(stderr, "moed-bench gemm: out of memory\n");
        exit(1);
    }
#ifdef MADV_HUGEPAGE
    madvise(p, bytes, MADV_HUGEPAGE);
#endif
    return p;
}

void gbench_products(int r, int d, int f, gbench_product_t p[GBENCH_N_PRODUCTS]) {
    // forward up: X[r, d] W[d, f]
    p[0] = (gbench_product_t){"up", "X.W", r, f, d, d, 1, f, 1, 0};
    // forward down: A[r, f] Wo[f, d]
    p[1] = (gbench_product_t){"down", "A.Wo", r, d, f, f, 1, d, 1, 0};
    // dA = dY[r, d] Wo^T (Wo stored [f, d])
    p[2] = (gbench_product_t){"dA", "dY.Wo^T", r, f, d, d, 1, 1, d, 0};
    // dW = X^T dH[r, f] (X stored [r, d])
    p[3] = (gbench_product_t){"dW", "X^T.dH", d, f, r, 1, d, f, 1, 1};
    // dX = dH[r, f] W^T (W stored [d, f])
    p[4] = (gbench_product_t){"dX", "dH.W^T", r, d, f, f, 1, 1, f, 0};
}

void gbench_job_init(gbench_job_t* j, const gbench_product_t* p, const gbench_shape_t* s) {
    memset(j, 0, sizeof *j);
    j->p = p;
    j->E = s->E;
    for (int e = 0; e < s->E; e++) {
        int r = gbench_rows(s, e);
        j->m[e] = p->rows_is_k ? p->m : r;
        j->k[e] = p->rows_is_k ? r : p->k;
        j->ao[e + 1] = j->ao[e] + (long)j->m[e] * j->k[e];
        j->bo[e + 1] = j->bo[e] + (long)j->k[e] * p->n;
        j->co[e + 1] = j->co[e] + (long)j->m[e] * p->n;
        j->ro[e + 1] = j->ro[e] + r;
    }
}

double gbench_job_flops(const gbench_job_t* j) {
    double fl = 0;
    for (int e = 0; e < j->E; e++) fl += 2.0 * j->m[e] * j->p->n * j->k[e];
    return fl;
}

// A group of 0 rows is skipped by all three implementations: its up/down/dA/dX products are
// empty, and its dW (k = 0) would be a memset of zeros, the same for all, so it is left out
// of the timing.
static int group_empty(const gbench_job_t* j, int e) { return j->m[e] == 0 || j->k[e] == 0; }

// Ours as the layer runs it (compute/gmm.c): the groups through kern_for_groups, which shares
// them among the threads, instead of a loop of calls each split among all of them.
typedef struct {
    const kern_table_t* t;
    const gbench_job_t* j;
} ours_ctx_t;

static void ours_group(int e, void* v) {
    const ours_ctx_t* o = v;
    const gbench_job_t* j = o->j;
    const gbench_product_t* p = j->p;
    if (!group_empty(j, e))
        o->t->sgemm(j->m[e], p->n, j->k[e], j->a + j->ao[e], p->rsa, p->csa, j->b + j->bo[e],
                    p->rsb, p->csb, j->c + j->co[e], p->n, 0);
}

static void run_ours(const kern_table_t* t, const gbench_job_t* j) {
    ours_ctx_t o = {t, j};
    kern_for_groups(j->E, j->ro, ours_group, &o);
}

// Strides to a cblas transpose flag and leading dimension (one of them is 1).
static void cblas_op(long rs, long cs, enum CBLAS_TRANSPOSE* tr, int* ld) {
    if (cs == 1) {
        *tr = CblasNoTrans;
        *ld = (int)rs;
    } else {
        *tr = CblasTrans;
        *ld = (int)cs;
    }
}

static void run_openblas(const gbench_job_t* j) {
    const gbench_product_t* p = j->p;
    enum CBLAS_TRANSPOSE ta, tb;
    int lda, ldb;
    cblas_op(p->rsa, p->csa, &ta, &lda);
    cblas_op(p->rsb, p->csb, &tb, &ldb);
    for (int e = 0; e < j->E; e++)
        if (!group_empty(j, e))
            cblas_sgemm(CblasRowMajor, ta, tb, j->m[e], p->n, j->k[e], 1.0f, j->a + j->ao[e], lda,
                        j->b + j->bo[e], ldb, 0.0f, j->c + j->co[e], p->n);
}

static dnnl_engine_t dnnl_eng;
static dnnl_stream_t dnnl_strm;

// A matmul primitive for one group shape, with the product's strides.
static int dnnl_make(const gbench_product_t* p, int m, int k, dnnl_primitive_t* prim,
                     dnnl_memory_desc_t md[3]) {
    dnnl_dims_t a_dims = {m, k}, a_str = {p->rsa, p->csa};
    dnnl_dims_t b_dims = {k, p->n}, b_str = {p->rsb, p->csb};
    dnnl_dims_t c_dims = {m, p->n}, c_str = {p->n, 1};
    if (dnnl_memory_desc_init_by_strides(&md[0], 2, a_dims, dnnl_f32, a_str) ||
        dnnl_memory_desc_init_by_strides(&md[1], 2, b_dims, dnnl_f32, b_str) ||
        dnnl_memory_desc_init_by_strides(&md[2], 2, c_dims, dnnl_f32, c_str))
        return -1;
    if (!prim) return 0;
    dnnl_matmul_desc_t desc;
    dnnl_primitive_desc_t pd;
    if (dnnl_matmul_desc_init(&desc, &md[0], &md[1], NULL, &md[2]) != dnnl_success) return -1;
    if (dnnl_primitive_desc_create(&pd, &desc, NULL, dnnl_eng, NULL) != dnnl_success) return -1;
    dnnl_status_t st = dnnl_primitive_create(prim, pd);
    dnnl_primitive_desc_destroy(pd);
    return st == dnnl_success ? 0 : -1;
}

int gbench_dnnl_prepare(const gbench_job_t* j, gbench_dnnl_t* dj) {
    memset(dj, 0, sizeof *dj);
    if (!dnnl_eng) {
        if (dnnl_engine_create(&dnnl_eng, dnnl_cpu, 0) != dnnl_success) return -1;
        if (dnnl_stream_create(&dnnl_strm, dnnl_eng, dnnl_stream_default_flags) != dnnl_success)
            return -1;
    }
    int E = j->E;
    dj->E = E;
    dj->prim = calloc((size_t)E, sizeof *dj->prim);
    dj->uniq = calloc((size_t)E, sizeof *dj->uniq);
    dj->uniq_m = calloc((size_t)E, sizeof *dj->uniq_m);
    dj->uniq_k = calloc((size_t)E, sizeof *dj->uniq_k);
    dj->mem = calloc((size_t)E * 3, sizeof *dj->mem);
    if (!dj->prim || !dj->uniq || !dj->uniq_m || !dj->uniq_k || !dj->mem) return -1;
    double t0 = bench_now();
    for (int e = 0; e < E; e++) {
        if (group_empty(j, e)) continue;
        int u = 0;
        while (u < dj->n_uniq && (dj->uniq_m[u] != j->m[e] || dj->uniq_k[u] != j->k[e])) u++;
        dnnl_memory_desc_t md[3];
        if (u == dj->n_uniq) {
            if (dnnl_make(j->p, j->m[e], j->k[e], &dj->uniq[u], md)) return -1;
            dj->uniq_m[u] = j->m[e], dj->uniq_k[u] = j->k[e];
            dj->n_uniq++;
        } else if (dnnl_make(j->p, j->m[e], j->k[e], NULL, md)) {
            return -1;
        }
        dj->prim[e] = dj->uniq[u];
        if (dnnl_memory_create(&dj->mem[3 * e + 0], &md[0], dnnl_eng, (void*)(j->a + j->ao[e])) ||
            dnnl_memory_create(&dj->mem[3 * e + 1], &md[1], dnnl_eng, (void*)(j->b + j->bo[e])) ||
            dnnl_memory_create(&dj->mem[3 * e + 2], &md[2], dnnl_eng, j->c + j->co[e]))
            return -1;
    }
    dj->create_s = bench_now() - t0;
    return 0;
}

static void run_dnnl(const gbench_dnnl_t* dj) {
    for (int e = 0; e < dj->E; e++) {
        if (!dj->prim[e]) continue;
        dnnl_exec_arg_t args[3] = {
            {DNNL_ARG_SRC, dj->mem[3 * e + 0]},
            {DNNL_ARG_WEIGHTS, dj->mem[3 * e + 1]},
            {DNNL_ARG_DST, dj->mem[3 * e + 2]},
        };
        dnnl_primitive_execute(dj->prim[e], dnnl_strm, 3, args);
    }
    dnnl_stream_wait(dnnl_strm);
}

void gbench_dnnl_release(gbench_dnnl_t* dj) {
    if (dj->mem)
        for (int i = 0; i < 3 * dj->E; i++)
            if (dj->mem[i]) dnnl_memory_destroy(dj->mem[i]);
    for (int u = 0; u < dj->n_uniq; u++) dnnl_primitive_destroy(dj->uniq[u]);
    free(dj->mem), free(dj->prim), free(dj->uniq), free(dj->uniq_m), free(dj->uniq_k);
    memset(dj, 0, sizeof *dj);
}

void gbench_dnnl_shutdown(void) {
    if (dnnl_strm) dnnl_stream_destroy(dnnl_strm);
    if (dnnl_eng) dnnl_engine_destroy(dnnl_eng);
    dnnl_strm = NULL, dnnl_eng = NULL;
}

void gbench_run(int impl, const gbench_job_t* j, const gbench_dnnl_t* dj) {
    if (impl == GBENCH_OPENBLAS)
        run_openblas(j);
    else if (impl == GBENCH_DNNL)
        run_dnnl(dj);
    else
        run_ours(kern_table_for((kern_isa_t)(impl - GBENCH_OURS)), j);
}

void gbench_fill(float* x, long n, unsigned seed) {
    // Uniform in [-1, 1): values do not matter for speed, only that they are normal floats.
    unsigned s = seed * 2654435761u + 1;
    for (long i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)(s >> 8) * (2.0f / 16777216.0f) - 1.0f;
    }
}

void gbench_set_threads(int threads) {
#ifdef _OPENMP
    omp_set_num_threads(threads); // ours and oneDNN (OpenMP runtime)
#endif
    openblas_set_num_threads(threads);
}

double gbench_median_of(const double* x, int n) {
    double y[64];
    memcpy(y, x, sizeof(double) * (size_t)n);
    return bench_median(y, n);
}

// Both sides of a paired ratio ran back to back, so a disturbance on a shared machine hits
// them alike.
double gbench_paired(const double* num, const double* den, int reps) {
    double r[64];
    for (int q = 0; q < reps; q++) r[q] = num[q] / den[q];
    return bench_median(r, reps);
}

int gbench_turn(int q, int r, int n) {
    if (r < 0) r = 0;
    int at = (q + r) % n;
    return (r / n) % 2 ? n - 1 - at : at;
}
