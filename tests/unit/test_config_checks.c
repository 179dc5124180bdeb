// Unit tests of config/ beyond reading: the defaults, cross-key and rank-count validation,
// the INI round trip, the Markdown reference and the example configs. Reading files and
// --set: test_config.c.
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "config/status.h"
#include "tests/common/config_test.h"

// Every key the table must hold, in table order (DESIGN.md §5, implemented subset).
static const char* all_keys[] = {
    "model.d_model",
    "model.d_ff",
    "model.n_experts",
    "model.top_k",
    "model.n_layers",
    "model.residual",
    "model.router",
    "model.norm_topk",
    "model.routed_scaling",
    "model.n_groups",
    "model.topk_groups",
    "model.capacity_factor",
    "model.n_shared_experts",
    "train.global_batch_tokens",
    "train.steps",
    "train.lr",
    "train.lr_min",
    "train.warmup_steps",
    "train.weight_decay",
    "train.beta1",
    "train.beta2",
    "train.eps",
    "train.clip",
    "train.aux_loss_coef",
    "train.z_loss_coef",
    "train.bias_update_rate",
    "train.seed",
    "data.source",
    "data.path",
    "data.teacher_seed",
    "data.teacher_experts",
    "data.teacher_top_k",
    "data.teacher_d_ff",
    "data.skew",
    "checkpoint.dir",
    "checkpoint.every",
    "checkpoint.keep",
    "checkpoint.resume",
    "comm.dispatcher",
    "comm.chunks",
    "comm.chunk_axis",
    "comm.progress",
    "compute.isa",
    "compute.threads",
    "compute.prepack",
    "log.every",
    "log.dead_expert_steps",
    "run.dir",
};
#define NALL (int)(sizeof(all_keys) / sizeof(all_keys[0]))

START_TEST(test_defaults) {
    cfg_t c;
    cfg_defaults(&c);
    ck_assert_int_eq(c.model.d_model, 32);
    ck_assert_int_eq(c.model.d_ff, 64);
    ck_assert_int_eq(c.model.n_experts, 8);
    ck_assert_int_eq(c.model.top_k, 2);
    ck_assert_int_eq(c.model.n_layers, 1);
    ck_assert_int_eq(c.model.residual, 1);
    ck_assert_int_eq(c.model.router, CFG_ROUTER_SOFTMAX);
    ck_assert_int_eq(c.model.norm_topk, 1);
    ck_assert(c.model.routed_scaling == 1.0);
    ck_assert_int_eq(c.model.n_groups, 1);
    ck_assert_int_eq(c.model.topk_groups, 1);
    ck_assert(c.model.capacity_factor == 0.0);
    ck_assert_int_eq(c.model.n_shared_experts, 0);
    ck_assert_int_eq(c.train.global_batch_tokens, 256);
    ck_assert_int_eq(c.train.steps, 300);
    ck_assert(c.train.lr == 3e-3);
    ck_assert(c.train.lr_min == 3e-4);
    ck_assert_int_eq(c.train.warmup_steps, 20);
    ck_assert(c.train.weight_decay == 0.0);
    ck_assert(c.train.beta1 == 0.9);
    ck_assert(c.train.beta2 == 0.95);
    ck_assert(c.train.eps == 1e-8);
    ck_assert(c.train.clip == 1.0);
    ck_assert(c.train.aux_loss_coef == 0.01);
    ck_assert(c.train.z_loss_coef == 0.001);
    ck_assert(c.train.bias_update_rate == 0.0);
    ck_assert_int_eq(c.train.seed, 1234);
    ck_assert_int_eq(c.data.source, CFG_DATA_SYNTHETIC);
    ck_assert_str_eq(c.data.path, "");
    ck_assert_int_eq(c.data.teacher_seed, 4321);
    ck_assert_int_eq(c.data.teacher_experts, 1);
    ck_assert_int_eq(c.data.teacher_top_k, 1);
    ck_assert_int_eq(c.data.teacher_d_ff, 16);
    ck_assert_int_eq(c.checkpoint.every, 0);
    ck_assert_int_eq(c.checkpoint.keep, 3);
    ck_assert_int_eq(c.checkpoint.resume, CFG_RESUME_NEVER);
    ck_assert_int_eq(c.comm.dispatcher, CFG_DISPATCH_ALLTOALLV);
    ck_assert_int_eq(c.comm.chunks, 4);
    ck_assert_int_eq(c.comm.chunk_axis, CFG_CHUNK_TOKENS);
    ck_assert_int_eq(c.comm.progress, CFG_PROGRESS_AUTO);
    ck_assert_int_eq(c.compute.isa, CFG_ISA_AUTO);
    ck_assert_int_eq(c.compute.threads, 1);
    ck_assert_int_eq(c.log.every, 10);
    ck_assert_int_eq(c.log.dead_expert_steps, 100);
    ck_assert_str_eq(c.run.dir, "run");
    for (int p = 1; p <= 8; p *= 2) expect_valid(&c, p);
}
END_TEST

START_TEST(test_cross_key) {
    cfg_t c;
    cfg_defaults(&c);
    set_ok(&c, "model.top_k=9"); // order of --set does not matter: checked here
    expect_invalid(&c, 1, "model.top_k (9) must be <= model.n_experts (8)");

    cfg_defaults(&c);
    set_ok(&c, "train.lr_min=0.01");
    expect_invalid(&c, 1, "train.lr_min");
    expect_invalid(&c, 1, "train.lr");

    cfg_defaults(&c);
    set_ok(&c, "train.warmup_steps=301");
    expect_invalid(&c, 1, "train.warmup_steps (301) must be <= train.steps (300)");
    set_ok(&c, "train.warmup_steps=300");
    expect_valid(&c, 1);

    cfg_defaults(&c);
    set_ok(&c, "model.n_groups=3");
    expect_invalid(&c, 1, "model.n_experts (8) is not divisible by model.n_groups (3)");

    cfg_defaults(&c);
    set_ok(&c, "model.n_groups=2");
    set_ok(&c, "model.topk_groups=3");
    expect_invalid(&c, 1, "model.topk_groups (3) must be <= model.n_groups (2)");

    cfg_defaults(&c); // 8 experts in 4 groups of 2, one group eligible: 2 experts
    set_ok(&c, "model.n_groups=4");
    set_ok(&c, "model.topk_groups=1");
    set_ok(&c, "model.top_k=3");
    expect_invalid(&c, 1, "model.top_k (3) exceeds the 2 experts eligible");
    set_ok(&c, "model.topk_groups=2");
    expect_valid(&c, 1);

    cfg_defaults(&c); // groups of one expert cannot form a top-two group score
    set_ok(&c, "model.n_groups=8");
    set_ok(&c, "model.topk_groups=4");
    expect_invalid(&c, 1, "model.n_groups (8) leaves 1 expert(s) per group");

    cfg_defaults(&c);
    set_ok(&c, "data.source=hdf5");
    expect_invalid(&c, 1, "data.source = hdf5 needs data.path");

    cfg_defaults(&c);
    set_ok(&c, "data.teacher_top_k=5");
    expect_invalid(&c, 1, "data.teacher_top_k (5) must be <= data.teacher_experts (1)");

    cfg_defaults(&c); // 256 tokens: 64 per rank at P = 4; chunks need not divide them
    set_ok(&c, "comm.dispatcher=alltoallv_chunked");
    set_ok(&c, "comm.chunks=64");
    expect_valid(&c, 4);
    set_ok(&c, "comm.chunks=65");
    expect_invalid(&c, 4, "comm.chunks (65) exceeds the 64 local tokens of each of the 4 ranks");
    expect_valid(&c, 2);
    set_ok(&c, "comm.dispatcher=alltoallv"); // chunks only matter to the chunked dispatcher
    expect_valid(&c, 4);
    set_ok(&c, "comm.dispatcher=ring"); // ...and to ring's embed axis, as slices of d_model
    set_ok(&c, "comm.chunks=33");
    expect_valid(&c, 1);
    set_ok(&c, "comm.chunk_axis=embed");
    expect_invalid(&c, 1, "comm.chunks (33) exceeds model.d_model (32)");
    set_ok(&c, "comm.chunks=32");
    expect_valid(&c, 4);
}
END_TEST

START_TEST(test_rank_divisibility) {
    // n_experts, global_batch_tokens, and whether 1, 2, 4 ranks are valid.
    static const struct {
        int e, t, ok[3];
    } cases[] = {
        {8, 256, {1, 1, 1}}, {6, 256, {1, 1, 0}}, {3, 256, {1, 0, 0}},
        {8, 6, {1, 1, 0}},   {8, 2, {1, 1, 0}},   {4, 4, {1, 1, 1}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cfg_t c;
        cfg_defaults(&c);
        c.model.n_experts = cases[i].e;
        c.model.top_k = 1;
        c.train.global_batch_tokens = cases[i].t;
        for (int j = 0, p = 1; j < 3; j++, p *= 2) {
            if (cases[i].ok[j]) {
                expect_valid(&c, p);
                continue;
            }
            char want[128];
            if (cases[i].e < p)
                snprintf(want, sizeof want,
                         "model.n_experts (%d) is smaller than the number of ranks (%d)",
                         cases[i].e, p);
            else if (cases[i].e % p)
                snprintf(want, sizeof want,
                         "model.n_experts (%d) is not divisible by the number of ranks (%d)",
                         cases[i].e, p);
            else if (cases[i].t < p)
                snprintf(want, sizeof want,
                         "train.global_batch_tokens (%d) is smaller than the number of ranks",
                         cases[i].t);
            else
                snprintf(want, sizeof want,
                         "train.global_batch_tokens (%d) is not divisible by the number of "
                         "ranks (%d)",
                         cases[i].t, p);
            expect_invalid(&c, p, want);
        }
    }
    cfg_t c;
    cfg_defaults(&c);
    expect_invalid(&c, 16, "model.n_experts (8) is smaller than the number of ranks (16)");
    expect_invalid(&c, 0, "number of ranks (0)");
}
END_TEST

START_TEST(test_validate_ranges) {
    cfg_t c;
    cfg_defaults(&c);
    c.model.d_model = 0; // set by code, not parsed
    expect_invalid(&c, 1, "model.d_model (0)");
    cfg_defaults(&c);
    c.train.lr = NAN;
    expect_invalid(&c, 1, "train.lr");
    cfg_defaults(&c);
    c.model.router = 7;
    expect_invalid(&c, 1, "model.router");
}
END_TEST

START_TEST(test_write_ini_round_trip) {
    cfg_t a, b;
    cfg_defaults(&a);
    set_ok(&a, "model.routed_scaling=0.1");
    set_ok(&a, "train.lr=0.0030000000000000001");
    set_ok(&a, "train.lr_min=3.3333333333333331e-05");
    set_ok(&a, "train.eps=1e-300");
    set_ok(&a, "train.beta2=0.99999999999999989");
    set_ok(&a, "train.seed=9223372036854775807");
    set_ok(&a, "model.router=sigmoid");
    set_ok(&a, "model.residual=false");
    set_ok(&a, "compute.isa=ref");
    set_ok(&a, "run.dir=/scratch/x;y/with space");
    static char ini[CFG_INI_MAX], ini2[CFG_INI_MAX];
    ck_assert_int_eq(cfg_write_ini(&a, ini, sizeof ini), 0);
    assert_has(ini, "[model]\nd_model = 32\n");
    assert_has(ini, "lr = 0.003\n");
    assert_has(ini, "router = sigmoid\n");
    assert_has(ini, "residual = false\n");
    assert_has(ini, "\n[run]\ndir = /scratch/x;y/with space\n");
    for (int i = 0; i < NALL; i++) {
        char line[80];
        snprintf(line, sizeof line, "\n%s = ", strchr(all_keys[i], '.') + 1);
        assert_has(ini, line);
    }
    cfg_defaults(&b);
    set_ok(&b, "model.d_model=1024"); // overwritten by the text
    ck_assert_int_eq(cfg_load_string(&b, ini, "written.ini", err, sizeof err), 0);
    ck_assert_int_eq(memcmp(&a, &b, sizeof a), 0);
    ck_assert(b.train.lr_min == 3.3333333333333331e-05);
    ck_assert(b.train.beta2 == 0.99999999999999989);
    ck_assert_int_eq(cfg_write_ini(&b, ini2, sizeof ini2), 0);
    ck_assert_str_eq(ini, ini2);
    // Through a file too.
    cfg_t f;
    ck_assert_int_eq(load_text(&f, ini), 0);
    ck_assert_int_eq(memcmp(&a, &f, sizeof a), 0);
    // A buffer that is too small is an error, not a silently cut config.
    ck_assert_int_eq(cfg_write_ini(&a, ini2, 40), MOED_ERR_CONFIG);
}
END_TEST

START_TEST(test_markdown) {
    char* md = NULL;
    size_t len = 0;
    FILE* f = open_memstream(&md, &len);
    ck_assert_ptr_nonnull(f);
    cfg_print_markdown(f);
    fclose(f);
    const char* header = "| key | type | default | range | description |\n|---|---|---|---|---|\n";
    ck_assert_msg(!strncmp(md, header, strlen(header)), "%s", md);
    int lines = 0;
    for (const char* p = md; *p; p++) lines += *p == '\n';
    ck_assert_int_eq(lines, 2 + NALL); // header, rule, one row per key: no more, no fewer
    for (int i = 0; i < NALL; i++) {
        char cell[80];
        snprintf(cell, sizeof cell, "| `%s` |", all_keys[i]);
        assert_has(md, cell);
    }
    assert_has(md, "softmax, sigmoid");
    assert_has(md, "auto, ref, avx2, avx512");
    assert_has(md, "[0, 1)");
    assert_has(md, "| `model.d_model` | integer | `32` | [1, 65536] |");
    free(md);
}
END_TEST

// The example configs shipped in config/ must load and validate at 1, 2 and 4 ranks.
static void check_example(const char* rel, int layers) {
    const char* src = getenv("MOED_SRC");
    char path[1024];
    if (src)
        snprintf(path, sizeof path, "%s/%s", src, rel);
    else // __FILE__ is <src>/tests/unit/test_config_checks.c under CMake
        snprintf(path, sizeof path, "%.*s%s",
                 (int)(strlen(__FILE__) - strlen("tests/unit/test_config_checks.c")), __FILE__,
                 rel);
    cfg_t c;
    cfg_defaults(&c);
    ck_assert_msg(cfg_load_file(&c, path, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(c.model.n_layers, layers);
    ck_assert_int_eq(c.model.d_model, 32);
    ck_assert_int_eq(c.model.n_experts, 8);
    ck_assert_int_eq(c.train.global_batch_tokens, 256);
    for (int p = 1; p <= 4; p *= 2) expect_valid(&c, p);
}

START_TEST(test_example_configs) {
    check_example("config/tiny.ini", 1);
    check_example("config/tiny2.ini", 2);
    check_example("config/balance.ini", 1);
}
END_TEST

static Suite* config_suite(void) {
    Suite* s = suite_create("config_checks");
    TCase* tc = tcase_create("config_checks");
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_cross_key);
    tcase_add_test(tc, test_rank_divisibility);
    tcase_add_test(tc, test_validate_ranges);
    tcase_add_test(tc, test_write_ini_round_trip);
    tcase_add_test(tc, test_markdown);
    tcase_add_test(tc, test_example_configs);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(config_suite()); }
