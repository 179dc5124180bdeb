#include "daemon/metrics.h"

#include <errno.h>
#include <mpi.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

// mkdir -p for the run directory.
static int make_dirs(const char* path) {
    char buf[1024];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf) return -1;
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST) return -1;
        buf[i] = c;
    }
    return 0;
}

int metrics_open(metrics_t* mt, const char* run_dir, long steps, int every, const char* isa,
                 char* err, size_t errlen) {
    memset(mt, 0, sizeof *mt);
    mt->out = stdout;
    mt->tty = isatty(fileno(stdout));
    mt->every = every;
    mt->steps = steps;
    mt->isa = isa;
    mt->first_step = -1;
    char path[1100];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_dir);
    if (make_dirs(run_dir) != 0 || !(mt->jsonl = fopen(path, "a"))) {
        snprintf(err, errlen, "cannot open %s (run.dir = \"%s\"): %s", path, run_dir,
                 strerror(errno));
        return -1;
    }
    return 0;
}

static void fmt_eta(double s, char* buf, size_t n) {
    long t = (long)(s + 0.5);
    snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
}

// Router collapse is the most common MoE training failure: say so, once per expert and
// idle stretch, when an expert has received no tokens for log.dead_expert_steps steps.
static void warn_idle_experts(metrics_t* mt, const train_t* tr) {
    long n = tr->cfg.log.dead_expert_steps;
    if (n <= 0) return;
    const model_t* m = &tr->model;
    for (int l = 0; l < m->L; l++)
        for (int e = 0; e < m->E; e++) {
            if (tr->idle_steps[(long)l * m->E + e] != n) continue;
            if (mt->pending_newline) fputc('\n', mt->out);
            mt->pending_newline = 0;
            fprintf(mt->out,
                    "moed: warning: layer %d expert %d has received no tokens for %ld steps "
                    "(router collapse? see train.bias_update_rate, train.aux_loss_coef)\n",
                    l, e, n);
        }
    fflush(mt->out);
}

void metrics_step(metrics_t* mt, const train_t* tr, long step, const step_stats_t* st,
                  double wall) {
    double now = MPI_Wtime();
    if (mt->first_step < 0) {
        mt->first_step = step - 1;
        mt->t_start = now - wall;
        mt->first_loss = st->loss;
    }
    double tok_s = tr->T / wall, gflops = st->flops / wall / 1e9;
    // Shares of the step: exposed comm (the rank waited for it) and comm hidden behind
    // compute (in flight while the rank computed; counted inside the compute time).
    double comm = st->t_comm / (st->t_comm + st->t_compute);
    double hidden = st->t_comm_overlap / (st->t_comm + st->t_compute);

    FILE* j = mt->jsonl;
    fprintf(j,
            "{\"step\":%ld,\"loss\":%.17g,\"mse\":%.17g,\"aux_loss\":%.17g,\"lr\":%.9g,"
            "\"grad_norm\":%.9g,\"tokens_per_s\":%.6g,\"gflops\":%.6g,\"comm_frac\":%.4f,"
            "\"imbalance\":%.6g,\"step_s\":%.6g,\"compute_s\":%.6g,\"comm_exposed_s\":%.6g,"
            "\"comm_overlap_s\":%.6g,\"isa\":\"%s\",\"expert_load\":[",
            step, st->loss, st->mse, st->aux, st->lr, st->grad_norm, tok_s, gflops, comm,
            st->imbalance, wall, st->t_compute, st->t_comm, st->t_comm_overlap, mt->isa);
    for (int l = 0; l < tr->model.L; l++) {
        fputs(l ? ",[" : "[", j);
        for (int e = 0; e < tr->model.E; e++)
            fprintf(j, e ? ",%lld" : "%lld", (long long)tr->acts[l].load[e]);
        fputc(']', j);
    }
    fputs("],\"dropped\":[", j);
    for (int l = 0; l < tr->model.L; l++)
        fprintf(j, l ? ",%lld" : "%lld", (long long)tr->acts[l].dropped);
    fputs("]}\n", j);
    fflush(j);
    warn_idle_experts(mt, tr);

    if (step % mt->every != 0 && step != mt->steps) return;
    double done = step - mt->first_step, elapsed = now - mt->t_start;
    char eta[32];
    fmt_eta(elapsed / done * (mt->steps - step), eta, sizeof eta);
    char drop[32] = "";
    if (tr->cap > 0)
        snprintf(drop, sizeof drop, "  drop %.1f%%",
                 100.0 * (double)st->dropped / ((double)tr->T * tr->model.k * tr->model.L));
    fprintf(mt->out,
            "%sstep %ld/%ld  loss %.4e  aux %.3e  %.0f tok/s  %.2f GFLOP/s  comm %.0f%% "
            "(+%.0f%% hidden)  imbalance %.2f%s  eta %s%s",
            mt->tty ? "\r\033[K" : "", step, mt->steps, st->loss, st->aux, tok_s, gflops,
            100 * comm, 100 * hidden, st->imbalance, drop, eta, mt->tty ? "" : "\n");
    mt->pending_newline = mt->tty;
    fflush(mt->out);
}

void metrics_close(metrics_t* mt) {
    if (mt->pending_newline) fputc('\n', mt->out);
    if (mt->jsonl) fclose(mt->jsonl);
    mt->jsonl = NULL;
}
