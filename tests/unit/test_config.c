// Unit tests of config/ reading its inputs: INI files and strings, every error class with
// its one-line message, and --set. Defaults, validation and the writers: test_config_checks.c.
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "config/status.h"
#include "tests/common/config_test.h"

START_TEST(test_parse_good_file) {
    cfg_t c;
    const char* text = "# a comment\n"
                       "; another comment\n"
                       "[model]\n"
                       "d_model = 48\n"
                       "   d_ff=96      ; indented, inline comment\n"
                       "n_experts = 16\r\n"
                       "top_k = 3\n"
                       "residual = off\n"
                       "norm_topk = No\n"
                       "router = sigmoid\n"
                       "routed_scaling = 2.5\n"
                       "n_groups = 4\n"
                       "topk_groups = 2\n"
                       "\n"
                       "[train]\n"
                       "lr = 1e-2\n"
                       "eps = 1e-6\n"
                       "seed = 9000000000\n"
                       "steps = 100\n"
                       "steps = 50\n" // duplicate: the last one wins
                       "[compute]\n"
                       "isa = AVX2\n"
                       "threads = 4\n"
                       "[run]\n"
                       "dir = /tmp/some dir/x\n"
                       "[model]\n" // a section may reappear
                       "n_layers = 3\n";
    int rc = load_text(&c, text);
    ck_assert_msg(rc == 0, "%s", err);
    ck_assert_int_eq(c.model.d_model, 48);
    ck_assert_int_eq(c.model.d_ff, 96);
    ck_assert_int_eq(c.model.n_experts, 16);
    ck_assert_int_eq(c.model.top_k, 3);
    ck_assert_int_eq(c.model.residual, 0);
    ck_assert_int_eq(c.model.norm_topk, 0);
    ck_assert_int_eq(c.model.router, CFG_ROUTER_SIGMOID);
    ck_assert(c.model.routed_scaling == 2.5);
    ck_assert_int_eq(c.model.n_groups, 4);
    ck_assert_int_eq(c.model.topk_groups, 2);
    ck_assert_int_eq(c.model.n_layers, 3);
    ck_assert(c.train.lr == 1e-2);
    ck_assert(c.train.eps == 1e-6);
    ck_assert_int_eq(c.train.seed, 9000000000L);
    ck_assert_int_eq(c.train.steps, 50);
    ck_assert_int_eq(c.compute.isa, CFG_ISA_AVX2);
    ck_assert_int_eq(c.compute.threads, 4);
    ck_assert_str_eq(c.run.dir, "/tmp/some dir/x");
    ck_assert_int_eq(c.train.global_batch_tokens, 256); // untouched keys keep defaults
    expect_valid(&c, 4);
}
END_TEST

START_TEST(test_bool_spellings) {
    static const char* yes[] = {"true", "1", "yes", "on", "TRUE", "On"};
    static const char* no[] = {"false", "0", "no", "off", "False", "OFF"};
    cfg_t c;
    cfg_defaults(&c);
    char a[64];
    for (int i = 0; i < 6; i++) {
        snprintf(a, sizeof a, "model.residual=%s", no[i]);
        set_ok(&c, a);
        ck_assert_int_eq(c.model.residual, 0);
        snprintf(a, sizeof a, "model.residual=%s", yes[i]);
        set_ok(&c, a);
        ck_assert_int_eq(c.model.residual, 1);
    }
}
END_TEST

START_TEST(test_unknown_key) {
    expect_file_error("[model]\nd_model = 32\nfoo = 1\n", "unknown key 'model.foo'");
    expect_file_error("[model]\nd_model = 32\nfoo = 1\n", ":3:");
    expect_file_error("[train]\nd_model = 32\n", "unknown key 'train.d_model'");
    expect_file_error("d_model = 32\n", "outside any [section]");
    expect_set_error("model.foo=1", "unknown key 'model.foo'");
}
END_TEST

START_TEST(test_unknown_section) {
    expect_file_error("[modle]\nd_model = 32\n", "unknown section [modle]");
    expect_file_error("[model]\nd_model = 32\n\n[empty]\n", "unknown section [empty]");
    expect_file_error("[model]\nd_model = 32\n\n[empty]\n", ":4:");
    expect_file_error("[chekpoint]\nevery = 10\n", "unknown section [chekpoint]");
    expect_set_error("modle.d_model=32", "unknown section [modle]");
}
END_TEST

START_TEST(test_bad_int) {
    static const char* bad[] = {"abc", "12abc", "", "1.5", "0x10", "1e3", "- 1"};
    static const char* huge[] = {"99999999999999999999", "3000000000", "-3000000000"};
    char text[128];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(text, sizeof text, "[model]\nd_model = %s\n", bad[i]);
        expect_file_error(text, "model.d_model");
        expect_file_error(text, "not an integer");
        expect_file_error(text, ":2:");
    }
    for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
        snprintf(text, sizeof text, "[model]\nd_model = %s\n", huge[i]);
        expect_file_error(text, "model.d_model");
        expect_file_error(text, "out of range");
    }
    expect_file_error("[train]\nseed = 12abc\n", "train.seed");
    expect_set_error("model.d_model=abc", "model.d_model = \"abc\": not an integer");
    expect_set_error("model.d_model=", "not an integer");
}
END_TEST

START_TEST(test_bad_double) {
    static const char* bad[] = {"abc", "1e", "", "0.1x", "1,5"};
    static const char* nonfinite[] = {"nan", "NaN", "inf", "-inf", "infinity", "1e999"};
    char text[128];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(text, sizeof text, "[train]\nlr = %s\n", bad[i]);
        expect_file_error(text, "train.lr");
        expect_file_error(text, "not a number");
    }
    for (size_t i = 0; i < sizeof nonfinite / sizeof nonfinite[0]; i++) {
        snprintf(text, sizeof text, "[train]\nlr = %s\n", nonfinite[i]);
        expect_file_error(text, "train.lr");
        expect_file_error(text, "not a finite number");
    }
}
END_TEST

START_TEST(test_bad_bool) {
    expect_file_error("[model]\nresidual = maybe\n", "model.residual");
    expect_file_error("[model]\nresidual = maybe\n", "not a boolean");
    expect_set_error("model.norm_topk=2", "not a boolean");
    expect_set_error("model.norm_topk=", "model.norm_topk");
}
END_TEST

START_TEST(test_bad_enum) {
    expect_file_error("[model]\nrouter = relu\n", "model.router");
    expect_file_error("[model]\nrouter = relu\n", "softmax, sigmoid");
    expect_set_error("compute.isa=sse", "must be one of: auto, ref, avx2, avx512");
    expect_set_error("compute.prepack=on", "must be one of: off, forward, all");
    // Values of later features are not accepted yet.
    expect_set_error("data.source=csv", "data.source");
    expect_set_error("checkpoint.resume=sometimes", "must be one of: never, auto");
    expect_set_error("comm.dispatcher=alltoall", "comm.dispatcher");
    expect_set_error("comm.chunk_axis=experts", "must be one of: tokens, embed");
    expect_set_error("comm.progress=poll", "must be one of: auto, test, thread");
}
END_TEST

START_TEST(test_out_of_range) {
    static const char* bad[] = {"model.d_model=0",
                                "model.d_model=65537",
                                "model.n_experts=0",
                                "model.n_experts=4097",
                                "model.top_k=0",
                                "model.n_layers=1025",
                                "comm.chunks=0",
                                "comm.chunks=257",
                                "model.routed_scaling=0",
                                "model.n_groups=0",
                                "model.capacity_factor=-0.5",
                                "model.n_shared_experts=-1",
                                "model.n_shared_experts=65",
                                "data.skew=-1",
                                "log.dead_expert_steps=-1",
                                "train.global_batch_tokens=0",
                                "train.global_batch_tokens=1073741825",
                                "train.steps=0",
                                "train.lr=-1",
                                "train.lr_min=-0.1",
                                "train.warmup_steps=-1",
                                "train.weight_decay=-1",
                                "train.beta1=1",
                                "train.beta1=-0.1",
                                "train.beta2=1.5",
                                "train.eps=0",
                                "train.clip=-1",
                                "train.aux_loss_coef=-1",
                                "train.z_loss_coef=-1",
                                "train.bias_update_rate=-1",
                                "train.seed=-1",
                                "data.teacher_seed=-5",
                                "data.teacher_experts=0",
                                "data.teacher_top_k=0",
                                "data.teacher_d_ff=0",
                                "compute.threads=0",
                                "compute.threads=1025",
                                "log.every=0"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char key[64];
        snprintf(key, sizeof key, "%.*s", (int)(strchr(bad[i], '=') - bad[i]), bad[i]);
        expect_set_error(bad[i], key);
        expect_set_error(bad[i], "out of range");
    }
    expect_file_error("[train]\nbeta2 = 1.0\n", "train.beta2 = \"1.0\": out of range [0, 1)");
    expect_file_error("[model]\nd_model = 0\n", "out of range [1, 65536]");
    // The bounds themselves where they are closed.
    cfg_t c;
    cfg_defaults(&c);
    set_ok(&c, "train.beta1=0");
    set_ok(&c, "train.clip=0");
    set_ok(&c, "model.d_model=65536");
    set_ok(&c, "train.global_batch_tokens=1073741824");
}
END_TEST

START_TEST(test_strings) {
    char a[300];
    snprintf(a, sizeof a, "run.dir=%0161d", 0); // 161 characters
    expect_set_error(a, "run.dir");
    expect_set_error(a, "length 161");
    expect_set_error("run.dir=", "length 0");
    expect_set_error("run.dir=a ;b", "run.dir");
    expect_set_error("run.dir=a\tb", "control character");
    cfg_t c;
    cfg_defaults(&c);
    snprintf(a, sizeof a, "run.dir=%0160d", 0);
    set_ok(&c, a);
    ck_assert_int_eq((int)strlen(c.run.dir), 160);
    set_ok(&c, "run.dir=x;y=z");
    ck_assert_str_eq(c.run.dir, "x;y=z");
}
END_TEST

START_TEST(test_file_errors) {
    cfg_t c;
    cfg_defaults(&c);
    int rc = cfg_load_file(&c, "/nonexistent/moed.ini", err, sizeof err);
    ck_assert_int_eq(rc, MOED_ERR_CONFIG);
    assert_one_line(err);
    assert_has(err, "/nonexistent/moed.ini");
    rc = cfg_load_file(&c, "/tmp", err, sizeof err); // a directory
    ck_assert_int_eq(rc, MOED_ERR_CONFIG);
    assert_has(err, "/tmp");
    expect_file_error("[model]\nthis line is garbage\n", ":2: syntax error");
    expect_file_error("[model\nd_model = 3\n", ":1: syntax error");
    char text[400];
    snprintf(text, sizeof text, "[run]\ndir = %0250d\n", 0);
    expect_file_error(text, ":2: line longer than");
}
END_TEST

START_TEST(test_error_keeps_cfg) {
    cfg_t c, before;
    cfg_defaults(&c);
    set_ok(&c, "model.d_model=64");
    before = c;
    const char* path = write_tmp("[model]\nd_model = 128\nn_experts = banana\n");
    ck_assert_int_eq(cfg_load_file(&c, path, err, sizeof err), MOED_ERR_CONFIG);
    unlink(path);
    ck_assert_int_eq(c.model.d_model, 64);
    ck_assert_int_eq(memcmp(&c, &before, sizeof c), 0);
    ck_assert_int_eq(cfg_set(&c, "model.d_model=zero", err, sizeof err), MOED_ERR_CONFIG);
    ck_assert_int_eq(c.model.d_model, 64);
}
END_TEST

START_TEST(test_malformed_set) {
    static const char* bad[] = {"model",      "model.d_model",  "d_model=3",
                                ".d_model=3", "model.=3",       "=3",
                                "",           "model d_model=3"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_set_error(bad[i], "expected section.key=value");
}
END_TEST

START_TEST(test_set_overrides_file) {
    cfg_t c;
    ck_assert_int_eq(load_text(&c, "[model]\nd_model = 48\ntop_k = 1\n[train]\nlr = 0.1\n"), 0);
    set_ok(&c, "model.d_model=96");
    set_ok(&c, " train.lr = 0.5 "); // blanks around the parts are ignored
    set_ok(&c, "train.lr_min=0.25");
    set_ok(&c, "compute.isa=avx512");
    ck_assert_int_eq(c.model.d_model, 96);
    ck_assert_int_eq(c.model.top_k, 1); // from the file
    ck_assert(c.train.lr == 0.5);
    ck_assert(c.train.lr_min == 0.25);
    ck_assert_int_eq(c.compute.isa, CFG_ISA_AVX512);
    expect_valid(&c, 2);
}
END_TEST

START_TEST(test_load_string_errors) {
    cfg_t c;
    cfg_defaults(&c);
    int rc = cfg_load_string(&c, "[model]\nd_model = x\n", "ckpt:config", err, sizeof err);
    ck_assert_int_eq(rc, MOED_ERR_CONFIG);
    assert_has(err, "ckpt:config:2: model.d_model = \"x\": not an integer");
}
END_TEST

static Suite* config_suite(void) {
    Suite* s = suite_create("config");
    TCase* tc = tcase_create("config");
    tcase_add_test(tc, test_parse_good_file);
    tcase_add_test(tc, test_bool_spellings);
    tcase_add_test(tc, test_unknown_key);
    tcase_add_test(tc, test_unknown_section);
    tcase_add_test(tc, test_bad_int);
    tcase_add_test(tc, test_bad_double);
    tcase_add_test(tc, test_bad_bool);
    tcase_add_test(tc, test_bad_enum);
    tcase_add_test(tc, test_out_of_range);
    tcase_add_test(tc, test_strings);
    tcase_add_test(tc, test_file_errors);
    tcase_add_test(tc, test_error_keeps_cfg);
    tcase_add_test(tc, test_malformed_set);
    tcase_add_test(tc, test_set_overrides_file);
    tcase_add_test(tc, test_load_string_errors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(config_suite()); }
