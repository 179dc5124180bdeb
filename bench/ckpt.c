// moed-bench ckpt: checkpoint write and read bandwidth (ckpt_save with its fsync, rename
// and LATEST; ckpt_load into a second, separate training state) for a model of about
// --gib GiB of checkpoint data (weights and both Adam moments), as a fraction of the same
// disk's sequential bandwidth measured in the same run with dd on a file of the same size
// in the same directory. Run it at P = 1 (`moed-bench ckpt`) and P = 2
// (`mpiexec -n 2 moed-bench ckpt`). Before every read, the file is dropped from the page
// cache: /proc/sys/vm/drop_caches when it is writable, otherwise posix_fadvise(DONTNEED)
// on the fsynced file (the output says which, and how much of the file stayed resident,
// measured with mincore). The target is >= 0.6 of dd for both directions; it is printed,
// not asserted.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/bench.h"
#include "config/config.h"
#include "config/status.h"
#include "daemon/ckpt.h"
#include "daemon/train.h"

enum { MAX_REPS = 32, DD_BS = 4 << 20 };

// The model: d, E, L fixed, f chosen for the requested size. Per layer the checkpoint holds
// 3 expert tensors of E*d*f floats, 3 times (weights, m, v), plus small replicated tensors.
enum { CK_D = 1024, CK_E = 8, CK_K = 2, CK_L = 2, CK_T = 64, CK_HIST = 16 };

static int ck_d_ff(double gib) {
    double per_f = (double)CK_L * 9 * CK_E * CK_D * sizeof(float); // bytes per unit of f
    long f = (long)ceil(gib * 1073741824.0 / per_f);
    f = (f + 127) / 128 * 128;
    return f < 128 ? 128 : f > (1 << 20) ? 1 << 20 : (int)f;
}

// ---------------------------------------------------------------------------------------
// page cache (rank 0 only)

static int drop_sys_caches = 1; // --fadvise-only clears it

// Drops `path` from the page cache; returns the method used ("drop_caches" or "fadvise").
// The file is fsynced first so that every page is clean and can be dropped.
static const char* drop_cache(const char* path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return "none (cannot open)";
    fsync(fd);
    const char* how = "fadvise";
    if (drop_sys_caches) {
        int p = open("/proc/sys/vm/drop_caches", O_WRONLY);
        if (p >= 0 && write(p, "1\n", 2) == 2) how = "drop_caches";
        if (p >= 0) close(p);
    }
    // Always also: harmless after drop_caches, the whole job otherwise.
    if (posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) != 0 && !strcmp(how, "fadvise"))
        how = "none (fadvise failed)";
    close(fd);
    return how;
}

// Fraction of the file's pages in the page cache (mincore), or -1 when unknown.
static double resident_fraction(const char* path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    struct stat st;
    double frac = -1;
    if (fstat(fd, &st) == 0 && st.st_size > 0) {
        void* p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
        long page = sysconf(_SC_PAGESIZE), n = (st.st_size + page - 1) / page;
        unsigned char* vec = malloc((size_t)n);
        if (p != MAP_FAILED && vec && mincore(p, (size_t)st.st_size, vec) == 0) {
            long in = 0;
            for (long i = 0; i < n; i++) in += vec[i] & 1;
            frac = (double)in / (double)n;
        }
        free(vec);
        if (p != MAP_FAILED) munmap(p, (size_t)st.st_size);
    }
    close(fd);
    return frac;
}

// ---------------------------------------------------------------------------------------
// dd (rank 0 only)

// Runs dd with `args` (if=, of=, bs=, ...) and returns its own elapsed seconds (parsed from
// "copied, X s"), or the wall time around it when the output cannot be parsed; -1 when
// dd fails.
static double run_dd(char* const args[]) {
    int pfd[2];
    if (pipe(pfd) != 0) return -1;
    double t0 = bench_now();
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        dup2(pfd[1], 2);
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) dup2(null, 1);
        close(pfd[0]), close(pfd[1]);
        setenv("LC_ALL", "C", 1);
        execvp("dd", args);
        _exit(127);
    }
    close(pfd[1]);
    char out[4096];
    size_t len = 0;
    ssize_t r;
    while ((r = read(pfd[0], out + len, sizeof out - 1 - len)) > 0 || (r < 0 && errno == EINTR))
        if (r > 0) len += (size_t)r;
    out[len] = '\0';
    close(pfd[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    double wall = bench_now() - t0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "moed-bench ckpt: dd failed: %s\n", out);
        return -1;
    }
    const char* c = strstr(out, "copied, ");
    double s;
    if (c && sscanf(c, "copied, %lf s", &s) == 1 && s > 0) return s;
    return wall;
}

static double dd_write(const char* file, long count) {
    char of[1210], cnt[32];
    snprintf(of, sizeof of, "of=%s", file);
    snprintf(cnt, sizeof cnt, "count=%ld", count);
    char* args[] = {"dd", "if=/dev/zero", of, "bs=4M", cnt, "conv=fsync", NULL};
    return run_dd(args);
}

static double dd_read(const char* file) {
    char in[1210];
    snprintf(in, sizeof in, "if=%s", file);
    char* args[] = {"dd", in, "of=/dev/null", "bs=4M", NULL};
    return run_dd(args);
}

// A barrier that sleeps instead of spinning (MPICH's blocking calls poll), so that ranks
// waiting for rank 0's dd leave the CPU to it.
static void idle_barrier(void) {
    MPI_Request req;
    int done = 0;
    MPI_Ibarrier(MPI_COMM_WORLD, &req);
    while (MPI_Test(&req, &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && !done) usleep(1000);
}

// ---------------------------------------------------------------------------------------
// training states

static int make_config(cfg_t* c, double gib, int nranks) {
    char err[CFG_ERRLEN], set[128];
    cfg_defaults(c);
    const char* keys[] = {"model.d_model",  "model.d_ff",     "model.n_experts",
                          "model.top_k",    "model.n_layers", "train.global_batch_tokens",
                          "compute.threads"};
    int vals[] = {CK_D, ck_d_ff(gib), CK_E, CK_K, CK_L, CK_T, 1};
    for (int i = 0; i < 7; i++) {
        snprintf(set, sizeof set, "%s=%d", keys[i], vals[i]);
        if (cfg_set(c, set, err, sizeof err)) {
            fprintf(stderr, "moed-bench ckpt: %s\n", err);
            return MOED_ERR_CONFIG;
        }
    }
    // I/O only: no pre-packed copies, which would add a repack to every load (and need kernels)
    if (cfg_set(c, "compute.prepack=off", err, sizeof err) ||
        cfg_validate(c, nranks, err, sizeof err)) {
        fprintf(stderr, "moed-bench ckpt: %s\n", err);
        return MOED_ERR_CONFIG;
    }
    return MOED_OK;
}

static int make_state(train_t* tr, history_t* h, arena_t* a, const cfg_t* c, int rank, int nranks) {
    arena_begin_count(a);
    train_layout(tr, c, rank, nranks, a);
    history_layout(h, CK_HIST, c->model.n_layers, c->model.n_experts, a);
    int bad = arena_reserve(a) != 0, any;
    if (bad) fprintf(stderr, "moed-bench ckpt: out of memory (%.0f MiB)\n", a->used / 1048576.0);
    MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_LOR, MPI_COMM_WORLD); // train_setup is collective
    if (any) return MOED_ERR_OTHER;
    train_layout(tr, c, rank, nranks, a);
    history_layout(h, CK_HIST, c->model.n_layers, c->model.n_experts, a);
    return train_setup(tr, MPI_COMM_WORLD);
}

// Non-zero moments and a short history, so that the load can be checked element by element.
static void fill_state(train_t* tr, history_t* h) {
    model_t* m = &tr->model;
    for (long i = 0; i < m->n_local; i++) {
        m->m[i] = 0.01f * m->w[i];
        m->v[i] = m->w[i] * m->w[i] + 1e-8f;
    }
    for (long i = 0; i < (long)m->L * m->E; i++) m->bias[i] = 1e-3f * (float)(i % 7);
    tr->step = CK_HIST / 2;
    h->n = tr->step;
    for (long s = 0; s < h->n; s++) {
        h->loss[s] = 1.0 / (double)(s + 1);
        h->aux[s] = 0.01 * (double)s;
        for (long j = 0; j < (long)h->L * h->E; j++) h->load[s * h->L * h->E + j] = s + j;
    }
}

// Whether the loaded state equals the saved one on every rank (collective).
static int same_state(const train_t* a, const train_t* b) {
    const model_t *x = &a->model, *y = &b->model;
    size_t n = sizeof(float) * (size_t)x->n_local;
    int bad = memcmp(x->w, y->w, n) || memcmp(x->m, y->m, n) || memcmp(x->v, y->v, n) ||
              memcmp(x->bias, y->bias, sizeof(float) * (size_t)x->L * x->E) || a->step != b->step;
    int any;
    MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_LOR, MPI_COMM_WORLD);
    return !any;
}

// ---------------------------------------------------------------------------------------

// Deletes `path` and forces the file system to finish with it (ext4 mounted with
// `discard` trims the freed blocks at the next journal commit, which would otherwise land
// in the next timed fsync).
static void remove_settled(const char* dir, const char* path) {
    unlink(path);
    int fd = open(dir, O_RDONLY);
    if (fd >= 0) syncfs(fd), close(fd);
}

// One timed save and one timed load into the other state (collective). The file stays
// for the byte count; the next round deletes it first.
static int ckpt_round(train_t* src, train_t* dst, history_t* hs, history_t* hd, const char* dir,
                      const char* ini, char* path, size_t pathlen, double* t_save, double* t_load,
                      double* bytes, double* resident, const char** how) {
    char err[1024];
    if (src->rank == 0) {
        char old[1200];
        snprintf(old, sizeof old, "%s/step_%08ld.h5", dir, src->step);
        remove_settled(dir, old); // a fresh file every time, no rename over an old one
    }
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = bench_now();
    int rc = ckpt_save(dir, 1, src, hs, ini, path, pathlen, err, sizeof err);
    MPI_Barrier(MPI_COMM_WORLD);
    *t_save = bench_now() - t0;
    if (rc) {
        if (src->rank == 0) fprintf(stderr, "moed-bench ckpt: save failed: %s\n", err);
        return rc;
    }
    if (src->rank == 0) {
        struct stat st;
        if (stat(path, &st) == 0) *bytes = (double)st.st_size;
        *how = drop_cache(path);
        double f = resident_fraction(path);
        if (f > *resident) *resident = f;
    }
    MPI_Barrier(MPI_COMM_WORLD);
    dst->step = 0;
    t0 = bench_now();
    rc = ckpt_load(path, dst, hd, 0, err, sizeof err);
    MPI_Barrier(MPI_COMM_WORLD);
    *t_load = bench_now() - t0;
    if (rc && src->rank == 0) fprintf(stderr, "moed-bench ckpt: load failed: %s\n", err);
    return rc;
}

// The disk reference (rank 0): dd writes a file of the checkpoint's size (whole 4 MiB
// blocks; the times are scaled to the checkpoint's bytes) and reads it back uncached.
static int dd_round(const char* dir, double bytes, double* t_write, double* t_read,
                    double* resident) {
    char file[1200];
    snprintf(file, sizeof file, "%s/dd.bin", dir);
    long count = (long)((bytes + DD_BS - 1) / DD_BS);
    remove_settled(dir, file);
    *t_write = dd_write(file, count);
    drop_cache(file);
    double f = resident_fraction(file);
    if (f > *resident) *resident = f;
    *t_read = dd_read(file);
    if (*t_write < 0 || *t_read < 0) return MOED_ERR_OTHER;
    double scale = bytes / ((double)count * DD_BS);
    *t_write *= scale, *t_read *= scale;
    return MOED_OK;
}

static void usage(void) {
    printf("usage: moed-bench ckpt [--gib X] [--reps N] [--dir DIR] [--fadvise-only]\n"
           "  --gib X         checkpoint size in GiB (default 1.1; d=%d E=%d L=%d, f scaled)\n"
           "  --reps N        repetitions, medians reported (default 3)\n"
           "  --dir DIR       directory for the checkpoint and the dd file (default: a new\n"
           "                  temporary directory under $TMPDIR or /tmp, removed at the end)\n"
           "  --fadvise-only  drop files from the page cache with posix_fadvise only, never\n"
           "                  through /proc/sys/vm/drop_caches\n",
           CK_D, CK_E, CK_L);
}

static double mib_s(double bytes, double s) { return s > 0 ? bytes / 1048576.0 / s : 0; }

int bench_ckpt(int argc, char** argv) {
    double gib = 1.1;
    int reps = 3;
    const char* dir_opt = NULL;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--gib") && i + 1 < argc) {
            if (bench_double_arg("ckpt", "--gib", argv[++i], 1e-3, 1024, &gib)) return 2;
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            if (bench_int_arg("ckpt", "--reps", argv[++i], 1, MAX_REPS, &reps)) return 2;
        } else if (!strcmp(argv[i], "--dir") && i + 1 < argc) {
            dir_opt = argv[++i];
        } else if (!strcmp(argv[i], "--fadvise-only")) {
            drop_sys_caches = 0;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage();
            return 0;
        } else {
            return bench_unknown("ckpt", argv[i]);
        }
    }

    int provided, rank, nranks;
    MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);

    // The directory: rank 0 decides, every rank uses the same name.
    static char dir[1024];
    int made_dir = 0, rc = MOED_OK;
    if (rank == 0) {
        if (dir_opt) {
            snprintf(dir, sizeof dir, "%s", dir_opt);
        } else {
            const char* t = getenv("TMPDIR");
            snprintf(dir, sizeof dir, "%s/moed-bench-ckpt.XXXXXX", t && *t ? t : "/tmp");
            if (!mkdtemp(dir)) {
                fprintf(stderr, "moed-bench ckpt: cannot create %s: %s\n", dir, strerror(errno));
                rc = MOED_ERR_OTHER;
            }
            made_dir = 1;
        }
    }
    MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD);
    MPI_Bcast(dir, sizeof dir, MPI_CHAR, 0, MPI_COMM_WORLD);
    if (rc) {
        MPI_Finalize();
        return rc;
    }

    static cfg_t c;
    static train_t src, dst;
    static history_t hs, hd;
    static char ini[CFG_INI_MAX];
    arena_t as, ad;
    rc = make_config(&c, gib, nranks);
    if (rc == MOED_OK) rc = make_state(&src, &hs, &as, &c, rank, nranks);
    if (rc == MOED_OK) rc = make_state(&dst, &hd, &ad, &c, rank, nranks);
    if (rc == MOED_OK) rc = cfg_write_ini(&c, ini, sizeof ini);
    if (rc) {
        if (rank == 0 && made_dir) rmdir(dir);
        MPI_Finalize();
        return rc;
    }
    fill_state(&src, &hs);

    char path[1200], ddfile[1200];
    snprintf(ddfile, sizeof ddfile, "%s/dd.bin", dir);
    double t_save[MAX_REPS], t_load[MAX_REPS], t_ddw[MAX_REPS], t_ddr[MAX_REPS];
    double bytes = 0, resident = 0; // file size; worst resident fraction after a drop
    const char* how = "";
    if (rank == 0)
        printf("moed-bench ckpt: P=%d, d=%d f=%d E=%d k=%d L=%d, dir %s, %d rep%s\n", nranks, CK_D,
               c.model.d_ff, CK_E, CK_K, CK_L, dir, reps, reps > 1 ? "s" : "");
    fflush(stdout);

    for (int r = 0; r < reps && rc == MOED_OK; r++) {
        // The order alternates (rep 0 needs the checkpoint's size first), so that neither
        // side always runs right after the other's writes on a disk whose speed varies.
        for (int half = 0; half < 2 && rc == MOED_OK; half++) {
            if ((half == 0) == (r % 2 == 0))
                rc = ckpt_round(&src, &dst, &hs, &hd, dir, ini, path, sizeof path, &t_save[r],
                                &t_load[r], &bytes, &resident, &how);
            else {
                if (rank == 0) rc = dd_round(dir, bytes, &t_ddw[r], &t_ddr[r], &resident);
                idle_barrier();
            }
            MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD);
        }
        if (rank == 0 && rc == MOED_OK) {
            printf("  rep %d: save %.2f s, load %.2f s, dd write %.2f s, dd read %.2f s%s\n", r,
                   t_save[r], t_load[r], t_ddw[r], t_ddr[r], r % 2 ? " (dd first)" : "");
            fflush(stdout);
        }
    }
    int ok = rc == MOED_OK && same_state(&src, &dst);
    if (rc == MOED_OK && !ok && rank == 0)
        fprintf(stderr, "moed-bench ckpt: the loaded state differs from the saved one\n");

    if (rank == 0 && rc == MOED_OK) {
        double ts = bench_median(t_save, reps), tl = bench_median(t_load, reps);
        double tw = bench_median(t_ddw, reps), tr = bench_median(t_ddr, reps);
        double bs = mib_s(bytes, ts), bl = mib_s(bytes, tl), bw = mib_s(bytes, tw),
               br = mib_s(bytes, tr);
        printf("cache drop before reads: %s (rank 0; at most %.1f%% of a file still resident)\n",
               how, 100 * resident);
        printf("load check: %s\n", ok ? "loaded state identical to the saved one" : "MISMATCH");
        printf("%2s %9s  %7s %10s %7s  %7s %10s %7s  %12s %12s\n", "P", "file MiB", "save s",
               "save MiB/s", "/dd wr", "load s", "load MiB/s", "/dd rd", "dd wr MiB/s",
               "dd rd MiB/s");
        printf("%2d %9.0f  %7.2f %10.0f %7.2f  %7.2f %10.0f %7.2f  %12.0f %12.0f\n", nranks,
               bytes / 1048576.0, ts, bs, bw > 0 ? bs / bw : 0, tl, bl, br > 0 ? bl / br : 0, bw,
               br);
        printf("(medians of %d; target >= 0.60 of dd for both save and load)\n", reps);
        // The disk's speed drifts between reps; a rep's ckpt and dd run back to back, so the
        // median of per-rep ratios is steadier than the ratio of medians.
        double rs[MAX_REPS], rl[MAX_REPS];
        for (int r = 0; r < reps; r++) rs[r] = t_ddw[r] / t_save[r], rl[r] = t_ddr[r] / t_load[r];
        printf("paired (median of per-rep ratios): save %.2f of dd write, load %.2f of dd read\n",
               bench_median(rs, reps), bench_median(rl, reps));
    }

    // Clean up: the checkpoint, LATEST, the dd file, and the directory when we made it.
    if (rank == 0) {
        char f[1200];
        snprintf(f, sizeof f, "%s/step_%08ld.h5", dir, src.step);
        unlink(f);
        snprintf(f, sizeof f, "%s/step_%08ld.h5.tmp", dir, src.step);
        unlink(f);
        snprintf(f, sizeof f, "%s/LATEST", dir);
        unlink(f);
        unlink(ddfile);
        if (made_dir) rmdir(dir);
    }
    train_free(&dst);
    train_free(&src);
    arena_free(&ad);
    arena_free(&as);
    MPI_Finalize();
    return rc ? rc : ok ? 0 : 1;
}
