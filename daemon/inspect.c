// moed inspect CKPT: reads a checkpoint (DESIGN.md §4 layout) with serial HDF5 and prints
// what a person wants to know before resuming from it or analysing it: where it came from,
// the model's shapes, how the loss went, and whether every expert still gets tokens.
//
// The file is read directly, not through daemon/ckpt*.c, so that inspecting needs neither
// MPI nor a configuration, and so that a checkpoint the loader rejects can still be looked
// at: only what this summary prints must be well-formed.
#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/status.h"
#include "daemon/commands.h"

#define ERRLEN 1024
#define CKPT_FORMAT "moed-checkpoint"
#define CKPT_VERSION 1

typedef struct {
    const char* path;
    hid_t file;
    char format[64];
    char version[64]; // moed_version
    long format_version, step, L, d, f, E, k, ranks;
    size_t config_len; // bytes of the resolved INI text
    int residual;      // /layers/<l>/norm/scale present
    long S;            // shared experts (0 when /layers/<l>/shared is absent)
    int has_optimizer; // /optimizer present
    long n;            // steps recorded in /metrics
    double* loss;      // [n]
    double* aux;       // [n]
    int64_t* load;     // [n, L, E]
    char err[ERRLEN];  // the one-line message of the first failure
} inspect_t;

// Records the first failure (path-prefixed) and returns MOED_ERR_DATA.
static int fail(inspect_t* in, const char* fmt, ...) {
    int n = snprintf(in->err, sizeof in->err, "%s: ", in->path);
    if (n >= 0 && (size_t)n < sizeof in->err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(in->err + n, sizeof in->err - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return MOED_ERR_DATA;
}

// "[7, 2, 6]"; a negative extent (any) prints as "*".
static void fmt_dims(char* buf, size_t len, int ndims, const long* dims) {
    size_t used = (size_t)snprintf(buf, len, "[");
    for (int i = 0; i < ndims && used < len; i++)
        used += dims[i] < 0
                    ? (size_t)snprintf(buf + used, len - used, "%s*", i ? ", " : "")
                    : (size_t)snprintf(buf + used, len - used, "%s%ld", i ? ", " : "", dims[i]);
    if (used < len) snprintf(buf + used, len - used, "]");
}

// ---------------------------------------------------------------------------------------------
// Root attributes

static int read_attr_long(inspect_t* in, const char* name, long* v) {
    if (H5Aexists(in->file, name) <= 0) return fail(in, "missing root attribute '%s'", name);
    hid_t a = H5Aopen(in->file, name, H5P_DEFAULT);
    hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
    int ok = H5Tget_class(t) == H5T_INTEGER && H5Sget_simple_extent_npoints(sp) == 1 &&
             H5Aread(a, H5T_NATIVE_LONG, v) >= 0;
    H5Sclose(sp), H5Tclose(t), H5Aclose(a);
    return ok ? MOED_OK : fail(in, "root attribute '%s' is not one integer", name);
}

// Reads a string attribute, fixed-length or variable-length (h5py and ckpt_write.c write
// variable-length UTF-8), into buf (truncated); *full_len gets its untruncated length.
static int read_attr_str(inspect_t* in, const char* name, char* buf, size_t len, size_t* full_len) {
    if (H5Aexists(in->file, name) <= 0) return fail(in, "missing root attribute '%s'", name);
    hid_t a = H5Aopen(in->file, name, H5P_DEFAULT);
    hid_t t = H5Aget_type(a), sp = H5Aget_space(a);
    int ok = H5Tget_class(t) == H5T_STRING && H5Sget_simple_extent_npoints(sp) == 1;
    char* text = NULL;
    if (ok && H5Tis_variable_str(t) > 0) {
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        H5Tset_cset(mt, H5Tget_cset(t));
        ok = H5Aread(a, mt, &text) >= 0 && text != NULL;
        H5Tclose(mt);
    } else if (ok) {
        size_t n = H5Tget_size(t);
        text = calloc(n + 1, 1);
        hid_t mt = H5Tcopy(t); // same size; null padding or not, the calloc'd byte ends it
        ok = text && H5Aread(a, mt, text) >= 0;
        H5Tclose(mt);
    }
    if (ok) {
        snprintf(buf, len, "%s", text);
        if (full_len) *full_len = strlen(text);
    }
    if (text && H5Tis_variable_str(t) > 0)
        H5free_memory(text);
    else
        free(text);
    H5Sclose(sp), H5Tclose(t), H5Aclose(a);
    return ok ? MOED_OK : fail(in, "root attribute '%s' is not a string", name);
}

static int read_attrs(inspect_t* in) {
    int rc = read_attr_str(in, "format", in->format, sizeof in->format, NULL);
    if (rc) return rc;
    if (strcmp(in->format, CKPT_FORMAT) != 0)
        return fail(in, "not a moed checkpoint (format = '%s', expected '%s')", in->format,
                    CKPT_FORMAT);
    if ((rc = read_attr_long(in, "format_version", &in->format_version))) return rc;
    if (in->format_version != CKPT_VERSION)
        return fail(in, "format_version %ld is not supported (this moed reads %d)",
                    in->format_version, CKPT_VERSION);
    struct {
        const char* name;
        long* v;
    } ints[] = {
        {"step", &in->step},   {"n_layers", &in->L}, {"d_model", &in->d},          {"d_ff", &in->f},
        {"n_experts", &in->E}, {"top_k", &in->k},    {"ranks_at_save", &in->ranks}};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        if ((rc = read_attr_long(in, ints[i].name, ints[i].v))) return rc;
        long lo = strcmp(ints[i].name, "step") == 0 ? 0 : 1;
        if (*ints[i].v < lo)
            return fail(in, "root attribute '%s' = %ld must be >= %ld", ints[i].name, *ints[i].v,
                        lo);
    }
    if (in->k > in->E) return fail(in, "top_k = %ld exceeds n_experts = %ld", in->k, in->E);
    if ((rc = read_attr_str(in, "moed_version", in->version, sizeof in->version, NULL))) return rc;
    char head[8];
    return read_attr_str(in, "config", head, sizeof head, &in->config_len);
}

// ---------------------------------------------------------------------------------------------
// Datasets

// Opens dataset `name`, checks its type class and shape (a dims entry of -1 matches any
// extent; the actual dims are stored back). Returns the open dataset or -1 after fail().
static hid_t open_ds(inspect_t* in, const char* name, H5T_class_t cls, int ndims, long* dims) {
    if (H5Lexists(in->file, name, H5P_DEFAULT) <= 0) {
        fail(in, "missing dataset %s", name);
        return H5I_INVALID_HID;
    }
    hid_t ds = H5Dopen2(in->file, name, H5P_DEFAULT);
    if (ds < 0) {
        fail(in, "%s is not a dataset", name);
        return H5I_INVALID_HID;
    }
    hid_t t = H5Dget_type(ds), sp = H5Dget_space(ds);
    hsize_t got[H5S_MAX_RANK] = {0};
    int nd = H5Sget_simple_extent_dims(sp, got, NULL);
    H5T_class_t gc = H5Tget_class(t);
    H5Sclose(sp), H5Tclose(t);
    int ok = nd == ndims;
    for (int i = 0; ok && i < ndims; i++) ok = dims[i] < 0 || got[i] == (hsize_t)dims[i];
    if (!ok) {
        char g[128], w[128];
        long have[H5S_MAX_RANK];
        for (int i = 0; i < nd; i++) have[i] = (long)got[i];
        fmt_dims(g, sizeof g, nd < 0 ? 0 : nd, have);
        fmt_dims(w, sizeof w, ndims, dims);
        fail(in, "dataset %s is %s, expected %s", name, g, w);
    } else if (gc != cls) {
        fail(in, "dataset %s has the wrong type (expected %s)", name,
             cls == H5T_FLOAT ? "floating point" : "integer");
        ok = 0;
    }
    if (!ok) {
        H5Dclose(ds);
        return H5I_INVALID_HID;
    }
    for (int i = 0; i < ndims; i++) dims[i] = (long)got[i];
    return ds;
}

// The per-layer tensors of DESIGN.md §4; a shape is a string of dimension letters
// (d = d_model, f = d_ff, E = n_experts, S = shared experts).
enum { ALWAYS, IF_RESIDUAL, IF_SHARED };
static const struct {
    const char* suffix;
    const char* shape;
    int when;
} layer_tensors[] = {
    {"router/weight", "dE", ALWAYS}, {"router/bias", "E", ALWAYS},
    {"experts/w0", "Edf", ALWAYS},   {"experts/w1", "Edf", ALWAYS},
    {"experts/wo", "Efd", ALWAYS},   {"norm/scale", "d", IF_RESIDUAL},
    {"shared/w0", "Sdf", IF_SHARED}, {"shared/w1", "Sdf", IF_SHARED},
    {"shared/wo", "Sfd", IF_SHARED},
};

static long dim_of(const inspect_t* in, char letter) {
    switch (letter) {
    case 'd': return in->d;
    case 'f': return in->f;
    case 'E': return in->E;
    default: return in->S;
    }
}

// Checks presence, type and shape of a tensor without reading it.
static int check_tensor(inspect_t* in, const char* name, const char* shape) {
    long dims[3];
    int nd = (int)strlen(shape);
    for (int i = 0; i < nd; i++) dims[i] = dim_of(in, shape[i]);
    hid_t ds = open_ds(in, name, H5T_FLOAT, nd, dims);
    if (ds < 0) return MOED_ERR_DATA;
    H5Dclose(ds);
    return MOED_OK;
}

static int exists(inspect_t* in, const char* name) {
    return H5Lexists(in->file, name, H5P_DEFAULT) > 0;
}

// Every layer's weights have the shapes the attributes promise. Norm scales and shared
// experts are optional, but when layer 0 has them every layer must.
static int check_layers(inspect_t* in) {
    in->residual = exists(in, "/layers/0/norm/scale");
    in->S = 0;
    if (exists(in, "/layers/0/shared/w0")) {
        long dims[3] = {-1, in->d, in->f};
        hid_t ds = open_ds(in, "/layers/0/shared/w0", H5T_FLOAT, 3, dims);
        if (ds < 0) return MOED_ERR_DATA;
        H5Dclose(ds);
        in->S = dims[0];
    }
    for (long l = 0; l < in->L; l++)
        for (size_t i = 0; i < sizeof layer_tensors / sizeof layer_tensors[0]; i++) {
            int when = layer_tensors[i].when;
            if ((when == IF_RESIDUAL && !in->residual) || (when == IF_SHARED && !in->S)) continue;
            char name[256];
            snprintf(name, sizeof name, "/layers/%ld/%s", l, layer_tensors[i].suffix);
            int rc = check_tensor(in, name, layer_tensors[i].shape);
            if (rc) return rc;
        }
    in->has_optimizer = exists(in, "/optimizer");
    return MOED_OK;
}

// Reads the whole dataset into a new buffer of `n` elements of `mem_type`.
static void* read_all(inspect_t* in, hid_t ds, const char* name, hid_t mem_type, size_t elsize,
                      long n) {
    void* buf = malloc((size_t)(n > 0 ? n : 1) * elsize);
    if (!buf) return fail(in, "out of memory reading %s", name), NULL;
    if (n > 0 && H5Dread(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        free(buf);
        return fail(in, "cannot read dataset %s", name), NULL;
    }
    return buf;
}

// /metrics/loss [n] fixes the number of recorded steps n; then /metrics/aux_loss [n] and
// /metrics/expert_load [n, L, E].
static int read_metrics(inspect_t* in) {
    long nl[1] = {-1};
    hid_t dl = open_ds(in, "/metrics/loss", H5T_FLOAT, 1, nl);
    long na[1] = {nl[0]}, nload[3] = {nl[0], in->L, in->E};
    hid_t da = dl < 0 ? -1 : open_ds(in, "/metrics/aux_loss", H5T_FLOAT, 1, na);
    hid_t dd = da < 0 ? -1 : open_ds(in, "/metrics/expert_load", H5T_INTEGER, 3, nload);
    int rc = dd < 0 ? MOED_ERR_DATA : MOED_OK;
    if (rc == MOED_OK) {
        in->n = nl[0];
        in->loss = read_all(in, dl, "/metrics/loss", H5T_NATIVE_DOUBLE, sizeof(double), in->n);
        in->aux = in->loss ? read_all(in, da, "/metrics/aux_loss", H5T_NATIVE_DOUBLE,
                                      sizeof(double), in->n)
                           : NULL;
        in->load = in->aux ? read_all(in, dd, "/metrics/expert_load", H5T_NATIVE_INT64,
                                      sizeof(int64_t), in->n * in->L * in->E)
                           : NULL;
        if (!in->load) rc = MOED_ERR_DATA;
    }
    if (dl >= 0) H5Dclose(dl);
    if (da >= 0) H5Dclose(da);
    if (dd >= 0) H5Dclose(dd);
    return rc;
}

static int load_file(inspect_t* in) {
    if (access(in->path, R_OK) != 0) return fail(in, "cannot open: %s", strerror(errno));
    if (H5Fis_hdf5(in->path) <= 0) return fail(in, "not an HDF5 file");
    in->file = H5Fopen(in->path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (in->file < 0) return fail(in, "cannot open as HDF5");
    int rc = read_attrs(in);
    if (rc == MOED_OK) rc = check_layers(in);
    if (rc == MOED_OK) rc = read_metrics(in);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Printing

static void print_header(const inspect_t* in) {
    long per_layer = in->d * in->E + in->E * 3 * in->d * in->f + (in->residual ? in->d : 0) +
                     in->S * 3 * in->d * in->f;
    printf("checkpoint     %s\n", in->path);
    printf("format         %s, version %ld\n", in->format, in->format_version);
    printf("step           %ld\n", in->step);
    printf("ranks_at_save  %ld\n", in->ranks);
    printf("moed_version   %s\n", in->version);
    printf("shapes         L=%ld d=%ld f=%ld E=%ld k=%ld\n", in->L, in->d, in->f, in->E, in->k);
    printf("model          %ld parameters; RMSNorm/residual %s, %ld shared expert%s, "
           "optimizer state %s\n",
           per_layer * in->L, in->residual ? "yes" : "no", in->S, in->S == 1 ? "" : "s",
           in->has_optimizer ? "yes" : "no");
    printf("config         %zu bytes of resolved INI (h5dump -a config)\n", in->config_len);
}

// Step number of history entry i: the history ends at the checkpoint's step.
static long step_of(const inspect_t* in, long i) { return in->step - in->n + i; }

// First, minimum (with its step) and last of the recorded entries. NaN marks a step that
// was not recorded (history_record: steps skipped after a weights-only load).
static void print_series(const inspect_t* in, const char* name, const double* v) {
    long first = -1, last = -1, imin = -1;
    for (long i = 0; i < in->n; i++) {
        if (isnan(v[i])) continue;
        if (first < 0) first = i;
        if (imin < 0 || v[i] < v[imin]) imin = i;
        last = i;
    }
    if (first < 0) {
        printf("  %-10s not recorded\n", name);
        return;
    }
    char at[32];
    snprintf(at, sizeof at, "(step %ld)", step_of(in, imin));
    printf("  %-10s %14.6e %14.6e %-14s %14.6e\n", name, v[first], v[imin], at, v[last]);
}

static void print_losses(const inspect_t* in) {
    long recorded = 0;
    for (long i = 0; i < in->n; i++) recorded += !isnan(in->loss[i]);
    printf("\nloss history   %ld step%s recorded", recorded, recorded == 1 ? "" : "s");
    if (in->n == 0) {
        printf("\n");
        return;
    }
    printf(" (steps %ld .. %ld", step_of(in, 0), step_of(in, in->n - 1));
    if (recorded < in->n) printf("; %ld not recorded", in->n - recorded);
    printf(")\n");
    printf("  %-10s %14s %14s %-14s %14s\n", "", "first", "min", "", "last");
    print_series(in, "loss", in->loss);
    print_series(in, "aux_loss", in->aux);
}

// One layer's table: total slots per expert over the history, its share of the mean total,
// and the last step's slots, flagging experts that got no token in the last step.
static int print_layer_load(const inspect_t* in, long l) {
    long L = in->L, E = in->E, n = in->n;
    const int64_t* last = in->load + ((n - 1) * L + l) * E; // [E]
    double sum = 0, last_sum = 0, last_max = 0;
    for (long e = 0; e < E; e++) {
        for (long s = 0; s < n; s++) sum += (double)in->load[(s * L + l) * E + e];
        last_sum += (double)last[e];
        if ((double)last[e] > last_max) last_max = (double)last[e];
    }
    double mean = sum / E, last_mean = last_sum / E;
    printf("layer %ld        mean total %.1f slots/expert; last step imbalance (max/mean) %.3f\n",
           l, mean, last_mean > 0 ? last_max / last_mean : 0.0);
    printf("  %6s %14s %8s %10s\n", "expert", "total", "share", "last");
    int dead = 0;
    for (long e = 0; e < E; e++) {
        int64_t total = 0;
        for (long s = 0; s < n; s++) total += in->load[(s * L + l) * E + e];
        printf("  %6ld %14lld %8.3f %10lld%s\n", e, (long long)total,
               mean > 0 ? (double)total / mean : 0.0, (long long)last[e],
               last[e] == 0 ? "   no tokens in last step" : "");
        dead += last[e] == 0;
    }
    return dead;
}

static void print_load(const inspect_t* in) {
    if (in->n == 0) {
        printf("\nexpert load    none recorded\n");
        return;
    }
    printf("\nexpert load    slots routed to each expert (before capacity drops) over %ld "
           "step%s;\n               share = total / mean total; last = step %ld\n",
           in->n, in->n == 1 ? "" : "s", step_of(in, in->n - 1));
    int dead = 0;
    for (long l = 0; l < in->L; l++) dead += print_layer_load(in, l);
    if (dead == 0) {
        printf("every expert received tokens in the last step\n");
        return;
    }
    printf("%d expert%s received no tokens in the last step:", dead, dead == 1 ? "" : "s");
    const int64_t* last = in->load + (in->n - 1) * in->L * in->E; // [L, E]
    const char* sep = " ";
    for (long l = 0; l < in->L; l++) {
        const char* esep = ": ";
        for (long e = 0; e < in->E; e++) {
            if (last[l * in->E + e] != 0) continue;
            if (*esep == ':') printf("%slayer %ld", sep, l);
            printf("%s%ld", esep, e);
            esep = ", ", sep = "; ";
        }
    }
    printf("\n");
}

// ---------------------------------------------------------------------------------------------

int cmd_inspect(int argc, char** argv) {
    if (argc == 3 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h"))) {
        printf("usage: moed inspect CKPT   summarise a checkpoint (step, shapes, losses, load)\n");
        return MOED_OK;
    }
    if (argc != 3 || argv[2][0] == '-') {
        fprintf(stderr, "moed: error: usage: moed inspect CKPT (moed --help)\n");
        return MOED_ERR_CONFIG;
    }
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); // our one-line message replaces HDF5's stack dump
    inspect_t in = {.path = argv[2], .file = H5I_INVALID_HID};
    int rc = load_file(&in);
    if (rc == MOED_OK) {
        print_header(&in);
        print_losses(&in);
        print_load(&in);
        fflush(stdout);
    } else {
        fprintf(stderr, "moed: error: %s\n", in.err);
    }
    free(in.loss), free(in.aux), free(in.load);
    if (in.file >= 0) H5Fclose(in.file);
    return rc;
}
