// moed-bench gemm: the grouped GEMMs of one MoE layer (every expert group a separate
// product, all groups the same shape, each with its own weights in memory as in training)
// through our kernels, through OpenBLAS cblas_sgemm looped over the groups, and through a
// oneDNN matmul primitive (created once per shape outside the timed loop) looped over the
// groups. Reports GFLOP/s, the fraction of the measured FMA peak (bench/peak.c) for the same
// thread count, and the ratios ours/OpenBLAS and ours/oneDNN: per product the median of each
// round's paired ratio, for all products the ratio of summed medians. Median of several
// repetitions after a warm-up run that also takes the page faults. Then the expert FFN's
// forward as the layer runs it: the up-projection unfused (two sgemm + swiglu_fwd), fused
// (gemm_swiglu) and fused on pre-packed weights, the down-projection plain and pre-packed,
// and the time to pack the weights (paid once per optimizer step).
#include <cblas.h>
#include <dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "bench/bench.h"

// Token groups x model width: E groups of `rows` tokens each, d_model, d_ff.
typedef struct {
    int E, rows, d, f;
} group_shape_t;

static const group_shape_t shapes_big[] = {
    {8, 512, 1024, 2816},
    {64, 32, 1024, 2816},
};
static const group_shape_t shapes_small[] = {
    {8, 512, 512, 1024},
    {64, 32, 512, 1024},
};

// One product of the layer, per group: C[m, n] = op(A)[m, k] op(B)[k, n], A and B as stored
// in training (element (i, p) of op(A) at a[i*rsa + p*csa], likewise B), C row-major.
typedef struct {
    const char* name;
    const char* formula;
    int m, n, k;
    long rsa, csa, rsb, csb;
} product_t;

enum { N_PRODUCTS = 5 };

static void products_for(const group_shape_t* s, product_t p[N_PRODUCTS]) {
    int r = s->rows, d = s->d, f = s->f;
    // forward up: X[r, d] W[d, f]
    p[0] = (product_t){"up", "X.W", r, f, d, d, 1, f, 1};
    // forward down: A[r, f] Wo[f, d]
    p[1] = (product_t){"down", "A.Wo", r, d, f, f, 1, d, 1};
    // dA = dY[r, d] Wo^T (Wo stored [f, d])
    p[2] = (product_t){"dA", "dY.Wo^T", r, f, d, d, 1, 1, d};
    // dW = X^T dH[r, f] (X stored [r, d])
    p[3] = (product_t){"dW", "X^T.dH", d, f, r, 1, d, f, 1};
    // dX = dH[r, f] W^T (W stored [d, f])
    p[4] = (product_t){"dX", "dH.W^T", r, d, f, f, 1, 1, f};
}

// ---- the three implementations, each timing all groups of one product ----

typedef struct {
    const product_t* p;
    int E;
    const float* a; // [E][m*k] in the stored layout
    const float* b; // [E][k*n]
    float* c;       // [E][m*n]
} job_t;

static long a_size(const product_t* p) { return (long)p->m * p->k; }
static long b_size(const product_t* p) { return (long)p->k * p->n; }
static long c_size(const product_t* p) { return (long)p->m * p->n; }

static void run_ours(const kern_table_t* t, const job_t* j) {
    const product_t* p = j->p;
    for (int e = 0; e < j->E; e++)
        t->sgemm(p->m, p->n, p->k, j->a + e * a_size(p), p->rsa, p->csa, j->b + e * b_size(p),
                 p->rsb, p->csb, j->c + e * c_size(p), p->n, 0);
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

static void run_openblas(const job_t* j) {
    const product_t* p = j->p;
    enum CBLAS_TRANSPOSE ta, tb;
    int lda, ldb;
    cblas_op(p->rsa, p->csa, &ta, &lda);
    cblas_op(p->rsb, p->csb, &tb, &ldb);
    for (int e = 0; e < j->E; e++)
        cblas_sgemm(CblasRowMajor, ta, tb, p->m, p->n, p->k, 1.0f, j->a + e * a_size(p), lda,
                    j->b + e * b_size(p), ldb, 0.0f, j->c + e * c_size(p), p->n);
}

// oneDNN: one matmul primitive for the product's shape and strides, memory objects per group.
typedef struct {
    dnnl_primitive_t prim;
    dnnl_memory_t* mem; // [E][3]: src, weights, dst
    int E;
} dnnl_job_t;

static dnnl_engine_t dnnl_eng;
static dnnl_stream_t dnnl_strm;

static int dnnl_prepare(const job_t* j, dnnl_job_t* dj) {
    const product_t* p = j->p;
    memset(dj, 0, sizeof *dj);
    if (!dnnl_eng) {
        if (dnnl_engine_create(&dnnl_eng, dnnl_cpu, 0) != dnnl_success) return -1;
        if (dnnl_stream_create(&dnnl_strm, dnnl_eng, dnnl_stream_default_flags) != dnnl_success)
            return -1;
    }
    dnnl_memory_desc_t a_md, b_md, c_md;
    dnnl_dims_t a_dims = {p->m, p->k}, a_str = {p->rsa, p->csa};
    dnnl_dims_t b_dims = {p->k, p->n}, b_str = {p->rsb, p->csb};
    dnnl_dims_t c_dims = {p->m, p->n}, c_str = {p->n, 1};
    if (dnnl_memory_desc_init_by_strides(&a_md, 2, a_dims, dnnl_f32, a_str) ||
        dnnl_memory_desc_init_by_strides(&b_md, 2, b_dims, dnnl_f32, b_str) ||
        dnnl_memory_desc_init_by_strides(&c_md, 2, c_dims, dnnl_f32, c_str))
        return -1;
    dnnl_matmul_desc_t md;
    dnnl_primitive_desc_t pd;
    if (dnnl_matmul_desc_init(&md, &a_md, &b_md, NULL, &c_md) != dnnl_success) return -1;
    if (dnnl_primitive_desc_create(&pd, &md, NULL, dnnl_eng, NULL) != dnnl_success) return -1;
    dnnl_status_t st = dnnl_primitive_create(&dj->prim, pd);
    dnnl_primitive_desc_destroy(pd);
    if (st != dnnl_success) return -1;
    dj->E = j->E;
    dj->mem = calloc((size_t)j->E * 3, sizeof *dj->mem);
    for (int e = 0; e < j->E; e++) {
        if (dnnl_memory_create(&dj->mem[3 * e + 0], &a_md, dnnl_eng,
                               (void*)(j->a + e * a_size(p))) ||
            dnnl_memory_create(&dj->mem[3 * e + 1], &b_md, dnnl_eng,
                               (void*)(j->b + e * b_size(p))) ||
            dnnl_memory_create(&dj->mem[3 * e + 2], &c_md, dnnl_eng, j->c + e * c_size(p)))
            return -1;
    }
    return 0;
}

static void run_dnnl(const dnnl_job_t* dj) {
    for (int e = 0; e < dj->E; e++) {
        dnnl_exec_arg_t args[3] = {
            {DNNL_ARG_SRC, dj->mem[3 * e + 0]},
            {DNNL_ARG_WEIGHTS, dj->mem[3 * e + 1]},
            {DNNL_ARG_DST, dj->mem[3 * e + 2]},
        };
        dnnl_primitive_execute(dj->prim, dnnl_strm, 3, args);
    }
    dnnl_stream_wait(dnnl_strm);
}

static void dnnl_release(dnnl_job_t* dj) {
    if (dj->mem)
        for (int i = 0; i < 3 * dj->E; i++)
            if (dj->mem[i]) dnnl_memory_destroy(dj->mem[i]);
    free(dj->mem);
    if (dj->prim) dnnl_primitive_destroy(dj->prim);
    memset(dj, 0, sizeof *dj);
}

// ---- timing ----

enum { IMPL_OPENBLAS = 0, IMPL_DNNL = 1, IMPL_OURS = 2 }; // ours: IMPL_OURS + isa index
enum { MAX_IMPLS = IMPL_OURS + KERN_N_ISA };

typedef struct {
    int reps;
    int with_peers;
    int ffn;      // also the expert FFN forward (fused, pre-packed)
    int products; // the table of the five products (off: --ffn-only)
    int isa_on[KERN_N_ISA];
} opts_t;

static void run_impl(int impl, const job_t* j, const dnnl_job_t* dj) {
    if (impl == IMPL_OPENBLAS)
        run_openblas(j);
    else if (impl == IMPL_DNNL)
        run_dnnl(dj);
    else
        run_ours(kern_table_for((kern_isa_t)(impl - IMPL_OURS)), j);
}

static void fill(float* x, long n, unsigned seed) {
    // Uniform in [-1, 1): values do not matter for speed, only that they are normal floats.
    unsigned s = seed * 2654435761u + 1;
    for (long i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)(s >> 8) * (2.0f / 16777216.0f) - 1.0f;
    }
}

static void set_threads(int threads) {
#ifdef _OPENMP
    omp_set_num_threads(threads); // ours and oneDNN (OpenMP runtime)
#endif
    openblas_set_num_threads(threads);
}

// Median of x[n], leaving x in its round order (bench_median sorts in place).
static double median_of(const double* x, int n) {
    double y[64];
    memcpy(y, x, sizeof(double) * (size_t)n);
    return bench_median(y, n);
}

// The median over rounds of each round's ratio num/den: both sides ran back to back, so a
// disturbance on this shared machine hits them alike.
static double paired(const double* num, const double* den, int reps) {
    double r[64];
    for (int q = 0; q < reps; q++) r[q] = num[q] / den[q];
    return bench_median(r, reps);
}

// One shape set at one thread count: every product, every implementation, then the table.
static void bench_shape(const group_shape_t* s, int threads, const opts_t* o) {
    product_t p[N_PRODUCTS];
    products_for(s, p);
    long amax = 0, bmax = 0, cmax = 0;
    for (int i = 0; i < N_PRODUCTS; i++) {
        if (a_size(&p[i]) > amax) amax = a_size(&p[i]);
        if (b_size(&p[i]) > bmax) bmax = b_size(&p[i]);
        if (c_size(&p[i]) > cmax) cmax = c_size(&p[i]);
    }
    float* a = aligned_alloc(64, ((size_t)s->E * amax * sizeof(float) + 63) & ~(size_t)63);
    float* b = aligned_alloc(64, ((size_t)s->E * bmax * sizeof(float) + 63) & ~(size_t)63);
    float* c = aligned_alloc(64, ((size_t)s->E * cmax * sizeof(float) + 63) & ~(size_t)63);
    if (!a || !b || !c) {
        fprintf(stderr, "moed-bench gemm: out of memory for E=%d d=%d f=%d\n", s->E, s->d, s->f);
        exit(1);
    }
    fill(a, s->E * amax, 1);
    fill(b, s->E * bmax, 2);
    memset(c, 0, (size_t)s->E * cmax * sizeof(float));

    // The implementations take turns within each product, one run each per round, so that
    // a disturbance on this shared machine hits them alike; the median of the rounds after
    // a warm-up round is kept. OpenBLAS's pthreads spin for about 0.1 s after a call: with
    // several threads, a pause after each OpenBLAS run keeps them off the others' cores.
    int on[MAX_IMPLS] = {0};
    for (int impl = 0; impl < MAX_IMPLS; impl++)
        on[impl] = impl < IMPL_OURS ? o->with_peers : o->isa_on[impl - IMPL_OURS];
    set_threads(threads);
    double sec[N_PRODUCTS][MAX_IMPLS] = {{0}};
    static double ts_all[N_PRODUCTS][MAX_IMPLS][64]; // every round's seconds, for paired ratios
    int reps = o->reps < 64 ? o->reps : 64;
    for (int i = 0; i < N_PRODUCTS; i++) {
        job_t j = {&p[i], s->E, a, b, c};
        dnnl_job_t dj = {0};
        int dnnl_ok = on[IMPL_DNNL] && dnnl_prepare(&j, &dj) == 0;
        double(*ts)[64] = ts_all[i];
        for (int r = -1; r < reps; r++)
            for (int impl = 0; impl < MAX_IMPLS; impl++) {
                if (!on[impl] || (impl == IMPL_DNNL && !dnnl_ok)) continue;
                double t0 = bench_now();
                run_impl(impl, &j, &dj);
                double dt = bench_now() - t0;
                if (r >= 0) ts[impl][r] = dt;
                if (impl == IMPL_OPENBLAS && threads > 1) usleep(150000);
            }
        for (int impl = 0; impl < MAX_IMPLS; impl++)
            if (on[impl] && (impl != IMPL_DNNL || dnnl_ok))
                sec[i][impl] = median_of(ts[impl], reps);
        dnnl_release(&dj);
    }

    printf("\nE=%d groups x %d rows, d=%d f=%d, %d thread%s\n", s->E, s->rows, s->d, s->f, threads,
           threads > 1 ? "s" : "");
    printf("  %-5s %-8s %5s %5s %5s |", "prod", "", "m", "n", "k");
    for (int isa = 0; isa < KERN_N_ISA; isa++)
        if (o->isa_on[isa]) printf(" %7s GF/s %%peak |", kern_table_for((kern_isa_t)isa)->name);
    if (o->with_peers) printf(" OpenBLAS  oneDNN | ours/OB ours/DNNL");
    printf("\n");
    double tot[MAX_IMPLS] = {0}, flops_tot = 0;
    int dnnl_all = 1;
    for (int i = 0; i < N_PRODUCTS; i++) {
        double flops = 2.0 * s->E * p[i].m * p[i].n * p[i].k;
        flops_tot += flops;
        printf("  %-5s %-8s %5d %5d %5d |", p[i].name, p[i].formula, p[i].m, p[i].n, p[i].k);
        int best = -1; // the best ISA of ours, for the ratios
        for (int isa = 0; isa < KERN_N_ISA; isa++) {
            if (!o->isa_on[isa]) continue;
            double t = sec[i][IMPL_OURS + isa], g = flops / t / 1e9;
            double pk = bench_peak_gflops((kern_isa_t)isa, threads);
            printf(" %12.1f %5.1f |", g, 100 * g / pk);
            tot[IMPL_OURS + isa] += t;
            if (best < 0 || t < sec[i][IMPL_OURS + best]) best = isa;
        }
        if (o->with_peers) {
            double ob = sec[i][IMPL_OPENBLAS], dn = sec[i][IMPL_DNNL];
            double ours = best >= 0 ? sec[i][IMPL_OURS + best] : 0;
            tot[IMPL_OPENBLAS] += ob;
            tot[IMPL_DNNL] += dn;
            if (dn <= 0) dnnl_all = 0;
            printf(" %8.1f ", flops / ob / 1e9);
            if (dn > 0)
                printf("%7.1f |", flops / dn / 1e9);
            else
                printf("%7s |", "n/a");
            if (ours > 0) {
                // paired: the median of each round's ratio (see above)
                const double* to = ts_all[i][IMPL_OURS + best];
                printf(" %7.2f ", paired(ts_all[i][IMPL_OPENBLAS], to, reps));
                if (dn > 0)
                    printf("%9.2f", paired(ts_all[i][IMPL_DNNL], to, reps));
                else
                    printf("%9s", "n/a");
            }
        }
        printf("\n");
    }
    printf("  %-5s %-8s %5s %5s %5s |", "all", "", "", "", "");
    int best = -1;
    for (int isa = 0; isa < KERN_N_ISA; isa++) {
        if (!o->isa_on[isa]) continue;
        double g = flops_tot / tot[IMPL_OURS + isa] / 1e9;
        printf(" %12.1f %5.1f |", g, 100 * g / bench_peak_gflops((kern_isa_t)isa, threads));
        if (best < 0 || tot[IMPL_OURS + isa] < tot[IMPL_OURS + best]) best = isa;
    }
    if (o->with_peers) {
        printf(" %8.1f ", flops_tot / tot[IMPL_OPENBLAS] / 1e9);
        if (dnnl_all)
            printf("%7.1f |", flops_tot / tot[IMPL_DNNL] / 1e9);
        else
            printf("%7s |", "n/a");
        if (best >= 0) {
            printf(" %7.2f ", tot[IMPL_OPENBLAS] / tot[IMPL_OURS + best]);
            if (dnnl_all) printf("%9.2f", tot[IMPL_DNNL] / tot[IMPL_OURS + best]);
        }
    }
    printf("\n");
    fflush(stdout);
    free(a);
    free(b);
    free(c);
}

// ---- the expert FFN as the layer runs it: fused up-projection, pre-packed weights ----

// Per group e: X_e[rows, d], W0_e, W1_e [d, f], Wo_e [f, d], and outputs.
typedef struct {
    const group_shape_t* s;
    const float *x, *w0, *w1, *wo; // [E][rows*d], [E][d*f] x2, [E][f*d]
    float *h0, *h1, *act, *y;      // [E][rows*f] x3, [E][rows*d]
    float *pup, *pdown;            // pre-packed [E][up_n], [E][down_n]
    size_t up_n, down_n;           // floats per group of pup, pdown
} ffn_t;

enum {
    FFN_UNFUSED,
    FFN_FUSED,
    FFN_FUSED_PRE,
    FFN_PACK_UP,
    FFN_DOWN,
    FFN_DOWN_PRE,
    FFN_PACK_DOWN,
    FFN_DNNL_UP,
    FFN_N
};
static const char* const ffn_names[FFN_N] = {"up: 2 sgemm + swiglu",
                                             "up: gemm_swiglu",
                                             "up: gemm_swiglu, pre-packed",
                                             "pack W0|W1",
                                             "down: sgemm",
                                             "down: pre-packed",
                                             "pack Wo",
                                             "oneDNN: 2 matmuls"};

static void run_ffn(const kern_table_t* t, const ffn_t* F, int what, const dnnl_job_t dj[2]) {
    const group_shape_t* s = F->s;
    long r = s->rows, d = s->d, f = s->f;
    if (what == FFN_DNNL_UP) {
        run_dnnl(&dj[0]);
        run_dnnl(&dj[1]);
        return;
    }
    for (int e = 0; e < s->E; e++) {
        const float *x = F->x + e * r * d, *w0 = F->w0 + e * d * f, *w1 = F->w1 + e * d * f;
        const float* wo = F->wo + e * f * d;
        float *h0 = F->h0 + e * r * f, *h1 = F->h1 + e * r * f, *act = F->act + e * r * f;
        float *pup = F->pup + e * F->up_n, *pdown = F->pdown + e * F->down_n;
        float* y = F->y + e * r * d;
        switch (what) {
        case FFN_UNFUSED:
            t->sgemm((int)r, (int)f, (int)d, x, d, 1, w0, f, 1, h0, f, 0);
            t->sgemm((int)r, (int)f, (int)d, x, d, 1, w1, f, 1, h1, f, 0);
            t->swiglu_fwd(r * f, h0, h1, act);
            break;
        case FFN_FUSED:
        case FFN_FUSED_PRE:
            t->gemm_swiglu((int)r, (int)f, (int)d, x, d, 1, w0, w1, f, 1,
                           what == FFN_FUSED_PRE ? pup : NULL, h0, h1, act, f);
            break;
        case FFN_PACK_UP: t->pack_b((int)d, (int)f, w0, w1, f, 1, pup); break;
        case FFN_DOWN: t->sgemm((int)r, (int)d, (int)f, act, f, 1, wo, d, 1, y, d, 0); break;
        case FFN_DOWN_PRE:
            t->sgemm_packed((int)r, (int)d, (int)f, act, f, 1, pdown, y, d, 0);
            break;
        case FFN_PACK_DOWN: t->pack_b((int)f, (int)d, wo, NULL, d, 1, pdown); break;
        }
    }
}

// In 2 MiB-aligned blocks backed by transparent huge pages where the kernel has them, as
// the pack buffers (dispatch.c) and the arena: pre-packed B is read like a pack buffer.
static float* ffn_alloc(size_t floats) {
    const size_t huge = (size_t)2 << 20;
    size_t bytes = (floats * sizeof(float) + huge - 1) & ~(huge - 1);
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

// The forward of the expert FFN through one table: the up-projection unfused, fused, and
// fused on pre-packed weights (with the time to pack them, which training pays once per
// optimizer step), the down-projection plain and pre-packed, and oneDNN's two up matmuls
// (without SwiGLU) for scale. Same rounds-and-median scheme as bench_shape.
static void bench_ffn(const group_shape_t* s, int threads, const kern_table_t* t, const opts_t* o) {
    long E = s->E, r = s->rows, d = s->d, f = s->f;
    ffn_t F = {.s = s};
    F.up_n = t->packed_floats((int)d, (int)f, 2);
    F.down_n = t->packed_floats((int)f, (int)d, 1);
    float* x = ffn_alloc(E * r * d);
    float* w0 = ffn_alloc(E * d * f);
    float* w1 = ffn_alloc(E * d * f);
    float* wo = ffn_alloc(E * f * d);
    fill(x, E * r * d, 3), fill(w0, E * d * f, 4), fill(w1, E * d * f, 5), fill(wo, E * f * d, 6);
    F.x = x, F.w0 = w0, F.w1 = w1, F.wo = wo;
    F.h0 = ffn_alloc(E * r * f), F.h1 = ffn_alloc(E * r * f), F.act = ffn_alloc(E * r * f);
    F.y = ffn_alloc(E * r * d);
    F.pup = ffn_alloc(E * F.up_n), F.pdown = ffn_alloc(E * F.down_n);
    product_t up = {"up", "X.W", (int)r, (int)f, (int)d, d, 1, f, 1};
    job_t j0 = {&up, s->E, x, w0, F.h0}, j1 = {&up, s->E, x, w1, F.h1};
    dnnl_job_t dj[2] = {{0}, {0}};
    int dnnl_ok = o->with_peers && dnnl_prepare(&j0, &dj[0]) == 0 && dnnl_prepare(&j1, &dj[1]) == 0;
    set_threads(threads);
    double ts[FFN_N][64], sec[FFN_N] = {0};
    int reps = o->reps < 64 ? o->reps : 64;
    for (int rep = -1; rep < reps; rep++)
        for (int w = 0; w < FFN_N; w++) {
            if (w == FFN_DNNL_UP && !dnnl_ok) continue;
            double t0 = bench_now();
            run_ffn(t, &F, w, dj);
            if (rep >= 0) ts[w][rep] = bench_now() - t0;
        }
    for (int w = 0; w < FFN_N; w++)
        if (w != FFN_DNNL_UP || dnnl_ok) sec[w] = median_of(ts[w], reps);
    double pre[64], fly[64]; // per round: forward + repack, forward packing on the fly
    for (int q = 0; q < reps; q++) {
        pre[q] =
            ts[FFN_FUSED_PRE][q] + ts[FFN_PACK_UP][q] + ts[FFN_DOWN_PRE][q] + ts[FFN_PACK_DOWN][q];
        fly[q] = ts[FFN_FUSED][q] + ts[FFN_DOWN][q];
    }
    double up_flops = 4.0 * E * r * d * f, down_flops = 2.0 * E * r * d * f;
    double pk = bench_peak_gflops(t->isa, threads);
    printf("  expert FFN forward, E=%d x %d rows, d=%d f=%d, %d thread%s, through %s (GF/s count "
           "GEMM flops; pack: ms per optimizer step; x: median of paired ratios, > 1: faster)\n",
           s->E, s->rows, s->d, s->f, threads, threads > 1 ? "s" : "", t->name);
    for (int w = 0; w < FFN_N; w++) {
        if (sec[w] <= 0) continue;
        int pack = w == FFN_PACK_UP || w == FFN_PACK_DOWN;
        double fl = w <= FFN_FUSED_PRE || w == FFN_DNNL_UP ? up_flops : down_flops;
        printf("    %-28s %8.3f ms", ffn_names[w], sec[w] * 1e3);
        if (!pack)
            printf(" %8.1f GF/s %5.1f%% peak", fl / sec[w] / 1e9, 100 * fl / sec[w] / 1e9 / pk);
        if (w == FFN_FUSED || w == FFN_FUSED_PRE)
            printf("  x%.2f vs unfused", paired(ts[FFN_UNFUSED], ts[w], reps));
        if (w == FFN_DOWN_PRE) printf("  x%.2f vs sgemm", paired(ts[FFN_DOWN], ts[w], reps));
        printf("\n");
    }
    printf("    forward + repack per step: pre-packed x%.2f vs packed on the fly\n",
           paired(fly, pre, reps));
    if (dnnl_ok)
        printf(
            "    gemm_swiglu vs oneDNN's two up matmuls (without SwiGLU): x%.2f on the fly, x%.2f "
            "pre-packed\n",
            paired(ts[FFN_DNNL_UP], ts[FFN_FUSED], reps),
            paired(ts[FFN_DNNL_UP], ts[FFN_FUSED_PRE], reps));
    fflush(stdout);
    dnnl_release(&dj[0]);
    dnnl_release(&dj[1]);
    free(x), free(w0), free(w1), free(wo), free(F.h0), free(F.h1), free(F.act), free(F.y);
    free(F.pup), free(F.pdown);
}

int bench_gemm(int argc, char** argv) {
    opts_t o = {.reps = 5, .with_peers = 1, .ffn = 1, .products = 1};
    int quick = 0, only_threads = 0;
    const char* isa_arg = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) {
            quick = 1;
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            o.reps = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--isa") && i + 1 < argc) {
            isa_arg = argv[++i];
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            only_threads = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--no-peers")) {
            o.with_peers = 0;
        } else if (!strcmp(argv[i], "--no-ffn")) {
            o.ffn = 0;
        } else if (!strcmp(argv[i], "--ffn-only")) {
            o.products = 0;
        } else {
            fprintf(stderr,
                    "moed-bench gemm: unknown option '%s'\n"
                    "options: --quick (small shapes, 3 reps)  --reps N  --threads N\n"
                    "         --isa NAME|all (default: every SIMD ISA the CPU runs; ref is slow)"
                    "  --no-peers\n         --no-ffn (skip the fused/pre-packed FFN forward)  "
                    "--ffn-only\n",
                    argv[i]);
            return 2;
        }
    }
    if (quick && o.reps == 5) o.reps = 3;
    if (o.reps < 1) o.reps = 1;
    int any = 0;
    for (int isa = 0; isa < KERN_N_ISA; isa++) {
        const kern_table_t* t = kern_table_for((kern_isa_t)isa);
        if (!t) continue;
        if (isa_arg)
            o.isa_on[isa] = !strcmp(isa_arg, "all") || !strcmp(isa_arg, t->name);
        else
            o.isa_on[isa] = isa != KERN_REF;
        any |= o.isa_on[isa];
    }
    if (!any) {
        fprintf(stderr, "moed-bench gemm: no kernel table for ISA '%s' on this CPU\n",
                isa_arg ? isa_arg : "(best)");
        return 2;
    }

    int max_threads = 1;
#ifdef _OPENMP
    max_threads = omp_get_max_threads();
#endif
    int thread_counts[2] = {1, max_threads}, n_counts = max_threads > 1 ? 2 : 1;
    if (only_threads > 0) {
        thread_counts[0] = only_threads;
        n_counts = 1;
        if (only_threads > max_threads) max_threads = only_threads;
    }
    if (kern_init(max_threads) != 0) {
        fprintf(stderr, "moed-bench gemm: kern_init failed\n");
        return 1;
    }

    printf("moed-bench gemm: grouped GEMMs of the MoE layer, median of %d run%s after a "
           "warm-up; GF/s = GFLOP/s;\n%%peak = of the measured FMA peak of that ISA at that "
           "thread count; ratios > 1: ours is faster\n",
           o.reps, o.reps > 1 ? "s" : "");
    for (int isa = 0; isa < KERN_N_ISA; isa++) {
        if (!o.isa_on[isa]) continue;
        const kern_table_t* t = kern_table_for((kern_isa_t)isa);
        printf("ours: %s, micro-tile %dx%d, blocks MC=%d KC=%d NC=%d;", t->name, t->mr, t->nr,
               t->mc, t->kc, t->nc);
        for (int c = 0; c < n_counts; c++)
            printf(" peak %d thr %.1f GF/s%s", thread_counts[c],
                   bench_peak_gflops((kern_isa_t)isa, thread_counts[c]),
                   c + 1 < n_counts ? "," : "\n");
    }
    const group_shape_t* sets[2] = {shapes_small, shapes_big};
    int n_sets = quick ? 1 : 2;
    for (int c = 0; c < n_counts; c++)
        for (int si = 0; si < n_sets; si++)
            for (int k = 0; k < 2; k++) {
                if (o.products) bench_shape(&sets[si][k], thread_counts[c], &o);
                for (int isa = 0; isa < KERN_N_ISA; isa++)
                    if (o.isa_on[isa] && o.ffn)
                        bench_ffn(&sets[si][k], thread_counts[c], kern_table_for((kern_isa_t)isa),
                                  &o);
            }
    if (dnnl_strm) dnnl_stream_destroy(dnnl_strm);
    if (dnnl_eng) dnnl_engine_destroy(dnnl_eng);
    kern_shutdown();
    return 0;
}
