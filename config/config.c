// Run configuration. Every key lives in one table (`cfg_keys` in keys.c): its section, name,
// type, place in cfg_t, default, range and doc string. Defaults, INI parsing (libinih, here),
// `--set` overrides, range checks, the INI writer and the Markdown reference are all loops
// over that table, so adding a key is one line there and nothing else.
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
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/keys.h"
#include "config/status.h"

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

// Sections with no cfg_keys never reach the handler, so the reader checks section headers.
static int check_section_line(ini_ctx* x, const char* line) {
    const char* end = strchr(line, ']');
    if (line[0] != '[' || !end) return 0; // not a section, or inih reports the syntax
    char section[64];
    snprintf(section, sizeof section, "%.*s", (int)(end - line - 1), line + 1);
    if (cfg_section_known(section)) return 0;
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
    if (cfg_assign(x->c, where, section, name, value, x->err, sizeof x->err) == MOED_OK) return 1;
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
        cfg_set_err(err, errlen, "%s: read error: %s", x->name, strerror(x->read_errno));
        return MOED_ERR_CONFIG;
    }
    // inih returns the first line it could not parse; report whichever error came first.
    if (ret > 0 && (!x->failed || ret < x->err_line)) {
        cfg_set_err(err, errlen, "%s:%d: syntax error: expected '[section]' or 'key = value'",
                    x->name, ret);
        return MOED_ERR_CONFIG;
    }
    if (x->failed) {
        cfg_set_err(err, errlen, "%s", x->err);
        return MOED_ERR_CONFIG;
    }
    if (ret < 0) {
        cfg_set_err(err, errlen, "%s: cannot parse (inih error %d)", x->name, ret);
        return MOED_ERR_CONFIG;
    }
    *c = tmp;
    return MOED_OK;
}

int cfg_load_file(cfg_t* c, const char* path, char* err, size_t errlen) {
    ini_ctx x = {.name = path};
    x.f = fopen(path, "r");
    if (!x.f) {
        cfg_set_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
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
        cfg_set_err(err, errlen, "%s: out of memory", where);
        return MOED_ERR_OTHER;
    }
    char* eq = strchr(copy, '=');
    char* dot = eq ? memchr(copy, '.', (size_t)(eq - copy)) : NULL;
    int rc = MOED_ERR_CONFIG;
    if (!dot) {
        cfg_set_err(err, errlen, "%s: expected section.key=value", where);
    } else {
        *eq = *dot = '\0';
        char *section = trim(copy), *name = trim(dot + 1);
        if (!section[0] || !name[0])
            cfg_set_err(err, errlen, "%s: expected section.key=value", where);
        else
            rc = cfg_assign(c, where, section, name, trim(eq + 1), err, errlen);
    }
    free(copy);
    return rc;
}

// ----------------------------------------------------------------------------------------
// cross-key and rank-count checks

#define FAIL(...) return cfg_set_err(err, errlen, __VA_ARGS__), MOED_ERR_CONFIG

// The per-key checks again, for a cfg_t that was filled in by code rather than parsed.
static int validate_ranges(const cfg_t* c, char* err, size_t errlen) {
    for (size_t i = 0; i < cfg_nkeys; i++) {
        const cfg_key* k = &cfg_keys[i];
        cfg_value v = cfg_value_load(c, k);
        char why[320];
        int bad = 0;
        if (k->type == K_STR && !memchr(v.s, '\0', k->size))
            bad = (cfg_set_err(why, sizeof why, "not NUL-terminated"), 1);
        else if (k->type == K_DOUBLE && !isfinite(v.d))
            bad = (cfg_set_err(why, sizeof why, "not a finite number"), 1);
        else if (k->type == K_BOOL && v.i != 0 && v.i != 1)
            bad = (cfg_set_err(why, sizeof why, "not a boolean"), 1);
        else if (k->type == K_ENUM && !cfg_enum_known(k, v.i))
            bad = (cfg_set_err(why, sizeof why, "not a known value"), 1);
        else
            bad = cfg_check_value(k, v, why, sizeof why) != 0;
        if (bad) {
            char text[256] = "?";
            if (k->type != K_STR || memchr(v.s, '\0', k->size))
                cfg_fmt_value(k, v, text, sizeof text);
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
    for (size_t i = 0; i < cfg_nkeys; i++) {
        const cfg_key* k = &cfg_keys[i];
        if (i == 0 || strcmp(k->section, cfg_keys[i - 1].section))
            sb_printf(&b, "%s[%s]\n", i ? "\n" : "", k->section);
        char text[256];
        cfg_fmt_value(k, cfg_value_load(c, k), text, sizeof text);
        sb_printf(&b, "%s = %s\n", k->name, text);
    }
    return b.overflow ? MOED_ERR_CONFIG : MOED_OK;
}

void cfg_print_markdown(FILE* out) {
    fprintf(out, "| key | type | default | range | description |\n");
    fprintf(out, "|---|---|---|---|---|\n");
    for (size_t i = 0; i < cfg_nkeys; i++) {
        const cfg_key* k = &cfg_keys[i];
        char range[256];
        cfg_fmt_range(k, range, sizeof range);
        fprintf(out, "| `%s.%s` | %s | `%s` | %s | %s |\n", k->section, k->name,
                cfg_type_name(k->type), k->def, range, k->doc);
    }
}
