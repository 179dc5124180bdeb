// `moed forward --checkpoint CKPT --input X.h5 --output Y.h5`: inference with saved weights
// at any rank count (DESIGN.md §4-5). The configuration comes from the checkpoint itself;
// the input is cut into batches of train.global_batch_tokens rows (rounded up to a multiple
// of P), every rank runs its slice through the same stack as training, and the outputs and
// routing decisions are written collectively. Every token's result depends on that token
// alone, so the output is the same at any P and equals the training forward.
#include <hdf5.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "compute/finite.h"
#include "compute/kernels/kernels.h"
#include "compute/omp_compat.h"
#include "config/status.h"
#include "daemon/ckpt.h"
#include "daemon/cli.h"
#include "daemon/commands.h"
#include "daemon/train.h"

#define ERRLEN CLI_ERRLEN

typedef struct {
    const char* ckpt;
    const char* input;
    const char* output;
    const char* sets[64];
    int n_sets;
} fwd_args_t;

typedef struct {
    hid_t in, out;    // files (MPI-IO driver)
    hid_t dx;         // input /x [N, d]
    hid_t dy, de, dw; // output /y [N, d], /routing/experts, /routing/weights [N, L, k]
    hid_t dxpl;       // collective transfers
    long N;
} fwd_files_t;

static int parse_args(int argc, char** argv, fwd_args_t* a, char* err) {
    memset(a, 0, sizeof *a);
    for (int i = 2; i < argc; i++) {
        const char** slot = !strcmp(argv[i], "--checkpoint") ? &a->ckpt
                            : !strcmp(argv[i], "--input")    ? &a->input
                            : !strcmp(argv[i], "--output")   ? &a->output
                                                             : NULL;
        if (slot && i + 1 < argc)
            *slot = argv[++i];
        else if (!strcmp(argv[i], "--set") && i + 1 < argc && a->n_sets < 64)
            a->sets[a->n_sets++] = argv[++i];
        else {
            snprintf(err, ERRLEN, "forward: unexpected argument '%s' (moed --help)", argv[i]);
            return MOED_ERR_CONFIG;
        }
    }
    if (!a->ckpt || !a->input || !a->output) {
        snprintf(err, ERRLEN, "forward needs --checkpoint CKPT --input X.h5 --output Y.h5");
        return MOED_ERR_CONFIG;
    }
    return MOED_OK;
}

// The output is created with truncation: it must not be the input or the checkpoint (by
// device and inode, so links and other spellings of the path count too).
static int check_output_distinct(const fwd_args_t* a, char* err) {
    struct stat out, other;
    if (stat(a->output, &out) != 0) return MOED_OK; // does not exist yet
    const char* names[2] = {"--input", "--checkpoint"};
    const char* paths[2] = {a->input, a->ckpt};
    for (int i = 0; i < 2; i++)
        if (stat(paths[i], &other) == 0 && other.st_dev == out.st_dev &&
            other.st_ino == out.st_ino) {
            snprintf(err, ERRLEN,
                     "forward: --output %s is the same file as %s %s; it would be overwritten",
                     a->output, names[i], paths[i]);
            return MOED_ERR_CONFIG;
        }
    return MOED_OK;
}

// The run's configuration, from the checkpoint, with --set overrides and the batch rounded
// up to a multiple of the rank count.
static int forward_config(const fwd_args_t* a, const ckpt_info_t* info, int nranks, cfg_t* c,
                          char* err) {
    cfg_defaults(c);
    if (cfg_load_string(c, info->config, a->ckpt, err, ERRLEN)) return MOED_ERR_DATA;
    for (int i = 0; i < a->n_sets; i++)
        if (cfg_set(c, a->sets[i], err, ERRLEN)) return MOED_ERR_CONFIG;
    long T = c->train.global_batch_tokens;
    c->train.global_batch_tokens = (int)((T + nranks - 1) / nranks * nranks);
    return cfg_validate(c, nranks, err, ERRLEN) ? MOED_ERR_CONFIG : MOED_OK;
}

static hid_t mpio_fapl(MPI_Comm comm) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL);
    return fapl;
}

static int open_files(const fwd_args_t* a, int d, int L, int k, MPI_Comm comm, fwd_files_t* F,
                      char* err) {
    memset(F, 0, sizeof *F);
    F->in = F->out = F->dx = F->dy = F->de = F->dw = F->dxpl = H5I_INVALID_HID;
    hid_t fapl = mpio_fapl(comm);
    F->in = H5Fopen(a->input, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (F->in < 0) {
        snprintf(err, ERRLEN, "%s: cannot open as an HDF5 file", a->input);
        return MOED_ERR_DATA;
    }
    F->dx = H5Dopen2(F->in, "/x", H5P_DEFAULT);
    if (F->dx < 0) {
        snprintf(err, ERRLEN, "%s: no dataset /x", a->input);
        return MOED_ERR_DATA;
    }
    hid_t sp = H5Dget_space(F->dx), ty = H5Dget_type(F->dx);
    hsize_t dims[2] = {0, 0};
    int rank = H5Sget_simple_extent_ndims(sp);
    if (rank == 2) H5Sget_simple_extent_dims(sp, dims, NULL);
    // Any float32 byte order is fine: HDF5 converts on read (as for training data).
    int is_f32 = H5Tget_class(ty) == H5T_FLOAT && H5Tget_size(ty) == 4;
    H5Sclose(sp), H5Tclose(ty);
    if (rank != 2 || dims[1] != (hsize_t)d || !is_f32 || dims[0] == 0) {
        snprintf(err, ERRLEN,
                 "%s: /x must be float32 [N, %d] with N >= 1 (the checkpoint's "
                 "d_model)",
                 a->input, d);
        return MOED_ERR_DATA;
    }
    F->N = (long)dims[0];

    fapl = mpio_fapl(comm);
    F->out = H5Fcreate(a->output, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (F->out < 0) {
        snprintf(err, ERRLEN, "%s: cannot create the output file", a->output);
        return MOED_ERR_DATA;
    }
    hsize_t ydims[2] = {dims[0], (hsize_t)d}, rdims[3] = {dims[0], (hsize_t)L, (hsize_t)k};
    hid_t ys = H5Screate_simple(2, ydims, NULL), rs = H5Screate_simple(3, rdims, NULL);
    hid_t g = H5Gcreate2(F->out, "/routing", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    F->dy = H5Dcreate2(F->out, "/y", H5T_IEEE_F32LE, ys, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    F->de = H5Dcreate2(F->out, "/routing/experts", H5T_STD_I32LE, rs, H5P_DEFAULT, H5P_DEFAULT,
                       H5P_DEFAULT);
    F->dw = H5Dcreate2(F->out, "/routing/weights", H5T_IEEE_F32LE, rs, H5P_DEFAULT, H5P_DEFAULT,
                       H5P_DEFAULT);
    H5Gclose(g), H5Sclose(ys), H5Sclose(rs);
    F->dxpl = H5Pcreate(H5P_DATASET_XFER);
    H5Pset_dxpl_mpio(F->dxpl, H5FD_MPIO_COLLECTIVE);
    if (F->dy < 0 || F->de < 0 || F->dw < 0) {
        snprintf(err, ERRLEN, "%s: cannot create the output datasets", a->output);
        return MOED_ERR_DATA;
    }
    return MOED_OK;
}

static void close_files(fwd_files_t* F) {
    hid_t ids[] = {F->dx, F->dy, F->de, F->dw};
    for (int i = 0; i < 4; i++)
        if (ids[i] >= 0) H5Dclose(ids[i]);
    if (F->dxpl >= 0) H5Pclose(F->dxpl);
    if (F->in >= 0) H5Fclose(F->in);
    if (F->out >= 0) H5Fclose(F->out);
}

// Reads (write = 0) or writes rows [r0, r0 + n) of a dataset whose rows are `row` elements
// wide, collectively; n = 0 takes part without data.
static herr_t rows_io(hid_t dset, hid_t mtype, hid_t dxpl, int write, long r0, long n, int nd,
                      const hsize_t* rowdims, void* buf) {
    hid_t fs = H5Dget_space(dset);
    hsize_t start[3] = {(hsize_t)r0, 0, 0}, count[3] = {(hsize_t)n, rowdims[0], rowdims[1]};
    hid_t ms = H5Screate_simple(nd, count, NULL);
    if (n > 0)
        H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    else
        H5Sselect_none(fs), H5Sselect_none(ms);
    herr_t rc =
        write ? H5Dwrite(dset, mtype, ms, fs, dxpl, buf) : H5Dread(dset, mtype, ms, fs, dxpl, buf);
    H5Sclose(ms), H5Sclose(fs);
    return rc;
}

// The first NaN or Inf in rows [0, n) of x [n, d] (file rows r0 ...), as a one-line message.
static int check_finite(const float* x, long n, int d, long r0, const char* input, char* err) {
    long i = finite_scan(x, n * d);
    if (i == n * d) return MOED_OK;
    snprintf(err, ERRLEN, "%s: dataset /x row %ld column %ld is %s: the input must be finite",
             input, r0 + i / d, i % d, isnan(x[i]) ? "NaN" : "Inf");
    return MOED_ERR_DATA;
}

// Streams the input through the model. Returns a status agreed by every rank and already
// reported: a failed read or a non-finite input stops all ranks at the same batch (one
// agreement per batch, before its collective forward), a failed write at the end.
static int run_forward(train_t* tr, fwd_files_t* F, const fwd_args_t* a, float* x, int* experts,
                       float* weights, int rank, MPI_Comm comm, char* err) {
    const model_t* m = &tr->model;
    int d = m->d, L = m->L, k = m->k, Tl = tr->Tl;
    hsize_t xrow[2] = {(hsize_t)d, 1}, rrow[2] = {(hsize_t)L, (hsize_t)k};
    long nchunks = (F->N + tr->T - 1) / tr->T;
    herr_t wrc = 0;
    for (long ch = 0; ch < nchunks; ch++) {
        long r0 = ch * tr->T + tr->t0;
        long n = F->N - r0 < Tl ? (F->N - r0 > 0 ? F->N - r0 : 0) : Tl;
        // padding rows past N are zeros; their outputs are dropped
        memset(x, 0, sizeof(float) * Tl * d);
        int rc = MOED_OK;
        if (rows_io(F->dx, H5T_NATIVE_FLOAT, F->dxpl, 0, r0, n, 2, xrow, x) < 0) {
            snprintf(err, ERRLEN, "%s: reading rows %ld..%ld of /x failed", a->input, r0,
                     r0 + n - 1);
            rc = MOED_ERR_DATA;
        }
        if (rc == MOED_OK) rc = check_finite(x, n, d, r0, a->input, err);
        if ((rc = cli_agree(rc, err, rank, comm))) return rc;
        train_forward(tr, x);
        for (long t = 0; t < n; t++)
            for (int l = 0; l < L; l++)
                for (int i = 0; i < k; i++) {
                    experts[(t * L + l) * k + i] = tr->acts[l].sel[t * k + i];
                    weights[(t * L + l) * k + i] = tr->acts[l].gates[t * k + i];
                }
        const float* y = tr->h + (long)L * Tl * d;
        wrc |= rows_io(F->dy, H5T_NATIVE_FLOAT, F->dxpl, 1, r0, n, 2, xrow, (void*)y);
        wrc |= rows_io(F->de, H5T_NATIVE_INT, F->dxpl, 1, r0, n, 3, rrow, experts);
        wrc |= rows_io(F->dw, H5T_NATIVE_FLOAT, F->dxpl, 1, r0, n, 3, rrow, weights);
    }
    if (wrc < 0) snprintf(err, ERRLEN, "%s: writing the outputs failed", a->output);
    return cli_agree(wrc < 0 ? MOED_ERR_DATA : MOED_OK, err, rank, comm);
}

int cmd_forward(int argc, char** argv, MPI_Comm comm) {
    int rank, nranks;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &nranks);
    char err[ERRLEN] = "";
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    fwd_args_t a;
    int rc = parse_args(argc, argv, &a, err);
    if (rc == MOED_OK) rc = check_output_distinct(&a, err);
    if ((rc = cli_agree(rc, err, rank, comm))) return rc;
    static ckpt_info_t info;
    if ((rc = ckpt_probe(a.ckpt, NULL, comm, &info, err, ERRLEN)))
        return cli_agree(rc, err, rank, comm);
    cfg_t c;
    rc = forward_config(&a, &info, nranks, &c, err);
    // Inference is dropless: a capacity is a training-time budget over a batch, and here
    // padding rows of the last batch would compete with real tokens for it.
    c.model.capacity_factor = 0;
    if (rc == 0) rc = cli_check_launch(&c, nranks, err);
    if (rc == 0) rc = cli_select_isa(&c, err);
    if ((rc = cli_agree(rc, err, rank, comm))) return rc;

    // Set-up: the training state (its optimizer buffers are unused here) plus the batch and
    // routing buffers, from one arena.
    static train_t tr;
    arena_t ar;
    float* x = NULL;
    int* experts = NULL;
    float* weights = NULL;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 0)
            arena_begin_count(&ar);
        else if (arena_reserve(&ar)) {
            snprintf(err, ERRLEN, "out of memory reserving %.1f MiB", ar.used / 1048576.0);
            return cli_agree(MOED_ERR_OTHER, err, rank, comm);
        }
        train_layout(&tr, &c, rank, nranks, &ar);
        long Tl = tr.Tl, Lk = (long)c.model.n_layers * c.model.top_k;
        x = arena_alloc(&ar, sizeof(float) * Tl * c.model.d_model);
        experts = arena_alloc(&ar, sizeof(int) * Tl * Lk);
        weights = arena_alloc(&ar, sizeof(float) * Tl * Lk);
    }
    omp_set_num_threads(c.compute.threads);
    rc = train_setup(&tr, comm) ? MOED_ERR_OTHER : MOED_OK;
    if (rc == 0) rc = ckpt_load(a.ckpt, &tr, NULL, 1, err, ERRLEN);
    if ((rc = cli_agree(rc, err, rank, comm))) return rc;

    fwd_files_t F;
    rc = open_files(&a, c.model.d_model, c.model.n_layers, c.model.top_k, comm, &F, err);
    if ((rc = cli_agree(rc, err, rank, comm)) == 0)
        rc = run_forward(&tr, &F, &a, x, experts, weights, rank, comm, err); // reported
    if (rc == 0 && rank == 0)
        printf("moed forward: %ld rows through %d layer%s of %s (step %ld) on %d rank%s -> %s\n",
               F.N, c.model.n_layers, c.model.n_layers > 1 ? "s" : "", a.ckpt, info.step, nranks,
               nranks > 1 ? "s" : "", a.output);
    close_files(&F);
    // A failed pass leaves no partial output that could pass for a result (F.out still holds
    // the closed file's id: it was created).
    if (rc && F.out >= 0 && rank == 0) unlink(a.output);
    train_free(&tr);
    arena_free(&ar);
    return rc;
}
