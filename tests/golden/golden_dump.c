// Golden-test helper: one forward + backward + AdamW step of a config at P = 1, with every
// input, weight, activation the test needs, gradient and updated state written as .npy
// files for tests/golden/test_golden.py, which recomputes the step in PyTorch.
//
//   golden_dump OUTDIR CONFIG [--set section.key=value]...
//
// Files (float32 unless said; tensor names are the checkpoint paths with '/' -> '.'):
//   x, y [T, d]; bias [L, E]; w_layers.<l>.router.weight [d, E], ...norm.scale [d],
//   ...experts.w0/w1 [E, d, f], ...experts.wo [E, f, d]; loss, mse, aux, grad_norm
//   (float64 scalars); out [T, d] (h_L); sel_<l> (int32), gates_<l> [T, k]; g_<name> (the
//   unclipped gradients); dx [T, d]; w1_<name>, m_<name>, v_<name> after train_apply;
//   kept_<l> (int32 [T, k]: sel, or -1 where capacity dropped the slot); bias1 [L, E] after
//   the bias update (with bias_update_rate > 0 the initial bias is random, not zero);
//   shared experts as w_layers.<l>.shared.w0/w1 [S, d, f], ...shared.wo [S, f, d];
//   meta.json (the resolved config values the test needs).
#include <errno.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "compute/optim.h"
#include "compute/rng.h"
#include "config/config.h"
#include "config/status.h"
#include "daemon/arena.h"
#include "daemon/data.h"
#include "daemon/train.h"
#include "tests/common/testutil.h"

static const char* g_outdir;

static void die(const char* what) {
    fprintf(stderr, "golden_dump: error: %s\n", what);
    MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1);
}

// A minimal .npy (format 1.0) writer: C order, little-endian '<f4', '<i4' or '<f8'.
static void write_npy(const char* name, const char* descr, size_t elsize, const void* data,
                      int ndim, const long* shape) {
    char path[1024], shp[256] = "", hdr[512];
    snprintf(path, sizeof path, "%s/%s.npy", g_outdir, name);
    long n = 1;
    for (int i = 0; i < ndim; i++) {
        size_t len = strlen(shp);
        snprintf(shp + len, sizeof shp - len, "%ld,%s", shape[i], i + 1 < ndim ? " " : "");
        n *= shape[i];
    }
    if (ndim > 1) shp[strlen(shp) - 1] = '\0'; // "(3,)" for one dim, "(3, 4)" otherwise
    int hl = snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }",
                      descr, shp);
    // magic (6) + version (2) + header length (2) + header + padding + '\n' = multiple of 64
    int total = 10 + hl + 1;
    int pad = (64 - total % 64) % 64;
    for (int i = 0; i < pad; i++) hdr[hl++] = ' ';
    hdr[hl++] = '\n';
    FILE* fp = fopen(path, "wb");
    if (!fp) die(path);
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
    pre[8] = (unsigned char)(hl & 0xff), pre[9] = (unsigned char)(hl >> 8);
    int ok = fwrite(pre, 1, 10, fp) == 10 && fwrite(hdr, 1, (size_t)hl, fp) == (size_t)hl &&
             fwrite(data, elsize, (size_t)n, fp) == (size_t)n;
    if (fclose(fp) != 0 || !ok) die(path);
}

static void npy_f32(const char* name, const float* x, int ndim, const long* shape) {
    write_npy(name, "<f4", 4, x, ndim, shape);
}

static void npy_scalar(const char* name, double v) { write_npy(name, "<f8", 8, &v, 0, NULL); }

// Every tensor of one flat buffer (weights, gradients or moments) with its global shape.
static void dump_params(const model_t* m, const char* prefix, const float* base) {
    for (int i = 0; i < m->n_params; i++) {
        const param_t* p = &m->params[i];
        char name[128];
        int len = snprintf(name, sizeof name, "%s_layers.%s", prefix, p->name);
        for (int j = 0; j < len; j++)
            if (name[j] == '/') name[j] = '.';
        const float* t = base + p->offset;
        if (p->sharded || p->kind >= PK_SW0) { // expert and shared-expert stacks
            long shape[3] = {p->n_mat, p->rows, p->cols};
            npy_f32(name, t, 3, shape);
        } else if (p->kind == PK_NORM) {
            long shape[1] = {p->cols};
            npy_f32(name, t, 1, shape);
        } else {
            long shape[2] = {p->rows, p->cols};
            npy_f32(name, t, 2, shape);
        }
    }
}

static void write_meta(const cfg_t* c, int T, double lr) {
    char path[1024];
    snprintf(path, sizeof path, "%s/meta.json", g_outdir);
    FILE* fp = fopen(path, "w");
    if (!fp) die(path);
    fprintf(fp,
            "{\"d\": %d, \"f\": %d, \"E\": %d, \"k\": %d, \"L\": %d, \"T\": %d, "
            "\"residual\": %d, \"router\": \"%s\", \"norm_topk\": %d, "
            "\"routed_scaling\": %.17g, \"n_groups\": %d, \"topk_groups\": %d, "
            "\"aux_loss_coef\": %.17g, \"z_loss_coef\": %.17g, \"lr\": %.17g, "
            "\"beta1\": %.17g, \"beta2\": %.17g, \"eps\": %.17g, \"weight_decay\": %.17g, "
            "\"clip\": %.17g, \"capacity_factor\": %.17g, \"n_shared_experts\": %d, "
            "\"bias_update_rate\": %.17g}\n",
            c->model.d_model, c->model.d_ff, c->model.n_experts, c->model.top_k, c->model.n_layers,
            T, c->model.residual, c->model.router == CFG_ROUTER_SIGMOID ? "sigmoid" : "softmax",
            c->model.norm_topk, c->model.routed_scaling, c->model.n_groups, c->model.topk_groups,
            c->train.aux_loss_coef, c->train.z_loss_coef, lr, c->train.beta1, c->train.beta2,
            c->train.eps, c->train.weight_decay, c->train.clip, c->model.capacity_factor,
            c->model.n_shared_experts, c->train.bias_update_rate);
    if (fclose(fp) != 0) die(path);
}

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    if (argc < 3) {
        fprintf(stderr, "usage: golden_dump OUTDIR CONFIG [--set section.key=value]...\n");
        MPI_Finalize();
        return MOED_ERR_CONFIG;
    }
    int nranks;
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    if (nranks != 1) die("run with one rank");
    g_outdir = argv[1];
    if (mkdir(g_outdir, 0755) != 0 && errno != EEXIST) die(g_outdir);

    cfg_t c;
    char err[CFG_ERRLEN] = "";
    cfg_defaults(&c);
    int rc = cfg_load_file(&c, argv[2], err, sizeof err);
    for (int i = 3; rc == 0 && i < argc; i++) {
        if (strcmp(argv[i], "--set") != 0 || i + 1 >= argc) {
            snprintf(err, sizeof err, "unexpected argument '%s'", argv[i]);
            rc = MOED_ERR_CONFIG;
            break;
        }
        rc = cfg_set(&c, argv[++i], err, sizeof err);
    }
    if (rc == 0) rc = cfg_validate(&c, 1, err, sizeof err);
    if (rc == 0 && c.data.source != CFG_DATA_SYNTHETIC) {
        snprintf(err, sizeof err, "data.source must be synthetic");
        rc = MOED_ERR_CONFIG;
    }
    if (rc) {
        fprintf(stderr, "golden_dump: error: %s\n", err);
        MPI_Finalize();
        return rc;
    }

    train_t tr;
    arena_t a = {0};
    if (tu_train_new(&tr, &a, &c, MPI_COMM_WORLD) != 0) die("tu_train_new failed");
    const model_t* m = &tr.model;
    int T = tr.T, d = m->d, E = m->E, k = m->k, L = m->L;

    // The step-0 synthetic batch, from its own arena (same two-pass pattern as moed run).
    data_t D;
    arena_t da = {0};
    arena_begin_count(&da);
    data_layout(&D, &c, T, &da);
    if (arena_reserve(&da) != 0) die("out of memory (data)");
    data_layout(&D, &c, T, &da);
    char derr[CFG_ERRLEN];
    if (data_open(&D, &c, 0, 1, MPI_COMM_SELF, derr, sizeof derr) != 0) die(derr);
    float* x = malloc(sizeof(float) * (size_t)T * d);
    float* y = malloc(sizeof(float) * (size_t)T * d);
    if (!x || !y) die("out of memory");
    if (data_batch(&D, 0, T, 0, x, y, derr, sizeof derr) != 0) die(derr);

    long sh_td[2] = {T, d}, sh_le[2] = {L, E}, sh_tk[2] = {T, k};
    npy_f32("x", x, 2, sh_td);
    npy_f32("y", y, 2, sh_td);
    // With aux-loss-free balancing on, start from a non-zero bias (as a run would have after
    // some steps) so that it changes the selection and the test sees it do so.
    if (c.train.bias_update_rate > 0)
        for (long i = 0; i < (long)L * E; i++)
            m->bias[i] = 0.05f * rng_normal(99, RNG_STREAM(RNG_ROUTER, 0xFFFFE), 0, (uint64_t)i);
    npy_f32("bias", m->bias, 2, sh_le);
    dump_params(m, "w", m->w);

    step_stats_t st;
    rc = train_grad(&tr, x, y, &st);
    if (rc != MOED_OK) fprintf(stderr, "golden_dump: warning: train_grad returned %d\n", rc);
    npy_scalar("loss", st.loss);
    npy_scalar("mse", st.mse);
    npy_scalar("aux", st.aux);
    npy_scalar("grad_norm", st.grad_norm);
    npy_f32("out", tr.h + (long)L * T * d, 2, sh_td);
    for (int l = 0; l < L; l++) {
        char name[64];
        snprintf(name, sizeof name, "sel_%d", l);
        write_npy(name, "<i4", 4, tr.acts[l].sel, 2, sh_tk);
        snprintf(name, sizeof name, "gates_%d", l);
        npy_f32(name, tr.acts[l].gates, 2, sh_tk);
        snprintf(name, sizeof name, "kept_%d", l); // slot_pos < 0: dropped by capacity
        int* kept = malloc(sizeof(int) * (size_t)T * k);
        if (!kept) die("out of memory");
        for (long s = 0; s < (long)T * k; s++)
            kept[s] = tr.acts[l].slot_pos[s] >= 0 ? tr.acts[l].sel[s] : -1;
        write_npy(name, "<i4", 4, kept, 2, sh_tk);
        free(kept);
    }
    dump_params(m, "g", m->g);
    npy_f32("dx", tr.dx, 2, sh_td);

    double lr = lr_schedule(0, c.train.steps, c.train.warmup_steps, c.train.lr, c.train.lr_min);
    train_apply(&tr, lr, &st);
    dump_params(m, "w1", m->w);
    npy_f32("bias1", m->bias, 2, sh_le);
    dump_params(m, "m", m->m);
    dump_params(m, "v", m->v);
    write_meta(&c, T, lr);

    free(x);
    free(y);
    arena_free(&da);
    tu_train_free(&tr, &a);
    MPI_Finalize();
    return rc;
}
