// Reading checkpoints: ckpt_probe (validation before anything is allocated) and ckpt_load
// (each rank reads its own hyperslabs, at any rank count). ckpt_find_resume, which picks the
// file to resume from, is in ckpt_resume.c.
#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "compute/finite.h"
#include "config/status.h"
#include "daemon/ckpt.h"

// ---------------------------------------------------------------------------------------
// probe: rank 0 opens the file serially and checks it; every rank gets its verdict

// Whether every component of an absolute path exists (H5Lexists needs the parents).
static int link_exists(hid_t f, const char* path) {
    char buf[128];
    snprintf(buf, sizeof buf, "%s", path);
    for (char* p = buf + 1;; p++) {
        if (*p != '/' && *p != '\0') continue;
        char c = *p;
        *p = '\0';
        if (H5Lexists(f, buf, H5P_DEFAULT) <= 0) return 0;
        if (c == '\0') return 1;
        *p = c;
    }
}

static int read_i64(hid_t f, const char* file, const char* name, long* out, char* msg) {
    if (H5Aexists(f, name) <= 0) {
        ckpt_errf(msg, CKPT_ERRLEN, "%s: attribute %s is missing", file, name);
        return MOED_ERR_DATA;
    }
    hid_t a = H5Aopen(f, name, H5P_DEFAULT), t = H5Aget_type(a), sp = H5Aget_space(a);
    int64_t v = 0;
    int ok = H5Tget_class(t) == H5T_INTEGER && H5Sget_simple_extent_npoints(sp) == 1 &&
             H5Aread(a, H5T_NATIVE_INT64, &v) >= 0;
    H5Sclose(sp), H5Tclose(t), H5Aclose(a);
    if (!ok) {
        ckpt_errf(msg, CKPT_ERRLEN, "%s: attribute %s is not an integer", file, name);
        return MOED_ERR_DATA;
    }
    *out = (long)v;
    return MOED_OK;
}

// A string attribute, variable-length or fixed-length, into out[cap].
static int read_str(hid_t f, const char* file, const char* name, char* out, size_t cap, char* msg) {
    if (H5Aexists(f, name) <= 0) {
        ckpt_errf(msg, CKPT_ERRLEN, "%s: attribute %s is missing", file, name);
        return MOED_ERR_DATA;
    }
    hid_t a = H5Aopen(f, name, H5P_DEFAULT), t = H5Aget_type(a), sp = H5Aget_space(a);
    hid_t mt = H5Tcopy(H5T_C_S1);
    int ok = H5Tget_class(t) == H5T_STRING && H5Sget_simple_extent_npoints(sp) == 1;
    int too_long = 0;
    if (ok) H5Tset_cset(mt, H5Tget_cset(t)); // HDF5 does not convert ASCII <-> UTF-8
    if (ok && H5Tis_variable_str(t) > 0) {
        char* s = NULL;
        H5Tset_size(mt, H5T_VARIABLE);
        ok = H5Aread(a, mt, &s) >= 0 && s;
        if (ok) too_long = strlen(s) >= cap;
        if (ok && !too_long) memcpy(out, s, strlen(s) + 1);
        if (s) H5free_memory(s);
    } else if (ok) {
        size_t size = H5Tget_size(t);
        too_long = size >= cap;
        H5Tset_size(mt, size + 1); // room for the terminator HDF5 adds
        ok = too_long || H5Aread(a, mt, out) >= 0;
    }
    H5Tclose(mt), H5Sclose(sp), H5Tclose(t), H5Aclose(a);
    if (!ok || too_long) {
        ckpt_errf(msg, CKPT_ERRLEN, "%s: attribute %s is %s", file, name,
                  ok ? "too long" : "not a string");
        return MOED_ERR_DATA;
    }
    return MOED_OK;
}

// The root attributes, each checked for range before any shape is computed from it.
static int read_attrs(hid_t f, const char* file, ckpt_info_t* info, char* msg) {
    char format[64];
    if (H5Aexists(f, "format") <= 0) {
        ckpt_errf(msg, CKPT_ERRLEN, "%s: not a moed checkpoint (no format attribute)", file);
        return MOED_ERR_DATA;
    }
    int rc = read_str(f, file, "format", format, sizeof format, msg);
    if (rc == MOED_OK && strcmp(format, CKPT_FORMAT) != 0) {
        ckpt_errf(msg, CKPT_ERRLEN, "%s: not a moed checkpoint (format = \"%s\")", file, format);
        return MOED_ERR_DATA;
    }
    long v[8];
    struct {
        const char* name;
        long lo, hi;
    } keys[8] = {{"format_version", 0, 1L << 40},
                 {"step", 0, 1L << 40},
                 {"n_layers", 1, 1024},
                 {"d_model", 1, 65536},
                 {"d_ff", 1, 1 << 20},
                 {"n_experts", 1, 4096},
                 {"top_k", 1, 4096},
                 {"ranks_at_save", 1, 1 << 24}};
    for (int i = 0; i < 8 && rc == MOED_OK; i++) {
        rc = read_i64(f, file, keys[i].name, &v[i], msg);
        if (rc == MOED_OK && i == 0 && v[0] != CKPT_FORMAT_VERSION) {
            ckpt_errf(msg, CKPT_ERRLEN, "%s: format_version = %ld, this moed reads version %d",
                      file, v[0], CKPT_FORMAT_VERSION);
            rc = MOED_ERR_DATA;
        } else if (rc == MOED_OK && (v[i] < keys[i].lo || v[i] > keys[i].hi)) {
            ckpt_errf(msg, CKPT_ERRLEN, "%s: attribute %s = %ld is out of range [%ld, %ld]", file,
                      keys[i].name, v[i], keys[i].lo, keys[i].hi);
            rc = MOED_ERR_DATA;
        }
    }
    if (rc == MOED_OK && v[6] > v[5]) {
        ckpt_errf(msg, CKPT_ERRLEN, "%s: top_k = %ld exceeds n_experts = %ld", file, v[6], v[5]);
        rc = MOED_ERR_DATA;
    }
    if (rc == MOED_OK) rc = read_str(f, file, "config", info->config, sizeof info->config, msg);
    if (rc) return rc;
    info->format_version = (int)v[0], info->step = v[1], info->n_layers = (int)v[2];
    info->d_model = (int)v[3], info->d_ff = (int)v[4], info->n_experts = (int)v[5];
    info->top_k = (int)v[6], info->ranks_at_save = (int)v[7];
    info->residual = link_exists(f, "/layers/0/norm/scale");
    info->n_shared = 0;
    if (link_exists(f, "/layers/0/shared/w0")) {
        // the shape itself is checked with every other dataset's; here only its count
        hid_t d = H5Dopen2(f, "/layers/0/shared/w0", H5P_DEFAULT);
        hid_t sp = d >= 0 ? H5Dget_space(d) : -1;
        hsize_t dims[3] = {0, 0, 0};
        if (sp >= 0 && H5Sget_simple_extent_ndims(sp) == 3)
            H5Sget_simple_extent_dims(sp, dims, NULL);
        info->n_shared = dims[0] > 0 && dims[0] <= 64 ? (int)dims[0] : -1;
        if (sp >= 0) H5Sclose(sp);
        if (d >= 0) H5Dclose(d);
        if (info->n_shared < 0) {
            ckpt_errf(msg, CKPT_ERRLEN,
                      "%s: /layers/0/shared/w0 is not a [S, d, f] stack of 1..64 "
                      "shared experts",
                      file);
            return MOED_ERR_DATA;
        }
    }
    return MOED_OK;
}

static int check_config(const char* file, const ckpt_info_t* info, const cfg_t* c, char* msg) {
    struct {
        const char* key;
        long file, cfg;
    } keys[] = {{"n_layers", info->n_layers, c->model.n_layers},
                {"d_model", info->d_model, c->model.d_model},
                {"d_ff", info->d_ff, c->model.d_ff},
                {"n_experts", info->n_experts, c->model.n_experts},
                {"top_k", info->top_k, c->model.top_k},
                {"n_shared_experts", info->n_shared, c->model.n_shared_experts}};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (keys[i].file != keys[i].cfg) {
            ckpt_errf(msg, CKPT_ERRLEN, "%s: %s = %ld but the config says model.%s = %ld", file,
                      keys[i].key, keys[i].file, keys[i].key, keys[i].cfg);
            return MOED_ERR_DATA;
        }
    if (info->residual != (c->model.residual != 0)) {
        ckpt_errf(msg, CKPT_ERRLEN,
                  "%s: residual = %s (%s norm scales) but the config says model.residual = %s",
                  file, info->residual ? "true" : "false", info->residual ? "has" : "no",
                  c->model.residual ? "true" : "false");
        return MOED_ERR_DATA;
    }
    return MOED_OK;
}

// "float32", "int64", ... for messages about a dataset's stored type.
static void describe_type(hid_t t, char* buf, size_t n) {
    H5T_class_t cls = H5Tget_class(t);
    size_t bits = H5Tget_size(t) * 8;
    if (cls == H5T_FLOAT)
        snprintf(buf, n, "float%zu", bits);
    else if (cls == H5T_INTEGER)
        snprintf(buf, n, "%sint%zu", H5Tget_sign(t) == H5T_SGN_NONE ? "u" : "", bits);
    else
        snprintf(buf, n, "%s", cls == H5T_STRING ? "string" : "a non-numeric type");
}

static int type_matches(hid_t t, int want) {
    H5T_class_t cls = H5Tget_class(t);
    size_t size = H5Tget_size(t);
    if (want == CKPT_I64) return cls == H5T_INTEGER && size == 8 && H5Tget_sign(t) != H5T_SGN_NONE;
    return cls == H5T_FLOAT && size == (want == CKPT_F32 ? 4u : 8u);
}

static void shape_str(int ndim, const long* dims, char* buf, size_t n) {
    size_t len = (size_t)snprintf(buf, n, "[");
    for (int k = 0; k < ndim && len < n; k++)
        len += (size_t)snprintf(buf + len, n - len, "%s%ld", k ? ", " : "", dims[k]);
    if (len < n) snprintf(buf + len, n - len, "]");
}

static int check_dataset(hid_t f, const char* file, const ckpt_dset_t* ds, char* msg) {
    if (!link_exists(f, ds->path)) {
        ckpt_errf(msg, CKPT_ERRLEN, "%s: dataset %s is missing", file, ds->path);
        return MOED_ERR_DATA;
    }
    hid_t d = H5Dopen2(f, ds->path, H5P_DEFAULT);
    if (d < 0) {
        ckpt_errf(msg, CKPT_ERRLEN, "%s: %s is not a dataset", file, ds->path);
        return MOED_ERR_DATA;
    }
    hid_t sp = H5Dget_space(d), t = H5Dget_type(d);
    hsize_t hd[H5S_MAX_RANK];
    int nd = H5Sget_simple_extent_dims(sp, hd, NULL), rc = MOED_OK;
    long got[H5S_MAX_RANK];
    int same = nd == ds->ndim;
    for (int k = 0; k < nd; k++) got[k] = (long)hd[k], same &= k < 3 && got[k] == ds->dims[k];
    if (!same) {
        char a[128], b[128];
        shape_str(nd < 0 ? 0 : nd, got, a, sizeof a);
        shape_str(ds->ndim, ds->dims, b, sizeof b);
        ckpt_errf(msg, CKPT_ERRLEN, "%s: %s has shape %s, expected %s from the attributes", file,
                  ds->path, a, b);
        rc = MOED_ERR_DATA;
    } else if (!type_matches(t, ds->type)) {
        char a[64];
        describe_type(t, a, sizeof a);
        ckpt_errf(msg, CKPT_ERRLEN, "%s: %s is %s, expected %s", file, ds->path, a,
                  ckpt_type_name(ds->type));
        rc = MOED_ERR_DATA;
    }
    H5Tclose(t), H5Sclose(sp), H5Dclose(d);
    return rc;
}

// The history length is the file's own: /metrics/loss's length, at most `step`.
static int history_steps(hid_t f, const char* file, ckpt_info_t* info, char* msg) {
    info->n_history = 0;
    if (!link_exists(f, "/metrics/loss")) return MOED_OK; // reported by check_dataset
    hid_t d = H5Dopen2(f, "/metrics/loss", H5P_DEFAULT);
    hid_t sp = d >= 0 ? H5Dget_space(d) : -1;
    hsize_t n = 0;
    if (sp >= 0 && H5Sget_simple_extent_ndims(sp) == 1) H5Sget_simple_extent_dims(sp, &n, NULL);
    if (sp >= 0) H5Sclose(sp);
    if (d >= 0) H5Dclose(d);
    if ((long)n > info->step) {
        ckpt_errf(msg, CKPT_ERRLEN, "%s: /metrics/loss holds %ld steps but step = %ld", file,
                  (long)n, info->step);
        return MOED_ERR_DATA;
    }
    info->n_history = (long)n;
    return MOED_OK;
}

static int check_datasets(hid_t f, const char* file, ckpt_info_t* info, char* msg) {
    int rc = history_steps(f, file, info, msg);
    ckpt_dims_t dm = {info->n_layers, info->d_model,   info->d_ff,    info->n_experts,
                      info->residual, info->n_history, info->n_shared};
    int n = ckpt_dataset_count(&dm);
    for (int i = 0; i < n && rc == MOED_OK; i++) {
        ckpt_dset_t ds;
        ckpt_dataset(&dm, i, &ds);
        rc = check_dataset(f, file, &ds, msg);
    }
    return rc;
}

// HDF5 refuses to open a file shorter than its superblock says; say so plainly.
static void open_failure(const char* file, char* msg) {
    char why[512];
    unsigned long long eof = 0, base = 0, stored = 0;
    ckpt_h5_reason(why, sizeof why);
    const char* t = strstr(why, "truncated file");
    if (t && sscanf(t, "truncated file: eof = %llu, sblock->base_addr = %llu, stored_eof = %llu",
                    &eof, &base, &stored) == 3)
        ckpt_errf(msg, CKPT_ERRLEN,
                  "%s: truncated HDF5 file (%llu of %llu bytes: an interrupted write or copy)",
                  file, eof, stored);
    else if (t)
        ckpt_errf(msg, CKPT_ERRLEN, "%s: truncated HDF5 file (%s)", file, why);
    else
        ckpt_errf(msg, CKPT_ERRLEN, "%s: cannot open as HDF5 (damaged file?): %s", file, why);
}

static int probe_serial(const char* file, const cfg_t* c, ckpt_info_t* info, char* msg) {
    struct stat st;
    if (stat(file, &st) != 0) {
        ckpt_errf(msg, CKPT_ERRLEN, "%s: %s", file, strerror(errno));
        return MOED_ERR_DATA;
    }
    if (!S_ISREG(st.st_mode) || H5Fis_hdf5(file) <= 0) {
        ckpt_errf(msg, CKPT_ERRLEN, "%s: not an HDF5 file", file);
        return MOED_ERR_DATA;
    }
    hid_t f = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        open_failure(file, msg);
        return MOED_ERR_DATA;
    }
    int rc = read_attrs(f, file, info, msg);
    if (rc == MOED_OK && c) rc = check_config(file, info, c, msg);
    if (rc == MOED_OK) rc = check_datasets(f, file, info, msg);
    H5Fclose(f);
    return rc;
}

int ckpt_probe(const char* path, const cfg_t* c, MPI_Comm comm, ckpt_info_t* info, char* err,
               size_t errlen) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    // One verdict, computed on rank 0 and broadcast: identical everywhere by construction.
    static struct {
        int status;
        char msg[CKPT_ERRLEN];
        ckpt_info_t info;
    } v;
    int rank;
    MPI_Comm_rank(comm, &rank);
    if (rank == 0) {
        memset(&v, 0, sizeof v);
        v.status = probe_serial(path, c, &v.info, v.msg);
    }
    MPI_Bcast(&v, sizeof v, MPI_BYTE, 0, comm);
    if (info) *info = v.info;
    if (v.status) ckpt_errf(err, errlen, "%s", v.msg);
    return v.status;
}

// ---------------------------------------------------------------------------------------
// load: every rank reads its own experts and the replicated tensors (independent reads)

// dst: where dataset ds lands on this rank, and how many elements (0: skip the dataset).
static void* target(const ckpt_dset_t* ds, train_t* tr, history_t* h, int weights_only, long* n) {
    model_t* m = &tr->model;
    *n = 0;
    if (ds->src == CKPT_SRC_BIAS) {
        *n = m->E;
        return m->bias + (long)ds->layer * m->E;
    }
    if (ds->src >= CKPT_SRC_LOSS) {
        if (weights_only || !h) return NULL;
        long rows = ds->dims[0] < h->cap ? ds->dims[0] : h->cap;
        *n = ds->src == CKPT_SRC_LOAD ? rows * h->L * h->E : rows;
        return ds->src == CKPT_SRC_LOSS  ? (void*)h->loss
               : ds->src == CKPT_SRC_AUX ? (void*)h->aux
                                         : (void*)h->load;
    }
    if (weights_only && ds->src != CKPT_SRC_W) return NULL;
    const param_t* p = ckpt_find_param(m, ds->param);
    if (!p) return NULL;
    *n = p->numel;
    float* base = ds->src == CKPT_SRC_W ? m->w : ds->src == CKPT_SRC_M ? m->m : m->v;
    return base + p->offset;
}

// This rank's selection of the file space: its experts of a sharded tensor, all of a
// replicated one, the first `rows` steps of a metric.
static void select_read(hid_t fspace, const ckpt_dset_t* ds, const model_t* m, long n) {
    hsize_t start[3] = {0, 0, 0}, count[3];
    for (int k = 0; k < ds->ndim; k++) count[k] = (hsize_t)ds->dims[k];
    if (ds->sharded) start[0] = (hsize_t)m->e0, count[0] = (hsize_t)m->El;
    if (ds->src >= CKPT_SRC_LOSS) // n elements = rows x the per-step size
        count[0] = (hsize_t)(n / (ds->src == CKPT_SRC_LOAD ? ds->dims[1] * ds->dims[2] : 1));
    H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count, NULL);
}

// Weights, biases and moments must be finite; the float64 metrics may hold NaN for steps
// that were never recorded (see history_record).
static int check_finite(const ckpt_dset_t* ds, const float* x, long n, const model_t* m,
                        const char* file, char* msg) {
    if (ds->type != CKPT_F32) return MOED_OK;
    long i = finite_scan(x, n);
    if (i == n) return MOED_OK;
    if (ds->sharded) {
        long per = ds->dims[1] * ds->dims[2];
        ckpt_errf(msg, CKPT_ERRLEN, "%s: %s holds %s (expert %ld, element %ld)", file, ds->path,
                  isnan(x[i]) ? "NaN" : "Inf", m->e0 + i / per, i % per);
    } else {
        ckpt_errf(msg, CKPT_ERRLEN, "%s: %s holds %s (element %ld)", file, ds->path,
                  isnan(x[i]) ? "NaN" : "Inf", i);
    }
    return MOED_ERR_DATA;
}

static int read_dataset(hid_t f, const char* file, const ckpt_dset_t* ds, void* dst, long n,
                        hid_t dxpl, const model_t* m, char* msg) {
    hid_t mtype = ds->type == CKPT_F32   ? H5T_NATIVE_FLOAT
                  : ds->type == CKPT_F64 ? H5T_NATIVE_DOUBLE
                                         : H5T_NATIVE_INT64;
    hid_t d = H5Dopen2(f, ds->path, H5P_DEFAULT);
    hid_t fspace = d >= 0 ? H5Dget_space(d) : -1;
    int ok = fspace >= 0;
    if (ok) {
        select_read(fspace, ds, m, n);
        hsize_t mn = (hsize_t)n;
        hid_t mspace = H5Screate_simple(1, &mn, NULL);
        ok = H5Dread(d, mtype, mspace, fspace, dxpl, dst) >= 0;
        H5Sclose(mspace);
    }
    if (fspace >= 0) H5Sclose(fspace);
    if (d >= 0) H5Dclose(d);
    if (!ok) {
        char why[512];
        ckpt_h5_reason(why, sizeof why);
        ckpt_errf(msg, CKPT_ERRLEN, "%s: reading %s failed: %s", file, ds->path, why);
        return MOED_ERR_DATA;
    }
    return check_finite(ds, dst, n, m, file, msg);
}

// Like the writer, every rank makes the same sequence of HDF5 calls whatever fails
// locally (a NaN, a read error) and the caller agrees once at the end.
static int read_datasets(hid_t f, const char* file, const ckpt_info_t* info, train_t* tr,
                         history_t* h, int weights_only, char* msg) {
    model_t* m = &tr->model;
    ckpt_dims_t dm = {m->L, m->d, m->f, m->E, m->residual, info->n_history, m->S};
    // Independent transfers: each rank's part of a dataset is one contiguous byte range (its
    // experts' slice, or a whole small replicated tensor), so collective buffering has
    // nothing to merge, while every collective read costs a synchronisation of all ranks
    // (tens of milliseconds each when ranks share cores). Measured with moed-bench ckpt at
    // P = 2: 0.5-0.7 s instead of 1.3-1.8 s for a 0.5 GiB checkpoint.
    hid_t dxpl = H5P_DEFAULT;
    int rc = MOED_OK, n = ckpt_dataset_count(&dm);
    for (int i = 0; i < n; i++) {
        ckpt_dset_t ds;
        ckpt_dataset(&dm, i, &ds);
        long cnt;
        void* dst = target(&ds, tr, h, weights_only, &cnt);
        if (!dst || cnt == 0) continue; // the same decision on every rank
        char why[CKPT_ERRLEN];
        int r = read_dataset(f, file, &ds, dst, cnt, dxpl, m, why);
        if (r && rc == MOED_OK) rc = r, memcpy(msg, why, CKPT_ERRLEN);
    }
    return rc;
}

int ckpt_load(const char* path, train_t* tr, history_t* h, int weights_only, char* err,
              size_t errlen) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    MPI_Comm comm = tr->comm.comm;
    static ckpt_info_t info;
    char msg[CKPT_ERRLEN] = "";
    int rc = ckpt_probe(path, &tr->cfg, comm, &info, msg, sizeof msg);
    if (rc == MOED_OK && h && (h->L != tr->model.L || h->E != tr->model.E)) {
        ckpt_errf(msg, sizeof msg, "%s: internal error: history is [%d, %d], model [%d, %d]", path,
                  h->L, h->E, tr->model.L, tr->model.E);
        rc = MOED_ERR_OTHER;
    }
    if (rc == MOED_OK) {
        hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
        H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL);
        hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
        H5Pclose(fapl);
        if (f < 0) {
            char why[512];
            ckpt_h5_reason(why, sizeof why);
            ckpt_errf(msg, sizeof msg, "%s: cannot open: %s", path, why);
            rc = MOED_ERR_DATA;
        }
        if ((rc = ckpt_agree(rc, msg, sizeof msg, comm)) == MOED_OK) {
            rc = read_datasets(f, path, &info, tr, h, weights_only, msg);
            H5Fclose(f);
            rc = ckpt_agree(rc, msg, sizeof msg, comm);
        }
    }
    if (rc == MOED_OK) {
        train_repack(tr);
        tr->step = info.step;
        if (h && !weights_only) h->n = info.n_history < h->cap ? info.n_history : h->cap;
    }
    if (rc) ckpt_errf(err, errlen, "%s", msg);
    return rc;
}
