// The checkpoint layout of DESIGN.md §4 as data, the metrics history, and the helpers the
// writer (ckpt_write.c) and the readers (ckpt_read.c, ckpt_resume.c) share.
#include <hdf5.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/status.h"
#include "daemon/ckpt.h"

// ---------------------------------------------------------------------------------------
// metrics history

void history_layout(history_t* h, long cap, int L, int E, arena_t* a) {
    memset(h, 0, sizeof *h);
    h->cap = cap, h->L = L, h->E = E;
    h->loss = arena_alloc(a, sizeof(double) * cap);
    h->aux = arena_alloc(a, sizeof(double) * cap);
    h->load = arena_alloc(a, sizeof(int64_t) * cap * L * E);
}

// Steps skipped since the last record (only after a weights-only load, or a history
// shorter than the step count) are NaN with zero loads: "not recorded".
void history_record(history_t* h, const train_t* tr, const step_stats_t* st) {
    long i = tr->step - 1, LE = (long)h->L * h->E;
    if (i < 0 || i >= h->cap) return;
    for (long j = h->n; j < i; j++) {
        h->loss[j] = h->aux[j] = NAN;
        memset(h->load + j * LE, 0, sizeof(int64_t) * LE);
    }
    h->loss[i] = st->loss;
    h->aux[i] = st->aux;
    for (int l = 0; l < h->L; l++)
        memcpy(h->load + i * LE + (long)l * h->E, tr->acts[l].load, sizeof(int64_t) * h->E);
    h->n = i + 1;
}

// ---------------------------------------------------------------------------------------
// the layout

// Trained tensors of one layer: router weight, norm scale (residual only), the three expert
// matrices, the three shared-expert stacks (S > 0 only).
static int n_trained(const ckpt_dims_t* dm) { return (dm->residual ? 5 : 4) + (dm->S ? 3 : 0); }

static void set_dims(ckpt_dset_t* ds, int ndim, long a, long b, long c) {
    ds->ndim = ndim;
    ds->dims[0] = a, ds->dims[1] = b, ds->dims[2] = c;
}

// Trained tensor j of layer l below `prefix` ("" for weights, "/optimizer/m", ...).
static void trained(const ckpt_dims_t* dm, int l, int j, const char* prefix, int src,
                    ckpt_dset_t* ds) {
    if (!dm->residual && j >= 1) j++; // no norm/scale
    static const char* names[8] = {"router/weight", "norm/scale", "experts/w0", "experts/w1",
                                   "experts/wo",    "shared/w0",  "shared/w1",  "shared/wo"};
    snprintf(ds->param, sizeof ds->param, "%d/%s", l, names[j]);
    snprintf(ds->path, sizeof ds->path, "%s/layers/%s", prefix, ds->param);
    ds->src = src, ds->type = CKPT_F32, ds->layer = l, ds->sharded = j >= 2 && j <= 4;
    switch (j) {
    case 0: set_dims(ds, 2, dm->d, dm->E, 0); break;
    case 1: set_dims(ds, 1, dm->d, 0, 0); break;
    case 2:
    case 3: set_dims(ds, 3, dm->E, dm->d, dm->f); break;
    case 4: set_dims(ds, 3, dm->E, dm->f, dm->d); break;
    case 5:
    case 6: set_dims(ds, 3, dm->S, dm->d, dm->f); break;
    default: set_dims(ds, 3, dm->S, dm->f, dm->d); break;
    }
}

int ckpt_dataset_count(const ckpt_dims_t* dm) { return dm->L * (3 * n_trained(dm) + 1) + 3; }

void ckpt_dataset(const ckpt_dims_t* dm, int i, ckpt_dset_t* ds) {
    memset(ds, 0, sizeof *ds);
    int nt = n_trained(dm), per_w = nt + 1; // weights section: trained tensors + bias
    if (i < dm->L * per_w) {
        int l = i / per_w, j = i % per_w;
        if (j == 1) { // the router bias sits next to the router weight
            snprintf(ds->path, sizeof ds->path, "/layers/%d/router/bias", l);
            ds->src = CKPT_SRC_BIAS, ds->type = CKPT_F32, ds->layer = l;
            set_dims(ds, 1, dm->E, 0, 0);
            return;
        }
        trained(dm, l, j ? j - 1 : 0, "", CKPT_SRC_W, ds);
        return;
    }
    i -= dm->L * per_w;
    if (i < 2 * dm->L * nt) {
        int moment = i / (dm->L * nt), r = i % (dm->L * nt);
        trained(dm, r / nt, r % nt, moment ? "/optimizer/v" : "/optimizer/m",
                moment ? CKPT_SRC_V : CKPT_SRC_M, ds);
        return;
    }
    i -= 2 * dm->L * nt;
    ds->layer = -1;
    if (i == 0) {
        snprintf(ds->path, sizeof ds->path, "/metrics/loss");
        ds->src = CKPT_SRC_LOSS, ds->type = CKPT_F64;
        set_dims(ds, 1, dm->steps, 0, 0);
    } else if (i == 1) {
        snprintf(ds->path, sizeof ds->path, "/metrics/aux_loss");
        ds->src = CKPT_SRC_AUX, ds->type = CKPT_F64;
        set_dims(ds, 1, dm->steps, 0, 0);
    } else {
        snprintf(ds->path, sizeof ds->path, "/metrics/expert_load");
        ds->src = CKPT_SRC_LOAD, ds->type = CKPT_I64;
        set_dims(ds, 3, dm->steps, dm->L, dm->E);
    }
}

const char* ckpt_type_name(int type) {
    return type == CKPT_F32 ? "float32" : type == CKPT_F64 ? "float64" : "int64";
}

// ---------------------------------------------------------------------------------------
// helpers

void ckpt_errf(char* err, size_t errlen, const char* fmt, ...) {
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    for (char* p = err; *p; p++) // one line, whatever a strerror or HDF5 text held
        if (*p == '\n' || *p == '\r') *p = ' ';
}

int ckpt_agree(int status, char* err, size_t errlen, MPI_Comm comm) {
    int rank, worst = status, first;
    MPI_Comm_rank(comm, &rank);
    first = status ? rank : 1 << 30;
    MPI_Allreduce(MPI_IN_PLACE, &worst, 1, MPI_INT, MPI_MAX, comm);
    if (worst == MOED_OK) return MOED_OK;
    MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPI_INT, MPI_MIN, comm);
    char msg[CKPT_ERRLEN] = "";
    if (rank == first && err) snprintf(msg, sizeof msg, "%s", err);
    MPI_Bcast(msg, sizeof msg, MPI_CHAR, first, comm);
    if (err && errlen) snprintf(err, errlen, "%s", msg);
    return worst;
}

void ckpt_step_name(long step, char* buf, size_t n) { snprintf(buf, n, "step_%08ld.h5", step); }

long ckpt_parse_step_name(const char* name) {
    if (strncmp(name, "step_", 5) != 0) return -1;
    const char* p = name + 5;
    long step = 0;
    int digits = 0;
    for (; *p >= '0' && *p <= '9' && digits < 18; p++, digits++) step = step * 10 + (*p - '0');
    if (digits < 8 || strcmp(p, ".h5") != 0) return -1;
    return step;
}

static herr_t innermost(unsigned n, const H5E_error2_t* e, void* data) {
    (void)n;
    char** out = data;
    snprintf(out[0], (size_t)(out[1] - out[0]), "%s", e->desc ? e->desc : "");
    return 0;
}

void ckpt_h5_reason(char* buf, size_t n) {
    if (n == 0) return;
    buf[0] = '\0';
    char* range[2] = {buf, buf + n};
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, innermost, range);
}

const param_t* ckpt_find_param(const model_t* m, const char* name) {
    for (int i = 0; i < m->n_params; i++)
        if (!strcmp(m->params[i].name, name)) return &m->params[i];
    return NULL;
}
