// moed-bench gemm: the grouped GEMMs of one MoE layer (every expert group a separate
// product, each with its own weights in memory as in training) through our kernels, through
// OpenBLAS cblas_sgemm looped over the groups, and through oneDNN matmul primitives (created
// outside the timed loop, one per distinct group shape: see gemm_run.c) looped over the
// groups. Even shapes give every group the same rows; uneven shapes give the groups skewed
// sizes as a router does (groups of 0 and 1 rows, odd sizes, a few big ones), so that the
// rows-dependent dim (m, or k for dW) differs per group; groups of 0 rows are skipped by all
// three, and FLOPs count only real rows. Reports GFLOP/s, the fraction of the measured FMA
// peak (bench/peak.c) for the same thread count, and the ratios ours/OpenBLAS and
// ours/oneDNN: per product the median of each round's paired ratio, for all products the
// ratio of summed medians. Median of several repetitions after a warm-up run that also takes
// the page faults. Then, for even shapes, the expert FFN forward (gemm_ffn.c).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "bench/gemm.h"

// Uneven group sizes. E = 8, 4096 rows: a skewed top-k router's counts, with an empty
// expert, a single token, odd sizes and three big groups.
static const int sizes8[8] = {1555, 0, 517, 33, 1093, 1, 890, 7};
// E = 64, 2048 rows: lognormal weights (sigma 1.5, Python random.Random(4).gauss) scaled to
// 2048 and rounded by largest remainder; 1 to 376 rows, median 13, odd sizes throughout.
static const int sizes64[64] = {14,  26, 7,  22, 53, 24, 137, 4,  15, 5,  4, 10, 18, 25, 28, 376,
                                48,  1,  18, 5,  6,  94, 9,   1,  21, 9,  2, 3,  5,  13, 7,  15,
                                207, 4,  4,  9,  68, 5,  113, 2,  3,  12, 4, 5,  26, 39, 16, 9,
                                99,  24, 9,  81, 3,  17, 35,  13, 6,  22, 6, 5,  3,  93, 6,  75};

// Per (d, f): even 8 x 512, even 64 x 32, uneven 8 (4096 rows), uneven 64 (2048 rows).
enum { SHAPES_PER_SET = 4, FIRST_UNEVEN = 2 };
static const gbench_shape_t shapes_small[SHAPES_PER_SET] = {
    {8, 512, 512, 1024, NULL},
    {64, 32, 512, 1024, NULL},
    {8, 4096, 512, 1024, sizes8},
    {64, 2048, 512, 1024, sizes64},
};
static const gbench_shape_t shapes_big[SHAPES_PER_SET] = {
    {8, 512, 1024, 2816, NULL},
    {64, 32, 1024, 2816, NULL},
    {8, 4096, 1024, 2816, sizes8},
    {64, 2048, 1024, 2816, sizes64},
};

// --check: runs every implementation once more into C (NaN-filled first, so a group left
// unwritten shows) and compares each with OpenBLAS's C on the groups with rows. Returns the
// largest |difference| relative to the largest |C| of OpenBLAS, or NAN on a mismatch of
// NaNs; the table prints it and the caller fails above 1e-4.
static double check_impl(int impl, const gbench_job_t* j, const gbench_dnnl_t* dj,
                         const float* ref) {
    long n = j->co[j->E];
    for (long i = 0; i < n; i++) j->c[i] = NAN;
    gbench_run(impl, j, dj);
    double dmax = 0, cmax = 0;
    for (int e = 0; e < j->E; e++) {
        if (j->m[e] == 0 || j->k[e] == 0) continue;
        for (long i = j->co[e]; i < j->co[e + 1]; i++) {
            double d = fabs((double)j->c[i] - ref[i]);
            if (!(d == d)) return NAN;
            if (d > dmax) dmax = d;
            if (fabs(ref[i]) > cmax) cmax = fabs(ref[i]);
        }
    }
    return cmax > 0 ? dmax / cmax : dmax;
}

// Prints a dim of the table: "var" where it is the group's rows of an uneven shape.
static void print_dim(int v, int var) {
    if (var)
        printf(" %5s", "var");
    else
        printf(" %5d", v);
}

// One shape at one thread count: every product, every implementation, then the table.
// Returns 0, or -1 when --check found a mismatch.
static int bench_shape(const gbench_shape_t* s, int threads, const gbench_opts_t* o) {
    gbench_product_t p[GBENCH_N_PRODUCTS];
    gbench_products(s->rows, s->d, s->f, p);
    static gbench_job_t jobs[GBENCH_N_PRODUCTS];
    long amax = 0, bmax = 0, cmax = 0;
    for (int i = 0; i < GBENCH_N_PRODUCTS; i++) {
        gbench_job_init(&jobs[i], &p[i], s);
        long E = s->E;
        if (jobs[i].ao[E] > amax) amax = jobs[i].ao[E];
        if (jobs[i].bo[E] > bmax) bmax = jobs[i].bo[E];
        if (jobs[i].co[E] > cmax) cmax = jobs[i].co[E];
    }
    float* a = gbench_alloc((size_t)amax);
    float* b = gbench_alloc((size_t)bmax);
    float* c = gbench_alloc((size_t)cmax);
    float* ref = o->check ? gbench_alloc((size_t)cmax) : NULL;
    gbench_fill(a, amax, 1);
    gbench_fill(b, bmax, 2);
    memset(c, 0, (size_t)cmax * sizeof(float));

    // The implementations take turns within each product, one run each per round, so that
    // a disturbance on this shared machine hits them alike; the median of the rounds after
    // a warm-up round is kept. OpenBLAS's pthreads spin for about 0.1 s after a call: with
    // several threads, a pause after each OpenBLAS run keeps them off the others' cores.
    int on[GBENCH_MAX_IMPLS] = {0};
    for (int impl = 0; impl < GBENCH_MAX_IMPLS; impl++)
        on[impl] = impl < GBENCH_OURS ? o->with_peers : o->isa_on[impl - GBENCH_OURS];
    if (o->check) on[GBENCH_OPENBLAS] = 1; // the reference
    gbench_set_threads(threads);
    double sec[GBENCH_N_PRODUCTS][GBENCH_MAX_IMPLS] = {{0}};
    static double ts_all[GBENCH_N_PRODUCTS][GBENCH_MAX_IMPLS][64]; // every round's seconds
    double err[GBENCH_N_PRODUCTS][GBENCH_MAX_IMPLS] = {{0}};
    int reps = o->reps < 64 ? o->reps : 64, n_dnnl = 0, bad = 0;
    double dnnl_create = 0;
    for (int i = 0; i < GBENCH_N_PRODUCTS; i++) {
        gbench_job_t* j = &jobs[i];
        j->a = a, j->b = b, j->c = c;
        gbench_dnnl_t dj = {0};
        int dnnl_ok = on[GBENCH_DNNL] && gbench_dnnl_prepare(j, &dj) == 0;
        n_dnnl += dj.n_uniq, dnnl_create += dj.create_s;
        double(*ts)[64] = ts_all[i];
        // The implementations take turns in a rotating order (gbench_turn): each one writes
        // all of C (128 MiB for dW of the groups of 32), so the next one starts behind its
        // dirty lines, and a fixed order would charge that to the same one every round (ours
        // after oneDNN: dW of 64 x 32 rows at d=512 read 0.85x oneDNN in a fixed order, ours
        // 90-91 GF/s alone against 74-85 right after oneDNN).
        int order[GBENCH_MAX_IMPLS], n_on = 0;
        for (int impl = 0; impl < GBENCH_MAX_IMPLS; impl++)
            if (on[impl] && (impl != GBENCH_DNNL || dnnl_ok)) order[n_on++] = impl;
        for (int r = -1; r < reps; r++)
            for (int q = 0; q < n_on; q++) {
                int impl = order[gbench_turn(q, r, n_on)];
                double t0 = bench_now();
                gbench_run(impl, j, &dj);
                double dt = bench_now() - t0;
                if (r >= 0) ts[impl][r] = dt;
                if (impl == GBENCH_OPENBLAS && threads > 1) usleep(150000);
            }
        for (int impl = 0; impl < GBENCH_MAX_IMPLS; impl++)
            if (on[impl] && (impl != GBENCH_DNNL || dnnl_ok))
                sec[i][impl] = gbench_median_of(ts[impl], reps);
        if (o->check) {
            gbench_run(GBENCH_OPENBLAS, j, &dj);
            memcpy(ref, c, (size_t)j->co[s->E] * sizeof(float));
            for (int impl = GBENCH_DNNL; impl < GBENCH_MAX_IMPLS; impl++) {
                if (!on[impl] || (impl == GBENCH_DNNL && !dnnl_ok)) continue;
                err[i][impl] = check_impl(impl, j, &dj, ref);
                if (!(err[i][impl] <= 1e-4)) bad = 1;
            }
        }
        gbench_dnnl_release(&dj);
    }
    if (!o->with_peers) on[GBENCH_OPENBLAS] = 0;

    if (s->sizes) {
        printf("\nE=%d uneven groups, %d rows in all, d=%d f=%d, %d thread%s; rows per group:",
               s->E, s->rows, s->d, s->f, threads, threads > 1 ? "s" : "");
        for (int e = 0; e < s->E; e++) printf("%s%d", e % 32 ? " " : "\n  ", s->sizes[e]);
        printf("\n  (var: the group's rows; empty groups skipped by all; oneDNN: %d primitives, "
               "one per distinct shape, made outside the timed loop in %.1f ms, less where "
               "its primitive cache had them)\n",
               n_dnnl, dnnl_create * 1e3);
    } else {
        printf("\nE=%d groups x %d rows, d=%d f=%d, %d thread%s\n", s->E, s->rows, s->d, s->f,
               threads, threads > 1 ? "s" : "");
    }
    // %peak against the most the FMA loop has reached so far, measured again after the shape
    for (int isa = 0; isa < KERN_N_ISA; isa++)
        if (o->isa_on[isa])
            printf("  %%peak of %.1f GF/s (%s, %d thread%s: the most measured in this run)\n",
                   bench_peak_remeasure((kern_isa_t)isa, threads),
                   kern_table_for((kern_isa_t)isa)->name, threads, threads > 1 ? "s" : "");
    printf("  %-5s %-8s %5s %5s %5s |", "prod", "", "m", "n", "k");
    for (int isa = 0; isa < KERN_N_ISA; isa++)
        if (o->isa_on[isa]) printf(" %7s GF/s %%peak |", kern_table_for((kern_isa_t)isa)->name);
    if (o->with_peers) printf(" OpenBLAS  oneDNN | ours/OB ours/DNNL");
    if (o->check) printf(" | max rel diff vs OpenBLAS");
    printf("\n");
    double tot[GBENCH_MAX_IMPLS] = {0}, flops_tot = 0;
    int dnnl_all = 1;
    for (int i = 0; i < GBENCH_N_PRODUCTS; i++) {
        double flops = gbench_job_flops(&jobs[i]);
        flops_tot += flops;
        printf("  %-5s %-8s", p[i].name, p[i].formula);
        int var = s->sizes != NULL;
        print_dim(p[i].m, var && !p[i].rows_is_k);
        print_dim(p[i].n, 0);
        print_dim(p[i].k, var && p[i].rows_is_k);
        printf(" |");
        int best = -1; // the best ISA of ours, for the ratios
        for (int isa = 0; isa < KERN_N_ISA; isa++) {
            if (!o->isa_on[isa]) continue;
            double t = sec[i][GBENCH_OURS + isa], g = flops / t / 1e9;
            double pk = bench_peak_gflops((kern_isa_t)isa, threads);
            printf(" %12.1f %5.1f |", g, 100 * g / pk);
            tot[GBENCH_OURS + isa] += t;
            if (best < 0 || t < sec[i][GBENCH_OURS + best]) best = isa;
        }
        if (o->with_peers) {
            double ob = sec[i][GBENCH_OPENBLAS], dn = sec[i][GBENCH_DNNL];
            double ours = best >= 0 ? sec[i][GBENCH_OURS + best] : 0;
            tot[GBENCH_OPENBLAS] += ob;
            tot[GBENCH_DNNL] += dn;
            if (dn <= 0) dnnl_all = 0;
            printf(" %8.1f ", flops / ob / 1e9);
            if (dn > 0)
                printf("%7.1f |", flops / dn / 1e9);
            else
                printf("%7s |", "n/a");
            if (ours > 0) {
                // paired: the median of each round's ratio (see above)
                const double* to = ts_all[i][GBENCH_OURS + best];
                printf(" %7.2f ", gbench_paired(ts_all[i][GBENCH_OPENBLAS], to, reps));
                if (dn > 0)
                    printf("%9.2f", gbench_paired(ts_all[i][GBENCH_DNNL], to, reps));
                else
                    printf("%9s", "n/a");
            }
        }
        if (o->check) {
            printf(" |");
            for (int impl = GBENCH_DNNL; impl < GBENCH_MAX_IMPLS; impl++)
                if (on[impl] && (impl != GBENCH_DNNL || sec[i][impl] > 0))
                    printf(" %s %.1e",
                           impl == GBENCH_DNNL
                               ? "oneDNN"
                               : kern_table_for((kern_isa_t)(impl - GBENCH_OURS))->name,
                           err[i][impl]);
        }
        printf("\n");
    }
    printf("  %-5s %-8s %5s %5s %5s |", "all", "", "", "", "");
    int best = -1;
    for (int isa = 0; isa < KERN_N_ISA; isa++) {
        if (!o->isa_on[isa]) continue;
        double g = flops_tot / tot[GBENCH_OURS + isa] / 1e9;
        printf(" %12.1f %5.1f |", g, 100 * g / bench_peak_gflops((kern_isa_t)isa, threads));
        if (best < 0 || tot[GBENCH_OURS + isa] < tot[GBENCH_OURS + best]) best = isa;
    }
    if (o->with_peers) {
        printf(" %8.1f ", flops_tot / tot[GBENCH_OPENBLAS] / 1e9);
        if (dnnl_all)
            printf("%7.1f |", flops_tot / tot[GBENCH_DNNL] / 1e9);
        else
            printf("%7s |", "n/a");
        if (best >= 0) {
            printf(" %7.2f ", tot[GBENCH_OPENBLAS] / tot[GBENCH_OURS + best]);
            if (dnnl_all) printf("%9.2f", tot[GBENCH_DNNL] / tot[GBENCH_OURS + best]);
        }
    }
    printf("\n");
    if (bad)
        printf("  check FAILED: a result differs from OpenBLAS's by more than 1e-4 of its "
               "largest |C|\n");
    fflush(stdout);
    free(a), free(b), free(c), free(ref);
    return bad ? -1 : 0;
}

int bench_gemm(int argc, char** argv) {
    gbench_opts_t o = {.reps = 5, .with_peers = 1, .ffn = 1, .products = 1};
    int quick = 0, only_threads = 0, even = 1, uneven = 1, only_set = -1, only_shape = -1;
    int reps_set = 0;
    const char* isa_arg = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) {
            quick = 1;
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            if (bench_int_arg("gemm", "--reps", argv[++i], 1, 64, &o.reps)) return 2;
            reps_set = 1;
        } else if (!strcmp(argv[i], "--isa") && i + 1 < argc) {
            isa_arg = argv[++i];
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            if (bench_int_arg("gemm", "--threads", argv[++i], 1, 4096, &only_threads)) return 2;
        } else if (!strcmp(argv[i], "--no-peers")) {
            o.with_peers = 0;
        } else if (!strcmp(argv[i], "--no-ffn")) {
            o.ffn = 0;
        } else if (!strcmp(argv[i], "--ffn-only")) {
            o.products = 0;
            uneven = 0; // the FFN runs even groups only
        } else if (!strcmp(argv[i], "--uneven-only")) {
            even = 0;
        } else if (!strcmp(argv[i], "--check")) {
            o.check = 1;
        } else if (!strcmp(argv[i], "--set") && i + 1 < argc) {
            i++;
            only_set = !strcmp(argv[i], "small") ? 0 : !strcmp(argv[i], "big") ? 1 : -2;
            if (only_set < 0) {
                fprintf(stderr, "moed-bench gemm: --set takes small or big, not '%s'\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(argv[i], "--shape") && i + 1 < argc) {
            if (bench_int_arg("gemm", "--shape", argv[++i], 0, SHAPES_PER_SET - 1, &only_shape))
                return 2;
        } else {
            return bench_unknown("gemm", argv[i]);
        }
    }
    if (quick && !reps_set) o.reps = 3;
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
        fprintf(stderr, "moed-bench gemm: no kernel table for ISA '%s' on this CPU%s\n",
                isa_arg ? isa_arg : "(best)",
                kern_max_isa() < KERN_N_ISA - 1 ? " (MOED_MAX_ISA holds some back)" : "");
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
    if (o.with_peers && o.isa_on[KERN_AVX2] && kern_cpu_supports(KERN_AVX512)) {
        // OpenBLAS and oneDNN pick their kernels by CPU, not by our --isa: against avx2 they
        // would run AVX-512 unless held back, and the ratios would compare vector widths.
        const char *cb = getenv("OPENBLAS_CORETYPE"), *dn = getenv("DNNL_MAX_CPU_ISA");
        int held = cb && !strcasecmp(cb, "Haswell") && dn && !strcasecmp(dn, "AVX2");
        printf("peers: this CPU has AVX-512; %s\n",
               held ? "OpenBLAS and oneDNN held to AVX2 (OPENBLAS_CORETYPE=Haswell "
                      "DNNL_MAX_CPU_ISA=AVX2), as ours runs avx2"
                    : "OpenBLAS and oneDNN use it beside our avx2 unless run with "
                      "OPENBLAS_CORETYPE=Haswell DNNL_MAX_CPU_ISA=AVX2");
    }
    if (!even && !uneven) {
        fprintf(stderr, "moed-bench gemm: --uneven-only and --ffn-only leave nothing to run\n");
        return 2;
    }
    const gbench_shape_t* sets[2] = {shapes_small, shapes_big};
    int n_sets = quick && only_set < 0 ? 1 : 2, rc = 0;
    for (int c = 0; c < n_counts; c++)
        for (int si = 0; si < n_sets; si++)
            for (int k = 0; k < SHAPES_PER_SET; k++) {
                const gbench_shape_t* s = &sets[si][k];
                if ((only_set >= 0 && si != only_set) || (only_shape >= 0 && k != only_shape))
                    continue;
                if (!(s->sizes ? uneven : even)) continue;
                if (quick && k > FIRST_UNEVEN) continue; // --quick: one uneven shape
                if (o.products && bench_shape(s, thread_counts[c], &o)) rc = 1;
                for (int isa = 0; isa < KERN_N_ISA; isa++)
                    if (o.isa_on[isa] && o.ffn && !s->sizes)
                        gbench_ffn(s, thread_counts[c], kern_table_for((kern_isa_t)isa), &o);
            }
    gbench_dnnl_shutdown();
    kern_shutdown();
    return rc;
}
