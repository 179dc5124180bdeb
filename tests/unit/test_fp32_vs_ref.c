// The fp32 training path (train_grad at P = 1: layer pipeline, router, gmm, SwiGLU,
// RMSNorm, loss statistics, tree reductions) against the double-precision reference
// (tests/common/moe_ref.c) on the same fp32 weights: routing, loss and its parts, the
// stack's output, every gradient tensor, the gradient norm and dL/dx.
#include <check.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compute/kernels/kernels.h"
#include "config/config.h"
#include "config/status.h"
#include "daemon/train.h"
#include "tests/common/moe_ref.h"
#include "tests/common/testutil.h"

#define TOL_LOSS 1e-5 // relative
#define TOL_TENS 1e-4 // relative to the tensor's max |reference|

// Worst errors over every case, printed at the end.
static double w_loss, w_out, w_grad, w_dx, w_gate;
static int n_run, n_zero_experts;

typedef struct {
    const char* label;
    const char* sets[16]; // config overrides, NULL-terminated
    float bias_std;       // selection bias ~ N(0, bias_std^2) (0: none)
    uint64_t seed;
    int want_zero_experts; // the case must leave some expert without tokens
    int ties;              // zero router weights and a bias with exact ties (see perturb_weights)
} fcase_t;

static const char* const isas[] = {"ref", "avx2", "avx512"};
static const int isa_ids[] = {KERN_REF, KERN_AVX2, KERN_AVX512};

static int ref_kind(int pk) {
    switch (pk) {
    case PK_ROUTER: return MREF_WR;
    case PK_NORM: return MREF_SCALE;
    case PK_W0: return MREF_W0;
    case PK_W1: return MREF_W1;
    default: return MREF_WO;
    }
}

// Sets the overrides, validates, builds the training state. Returns 0, or 1 when this build
// or this CPU cannot run the ISA (the caller reports it).
static int build(train_t* tr, arena_t* a, const fcase_t* fc, const char* isa) {
    cfg_t c;
    char err[CFG_ERRLEN], kv[64];
    cfg_defaults(&c);
    for (int i = 0; fc->sets[i]; i++)
        ck_assert_msg(cfg_set(&c, fc->sets[i], err, sizeof err) == 0, "%s", err);
    snprintf(kv, sizeof kv, "compute.isa=%s", isa);
    ck_assert_msg(cfg_set(&c, kv, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(cfg_validate(&c, 1, err, sizeof err) == 0, "%s", err);
    for (int i = 0; i < 3; i++)
        if (!strcmp(isa, isas[i]) && !kern_table_for((kern_isa_t)isa_ids[i])) return 1;
    memset(a, 0, sizeof *a);
    ck_assert_int_eq(tu_train_new(tr, a, &c, MPI_COMM_WORLD), 0);
    return 0;
}

// Router weights large enough for decisive routing, norm scales away from 1, a selection
// bias; the expert weights keep their seeded initialisation.
static void perturb_weights(train_t* tr, const fcase_t* fc) {
    model_t* m = &tr->model;
    for (int i = 0; i < m->n_params; i++) {
        const param_t* p = &m->params[i];
        float* w = m->w + p->offset;
        uint64_t s = fc->seed * 1000 + (uint64_t)i;
        if (p->kind == PK_ROUTER) tu_fill_normal(w, p->numel, s, 2.0f / sqrtf((float)m->d));
        if (p->kind == PK_NORM) {
            tu_fill_normal(w, p->numel, s, 0.2f);
            for (long j = 0; j < p->numel; j++) w[j] += 1.0f;
        }
    }
    if (fc->bias_std > 0) tu_fill_normal(m->bias, (long)m->L * m->E, fc->seed + 77, fc->bias_std);
    if (!fc->ties) return;
    // Exact ties, identical in fp32 and double: zero logits give every expert the same score
    // (0.5 sigmoid, 1/E softmax); bias 0.25 on experts 1, 2 (mod 4) ties those pairs, and
    // equal-sized groups tie. The tie rules alone decide the routing.
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i].kind == PK_ROUTER)
            memset(m->w + m->params[i].offset, 0, sizeof(float) * m->params[i].numel);
    for (long i = 0; i < (long)m->L * m->E; i++)
        m->bias[i] = (i % 4 == 1 || i % 4 == 2) ? 0.25f : 0;
}

static void to_double(double* dst, const float* src, long n) {
    for (long i = 0; i < n; i++) dst[i] = src[i];
}

static void run_case(const fcase_t* fc, const char* isa) {
    train_t tr;
    arena_t a;
    if (build(&tr, &a, fc, isa)) {
        printf("test_fp32_vs_ref %-36s isa %-6s: not in this build or CPU, not run\n", fc->label,
               isa);
        return;
    }
    model_t* m = &tr.model;
    const cfg_t* c = &tr.cfg;
    int T = tr.T, d = m->d, E = m->E, k = m->k, L = m->L;
    ck_assert_int_eq(m->El, E);
    ck_assert_int_eq(tr.Tl, T);
    perturb_weights(&tr, fc);

    // A first call on another batch, so that anything left over from an earlier step
    // (stale gradients of idle experts, accumulators not reset) shows up.
    long n = (long)T * d;
    float* xw = malloc(sizeof(float) * n * 4);
    float *yw = xw + n, *x = xw + 2 * n, *y = xw + 3 * n;
    tu_fill_normal(xw, n, fc->seed + 1, 1.5f);
    tu_fill_normal(yw, n, fc->seed + 2, 1.0f);
    tu_fill_normal(x, n, fc->seed + 3, 1.0f);
    tu_fill_normal(y, n, fc->seed + 4, 1.0f);
    step_stats_t st;
    ck_assert_int_eq(train_grad(&tr, xw, yw, &st), MOED_OK);
    ck_assert_int_eq(train_grad(&tr, x, y, &st), MOED_OK);

    // The reference on the same fp32 weights, bias and batch.
    mref_cfg_t rc = {T,
                     d,
                     m->f,
                     E,
                     k,
                     L,
                     m->residual,
                     c->model.router == CFG_ROUTER_SIGMOID,
                     c->model.norm_topk,
                     c->model.routed_scaling,
                     c->model.n_groups,
                     c->model.topk_groups,
                     c->train.aux_loss_coef,
                     c->train.z_loss_coef};
    mref_t r;
    ck_assert_int_eq(mref_alloc(&r, &rc), 0);
    for (int i = 0; i < m->n_params; i++) {
        const param_t* p = &m->params[i];
        int kind = ref_kind(p->kind);
        ck_assert_int_eq(p->numel, mref_numel(&rc, kind));
        to_double(mref_tensor(&r.w[p->layer], kind), m->w + p->offset, p->numel);
    }
    to_double(r.bias, m->bias, (long)L * E);
    to_double(r.x, x, n);
    to_double(r.y, y, n);
    mref_forward(&r);
    mref_backward(&r);
    // Precondition: no near-tie that fp32 rounding could flip (change the seed if it fires).
    // Cases built on exact ties have a zero margin by construction.
    ck_assert_msg(fc->ties ? r.margin == 0 : r.margin > 1e-4, "%s: routing margin %g too small",
                  fc->label, r.margin);

    // routing: same expert set per token, same gates, same loads
    double gate_err = 0;
    int zero_experts = 0;
    for (int l = 0; l < L; l++) {
        const layer_acts_t* A = &tr.acts[l];
        for (int t = 0; t < T; t++)
            for (int i = 0; i < k; i++) {
                long rs = ((long)l * T + t) * k + i;
                int j = 0;
                while (j < k && A->sel[(long)t * k + j] != r.sel[rs]) j++;
                ck_assert_msg(j < k, "%s %s: layer %d token %d: expert %d not selected", fc->label,
                              isa, l, t, r.sel[rs]);
                double ge = fabs(A->gates[(long)t * k + j] - r.gate[rs]);
                gate_err = fmax(gate_err, ge / fmax(1.0, fabs(r.gate[rs])));
            }
        for (int e = 0; e < E; e++) {
            ck_assert_int_eq(A->load[e], r.load[(long)l * E + e]);
            if (A->load[e] != 0) continue;
            // an expert without tokens has exactly zero gradients
            zero_experts++;
            for (int i = 0; i < m->n_params; i++) {
                const param_t* p = &m->params[i];
                if (p->layer != l || !p->sharded) continue;
                long per = (long)p->rows * p->cols;
                for (long q = 0; q < per; q++)
                    ck_assert_msg(m->g[p->offset + e * per + q] == 0.0f,
                                  "%s %s: idle expert %d of %s has gradient %g", fc->label, isa, e,
                                  p->name, m->g[p->offset + e * per + q]);
            }
        }
    }
    ck_assert_msg(gate_err < TOL_TENS, "%s %s: gate error %g", fc->label, isa, gate_err);
    if (fc->want_zero_experts) ck_assert_msg(zero_experts > 0, "%s: no idle expert", fc->label);

    // loss and its parts
    double raux = 0;
    for (int l = 0; l < L; l++) raux += r.aux[l] + r.z[l];
    double e_loss = fabs(st.loss - r.loss) / fabs(r.loss);
    double e_mse = fabs(st.mse - r.mse) / fabs(r.mse);
    double e_aux = fabs(st.aux - raux) / fmax(fabs(raux), 1e-3);
    ck_assert_msg(e_loss < TOL_LOSS, "%s %s: loss %.9g vs %.9g", fc->label, isa, st.loss, r.loss);
    ck_assert_msg(e_mse < TOL_LOSS, "%s %s: mse %.9g vs %.9g", fc->label, isa, st.mse, r.mse);
    ck_assert_msg(e_aux < TOL_LOSS, "%s %s: aux %.9g vs %.9g", fc->label, isa, st.aux, raux);
    if (c->train.aux_loss_coef > 0 || c->train.z_loss_coef > 0) ck_assert(raux > 0);
    double e_l = fmax(e_loss, fmax(e_mse, e_aux));

    // output of the stack
    double e_out = tu_rel_err_fd(tr.h + (long)L * n, r.h + (long)L * n, n);
    ck_assert_msg(e_out < TOL_TENS, "%s %s: output rel err %g", fc->label, isa, e_out);

    // every gradient tensor, and the global norm
    double e_g = 0, sq = 0;
    for (int i = 0; i < m->n_params; i++) {
        const param_t* p = &m->params[i];
        const double* want = mref_tensor(&r.g[p->layer], ref_kind(p->kind));
        double e = tu_rel_err_fd(m->g + p->offset, want, p->numel);
        ck_assert_msg(e < TOL_TENS, "%s %s: gradient %s rel err %g", fc->label, isa, p->name, e);
        e_g = fmax(e_g, e);
        for (long q = 0; q < p->numel; q++) sq += want[q] * want[q];
    }
    double e_norm = fabs(st.grad_norm - sqrt(sq)) / sqrt(sq);
    ck_assert_msg(e_norm < TOL_TENS, "%s %s: grad norm %g vs %g", fc->label, isa, st.grad_norm,
                  sqrt(sq));
    e_g = fmax(e_g, e_norm);

    double e_dx = tu_rel_err_fd(tr.dx, r.dx, n);
    ck_assert_msg(e_dx < TOL_TENS, "%s %s: dx rel err %g", fc->label, isa, e_dx);

    printf("test_fp32_vs_ref %-36s isa %-6s loss %.5f  rel err: loss %.1e out %.1e grad %.1e "
           "dx %.1e gate %.1e  idle experts %d  margin %.1e\n",
           fc->label, isa, r.loss, e_l, e_out, e_g, e_dx, gate_err, zero_experts, r.margin);
    w_loss = fmax(w_loss, e_l), w_out = fmax(w_out, e_out), w_grad = fmax(w_grad, e_g);
    w_dx = fmax(w_dx, e_dx), w_gate = fmax(w_gate, gate_err);
    n_run++, n_zero_experts += zero_experts;
    mref_free(&r);
    free(xw);
    tu_train_free(&tr, &a);
}

#define SHAPE                                                                                      \
    "model.d_model=16", "model.d_ff=24", "model.n_experts=8", "model.top_k=2",                     \
        "train.global_batch_tokens=32", "train.aux_loss_coef=0.1", "train.z_loss_coef=0.01"

static const fcase_t cases[] = {
    {.label = "softmax residual L=2 bias",
     .sets = {SHAPE, "model.n_layers=2", NULL},
     .bias_std = 0.05f,
     .seed = 1},
    {.label = "sigmoid residual L=2 groups 4/2 sc 2.5",
     .sets = {SHAPE, "model.n_layers=2", "model.router=sigmoid", "model.n_groups=4",
              "model.topk_groups=2", "model.routed_scaling=2.5", NULL},
     .bias_std = 0.2f,
     .seed = 22},
    {.label = "softmax L=1 residual=false",
     .sets = {SHAPE, "model.n_layers=1", "model.residual=false", NULL},
     .seed = 3},
    {.label = "sigmoid L=2 residual=false norm_topk=off",
     .sets = {SHAPE, "model.n_layers=2", "model.residual=false", "model.router=sigmoid",
              "model.norm_topk=false", "model.routed_scaling=1.5", "model.n_groups=2",
              "model.topk_groups=1", NULL},
     .bias_std = 0.1f,
     .seed = 4},
    {.label = "softmax L=3 norm_topk=off k=3 threads=2",
     .sets = {SHAPE, "model.n_layers=3", "model.top_k=3", "model.norm_topk=false",
              "model.routed_scaling=2.0", "compute.threads=2", NULL},
     .bias_std = 0.05f,
     .seed = 5},
    {.label = "idle experts T=4 E=8 k=1 L=2",
     .sets = {SHAPE, "model.n_layers=2", "model.top_k=1", "train.global_batch_tokens=4", NULL},
     .bias_std = 0.05f,
     .seed = 6,
     .want_zero_experts = 1},
    {.label = "idle experts sigmoid bare T=4 k=1",
     .sets = {SHAPE, "model.n_layers=1", "model.top_k=1", "train.global_batch_tokens=4",
              "model.residual=false", "model.router=sigmoid", NULL},
     .bias_std = 0.1f,
     .seed = 27,
     .want_zero_experts = 1},
    // 6 reduction leaves of 5 tokens (not a power of two), 3 groups of 2
    {.label = "sigmoid E=6 T=30 groups 3/2 bias",
     .sets = {SHAPE, "model.n_experts=6", "train.global_batch_tokens=30", "model.n_layers=2",
              "model.router=sigmoid", "model.n_groups=3", "model.topk_groups=2", NULL},
     .bias_std = 0.1f,
     .seed = 8},
    // sizes that are no multiple of any vector width or micro-tile
    {.label = "odd shapes d=20 f=36 E=4 T=60",
     .sets = {SHAPE, "model.d_model=20", "model.d_ff=36", "model.n_experts=4",
              "train.global_batch_tokens=60", "model.n_layers=2", NULL},
     .bias_std = 0.05f,
     .seed = 9},
    // a wider router: 16 experts in 4 groups, 2 kept, top-4
    {.label = "softmax E=16 k=4 groups 4/2 d=32",
     .sets = {SHAPE, "model.d_model=32", "model.d_ff=40", "model.n_experts=16", "model.top_k=4",
              "model.n_groups=4", "model.topk_groups=2", "train.global_batch_tokens=64",
              "model.n_layers=2", NULL},
     .bias_std = 0.02f,
     .seed = 13},
    // routing decided by the tie rules alone: lower group, then lower expert index
    {.label = "exact ties sigmoid groups 4/1",
     .sets = {SHAPE, "model.n_layers=2", "model.router=sigmoid", "model.n_groups=4",
              "model.topk_groups=1", NULL},
     .seed = 10,
     .want_zero_experts = 1,
     .ties = 1},
    {.label = "exact ties softmax",
     .sets = {SHAPE, "model.n_layers=2", NULL},
     .seed = 11,
     .want_zero_experts = 1,
     .ties = 1},
};
#define NCASES (int)(sizeof cases / sizeof cases[0])

START_TEST(test_case_isa) {
    // _i runs over (case, isa) pairs
    run_case(&cases[_i / 3], isas[_i % 3]);
}
END_TEST

static Suite* fp32_suite(void) {
    Suite* s = suite_create("fp32_vs_ref");
    TCase* tc = tcase_create("train_grad");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_case_isa, 0, NCASES * 3);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    SRunner* sr = srunner_create(fp32_suite());
    // MPI is initialised once in this process: no forked children.
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    printf("test_fp32_vs_ref: %d runs, %d idle experts; worst rel errors: loss %.2e (tol %.0e), "
           "output %.2e, gradients %.2e, dx %.2e (tol %.0e), gates %.2e\n",
           n_run, n_zero_experts, w_loss, TOL_LOSS, w_out, w_grad, w_dx, TOL_TENS, w_gate);
    MPI_Finalize();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
