// Run configuration. Every key lives in one static table (`keys` below): its section, name,
// type, place in cfg_t, default, range and doc string. Defaults, INI parsing (libinih),
// `--set` overrides, range checks, the INI writer and the Markdown reference are all loops
// over that table, so adding a key is one line here and nothing else.
//
// Parsing rules worth knowing (also in the README's Configuration section):
// - unknown sections and unknown keys are errors; a key given twice: the last one wins;
// - leading whitespace on a line is ignored (inih's multi-line continuation is not used);
// - comments start a line with ';' or '#', or follow a value as " ; comment";
// - a line holds at most CFG_LINE_MAX characters (libinih's fixed line buffer).
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/status.h"

// libinih reads a line into a buffer of INI_MAX_LINE bytes; our reader rejects longer lines
// instead of letting inih split them into two.
#define CFG_LINE_MAX (INI_MAX_LINE - 1)
// Longest string value: must fit on one INI line as "name = value" so that cfg_write_ini
// output always parses back (checkpoints store it and `moed forward` re-reads it).
#define CFG_STR_MAX 160
_Static_assert(CFG_STR_MAX + 32 <= CFG_LINE_MAX, "string values must fit on one INI line");

typedef enum { K_INT, K_LONG, K_DOUBLE, K_BOOL, K_ENUM, K_STR } key_type;

// Range flags: an open bound excludes the bound itself, e.g. beta1 in [0, 1).
enum { LO_OPEN = 1, HI_OPEN = 2 };

typedef struct {
    const char* name;
    int value;
} enum_name;

typedef struct {
    const char* section;
    const char* name;
    key_type type;
    size_t off, size;       // where the field is in cfg_t and how big it is
    const char* def;        // default, parsed by the same code as a file value
    double lo, hi;          // numbers: value range; strings: length range
    int flags;              // LO_OPEN | HI_OPEN
    const enum_name* enums; // K_ENUM: allowed names, ended by {NULL, 0}
    const char* doc;
} cfg_key;

// A parsed value before it is range-checked and stored: int, long, bool and enum share `i`.
typedef struct {
    long i;
    double d;
    const char* s;
} value;

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

static const cfg_key keys[] = {
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

    ENUM(compute, isa, "auto", isa_names, "kernel ISA (auto: best the CPU supports)"),
    INT(compute, threads, "1", 1, 1024, "threads per rank"),
    ENUM(compute, prepack, "off", prepack_names,
         "expert weights kept packed in the kernels' layout, repacked by the optimizer as it "
         "updates them: off (packed on the fly in every product; measured faster for training "
         "here and on AVX-512); forward (copies for the two forward products: +1x the expert "
         "weights' memory); all (also for the backward dA and dX products: +2x). Same results "
         "either way"),

    INT(log, every, "10", 1, 1000000000, "steps between progress lines"),
    INT(log, dead_expert_steps, "100", 0, 1000000000,
        "warn when an expert has received no tokens for this many steps in a row (0: never)"),

    STR(run, dir, "run", 1, "run directory (metrics.jsonl is written here)"),
};
#define NKEYS (sizeof(keys) / sizeof(keys[0]))

// ----------------------------------------------------------------------------------------
// small helpers

static void set_err(char* err, size_t errlen, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char* err, size_t errlen, const char* fmt, ...) {
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static const cfg_key* find_key(const char* section, const char* name) {
    for (size_t i = 0; i < NKEYS; i++)
        if (!strcmp(keys[i].section, section) && !strcmp(keys[i].name, name)) return &keys[i];
    return NULL;
}

static int section_known(const char* section) {
    for (size_t i = 0; i < NKEYS; i++)
        if (!strcmp(keys[i].section, section)) return 1;
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
static void fmt_range(const cfg_key* k, char* buf, size_t n) {
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

static const char* type_name(key_type t) {
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

static int parse_value(const cfg_key* k, const char* s, value* v, char* why, size_t n) {
    switch (k->type) {
    case K_INT: // check_entry keeps int ranges inside int, so check_value guards the cast
    case K_LONG: {
        int rc = parse_long(s, &v->i);
        if (rc == -1) return set_err(why, n, "not an integer"), -1;
        if (rc == -2) return set_err(why, n, "out of range"), -1;
        return 0;
    }
    case K_DOUBLE: {
        char* end;
        v->d = strtod(s, &end);
        if (end == s || *end != '\0') return set_err(why, n, "not a number"), -1;
        if (!isfinite(v->d)) return set_err(why, n, "not a finite number"), -1;
        return 0;
    }
    case K_BOOL:
        if (parse_bool(s, &v->i))
            return set_err(why, n, "not a boolean (true/false, yes/no, on/off, 1/0)"), -1;
        return 0;
    case K_ENUM: {
        for (const enum_name* e = k->enums; e->name; e++)
            if (!strcasecmp(s, e->name)) return v->i = e->value, 0;
        char names[256];
        fmt_enums(k, names, sizeof names);
        return set_err(why, n, "must be one of: %s", names), -1;
    }
    case K_STR: {
        const char* bad = bad_string(s);
        if (bad) return set_err(why, n, "%s", bad), -1;
        v->s = s;
        return 0;
    }
    }
    return -1;
}

static int check_value(const cfg_key* k, value v, char* why, size_t n) {
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
    fmt_range(k, range, sizeof range);
    if (k->type == K_STR)
        set_err(why, n, "length %zu is outside %s", strlen(v.s), range);
    else
        set_err(why, n, "out of range %s", range);
    return -1;
}

static void store(cfg_t* c, const cfg_key* k, value v) {
    char* p = (char*)c + k->off;
    switch (k->type) {
    case K_LONG: *(long*)p = v.i; break;
    case K_DOUBLE: *(double*)p = v.d; break;
    case K_STR: strncpy(p, v.s, k->size); break; // zero-fills the tail: stable bytes
    default: *(int*)p = (int)v.i; break;
    }
}

static value load(const cfg_t* c, const cfg_key* k) {
    const char* p = (const char*)c + k->off;
    value v = {0, 0, NULL};
    switch (k->type) {
    case K_LONG: v.i = *(const long*)p; break;
    case K_DOUBLE: v.d = *(const double*)p; break;
    case K_STR: v.s = p; break;
    default: v.i = *(const int*)p; break;
    }
    return v;
}

static void fmt_value(const cfg_key* k, value v, char* buf, size_t n) {
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

// Applies `section.name = text` to *c. `where` ("file:line" or "--set a=b") starts the
// error message.
static int assign(cfg_t* c, const char* where, const char* section, const char* name,
                  const char* text, char* err, size_t errlen) {
    if (!section[0]) {
        set_err(err, errlen, "%s: key '%s' is outside any [section]", where, name);
        return MOED_ERR_CONFIG;
    }
    if (!section_known(section)) {
        set_err(err, errlen, "%s: unknown section [%s]", where, section);
        return MOED_ERR_CONFIG;
    }
    const cfg_key* k = find_key(section, name);
    if (!k) {
        set_err(err, errlen, "%s: unknown key '%s.%s' in section [%s]", where, section, name,
                section);
        return MOED_ERR_CONFIG;
    }
    value v;
    char why[320];
    if (parse_value(k, text, &v, why, sizeof why) || check_value(k, v, why, sizeof why)) {
        set_err(err, errlen, "%s: %s.%s = \"%.80s\": %s", where, section, name, text, why);
        return MOED_ERR_CONFIG;
    }
    store(c, k, v);
    return MOED_OK;
}

// ----------------------------------------------------------------------------------------
// defaults

// A table entry whose field size does not match its type, or whose default is invalid, is a
// bug in the table above; the first unit test (and the first run) stops on it.
static void check_entry(const cfg_key* k, value* v) {
    static const size_t sizes[] = {sizeof(int), sizeof(long), sizeof(double),
                                   sizeof(int), sizeof(int),  0};
    char why[320] = "field size does not match the type";
    int ok = k->type == K_STR ? k->size > (size_t)k->hi : k->size == sizes[k->type];
    if (k->type == K_INT) ok = ok && k->lo >= INT_MIN && k->hi <= INT_MAX;
    if (ok)
        ok = !parse_value(k, k->def, v, why, sizeof why) && !check_value(k, *v, why, sizeof why);
    if (ok) return;
    fprintf(stderr, "moed: config table: %s.%s: %s\n", k->section, k->name, why);
    abort();
}

void cfg_defaults(cfg_t* c) {
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < NKEYS; i++) {
        value v;
        check_entry(&keys[i], &v);
        store(c, &keys[i], v);
    }
    // Fields of features that are not implemented yet: not in the table, so not settable.
}

// ----------------------------------------------------------------------------------------
// INI files and strings, through libinih with our own line reader

typedef struct {
    cfg_t* c;
    const char* name; // file name used in messages
    FILE* f;          // either a file ...
    const char* s;    // ... or a NUL-terminated string
    int line;         // lines handed to inih so far == inih's line number
    int read_errno;   // errno of a failed read, 0 if none
    int failed;       // first error recorded in err; parsing stops
    int err_line;
    char err[CFG_ERRLEN];
} ini_ctx;

static int next_char(ini_ctx* x) {
    if (x->f) {
        int ch = getc(x->f);
        if (ch == EOF && ferror(x->f)) x->read_errno = errno ? errno : EIO;
        return ch;
    }
    return *x->s ? (unsigned char)*x->s++ : EOF;
}

static void ctx_fail(ini_ctx* x, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
static void ctx_fail(ini_ctx* x, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->err, sizeof x->err, fmt, ap);
    va_end(ap);
    x->failed = 1;
    x->err_line = x->line;
}

// Sections with no keys never reach the handler, so the reader checks section headers.
static int check_section_line(ini_ctx* x, const char* line) {
    const char* end = strchr(line, ']');
    if (line[0] != '[' || !end) return 0; // not a section, or inih reports the syntax
    char section[64];
    snprintf(section, sizeof section, "%.*s", (int)(end - line - 1), line + 1);
    if (section_known(section)) return 0;
    ctx_fail(x, "%s:%d: unknown section [%s]", x->name, x->line, section);
    return -1;
}

// ini_reader: hands inih one line at a time, without leading blanks (so an indented key is
// a key, not a continuation of the previous value), and refuses lines inih would split.
static char* read_line(char* buf, int num, void* stream) {
    ini_ctx* x = stream;
    if (x->failed) return NULL;
    int len = 0, ch;
    while ((ch = next_char(x)) != EOF && ch != '\n') {
        if (len < num - 1) buf[len] = (char)ch;
        len++;
    }
    if (ch == EOF && len == 0) return NULL;
    x->line++;
    if (len > num - 1) {
        ctx_fail(x, "%s:%d: line longer than %d characters", x->name, x->line, num - 1);
        return NULL;
    }
    buf[len] = '\0';
    char* p = buf;
    if (x->line == 1 && !strncmp(p, "\xEF\xBB\xBF", 3)) p += 3; // UTF-8 byte order mark
    while (*p == ' ' || *p == '\t') p++;
    memmove(buf, p, strlen(p) + 1);
    return check_section_line(x, buf) ? NULL : buf;
}

static int on_key(void* user, const char* section, const char* name, const char* value) {
    ini_ctx* x = user;
    char where[CFG_ERRLEN];
    snprintf(where, sizeof where, "%s:%d", x->name, x->line);
    if (assign(x->c, where, section, name, value, x->err, sizeof x->err) == MOED_OK) return 1;
    x->failed = 1;
    x->err_line = x->line;
    return 0;
}

// Parses into a copy so that *c is untouched when the input has an error.
static int parse_ini(ini_ctx* x, cfg_t* c, char* err, size_t errlen) {
    cfg_t tmp = *c;
    x->c = &tmp;
    int ret = ini_parse_stream(read_line, x, on_key, x);
    if (x->read_errno) {
        set_err(err, errlen, "%s: read error: %s", x->name, strerror(x->read_errno));
        return MOED_ERR_CONFIG;
    }
    // inih returns the first line it could not parse; report whichever error came first.
    if (ret > 0 && (!x->failed || ret < x->err_line)) {
        set_err(err, errlen, "%s:%d: syntax error: expected '[section]' or 'key = value'", x->name,
                ret);
        return MOED_ERR_CONFIG;
    }
    if (x->failed) {
        set_err(err, errlen, "%s", x->err);
        return MOED_ERR_CONFIG;
    }
    if (ret < 0) {
        set_err(err, errlen, "%s: cannot parse (inih error %d)", x->name, ret);
        return MOED_ERR_CONFIG;
    }
    *c = tmp;
    return MOED_OK;
}

int cfg_load_file(cfg_t* c, const char* path, char* err, size_t errlen) {
    ini_ctx x = {.name = path};
    x.f = fopen(path, "r");
    if (!x.f) {
        set_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return MOED_ERR_CONFIG;
    }
    int rc = parse_ini(&x, c, err, errlen);
    fclose(x.f);
    return rc;
}

int cfg_load_string(cfg_t* c, const char* text, const char* name, char* err, size_t errlen) {
    ini_ctx x = {.name = name, .s = text};
    return parse_ini(&x, c, err, errlen);
}

// ----------------------------------------------------------------------------------------
// --set section.key=value

static char* trim(char* s) {
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = '\0';
    return s;
}

int cfg_set(cfg_t* c, const char* assignment, char* err, size_t errlen) {
    char where[256];
    snprintf(where, sizeof where, "--set %.200s", assignment);
    char* copy = strdup(assignment);
    if (!copy) {
        set_err(err, errlen, "%s: out of memory", where);
        return MOED_ERR_OTHER;
    }
    char* eq = strchr(copy, '=');
    char* dot = eq ? memchr(copy, '.', (size_t)(eq - copy)) : NULL;
    int rc = MOED_ERR_CONFIG;
    if (!dot) {
        set_err(err, errlen, "%s: expected section.key=value", where);
    } else {
        *eq = *dot = '\0';
        char *section = trim(copy), *name = trim(dot + 1);
        if (!section[0] || !name[0])
            set_err(err, errlen, "%s: expected section.key=value", where);
        else
            rc = assign(c, where, section, name, trim(eq + 1), err, errlen);
    }
    free(copy);
    return rc;
}

// ----------------------------------------------------------------------------------------
// cross-key and rank-count checks

#define FAIL(...) return set_err(err, errlen, __VA_ARGS__), MOED_ERR_CONFIG

static int enum_known(const cfg_key* k, long v) {
    for (const enum_name* e = k->enums; e->name; e++)
        if (e->value == v) return 1;
    return 0;
}

// The per-key checks again, for a cfg_t that was filled in by code rather than parsed.
static int validate_ranges(const cfg_t* c, char* err, size_t errlen) {
    for (size_t i = 0; i < NKEYS; i++) {
        const cfg_key* k = &keys[i];
        value v = load(c, k);
        char why[320];
        int bad = 0;
        if (k->type == K_STR && !memchr(v.s, '\0', k->size))
            bad = (set_err(why, sizeof why, "not NUL-terminated"), 1);
        else if (k->type == K_DOUBLE && !isfinite(v.d))
            bad = (set_err(why, sizeof why, "not a finite number"), 1);
        else if (k->type == K_BOOL && v.i != 0 && v.i != 1)
            bad = (set_err(why, sizeof why, "not a boolean"), 1);
        else if (k->type == K_ENUM && !enum_known(k, v.i))
            bad = (set_err(why, sizeof why, "not a known value"), 1);
        else
            bad = check_value(k, v, why, sizeof why) != 0;
        if (bad) {
            char text[256] = "?";
            if (k->type != K_STR || memchr(v.s, '\0', k->size)) fmt_value(k, v, text, sizeof text);
            FAIL("%s.%s (%.80s): %s", k->section, k->name, text, why);
        }
    }
    return MOED_OK;
}

static int validate_model(const cfg_t* c, char* err, size_t errlen) {
    const int E = c->model.n_experts, G = c->model.n_groups;
    if (c->model.top_k > E)
        FAIL("model.top_k (%d) must be <= model.n_experts (%d)", c->model.top_k, E);
    if (E % G != 0) FAIL("model.n_experts (%d) is not divisible by model.n_groups (%d)", E, G);
    if (c->model.topk_groups > G)
        FAIL("model.topk_groups (%d) must be <= model.n_groups (%d)", c->model.topk_groups, G);
    // A group's score is the sum of its two best experts, so a group needs two of them.
    if (G > 1 && E / G < 2)
        FAIL("model.n_groups (%d) leaves %d expert(s) per group; group routing needs >= 2", G,
             E / G);
    const int eligible = c->model.topk_groups * (E / G);
    if (c->model.top_k > eligible)
        FAIL("model.top_k (%d) exceeds the %d experts eligible after group selection "
             "(model.topk_groups %d * %d experts per group)",
             c->model.top_k, eligible, c->model.topk_groups, E / G);
    return MOED_OK;
}

static int validate_train(const cfg_t* c, char* err, size_t errlen) {
    if (c->train.lr_min > c->train.lr)
        FAIL("train.lr_min (%g) must be <= train.lr (%g)", c->train.lr_min, c->train.lr);
    if (c->train.warmup_steps > c->train.steps)
        FAIL("train.warmup_steps (%d) must be <= train.steps (%d)", c->train.warmup_steps,
             c->train.steps);
    if (c->data.source == CFG_DATA_HDF5 && c->data.path[0] == '\0')
        FAIL("data.source = hdf5 needs data.path (an HDF5 file with /x and /y)");
    if (c->data.teacher_top_k > c->data.teacher_experts)
        FAIL("data.teacher_top_k (%d) must be <= data.teacher_experts (%d)", c->data.teacher_top_k,
             c->data.teacher_experts);
    return MOED_OK;
}

// Every rank owns E/P experts and T/P tokens (DESIGN.md §2), both at least one and exact.
static int validate_ranks(const cfg_t* c, int P, char* err, size_t errlen) {
    const int E = c->model.n_experts, T = c->train.global_batch_tokens;
    if (P < 1) FAIL("number of ranks (%d) must be >= 1", P);
    if (E < P)
        FAIL("model.n_experts (%d) is smaller than the number of ranks (%d): every rank needs "
             "at least one expert",
             E, P);
    if (E % P != 0) FAIL("model.n_experts (%d) is not divisible by the number of ranks (%d)", E, P);
    if (T < P)
        FAIL("train.global_batch_tokens (%d) is smaller than the number of ranks (%d): every "
             "rank needs at least one token",
             T, P);
    if (T % P != 0)
        FAIL("train.global_batch_tokens (%d) is not divisible by the number of ranks (%d)", T, P);
    if (c->comm.dispatcher == CFG_DISPATCH_ALLTOALLV_CHUNKED && c->comm.chunks > T / P)
        FAIL("comm.chunks (%d) exceeds the %d local tokens of each of the %d ranks", c->comm.chunks,
             T / P, P);
    if (c->comm.dispatcher == CFG_DISPATCH_RING && c->comm.chunk_axis == CFG_CHUNK_EMBED &&
        c->comm.chunks > c->model.d_model)
        FAIL("comm.chunks (%d) exceeds model.d_model (%d): ring with comm.chunk_axis = embed "
             "slices d_model",
             c->comm.chunks, c->model.d_model);
    return MOED_OK;
}

int cfg_validate(const cfg_t* c, int nranks, char* err, size_t errlen) {
    int rc = validate_ranges(c, err, errlen);
    if (!rc) rc = validate_model(c, err, errlen);
    if (!rc) rc = validate_train(c, err, errlen);
    if (!rc) rc = validate_ranks(c, nranks, err, errlen);
    return rc;
}

// ----------------------------------------------------------------------------------------
// output: INI text and the Markdown reference

typedef struct {
    char* buf;
    size_t len, cap;
    int overflow;
} sbuf;

static void sb_printf(sbuf* b, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf* b, const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    size_t room = b->len < b->cap ? b->cap - b->len : 0;
    int n = vsnprintf(room ? b->buf + b->len : NULL, room, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= room) b->overflow = 1;
    if (n > 0) b->len += (size_t)n;
}

int cfg_write_ini(const cfg_t* c, char* buf, size_t buflen) {
    sbuf b = {buf, 0, buflen, 0};
    if (buflen) buf[0] = '\0';
    for (size_t i = 0; i < NKEYS; i++) {
        const cfg_key* k = &keys[i];
        if (i == 0 || strcmp(k->section, keys[i - 1].section))
            sb_printf(&b, "%s[%s]\n", i ? "\n" : "", k->section);
        char text[256];
        fmt_value(k, load(c, k), text, sizeof text);
        sb_printf(&b, "%s = %s\n", k->name, text);
    }
    return b.overflow ? MOED_ERR_CONFIG : MOED_OK;
}

void cfg_print_markdown(FILE* out) {
    fprintf(out, "| key | type | default | range | description |\n");
    fprintf(out, "|---|---|---|---|---|\n");
    for (size_t i = 0; i < NKEYS; i++) {
        const cfg_key* k = &keys[i];
        char range[256];
        fmt_range(k, range, sizeof range);
        fprintf(out, "| `%s.%s` | %s | `%s` | %s | %s |\n", k->section, k->name, type_name(k->type),
                k->def, range, k->doc);
    }
}
