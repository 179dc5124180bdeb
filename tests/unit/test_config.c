// Unit tests of config/: defaults, INI parsing, --set, every error class, cross-key and
// rank-count validation, the INI round trip and the Markdown reference.
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"
#include "config/status.h"

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

static char err[CFG_ERRLEN];
static char tmp_path[64];

// Writes `text` to a fresh temporary file; returns its path (valid until the next call).
static const char* write_tmp(const char* text) {
    snprintf(tmp_path, sizeof tmp_path, "/tmp/moed_test_config_XXXXXX");
    int fd = mkstemp(tmp_path);
    ck_assert_int_ge(fd, 0);
    FILE* f = fdopen(fd, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    return tmp_path;
}

// Loads `text` as a file on top of the defaults; returns the rc, leaves the message in err.
static int load_text(cfg_t* c, const char* text) {
    cfg_defaults(c);
    err[0] = '\0';
    const char* path = write_tmp(text);
    int rc = cfg_load_file(c, path, err, sizeof err);
    unlink(path);
    return rc;
}

static void assert_has(const char* msg, const char* part) {
    ck_assert_msg(strstr(msg, part) != NULL, "message \"%s\" lacks \"%s\"", msg, part);
}

static void assert_one_line(const char* msg) {
    ck_assert_msg(msg[0] != '\0', "empty error message");
    ck_assert_msg(strchr(msg, '\n') == NULL, "message \"%s\" has a newline", msg);
}

// A file error: rc 2, one line, names the file and `part` (the key or the problem).
static void expect_file_error(const char* text, const char* part) {
    cfg_t c;
    int rc = load_text(&c, text);
    ck_assert_msg(rc == MOED_ERR_CONFIG, "rc %d for:\n%s", rc, text);
    assert_one_line(err);
    assert_has(err, tmp_path);
    assert_has(err, part);
}

// A --set error on top of the defaults: rc 2, names the assignment and `part`.
static void expect_set_error(const char* assignment, const char* part) {
    cfg_t c;
    cfg_defaults(&c);
    err[0] = '\0';
    int rc = cfg_set(&c, assignment, err, sizeof err);
    ck_assert_msg(rc == MOED_ERR_CONFIG, "rc %d for --set %s", rc, assignment);
    assert_one_line(err);
    assert_has(err, "--set ");
    assert_has(err, part);
}

static void set_ok(cfg_t* c, const char* assignment) {
    int rc = cfg_set(c, assignment, err, sizeof err);
    ck_assert_msg(rc == 0, "--set %s: %s", assignment, err);
}

// cfg_validate must fail with a message containing `part`.
static void expect_invalid(const cfg_t* c, int nranks, const char* part) {
    err[0] = '\0';
    int rc = cfg_validate(c, nranks, err, sizeof err);
    ck_assert_msg(rc == MOED_ERR_CONFIG, "validate passed, expected \"%s\"", part);
    assert_one_line(err);
    assert_has(err, part);
}

static void expect_valid(const cfg_t* c, int nranks) {
    int rc = cfg_validate(c, nranks, err, sizeof err);
    ck_assert_msg(rc == 0, "validate at %d ranks: %s", nranks, err);
}

// ----------------------------------------------------------------------------------------

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

START_TEST(test_load_string_errors) {
    cfg_t c;
    cfg_defaults(&c);
    int rc = cfg_load_string(&c, "[model]\nd_model = x\n", "ckpt:config", err, sizeof err);
    ck_assert_int_eq(rc, MOED_ERR_CONFIG);
    assert_has(err, "ckpt:config:2: model.d_model = \"x\": not an integer");
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
    else // __FILE__ is <src>/tests/unit/test_config.c under CMake
        snprintf(path, sizeof path, "%.*s%s",
                 (int)(strlen(__FILE__) - strlen("tests/unit/test_config.c")), __FILE__, rel);
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
    Suite* s = suite_create("config");
    TCase* tc = tcase_create("config");
    tcase_add_test(tc, test_defaults);
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
    tcase_add_test(tc, test_cross_key);
    tcase_add_test(tc, test_rank_divisibility);
    tcase_add_test(tc, test_validate_ranges);
    tcase_add_test(tc, test_write_ini_round_trip);
    tcase_add_test(tc, test_load_string_errors);
    tcase_add_test(tc, test_markdown);
    tcase_add_test(tc, test_example_configs);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner* sr = srunner_create(config_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
