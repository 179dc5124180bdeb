// `moed run CONFIG`: start-up (configuration, optional resume, one arena, data), the step
// loop driven by rank 0's control record, checkpoints every checkpoint.every steps, on stop
// signals and at the end, and the final report.
#include <math.h>
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "compute/kernels/kernels.h"
#include "compute/omp_compat.h"
#include "config/status.h"
#include "daemon/ckpt.h"
#include "daemon/cli.h"
#include "daemon/commands.h"
#include "daemon/coord.h"
#include "daemon/data.h"
#include "daemon/layer_alt.h"
#include "daemon/metrics.h"
#include "daemon/train.h"

#define ERRLEN CLI_ERRLEN

typedef struct {
    cfg_t cfg;
    int rank, nranks;
    MPI_Comm comm;
    arena_t arena;
    train_t tr;
    data_t data;
    history_t hist;
    metrics_t mt;
    float* x; // [Tl, d]
    float* y; // [Tl, d]
    char ckpt_dir[1100];
    char config_text[CFG_INI_MAX];
    char path[1200]; // the last checkpoint written or loaded
} run_t;

static void run_layout(run_t* s, long hist_cap) {
    const cfg_t* c = &s->cfg;
    train_layout(&s->tr, c, s->rank, s->nranks, &s->arena);
    data_layout(&s->data, c, s->tr.Tl, &s->arena);
    history_layout(&s->hist, hist_cap, c->model.n_layers, c->model.n_experts, &s->arena);
    long n = (long)s->tr.Tl * c->model.d_model;
    s->x = arena_alloc(&s->arena, sizeof(float) * n);
    s->y = arena_alloc(&s->arena, sizeof(float) * n);
}

static const char* signame(int sig) {
    return sig == SIGINT ? "SIGINT" : sig == SIGUSR1 ? "SIGUSR1" : "SIGTERM";
}

// Ends a redrawn progress line before another line is printed.
static void newline_if_needed(run_t* s) {
    if (s->rank == 0 && s->mt.pending_newline) putchar('\n');
    s->mt.pending_newline = 0;
}

static int save(run_t* s, char* err) {
    int rc = ckpt_save(s->ckpt_dir, s->cfg.checkpoint.keep, &s->tr, &s->hist, s->config_text,
                       s->path, sizeof s->path, err, ERRLEN);
    return cli_agree(rc, err, s->rank, s->comm);
}

// The step loop. Every rank returns the same status: the control record and the reduced
// loss are identical everywhere.
static int run_loop(run_t* s) {
    const cfg_t* c = &s->cfg;
    train_t* tr = &s->tr;
    char err[ERRLEN] = "";
    control_t ctl = {0};
    step_stats_t st = {0};
    double first_loss = NAN, t_run = MPI_Wtime();
    long first_step = tr->step;
    if (c->comm.dispatcher == CFG_DISPATCH_AUTO && tr->step < c->train.steps) {
        int rc = data_batch(&s->data, tr->step, tr->T, tr->t0, s->x, s->y, err, ERRLEN);
        if (rc) return cli_agree(rc, err, s->rank, s->comm); // failed on every rank
        // a non-finite loss here shows again, and is reported, in the first step
        (void)dispatch_autotune(tr, s->x, s->y, s->rank == 0 ? stdout : NULL);
    }
    for (long step = tr->step; step < c->train.steps; step++) {
        coord_control(&ctl, s->rank, step, c->train.steps, c->train.warmup_steps, c->train.lr,
                      c->train.lr_min, s->comm);
        if (ctl.stop) {
            newline_if_needed(s);
            int rc = save(s, err);
            if (rc == 0 && s->rank == 0)
                printf("moed: %s received: stopped cleanly after %ld steps; checkpoint %s\n",
                       signame(ctl.stop), step, s->path);
            return rc;
        }
        double t0 = MPI_Wtime();
        int rc = data_batch(&s->data, step, tr->T, tr->t0, s->x, s->y, err, ERRLEN);
        if (rc) { // on every rank
            newline_if_needed(s);
            // The weights are those of the last whole step: keep what this run trained, so
            // the run resumes at this step once the data is fixed.
            char save_err[ERRLEN];
            if (tr->step > first_step && save(s, save_err) == 0 && s->rank == 0)
                printf("moed: stopped at the batch of step %ld; checkpoint %s\n", step, s->path);
            fflush(stdout);
            return cli_agree(rc, err, s->rank, s->comm);
        }
        rc = train_step(tr, s->x, s->y, ctl.lr, &st);
        if (rc == MOED_ERR_NUMERIC) {
            newline_if_needed(s);
            if (s->rank == 0)
                fprintf(stderr,
                        "moed: error: numerical failure at step %ld: loss = %g, gradient norm "
                        "= %g (try a lower train.lr or train.clip > 0)\n",
                        step, st.loss, st.grad_norm);
            return rc;
        }
        history_record(&s->hist, tr, &st);
        if (isnan(first_loss)) first_loss = st.loss;
        if (s->rank == 0) metrics_step(&s->mt, tr, tr->step, &st, MPI_Wtime() - t0);
        if (c->checkpoint.every > 0 && tr->step % c->checkpoint.every == 0 &&
            tr->step < c->train.steps) {
            if ((rc = save(s, err))) return rc;
        }
    }
    int rc = save(s, err);
    if (rc) return rc;
    uint64_t digest = model_digest(&tr->model, tr->model.w);
    newline_if_needed(s);
    if (s->rank == 0) {
        if (tr->step == first_step)
            printf("moed: done: nothing to train (step %ld of %ld); weights digest %016llx\n",
                   tr->step, (long)c->train.steps, (unsigned long long)digest);
        else
            printf("moed: done: %ld steps in %.1f s; loss %.6e -> %.6e; checkpoint %s; weights "
                   "digest %016llx\n",
                   tr->step - first_step, MPI_Wtime() - t_run, first_loss, st.loss, s->path,
                   (unsigned long long)digest);
    }
    return MOED_OK;
}

// Where checkpoints go: checkpoint.dir, inside run.dir unless absolute.
static void resolve_ckpt_dir(run_t* s) {
    const cfg_t* c = &s->cfg;
    if (c->checkpoint.dir[0] == '/')
        snprintf(s->ckpt_dir, sizeof s->ckpt_dir, "%s", c->checkpoint.dir);
    else
        snprintf(s->ckpt_dir, sizeof s->ckpt_dir, "%s/%s", c->run.dir, c->checkpoint.dir);
}

// Finds the checkpoint to resume from (before anything is allocated). *found = 0: fresh.
static int find_resume(run_t* s, int* found, long* hist_cap, char* err) {
    static ckpt_info_t info;
    char note[ERRLEN] = "";
    *found = 0;
    *hist_cap = s->cfg.train.steps;
    if (s->cfg.checkpoint.resume != CFG_RESUME_AUTO) return MOED_OK;
    int rc = ckpt_find_resume(s->ckpt_dir, &s->cfg, s->comm, found, s->path, sizeof s->path, note,
                              sizeof note, err, ERRLEN);
    if (rc == 0 && *found) rc = ckpt_probe(s->path, &s->cfg, s->comm, &info, err, ERRLEN);
    if (rc == 0 && *found && info.n_history > *hist_cap) *hist_cap = info.n_history;
    if (rc == 0 && s->rank == 0 && note[0]) printf("moed: warning: %s\n", note);
    return rc;
}

int cmd_run(int argc, char** argv, MPI_Comm comm) {
    static run_t s;
    memset(&s, 0, sizeof s);
    s.comm = comm;
    MPI_Comm_rank(comm, &s.rank);
    MPI_Comm_size(comm, &s.nranks);
    char err[ERRLEN] = "";
    cfg_t* c = &s.cfg;
    int rc = cli_load_config(c, argc, argv, 2, s.nranks, err);
    if (rc == 0) rc = cli_check_launch(c, s.nranks, err);
    if (rc == 0) rc = cli_select_isa(c, err);
    if ((rc = cli_agree(rc, err, s.rank, comm))) return rc;
    cfg_write_ini(c, s.config_text, sizeof s.config_text);
    resolve_ckpt_dir(&s);

    int found;
    long hist_cap;
    if ((rc = cli_agree(find_resume(&s, &found, &hist_cap, err), err, s.rank, comm))) return rc;

    omp_set_num_threads(c->compute.threads);
    arena_begin_count(&s.arena);
    run_layout(&s, hist_cap);
    rc = arena_reserve(&s.arena) ? MOED_ERR_OTHER : MOED_OK;
    if (rc) snprintf(err, ERRLEN, "out of memory reserving %.1f MiB", s.arena.used / 1048576.0);
    if ((rc = cli_agree(rc, err, s.rank, comm))) return rc;
    run_layout(&s, hist_cap);
    if (train_setup(&s.tr, comm)) {
        snprintf(err, ERRLEN, "communication set-up failed");
        return cli_agree(MOED_ERR_OTHER, err, s.rank, comm);
    }
    rc = data_open(&s.data, c, s.rank, s.nranks, comm, err, ERRLEN);
    if (rc == 0 && found) rc = ckpt_load(s.path, &s.tr, &s.hist, 0, err, ERRLEN);
    if (rc == 0 && s.rank == 0 &&
        metrics_open(&s.mt, c->run.dir, c->train.steps, c->log.every, kern->name, err, ERRLEN))
        rc = MOED_ERR_OTHER;
    if (rc == 0 && s.rank == 0) rc = ckpt_prepare_dir(s.ckpt_dir, err, ERRLEN);
    if ((rc = cli_agree(rc, err, s.rank, comm)) == 0) {
        arena_freeze(&s.arena);
        coord_install_signals();
        if (s.rank == 0) {
            // The cap is named where it may have changed what auto picks.
            char cap[40] = "";
            if (kern_max_isa() < KERN_N_ISA - 1)
                snprintf(cap, sizeof cap, " (MOED_MAX_ISA=%s)", kern_isa_name(kern_max_isa()));
            printf("moed %s: %d rank%s x %d thread%s, isa %s%s; d=%d f=%d E=%d k=%d L=%d, %d "
                   "tokens/step, %.2f MiB/rank reserved\n",
                   MOED_VERSION, s.nranks, s.nranks > 1 ? "s" : "", c->compute.threads,
                   c->compute.threads > 1 ? "s" : "", kern->name, cap, c->model.d_model,
                   c->model.d_ff, c->model.n_experts, c->model.top_k, c->model.n_layers, s.tr.T,
                   s.arena.cap / 1048576.0);
            if (found) printf("moed: resumed from %s at step %ld\n", s.path, s.tr.step);
            fflush(stdout);
        }
        rc = run_loop(&s);
    }
    if (s.rank == 0) metrics_close(&s.mt);
    data_close(&s.data);
    train_free(&s.tr);
    return rc;
}
