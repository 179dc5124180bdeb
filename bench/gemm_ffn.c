// moed-bench gemm: the expert FFN's forward as the layer runs it, through one kernel table:
// the up-projection unfused (two sgemm + swiglu_fwd), fused (gemm_swiglu) and fused on
// pre-packed weights, the down-projection plain and pre-packed, and the time to pack the
// weights (paid once per optimizer step); oneDNN's two up matmuls for scale. Even groups.
#include <stdio.h>
#include <stdlib.h>

#include "bench/gemm.h"

// Per group e: X_e[rows, d], W0_e, W1_e [d, f], Wo_e [f, d], and outputs.
typedef struct {
    const gbench_shape_t* s;
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

static void run_ffn(const kern_table_t* t, const ffn_t* F, int what, const gbench_dnnl_t dj[2]) {
    const gbench_shape_t* s = F->s;
    long r = s->rows, d = s->d, f = s->f;
    if (what == FFN_DNNL_UP) {
        gbench_run(GBENCH_DNNL, NULL, &dj[0]);
        gbench_run(GBENCH_DNNL, NULL, &dj[1]);
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

// The forward of the expert FFN through one table: the up-projection unfused, fused, and
// fused on pre-packed weights (with the time to pack them, which training pays once per
// optimizer step), the down-projection plain and pre-packed, and oneDNN's two up matmuls
// (without SwiGLU) for scale. Same rounds-and-median scheme as the products table.
void gbench_ffn(const gbench_shape_t* s, int threads, const kern_table_t* t,
                const gbench_opts_t* o) {
    long E = s->E, r = s->rows, d = s->d, f = s->f;
    ffn_t F = {.s = s};
    F.up_n = t->packed_floats((int)d, (int)f, 2);
    F.down_n = t->packed_floats((int)f, (int)d, 1);
    float* x = gbench_alloc(E * r * d);
    float* w0 = gbench_alloc(E * d * f);
    float* w1 = gbench_alloc(E * d * f);
    float* wo = gbench_alloc(E * f * d);
    gbench_fill(x, E * r * d, 3), gbench_fill(w0, E * d * f, 4), gbench_fill(w1, E * d * f, 5),
        gbench_fill(wo, E * f * d, 6);
    F.x = x, F.w0 = w0, F.w1 = w1, F.wo = wo;
    F.h0 = gbench_alloc(E * r * f), F.h1 = gbench_alloc(E * r * f), F.act = gbench_alloc(E * r * f);
    F.y = gbench_alloc(E * r * d);
    F.pup = gbench_alloc(E * F.up_n), F.pdown = gbench_alloc(E * F.down_n);
    gbench_product_t p[GBENCH_N_PRODUCTS];
    gbench_products((int)r, (int)d, (int)f, p);
    gbench_job_t j0, j1; // the up-projection (p[0]) into h0 and h1
    gbench_job_init(&j0, &p[0], s);
    j0.a = x, j0.b = w0, j0.c = F.h0;
    j1 = j0;
    j1.b = w1, j1.c = F.h1;
    gbench_dnnl_t dj[2] = {{0}, {0}};
    int dnnl_ok = o->with_peers && gbench_dnnl_prepare(&j0, &dj[0]) == 0 &&
                  gbench_dnnl_prepare(&j1, &dj[1]) == 0;
    gbench_set_threads(threads);
    double ts[FFN_N][64], sec[FFN_N] = {0};
    int reps = o->reps < 64 ? o->reps : 64;
    for (int rep = -1; rep < reps; rep++)
        for (int q = 0; q < FFN_N; q++) { // in turns that rotate, as the products table's
            int w = gbench_turn(q, rep, FFN_N);
            if (w == FFN_DNNL_UP && !dnnl_ok) continue;
            double t0 = bench_now();
            run_ffn(t, &F, w, dj);
            if (rep >= 0) ts[w][rep] = bench_now() - t0;
        }
    for (int w = 0; w < FFN_N; w++)
        if (w != FFN_DNNL_UP || dnnl_ok) sec[w] = gbench_median_of(ts[w], reps);
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
            printf("  x%.2f vs unfused", gbench_paired(ts[FFN_UNFUSED], ts[w], reps));
        if (w == FFN_DOWN_PRE) printf("  x%.2f vs sgemm", gbench_paired(ts[FFN_DOWN], ts[w], reps));
        printf("\n");
    }
    printf("    forward + repack per step: pre-packed x%.2f vs packed on the fly\n",
           gbench_paired(fly, pre, reps));
    if (dnnl_ok)
        printf(
            "    gemm_swiglu vs oneDNN's two up matmuls (without SwiGLU): x%.2f on the fly, x%.2f "
            "pre-packed\n",
            gbench_paired(ts[FFN_DNNL_UP], ts[FFN_FUSED], reps),
            gbench_paired(ts[FFN_DNNL_UP], ts[FFN_FUSED_PRE], reps));
    fflush(stdout);
    gbench_dnnl_release(&dj[0]);
    gbench_dnnl_release(&dj[1]);
    free(x), free(w0), free(w1), free(wo), free(F.h0), free(F.h1), free(F.act), free(F.y);
    free(F.pup), free(F.pdown);
}
