// Checkpoints: one parallel HDF5 file per save, written collectively (MPI-IO driver,
// collective transfers, each rank writing only its own experts' hyperslabs), committed
// atomically, and loadable at any valid rank count (DESIGN.md §4).
//
// Commit protocol: write <dir>/step_<8 digits>.h5.tmp, close (flushes), fsync the file,
// rename to step_<8 digits>.h5, fsync the directory, then write LATEST (via LATEST.tmp,
// fsync, rename, fsync the directory) naming the new file, then delete the oldest files
// beyond checkpoint.keep. A kill at any point leaves LATEST naming a complete file.
// LATEST holds the file's name (relative to the directory) and a newline. Rank 0 does the
// file-system steps; the others wait for its verdict.
#ifndef MOED_CKPT_H
#define MOED_CKPT_H

#include <mpi.h>
#include <stdint.h>

#include "config/config.h"
#include "daemon/arena.h"
#include "daemon/train.h"

// Per-step metrics history saved in /metrics (identical on every rank: every value in it
// is a reduced, replicated quantity).
typedef struct {
    long cap; // steps the arrays can hold
    long n;   // steps recorded (= optimizer steps completed)
    int L, E;
    double* loss;  // [cap] total loss
    double* aux;   // [cap] sum over layers of aux_l + z_l
    int64_t* load; // [cap, L, E] slots routed to each expert
} history_t;

void history_layout(history_t* h, long cap, int L, int E, arena_t* a);
// Records the step that just completed (h->n becomes tr->step; a step beyond cap is not
// recorded). Steps skipped since the last record, which only a weights-only load can cause,
// are NaN with zero loads ("not recorded").
void history_record(history_t* h, const train_t* tr, const step_stats_t* st);

// What a checkpoint's root attributes say, read before anything is allocated.
typedef struct {
    long step;
    int n_layers, d_model, d_ff, n_experts, top_k, ranks_at_save;
    int format_version;
    int residual;       // whether /layers/<l>/norm/scale exists
    int n_shared;       // shared experts: dims[0] of /layers/0/shared/w0 (0 when absent)
    long n_history;     // steps held in /metrics (<= step)
    char config[16384]; // resolved INI text of the run that saved it
} ckpt_info_t;

// All functions are collective over `comm` (tr->comm.comm for load and save) and return the
// same status and message on every rank: MOED_OK, MOED_ERR_DATA (3) with a one-line message
// naming the file and the dataset or attribute, or MOED_ERR_OTHER (1) for I/O failures
// while saving. They turn off HDF5's own error printing, so a failure prints nothing but
// the caller's one line.

// Opens `path` read-only and checks format, version, every dataset's presence, shape and
// type. With c != NULL also checks that the file agrees with the configuration
// (n_layers, d_model, d_ff, n_experts, top_k, residual). Rank 0 reads the file (serial
// HDF5) and broadcasts its verdict and info, so both are identical on every rank. Reads no
// tensor data: NaN/Inf are found by ckpt_load.
int ckpt_probe(const char* path, const cfg_t* c, MPI_Comm comm, ckpt_info_t* info, char* err,
               size_t errlen);

// Loads weights, router biases and step into tr (this rank's experts only, by global
// index); with weights_only = 0 also the Adam moments and the history h (h may be NULL
// then; a history longer than h->cap loads its first h->cap steps). Probes the file against
// tr->cfg first. Fails with MOED_ERR_DATA when any loaded weight, bias or moment is NaN or
// Inf (the float64 metrics may hold NaN: steps never recorded); tr may then be partly
// overwritten.
int ckpt_load(const char* path, train_t* tr, history_t* h, int weights_only, char* err,
              size_t errlen);

// Rank 0, at start-up: creates dir (mkdir -p) and checks that it is writable, so that a
// checkpoint directory that cannot work fails the run before its first step rather than at
// its first save. MOED_ERR_DATA with a one-line message naming the path and checkpoint.dir.
int ckpt_prepare_dir(const char* dir, char* err, size_t errlen);

// Saves tr (weights, biases, moments, step) and h (may be NULL: empty metrics) to
// <dir>/step_<tr->step>.h5 by the commit protocol above, creating dir (mkdir -p) when
// missing, then keeps only `keep` step files: the one just written and the newest keep - 1
// others (by step number); leftover step_*.h5.tmp of killed saves are deleted too.
// config_text is the resolved INI (cfg_write_ini; rank 0's is written). On success
// path_out holds the committed file's path.
int ckpt_save(const char* dir, int keep, const train_t* tr, const history_t* h,
              const char* config_text, char* path_out, size_t pathlen, char* err, size_t errlen);

// The checkpoint to resume from: the file LATEST names when it probes valid against c;
// otherwise the newest step_*.h5 that does (then `note` says LATEST was bad, why, and which
// file is used instead). Returns MOED_OK with *found = 1 and path set; MOED_OK with
// *found = 0 when the directory holds no checkpoint at all (start fresh; a missing directory
// too; `note` is set when a LATEST names a file that is gone); MOED_ERR_DATA when step files
// exist but none is valid (the message gives the newest one's reason).
int ckpt_find_resume(const char* dir, const cfg_t* c, MPI_Comm comm, int* found, char* path,
                     size_t pathlen, char* note, size_t notelen, char* err, size_t errlen);

// Test hook: when the environment variable MOED_TEST_CKPT_PAUSE is set to a number of
// seconds, ckpt_save sleeps that long after the data is written to the .tmp file and before
// it is committed, so a test can kill -9 the job mid-checkpoint.

// ---------------------------------------------------------------------------------------
// Internals shared by daemon/ckpt_*.c (the layout of DESIGN.md §4 as data, and helpers).
// Other modules use the functions above.

#define CKPT_FORMAT "moed-checkpoint"
#define CKPT_FORMAT_VERSION 1
#define CKPT_ERRLEN 1024 // internal message buffers; messages are truncated to the caller's

enum { CKPT_F32 = 0, CKPT_F64 = 1, CKPT_I64 = 2 }; // dataset element types
// Where a dataset's data lives in the training state.
enum {
    CKPT_SRC_W = 0,    // model.w (a trained tensor)
    CKPT_SRC_M = 1,    // model.m
    CKPT_SRC_V = 2,    // model.v
    CKPT_SRC_BIAS = 3, // model.bias row of the layer
    CKPT_SRC_LOSS = 4, // history loss
    CKPT_SRC_AUX = 5,  // history aux
    CKPT_SRC_LOAD = 6  // history load
};

// The dimensions that determine every dataset's shape.
typedef struct {
    int L, d, f, E, residual;
    long steps; // history length stored in /metrics
    int S;      // shared experts per layer (/layers/<l>/shared/* only when S > 0)
} ckpt_dims_t;

typedef struct {
    char path[96];  // e.g. "/optimizer/m/layers/0/experts/w0"
    char param[48]; // the model tensor (param_t.name, "0/experts/w0"); "" for bias, metrics
    int src;        // CKPT_SRC_*
    int type;       // CKPT_F32, CKPT_F64, CKPT_I64
    int sharded;    // dims[0] is the global expert index: each rank owns a hyperslab
    int layer;      // -1 for metrics
    int ndim;
    long dims[3]; // global shape
} ckpt_dset_t;

// Datasets in file order: weights and router biases layer by layer, then /optimizer/m,
// /optimizer/v, then /metrics. Save, probe and load all walk this one list.
int ckpt_dataset_count(const ckpt_dims_t* dm);
void ckpt_dataset(const ckpt_dims_t* dm, int i, ckpt_dset_t* ds);
const char* ckpt_type_name(int type);

// Every rank passes its status and message; all return the worst status and the message of
// the lowest failing rank (copied into err). Collective.
int ckpt_agree(int status, char* err, size_t errlen, MPI_Comm comm);
// Writes the message with printf formatting into err, one line.
void ckpt_errf(char* err, size_t errlen, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));
// The model tensor named `name` (param_t.name), or NULL.
const param_t* ckpt_find_param(const model_t* m, const char* name);
// The innermost message of HDF5's current error stack (what actually went wrong), or "".
void ckpt_h5_reason(char* buf, size_t n);
// "step_<8 digits>.h5" and its parse: returns the step, or -1 for any other name.
void ckpt_step_name(long step, char* buf, size_t n);
long ckpt_parse_step_name(const char* name);

#endif
