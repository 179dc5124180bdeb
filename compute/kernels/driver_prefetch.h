// Prefetch streams of the shared blocked driver (driver.h, which includes this file first).
#ifndef MOED_KERNELS_DRIVER_PREFETCH_H
#define MOED_KERNELS_DRIVER_PREFETCH_H

#include <stddef.h>

// ---------------------------------------------------------------------------------------------
// Prefetch streams. The micro-kernel issues software prefetches for its caller: the source
// lines of the B panel packed next (first ic pass) and of the next A block, so that packing
// finds them in cache. A stream is a walk over lines in runs: `run` lines `inner` floats apart,
// successive runs `outer` floats apart (row-major source: a run per row; column-major: a run
// per column). Each call issues its share of the lines, spread over its k loop: issued in a
// burst they would fill the miss buffers and stall the kernel's own loads.
// ---------------------------------------------------------------------------------------------

typedef struct {
    const float* row;  // first float of the current run
    long inner, outer; // floats between lines of a run (16, or a unit's width), between runs
    int run, cnt;      // lines per run, lines of the current run already issued
    long left;         // lines still to issue
} pf_stream_t;

static const pf_stream_t pf_none = {NULL, 0, 0, 1, 0, 0};

// The streams' cache level, as __builtin_prefetch's locality: 3 (prefetcht0, into L1; the
// default) or 2 (prefetcht1, into L2), chosen by the ISA file before it includes driver.h.
#ifndef PF_LOCALITY
#define PF_LOCALITY 3
#endif

static inline void pf_issue(pf_stream_t* s) {
    if (s->left <= 0) return;
    const float* q = s->row + s->cnt * s->inner;
    __builtin_prefetch(q, 0, PF_LOCALITY);
    __builtin_prefetch(q + s->inner - 1, 0, PF_LOCALITY); // the line may straddle 64 bytes
    s->left--;
    if (++s->cnt == s->run) {
        s->cnt = 0;
        s->row += s->outer;
    }
}

// The lines of rows [0, rows) x cols [0, cols) of a matrix with element (r, c) at
// x[r*rs + c*cs], walked along whichever of rs, cs is 1. None when neither is.
static pf_stream_t pf_matrix(const float* x, int rows, int cols, long rs, long cs) {
    pf_stream_t s = pf_none;
    if (rows <= 0 || cols <= 0) return s;
    if (cs == 1) { // a run per row
        int run = (cols + 15) / 16;
        s = (pf_stream_t){x, 16, rs, run, 0, (long)rows * run};
    } else if (rs == 1) { // a run per column
        int run = (rows + 15) / 16;
        s = (pf_stream_t){x, 16, cs, run, 0, (long)cols * run};
    }
    return s;
}

// Rows [0, rows) x cols [0, cols) of a row-major matrix, cols <= 32, one row per issued "line"
// (a run of one unit `cols` floats wide): its first float and its last, so both 64-byte lines
// of a row of 32 floats that starts a line (at 16 or fewer, pf_matrix's lines). For a caller that
// must prefetch as many rows as its k loop has steps, where a line at a time would reach only half
// of them (pf_lines: one issue per step at most).
static pf_stream_t pf_rows(const float* x, int rows, int cols, long rs) {
    pf_stream_t s = pf_none;
    if (rows > 0 && cols > 0) s = (pf_stream_t){x, cols, rs, 1, 0, rows};
    return s;
}

// What one micro-kernel call prefetches: n[i] lines of stream s[i] (s[i] may be NULL).
typedef struct {
    pf_stream_t* s[2];
    int n[2];
} ukr_pf_t;

// How a micro-kernel call spreads its prefetches over its k loop: n0 lines of s[0] and n1 of
// s[1], one before every `gap` k steps (the return value; 0 when there is nothing to issue).
static inline int pf_lines(const ukr_pf_t* pf, int kc, int* n0, int* n1) {
    *n0 = pf && pf->s[0] ? pf->n[0] : 0;
    *n1 = pf && pf->s[1] ? pf->n[1] : 0;
    if (*n0 + *n1 == 0) return 0;
    if (*n0 > kc) *n0 = kc;
    if (*n1 > kc - *n0) *n1 = kc - *n0;
    return kc / (*n0 + *n1); // >= 1
}

#endif
