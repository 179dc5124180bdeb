// moed: command line, start-up, the step loop, and the one place errors are reported.
#include <math.h>
#include <mpi.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compute/kernels/kernels.h"
#include "config/config.h"
#include "config/status.h"
#include "daemon/coord.h"
#include "daemon/data.h"
#include "daemon/metrics.h"
#include "daemon/train.h"

#define ERRLEN 1024

static const char* usage =
    "usage: moed run CONFIG [--set section.key=value]...   train (see README: Configuration)\n"
    "       moed config CONFIG [--set section.key=value]... print the resolved configuration\n"
    "       moed config --markdown                          print the table of every key\n"
    "       moed --version | --help\n"
    "exit codes: 0 done, 1 other error, 2 usage/config, 3 data/checkpoint, 4 NaN/Inf\n";

// Every rank passes its own status; all get the worst one. The lowest failing rank prints
// its message (rank 0 when it failed too), so an error appears once, as one line.
static int agree_and_report(int status, const char* msg, int rank, MPI_Comm comm) {
    int worst = status, first = status ? rank : 1 << 30;
    MPI_Allreduce(MPI_IN_PLACE, &worst, 1, MPI_INT, MPI_MAX, comm);
    MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPI_INT, MPI_MIN, comm);
    if (worst && rank == first) {
        if (rank == 0)
            fprintf(stderr, "moed: error: %s\n", msg);
        else
            fprintf(stderr, "moed: error: rank %d: %s\n", rank, msg);
        fflush(stderr);
    }
    return worst;
}

// Parses CONFIG and its --set overrides (argv[i..]). MOED_ISA overrides compute.isa.
static int load_config(cfg_t* c, int argc, char** argv, int i, int nranks, char* err) {
    cfg_defaults(c);
    if (i >= argc || argv[i][0] == '-') {
        snprintf(err, ERRLEN, "missing CONFIG file (moed --help)");
        return MOED_ERR_CONFIG;
    }
    const char* file = argv[i++];
    int rc = cfg_load_file(c, file, err, ERRLEN);
    for (; rc == 0 && i < argc; i++) {
        if (strcmp(argv[i], "--set") == 0 && i + 1 < argc)
            rc = cfg_set(c, argv[++i], err, ERRLEN);
        else if (strncmp(argv[i], "--set=", 6) == 0)
            rc = cfg_set(c, argv[i] + 6, err, ERRLEN);
        else {
            snprintf(err, ERRLEN, "unexpected argument '%s' (moed --help)", argv[i]);
            rc = MOED_ERR_CONFIG;
        }
    }
    const char* isa = getenv("MOED_ISA");
    if (rc == 0 && isa && *isa) {
        char set[64];
        snprintf(set, sizeof set, "compute.isa=%.40s", isa);
        rc = cfg_set(c, set, err, ERRLEN);
        if (rc) {
            char tmp[ERRLEN];
            snprintf(tmp, sizeof tmp, "MOED_ISA: %s", err);
            memcpy(err, tmp, ERRLEN);
        }
    }
    if (rc == 0 && (rc = cfg_validate(c, nranks, err, ERRLEN))) {
        char tmp[ERRLEN];
        snprintf(tmp, sizeof tmp, "%s: %s", file, err);
        memcpy(err, tmp, ERRLEN);
    }
    return rc;
}

static int select_isa(const cfg_t* c, char* err) {
    static const int map[] = {[CFG_ISA_AUTO] = -1,
                              [CFG_ISA_REF] = KERN_REF,
                              [CFG_ISA_AVX2] = KERN_AVX2,
                              [CFG_ISA_AVX512] = KERN_AVX512};
    static const char* names[] = {"auto", "ref", "avx2", "avx512"};
    if (kern_select(map[c->compute.isa]) != 0) {
        snprintf(err, ERRLEN,
                 "compute.isa = %s: this CPU or this build cannot run it (use auto, or ref)",
                 names[c->compute.isa]);
        return MOED_ERR_CONFIG;
    }
    return MOED_OK;
}

typedef struct {
    arena_t arena;
    train_t tr;
    data_t data;
    float* x; // [Tl, d]
    float* y; // [Tl, d]
} run_state_t;

static void run_layout(run_state_t* s, const cfg_t* c, int rank, int nranks) {
    train_layout(&s->tr, c, rank, nranks, &s->arena);
    data_layout(&s->data, c, s->tr.Tl, &s->arena);
    long n = (long)s->tr.Tl * c->model.d_model;
    s->x = arena_alloc(&s->arena, sizeof(float) * n);
    s->y = arena_alloc(&s->arena, sizeof(float) * n);
}

static const char* signame(int sig) { return sig == SIGINT ? "SIGINT" : "SIGTERM"; }

// The step loop. Every rank returns the same status: the control record and the reduced
// loss are identical everywhere, so no extra agreement is needed.
static int run_loop(run_state_t* s, const cfg_t* c, metrics_t* mt, int rank, MPI_Comm comm) {
    train_t* tr = &s->tr;
    control_t ctl = {0};
    step_stats_t st = {0};
    double first_loss = NAN, t_run = MPI_Wtime();
    for (long step = tr->step; step < c->train.steps; step++) {
        coord_control(&ctl, rank, step, c->train.steps, c->train.warmup_steps, c->train.lr,
                      c->train.lr_min, comm);
        if (ctl.stop) {
            if (rank == 0)
                printf("%smoed: %s received: stopped cleanly after %ld steps\n",
                       mt->pending_newline ? "\n" : "", signame(ctl.stop), step);
            mt->pending_newline = 0;
            return MOED_OK;
        }
        double t0 = MPI_Wtime();
        data_batch(&s->data, step, tr->T, tr->t0, s->x, s->y);
        int rc = train_step(tr, s->x, s->y, ctl.lr, &st);
        if (rc == MOED_ERR_NUMERIC) {
            if (rank == 0)
                fprintf(stderr,
                        "moed: error: numerical failure at step %ld: loss = %g, gradient norm "
                        "= %g (try a lower train.lr or train.clip > 0)\n",
                        step, st.loss, st.grad_norm);
            return rc;
        }
        if (isnan(first_loss)) first_loss = st.loss;
        if (rank == 0) metrics_step(mt, tr, step + 1, &st, MPI_Wtime() - t0);
    }
    uint64_t digest = model_digest(&tr->model, tr->model.w);
    if (rank == 0) {
        printf("%smoed: done: %ld steps in %.1f s; loss %.6e -> %.6e; weights digest "
               "%016llx\n",
               mt->pending_newline ? "\n" : "", (long)c->train.steps, MPI_Wtime() - t_run,
               first_loss, st.loss, (unsigned long long)digest);
        mt->pending_newline = 0;
    }
    return MOED_OK;
}

static int cmd_run(int argc, char** argv, MPI_Comm comm) {
    int rank, nranks;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &nranks);
    char err[ERRLEN] = "";
    cfg_t c;
    int rc = load_config(&c, argc, argv, 2, nranks, err);
    if (rc == 0) rc = select_isa(&c, err);
    if ((rc = agree_and_report(rc, err, rank, comm))) return rc;

    omp_set_num_threads(c.compute.threads);
    static run_state_t s;
    arena_begin_count(&s.arena);
    run_layout(&s, &c, rank, nranks);
    rc = arena_reserve(&s.arena) || kern_init(c.compute.threads) ? MOED_ERR_OTHER : MOED_OK;
    if (rc) snprintf(err, ERRLEN, "out of memory reserving %.1f MiB", s.arena.used / 1048576.0);
    if ((rc = agree_and_report(rc, err, rank, comm))) return rc;
    run_layout(&s, &c, rank, nranks);
    rc = train_setup(&s.tr, comm);
    if (rc) snprintf(err, ERRLEN, "communication set-up failed");
    data_init(&s.data);

    metrics_t mt = {0};
    if (rc == 0 && rank == 0 &&
        metrics_open(&mt, c.run.dir, c.train.steps, c.log.every, kern->name, err, ERRLEN))
        rc = MOED_ERR_OTHER;
    if ((rc = agree_and_report(rc, err, rank, comm))) return rc;
    arena_freeze(&s.arena);
    coord_install_signals();

    train_t* tr = &s.tr;
    if (rank == 0) {
        printf("moed %s: %d rank%s x %d thread%s, isa %s; d=%d f=%d E=%d k=%d L=%d, "
               "%d tokens/step, %.2f MiB/rank\n",
               MOED_VERSION, nranks, nranks > 1 ? "s" : "", c.compute.threads,
               c.compute.threads > 1 ? "s" : "", kern->name, c.model.d_model, c.model.d_ff,
               c.model.n_experts, c.model.top_k, c.model.n_layers, tr->T, s.arena.cap / 1048576.0);
        fflush(stdout);
    }
    rc = run_loop(&s, &c, &mt, rank, comm);
    if (rank == 0) metrics_close(&mt);
    train_free(tr);
    return rc;
}

static int cmd_config(int argc, char** argv) {
    if (argc >= 3 && strcmp(argv[2], "--markdown") == 0) {
        cfg_print_markdown(stdout);
        return MOED_OK;
    }
    cfg_t c;
    char err[ERRLEN] = "";
    int rc = load_config(&c, argc, argv, 2, 1, err);
    if (rc) {
        fprintf(stderr, "moed: error: %s\n", err);
        return rc;
    }
    static char ini[1 << 16];
    cfg_write_ini(&c, ini, sizeof ini);
    fputs(ini, stdout);
    return MOED_OK;
}

int main(int argc, char** argv) {
    if (argc < 2) {
        fputs(usage, stderr);
        return MOED_ERR_CONFIG;
    }
    const char* cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        fputs(usage, stdout);
        return MOED_OK;
    }
    if (!strcmp(cmd, "--version")) {
        printf("moed %s\n", MOED_VERSION);
        return MOED_OK;
    }
    if (!strcmp(cmd, "config")) return cmd_config(argc, argv);
    if (strcmp(cmd, "run") != 0) {
        fprintf(stderr, "moed: error: unknown command '%s' (moed --help)\n", cmd);
        return MOED_ERR_CONFIG;
    }
    MPI_Init(&argc, &argv);
    int rc = cmd_run(argc, argv, MPI_COMM_WORLD);
    kern_shutdown();
    MPI_Finalize();
    return rc;
}
