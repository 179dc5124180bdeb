// Run configuration: one table of every INI key (type, default, range, doc string),
// parsed with libinih, overridden with `--set section.key=value`, validated against the
// rank count. See DESIGN.md §5 and README "Configuration".
#ifndef MOED_CONFIG_H
#define MOED_CONFIG_H

#include <stddef.h>
#include <stdio.h>

enum { CFG_ROUTER_SOFTMAX = 0, CFG_ROUTER_SIGMOID = 1 };
enum { CFG_DATA_SYNTHETIC = 0, CFG_DATA_HDF5 = 1 };
enum { CFG_ISA_AUTO = 0, CFG_ISA_REF = 1, CFG_ISA_AVX2 = 2, CFG_ISA_AVX512 = 3 };
enum { CFG_PREPACK_OFF = 0, CFG_PREPACK_FORWARD = 1, CFG_PREPACK_ALL = 2 };
enum { CFG_RESUME_NEVER = 0, CFG_RESUME_AUTO = 1 };
enum {
    CFG_DISPATCH_ALLTOALLV = 0,
    CFG_DISPATCH_ALLTOALLV_CHUNKED = 1,
    CFG_DISPATCH_RING = 2,
    CFG_DISPATCH_AUTO = 3
};
enum { CFG_CHUNK_TOKENS = 0, CFG_CHUNK_EMBED = 1 };
enum { CFG_PROGRESS_AUTO = 0, CFG_PROGRESS_TEST = 1, CFG_PROGRESS_THREAD = 2 };

typedef struct {
    struct {
        int d_model, d_ff, n_experts, top_k, n_layers;
        int residual;  // bool
        int router;    // CFG_ROUTER_*
        int norm_topk; // bool
        double routed_scaling;
        int n_groups, topk_groups;
        double capacity_factor;
        int n_shared_experts;
    } model;
    struct {
        int global_batch_tokens, steps;
        double lr, lr_min;
        int warmup_steps;
        double weight_decay, beta1, beta2, eps, clip;
        double aux_loss_coef, z_loss_coef, bias_update_rate;
        long seed;
    } train;
    struct {
        int source; // CFG_DATA_*
        char path[512];
        long teacher_seed;
        int teacher_experts, teacher_top_k, teacher_d_ff;
        double skew;
    } data;
    struct {
        char dir[512];
        int every, keep;
        int resume; // CFG_RESUME_*
    } checkpoint;
    struct {
        int dispatcher; // CFG_DISPATCH_*
        int chunks;
        int chunk_axis; // CFG_CHUNK_*
        int progress;   // CFG_PROGRESS_*
    } comm;
    struct {
        int isa; // CFG_ISA_*
        int threads;
        int prepack; // CFG_PREPACK_*
    } compute;
    struct {
        int every, dead_expert_steps;
    } log;
    struct {
        char dir[512];
    } run;
} cfg_t;

// Errors are written into `err` as one line (no newline) naming the file and key; a buffer
// of CFG_ERRLEN bytes holds any message. Per-key checks (syntax, range) happen when a value
// is read; checks between keys and against the rank count happen in cfg_validate, so the
// order of --set options never matters.
#define CFG_ERRLEN 1024
// Every function returns 0 on success, 2 (the config exit code) on error.
void cfg_defaults(cfg_t* c);
// Applies the keys of an INI file on top of *c (call cfg_defaults first); *c is unchanged
// when the file has an error. Unknown sections/keys are errors; a repeated key: last wins.
int cfg_load_file(cfg_t* c, const char* path, char* err, size_t errlen);
// The same for INI text in memory (e.g. a checkpoint's `config` attribute); `name` is what
// error messages call it.
int cfg_load_string(cfg_t* c, const char* text, const char* name, char* err, size_t errlen);
int cfg_set(cfg_t* c, const char* assignment, char* err, size_t errlen); // "section.key=value"
// Every key's range again (for a cfg_t filled in by code), the cross-key checks, and the
// checks that depend on the rank count `nranks`.
int cfg_validate(const cfg_t* c, int nranks, char* err, size_t errlen);

// The resolved configuration as INI text (every key, in table order); used for the
// checkpoint's `config` attribute and for `moed config --show`. It parses back to the same
// cfg_t. Returns 2 when buflen is too small; CFG_INI_MAX bytes always suffice.
#define CFG_INI_MAX 16384
int cfg_write_ini(const cfg_t* c, char* buf, size_t buflen);
// The key table as a Markdown table (the README's "Configuration" section is this output).
void cfg_print_markdown(FILE* out);

#endif
