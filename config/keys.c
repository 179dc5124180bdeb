// The key table: every configuration key's section, name, type, place in cfg_t, default,
// range and doc string, and the per-value code (parse, range check, store, load, format)
// that defaults, INI parsing, `--set`, validation and the writers in config.c all go through.
#include "config/keys.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/status.h"

static const enum_name router_names[] = {
    {"softmax", CFG_ROUTER_SOFTMAX}, {"sigmoid", CFG_ROUTER_SIGMOID}, {NULL, 0}};
static const enum_name source_names[] = {
    {"synthetic", CFG_DATA_SYNTHETIC}, {"hdf5", CFG_DATA_HDF5}, {NULL, 0}};
static const enum_name resume_names[] = {
    {"never", CFG_RESUME_NEVER}, {"auto", CFG_RESUME_AUTO}, {NULL, 0}};
static const enum_name dispatcher_names[] = {{"alltoallv", CFG_DISPATCH_ALLTOALLV},
                                             {"alltoallv_chunked", CFG_DISPATCH_ALLTOALLV_CHUNKED},
                                             {"ring", CFG_DISPATCH_RING},
                                             {"auto", CFG_DISPATCH_AUTO},
                                             {NULL, 0}};
static const enum_name chunk_axis_names[] = {
    {"tokens", CFG_CHUNK_TOKENS}, {"embed", CFG_CHUNK_EMBED}, {NULL, 0}};
static const enum_name progress_names[] = {{"auto", CFG_PROGRESS_AUTO},
                                           {"test", CFG_PROGRESS_TEST},
                                           {"thread", CFG_PROGRESS_THREAD},
                                           {NULL, 0}};
static const enum_name isa_names[] = {{"auto", CFG_ISA_AUTO},
                                      {"ref", CFG_ISA_REF},
                                      {"avx2", CFG_ISA_AVX2},
                                      {"avx512", CFG_ISA_AVX512},
                                      {NULL, 0}};
static const enum_name prepack_names[] = {{"off", CFG_PREPACK_OFF},
                                          {"forward", CFG_PREPACK_FORWARD},
                                          {"all", CFG_PREPACK_ALL},
                                          {NULL, 0}};

// The section and key names are the cfg_t member names, so they are spelled once.
#define FIELD(sec, name) #sec, #name
#define WHERE(sec, name) offsetof(cfg_t, sec.name), sizeof(((cfg_t*)0)->sec.name)
#define INT(sec, name, def, lo, hi, doc)                                                           \
    { FIELD(sec, name), K_INT, WHERE(sec, name), def, lo, hi, 0, NULL, doc }
#define LONG(sec, name, def, lo, hi, doc)                                                          \
    { FIELD(sec, name), K_LONG, WHERE(sec, name), def, lo, hi, 0, NULL, doc }
#define DBL(sec, name, def, lo, hi, flags, doc)                                                    \
    { FIELD(sec, name), K_DOUBLE, WHERE(sec, name), def, lo, hi, flags, NULL, doc }
#define BOOL(sec, name, def, doc)                                                                  \
    { FIELD(sec, name), K_BOOL, WHERE(sec, name), def, 0, 1, 0, NULL, doc }
#define ENUM(sec, name, def, names, doc)                                                           \
    { FIELD(sec, name), K_ENUM, WHERE(sec, name), def, 0, 0, 0, names, doc }
#define STR(sec, name, def, minlen, doc)                                                           \
    { FIELD(sec, name), K_STR, WHERE(sec, name), def, minlen, CFG_STR_MAX, 0, NULL, doc }

const cfg_key cfg_keys[] = {
    INT(model, d_model, "32", 1, 65536, "hidden size d of the token vectors"),
    INT(model, d_ff, "64", 1, 1 << 20, "expert FFN inner size f"),
    INT(model, n_experts, "8", 1, 4096,
        "routed experts per layer E; must divide by the rank count"),
    INT(model, top_k, "2", 1, 4096, "experts per token k; <= n_experts"),
    INT(model, n_layers, "1", 1, 1024, "MoE layers L"),
    BOOL(model, residual, "true", "pre-norm residual stack (false: bare stacked layers)"),
    ENUM(model, router, "softmax", router_names, "router score function"),
    BOOL(model, norm_topk, "true", "renormalise the k gate weights to sum to 1"),
    DBL(model, routed_scaling, "1.0", 0, INFINITY, LO_OPEN, "factor on the routed gate weights"),
    INT(model, n_groups, "1", 1, 4096, "expert groups for group-limited routing (1 = off)"),
    INT(model, topk_groups, "1", 1, 4096, "groups kept eligible per token; <= n_groups"),
    DBL(model, capacity_factor, "0.0", 0, INFINITY, 0,
        "expert capacity c: each expert keeps at most ceil(c*T*k/E) slots a step (0: dropless)"),
    INT(model, n_shared_experts, "0", 0, 64,
        "shared dense SwiGLU experts every token passes through (replicated on every rank)"),

    INT(train, global_batch_tokens, "256", 1, 1 << 30,
        "tokens per step over all ranks T; must divide by the rank count"),
    INT(train, steps, "300", 1, 1000000000, "optimizer steps"),
    DBL(train, lr, "0.003", 0, INFINITY, 0, "peak learning rate"),
    DBL(train, lr_min, "0.0003", 0, INFINITY, 0, "final learning rate of the cosine decay; <= lr"),
    INT(train, warmup_steps, "20", 0, 1000000000, "linear warm-up steps; <= steps"),
    DBL(train, weight_decay, "0.0", 0, INFINITY, 0, "AdamW decoupled weight decay"),
    DBL(train, beta1, "0.9", 0, 1, HI_OPEN, "AdamW beta1"),
    DBL(train, beta2, "0.95", 0, 1, HI_OPEN, "AdamW beta2"),
    DBL(train, eps, "1e-08", 0, INFINITY, LO_OPEN, "AdamW epsilon"),
    DBL(train, clip, "1.0", 0, INFINITY, 0, "global gradient-norm clip (0 = off)"),
    DBL(train, aux_loss_coef, "0.01", 0, INFINITY, 0, "load-balancing loss coefficient alpha"),
    DBL(train, z_loss_coef, "0.001", 0, INFINITY, 0, "router z-loss coefficient beta"),
    DBL(train, bias_update_rate, "0.0", 0, INFINITY, 0,
        "aux-loss-free balancing bias step gamma (0 = off)"),
    LONG(train, seed, "1234", 0, INFINITY, "seed of the weight initialisation"),

    ENUM(data, source, "synthetic", source_names,
         "where the training tokens come from (hdf5: /x and /y of data.path)"),
    STR(data, path, "", 0, "HDF5 file with float32 /x and /y [N, d_model] (data.source = hdf5)"),
    LONG(data, teacher_seed, "4321", 0, INFINITY,
         "seed of the synthetic teacher MoE and of its inputs x"),
    INT(data, teacher_experts, "1", 1, 4096,
        "experts of the synthetic teacher (1: a dense SwiGLU teacher, the easiest target)"),
    INT(data, teacher_top_k, "1", 1, 4096, "teacher experts per token; <= teacher_experts"),
    INT(data, teacher_d_ff, "16", 1, 65536, "hidden width of each teacher expert"),
    DBL(data, skew, "0.0", 0, INFINITY, 0,
        "synthetic inputs are N(0,1) + skew*u for one fixed random direction u: skews routing"),

    STR(checkpoint, dir, "checkpoints", 1,
        "checkpoint directory; a relative path is taken inside run.dir"),
    INT(checkpoint, every, "0", 0, 1000000000,
        "steps between checkpoints (0: only at the end and on stop signals)"),
    INT(checkpoint, keep, "3", 1, 1000000, "newest step files kept; older ones are deleted"),
    ENUM(checkpoint, resume, "never", resume_names,
         "auto: continue from the checkpoint LATEST names (or the newest valid one)"),

    ENUM(comm, dispatcher, "alltoallv", dispatcher_names,
         "token dispatch/combine: alltoallv (blocking); alltoallv_chunked (comm.chunks "
         "nonblocking exchanges overlapped with the experts; bit-identical to alltoallv); ring "
         "(all-gather tokens, every rank runs its experts on all of them, partial outputs "
         "reduce-scattered; the per-rank partial sums reorder each token's k-slot sum, so "
         "results match alltoallv within 1e-5 relative, bit-identical run to run at a fixed "
         "rank count); auto (times each on the first batch, keeps the fastest)"),
    INT(comm, chunks, "4", 1, 256,
        "chunks of the local tokens (alltoallv_chunked; <= the local tokens) or slices of "
        "d_model (ring with chunk_axis = embed; <= d_model); need not divide them"),
    ENUM(comm, chunk_axis, "tokens", chunk_axis_names,
         "ring: tokens (one rank's token block per ring step) or embed (tokens all-gathered in "
         "d_model slices, gmm_up accumulated per slice while the next is in flight)"),
    ENUM(comm, progress, "auto", progress_names,
         "who drives the nonblocking exchanges of alltoallv_chunked and ring: test (MPI_Test "
         "between the compute's kernel tiles, on the computing core); thread (one progress "
         "thread per rank, idle when nothing is in flight; needs MPI_THREAD_MULTIPLE and a free "
         "core); auto (thread when ranks on the node x (compute.threads + 1) fit the cores the "
         "rank may run on, else test). Never changes a result"),

    ENUM(compute, isa, "auto", isa_names,
         "kernel ISA (auto: the best the CPU supports, at most MOED_MAX_ISA; the environment's "
         "MOED_ISA overrides this key)"),
    INT(compute, threads, "1", 1, 1024, "threads per rank"),
    ENUM(compute, prepack, "off", prepack_names,
         "expert weights kept packed in the kernels' layout, repacked by the optimizer as it "
         "updates them: off (packed on the fly in every product; measured faster for training "
         "here and on AVX-512); forward (copies for the two forward products: +1x the expert "
         "weights' memory); all (also for the backward dA and dX products: +2x). Same results "
         "either way. With alltoallv_chunked, all spares every chunk's products a repack of "
         "the weights (README, Performance)"),

    INT(log, every, "10", 1, 1000000000, "steps between progress lines"),
    INT(log, dead_expert_steps, "100", 0, 1000000000,
        "warn when an expert has received no tokens for this many steps in a row (0: never)"),

    STR(run, dir, "run", 1, "run directory (metrics.jsonl is written here)"),
};
const size_t cfg_nkeys = sizeof(cfg_keys) / sizeof(cfg_keys[0]);

// ----------------------------------------------------------------------------------------
// small helpers

void cfg_set_err(char* err, size_t errlen, const char* fmt, ...) {
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static const cfg_key* find_key(const char* section, const char* name) {
    for (size_t i = 0; i < cfg_nkeys; i++)
        if (!strcmp(cfg_keys[i].section, section) && !strcmp(cfg_keys[i].name, name))
            return &cfg_keys[i];
    return NULL;
}

int cfg_section_known(const char* section) {
    for (size_t i = 0; i < cfg_nkeys; i++)
        if (!strcmp(cfg_keys[i].section, section)) return 1;
    return 0;
}

// Shortest %.Ng that reads back as the same double, so written configs stay readable
// ("0.003", not "0.0030000000000000001") and still round-trip exactly.
static void fmt_double(double d, char* buf, size_t n) {
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, d);
        if (strtod(buf, NULL) == d) return;
    }
}

static void fmt_bound(double b, char* buf, size_t n) {
    if (isinf(b))
        snprintf(buf, n, "%sinf", b < 0 ? "-" : "");
    else
        fmt_double(b, buf, n);
}

static void fmt_enums(const cfg_key* k, char* buf, size_t n) {
    size_t used = 0;
    buf[0] = '\0';
    for (const enum_name* e = k->enums; e->name && used < n; e++)
        used += snprintf(buf + used, n - used, "%s%s", e == k->enums ? "" : ", ", e->name);
}

// The accepted values of a key in words: "[1, 4096]", "(0, inf)", "softmax, sigmoid", ...
void cfg_fmt_range(const cfg_key* k, char* buf, size_t n) {
    char lo[32], hi[32];
    fmt_bound(k->lo, lo, sizeof lo);
    fmt_bound(k->hi, hi, sizeof hi);
    switch (k->type) {
    case K_BOOL: snprintf(buf, n, "true, false"); break;
    case K_ENUM: fmt_enums(k, buf, n); break;
    case K_STR: snprintf(buf, n, "%s to %s characters", lo, hi); break;
    default:
        snprintf(buf, n, "%c%s, %s%c", (k->flags & LO_OPEN) ? '(' : '[', lo, hi,
                 (k->flags & HI_OPEN) || isinf(k->hi) ? ')' : ']');
    }
}

const char* cfg_type_name(key_type t) {
    static const char* names[] = {"integer", "integer", "number", "bool", "enum", "string"};
    return names[t];
}

// ----------------------------------------------------------------------------------------
// parsing one value: text -> value (syntax), then value -> range check, then store

// 0: ok, -1: not an integer, -2: an integer too big for a long.
static int parse_long(const char* s, long* out) {
    char* end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end != '\0') return -1;
    if (errno == ERANGE) return -2;
    *out = v;
    return 0;
}

static int parse_bool(const char* s, long* out) {
    static const char* yes[] = {"true", "1", "yes", "on"};
    static const char* no[] = {"false", "0", "no", "off"};
    for (int i = 0; i < 4; i++) {
        if (!strcasecmp(s, yes[i])) return *out = 1, 0;
        if (!strcasecmp(s, no[i])) return *out = 0, 0;
    }
    return -1;
}

// Strings must survive cfg_write_ini -> libinih unchanged: inih trims surrounding blanks
// and cuts a value at " ;" (inline comment), and a line cannot hold a newline.
static const char* bad_string(const char* s) {
    size_t n = strlen(s);
    if (n && (isspace((unsigned char)s[0]) || isspace((unsigned char)s[n - 1])))
        return "leading or trailing whitespace";
    if (s[0] == ';') return "starts with ';'";
    for (size_t i = 0; i < n; i++) {
        if (iscntrl((unsigned char)s[i])) return "contains a control character";
        if (s[i] == ';' && i > 0 && isspace((unsigned char)s[i - 1]))
            return "contains ' ;' (an INI comment)";
    }
    return NULL;
}

static int parse_value(const cfg_key* k, const char* s, cfg_value* v, char* why, size_t n) {
    switch (k->type) {
    case K_INT: // check_entry keeps int ranges inside int, so check_value guards the cast
    case K_LONG: {
        int rc = parse_long(s, &v->i);
        if (rc == -1) return cfg_set_err(why, n, "not an integer"), -1;
        if (rc == -2) return cfg_set_err(why, n, "out of range"), -1;
        return 0;
    }
    case K_DOUBLE: {
        char* end;
        v->d = strtod(s, &end);
        if (end == s || *end != '\0') return cfg_set_err(why, n, "not a number"), -1;
        if (!isfinite(v->d)) return cfg_set_err(why, n, "not a finite number"), -1;
        return 0;
    }
    case K_BOOL:
        if (parse_bool(s, &v->i))
            return cfg_set_err(why, n, "not a boolean (true/false, yes/no, on/off, 1/0)"), -1;
        return 0;
    case K_ENUM: {
        for (const enum_name* e = k->enums; e->name; e++)
            if (!strcasecmp(s, e->name)) return v->i = e->value, 0;
        char names[256];
        fmt_enums(k, names, sizeof names);
        return cfg_set_err(why, n, "must be one of: %s", names), -1;
    }
    case K_STR: {
        const char* bad = bad_string(s);
        if (bad) return cfg_set_err(why, n, "%s", bad), -1;
        v->s = s;
        return 0;
    }
    }
    return -1;
}

int cfg_check_value(const cfg_key* k, cfg_value v, char* why, size_t n) {
    double x;
    switch (k->type) {
    case K_INT:
    case K_LONG: x = (double)v.i; break;
    case K_DOUBLE: x = v.d; break;
    case K_STR: x = (double)strlen(v.s); break;
    default: return 0; // bool and enum were checked by parse_value
    }
    int lo_ok = (k->flags & LO_OPEN) ? x > k->lo : x >= k->lo;
    int hi_ok = (k->flags & HI_OPEN) ? x < k->hi : x <= k->hi;
    if (lo_ok && hi_ok) return 0;
    char range[64];
    cfg_fmt_range(k, range, sizeof range);
    if (k->type == K_STR)
        cfg_set_err(why, n, "length %zu is outside %s", strlen(v.s), range);
    else
        cfg_set_err(why, n, "out of range %s", range);
    return -1;
}

int cfg_enum_known(const cfg_key* k, long v) {
    for (const enum_name* e = k->enums; e->name; e++)
        if (e->value == v) return 1;
    return 0;
}

static void store(cfg_t* c, const cfg_key* k, cfg_value v) {
    char* p = (char*)c + k->off;
    switch (k->type) {
    case K_LONG: *(long*)p = v.i; break;
    case K_DOUBLE: *(double*)p = v.d; break;
    case K_STR: strncpy(p, v.s, k->size); break; // zero-fills the tail: stable bytes
    default: *(int*)p = (int)v.i; break;
    }
}

cfg_value cfg_value_load(const cfg_t* c, const cfg_key* k) {
    const char* p = (const char*)c + k->off;
    cfg_value v = {0, 0, NULL};
    switch (k->type) {
    case K_LONG: v.i = *(const long*)p; break;
    case K_DOUBLE: v.d = *(const double*)p; break;
    case K_STR: v.s = p; break;
    default: v.i = *(const int*)p; break;
    }
    return v;
}

void cfg_fmt_value(const cfg_key* k, cfg_value v, char* buf, size_t n) {
    switch (k->type) {
    case K_DOUBLE: fmt_double(v.d, buf, n); break;
    case K_BOOL: snprintf(buf, n, "%s", v.i ? "true" : "false"); break;
    case K_STR: snprintf(buf, n, "%s", v.s); break;
    case K_ENUM:
        snprintf(buf, n, "%ld", v.i); // only for corrupt values; names are found below
        for (const enum_name* e = k->enums; e->name; e++)
            if (e->value == v.i) snprintf(buf, n, "%s", e->name);
        break;
    default: snprintf(buf, n, "%ld", v.i); break;
    }
}

int cfg_assign(cfg_t* c, const char* where, const char* section, const char* name, const char* text,
               char* err, size_t errlen) {
    if (!section[0]) {
        cfg_set_err(err, errlen, "%s: key '%s' is outside any [section]", where, name);
        return MOED_ERR_CONFIG;
    }
    if (!cfg_section_known(section)) {
        cfg_set_err(err, errlen, "%s: unknown section [%s]", where, section);
        return MOED_ERR_CONFIG;
    }
    const cfg_key* k = find_key(section, name);
    if (!k) {
        cfg_set_err(err, errlen, "%s: unknown key '%s.%s' in section [%s]", where, section, name,
                    section);
        return MOED_ERR_CONFIG;
    }
    cfg_value v;
    char why[320];
    if (parse_value(k, text, &v, why, sizeof why) || cfg_check_value(k, v, why, sizeof why)) {
        cfg_set_err(err, errlen, "%s: %s.%s = \"%.80s\": %s", where, section, name, text, why);
        return MOED_ERR_CONFIG;
    }
    store(c, k, v);
    return MOED_OK;
}

// ----------------------------------------------------------------------------------------
// defaults

// A table entry whose field size does not match its type, or whose default is invalid, is a
// bug in the table above; the first unit test (and the first run) stops on it.
static void check_entry(const cfg_key* k, cfg_value* v) {
    static const size_t sizes[] = {sizeof(int), sizeof(long), sizeof(double),
                                   sizeof(int), sizeof(int),  0};
    char why[320] = "field size does not match the type";
    int ok = k->type == K_STR ? k->size > (size_t)k->hi : k->size == sizes[k->type];
    if (k->type == K_INT) ok = ok && k->lo >= INT_MIN && k->hi <= INT_MAX;
    if (ok)
        ok =
            !parse_value(k, k->def, v, why, sizeof why) && !cfg_check_value(k, *v, why, sizeof why);
    if (ok) return;
    fprintf(stderr, "moed: config table: %s.%s: %s\n", k->section, k->name, why);
    abort();
}

void cfg_defaults(cfg_t* c) {
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < cfg_nkeys; i++) {
        cfg_value v;
        check_entry(&cfg_keys[i], &v);
        store(c, &cfg_keys[i], v);
    }
}
