// One dispatch table of dense kernels per ISA (ref, avx2, avx512), chosen once at start-up.
// Everything above this header (gmm, the layer, the benchmarks) calls through `kern`.
//
// Determinism contract (DESIGN.md §3): for a given ISA, the result of kern->sgemm depends only
// on its inputs, never on the number of OpenMP threads. Threads split the output into tiles;
// the reduction over k always runs in the same order (fixed KC blocks, sequential).
#ifndef MOED_KERNELS_H
#define MOED_KERNELS_H

#include <stddef.h>

typedef enum { KERN_REF = 0, KERN_AVX2 = 1, KERN_AVX512 = 2, KERN_N_ISA = 3 } kern_isa_t;

// C[m,n] (+)= A·B where element (i,p) of A is a[i*rsa + p*csa], element (p,j) of B is
// b[p*rsb + j*csb] and C is row-major with leading dimension ldc. Any of the four
// transposition cases is a choice of strides; packing absorbs it (BLIS-style).
// accumulate = 0 overwrites C, 1 adds to it. m, n or k may be 0 (k = 0 with accumulate = 0
// zeroes C). Uses up to omp_get_max_threads() threads.
typedef void (*kern_sgemm_fn)(int m, int n, int k, const float* a, long rsa, long csa,
                              const float* b, long rsb, long csb, float* c, long ldc,
                              int accumulate);

// The same with B pre-packed by pack_b (halves = 1) into bp, in this table's layout.
typedef void (*kern_sgemm_packed_fn)(int m, int n, int k, const float* a, long rsa, long csa,
                                     const float* bp, float* c, long ldc, int accumulate);

// The up-projection with SwiGLU fused into its epilogue: h0 = A·B0, h1 = A·B1 and
// out = silu(h0) * h1, [m, n] each with row stride ldc (A and B strided as in sgemm). B0 and
// B1 are read through one pass over A; `out` is formed from each tile of h0 and h1 while it
// is in cache. bp: B0 and B1 pre-packed by pack_b (halves = 2), or NULL to pack them on the
// fly. h0 and h1 are bit-identical to two sgemm calls and out to swiglu_fwd on them, for any
// thread count. k = 0 gives zeros.
typedef void (*kern_gemm_swiglu_fn)(int m, int n, int k, const float* a, long rsa, long csa,
                                    const float* b0, const float* b1, long rsb, long csb,
                                    const float* bp, float* h0, float* h1, float* out, long ldc);

// Floats of pre-packed B for a k x n matrix (halves = 1) or the pair B0, B1 (halves = 2).
typedef size_t (*kern_packed_floats_fn)(int k, int n, int halves);
// Packs B (b1 = NULL) or the pair B0, B1 into dst (64-byte aligned, packed_floats long):
// the micro-kernel's panels in the order the kernels read them. Thread-count independent.
typedef void (*kern_pack_b_fn)(int k, int n, const float* b0, const float* b1, long rsb, long csb,
                               float* dst);
// Part of pack_b: only the elements in rows [p0, p1) and columns [j0, j1) of B (of both halves
// for the pair), written where pack_b puts them, with the zero padding of the panels that end
// at column n. j0 must be a multiple of the table's nr, and j1 one too or n. Single-threaded:
// the optimizer calls it from its own threads to repack the rows it has just updated.
typedef void (*kern_pack_b_part_fn)(int k, int n, const float* b0, const float* b1, long rsb,
                                    long csb, float* dst, int p0, int p1, int j0, int j1);

// SwiGLU over n elements: a = silu(h0) * h1; backward da -> dh0, dh1. Element-wise, so the
// result never depends on the thread count; fast ISAs use a vector exp (within 2 ulp of expf).
typedef void (*kern_swiglu_fwd_fn)(long n, const float* h0, const float* h1, float* a);
typedef void (*kern_swiglu_bwd_fn)(long n, const float* h0, const float* h1, const float* da,
                                   float* dh0, float* dh1);

#define KERN_STREAM_MIN_C (1L << 18) // floats of C (1 MiB): see stream_max_k below

typedef struct {
    const char* name; // "ref", "avx2", "avx512"
    kern_isa_t isa;
    int mr, nr;     // micro-tile (register block)
    int mc, kc, nc; // cache blocks
    // nt products (B column-major) of more than tp_max_m and at most wt_max_m rows, and of more
    // than nr rows only at a depth k >= wt_min_k, or k >= wt_full_min_k when m is a multiple of
    // nr, and of more than 2 * nr rows only when m is a multiple of nr, read B in place
    // (compute/kernels/driver_wt.h); wt_max_m = 0: never. The bits are the same either way.
    int wt_max_m, wt_min_k, wt_full_min_k;
    // nn products (B row-major) of wc_min_m to wc_max_m rows, fused or not, read B in place
    // (compute/kernels/driver_wc.h); wc_max_m = 0: never. avx512 takes it on AMD CPUs only
    // (avx512.c says why; its emulated test build everywhere). The bits are the same either way.
    int wc_min_m, wc_max_m;
    // nt products (B column-major) of at most tp_max_m rows read B in place, transposing it in
    // registers (compute/kernels/driver_tp.h); 0: never. The bits are the same either way.
    int tp_max_m;
    // nn products of at most rs_max_m rows, fused or not, stream B's rows whole
    // (compute/kernels/driver_rs.h); 0: never. The bits are the same either way.
    int rs_max_m;
    // nn products whose first pass has at most bip_max_m rows (and all of them in one MC block)
    // read B in place, without a packing pass (driver.h, bip_pass); 0: never. The bits are the
    // same either way.
    int bip_max_m;
    // Products of depth k <= stream_max_k that store (not accumulate) an unfused C of at least
    // KERN_STREAM_MIN_C floats with 64-byte aligned rows write it with streaming stores
    // (driver.h, c_streams); 0: never. The bits are the same either way.
    int stream_max_k;
    kern_sgemm_fn sgemm;
    kern_sgemm_packed_fn sgemm_packed;
    kern_gemm_swiglu_fn gemm_swiglu;
    kern_packed_floats_fn packed_floats;
    kern_pack_b_fn pack_b;
    kern_pack_b_part_fn pack_b_part;
    kern_swiglu_fwd_fn swiglu_fwd;
    kern_swiglu_bwd_fn swiglu_bwd;
} kern_table_t;

// The table for an ISA, or NULL when this build or this CPU cannot run it.
const kern_table_t* kern_table_for(kern_isa_t isa);
// Best ISA this CPU supports among those compiled in.
kern_isa_t kern_best_isa(void);
int kern_cpu_supports(kern_isa_t isa);

// Pack buffers: allocated once by kern_init for up to `max_threads` threads, freed by
// kern_shutdown. kern_init must run before any sgemm call. Returns 0 on success.
int kern_init(int max_threads);
void kern_shutdown(void);

// The highest ISA kern_table_for hands out (all compiled in, by default): a cap below what
// the CPU runs, as DNNL_MAX_CPU_ISA and OPENBLAS_CORETYPE hold those libraries back. Set at
// start-up from MOED_MAX_ISA (daemon/cli.c, bench/main.c), before kern_select.
void kern_set_max_isa(kern_isa_t isa);
kern_isa_t kern_max_isa(void);
// The ISA called `name` ("ref", "avx2", "avx512": the tables' names), or -1.
int kern_isa_by_name(const char* name);
// The name of an ISA, for messages ("?" out of range).
const char* kern_isa_name(kern_isa_t isa);

// The table chosen at start-up (set by kern_select); the rest of the code calls kern->sgemm.
extern const kern_table_t* kern;
// Selects `isa` (KERN_* or -1 for auto). Returns 0, or -1 when the CPU lacks it.
int kern_select(int isa);

// Runs fn(g, ctx) for every group g in [0, n) of a grouped product, group g's work being
// offs[g + 1] - offs[g] (its rows: the other two dimensions are the same for every group). Groups
// with at least 1 / (2T) of the work run one after another on all T threads; the others are
// handed out whole to the threads, each running single-threaded inside (compute/kernels/
// groups.c says why). fn must write only group g's outputs; the result is then the same for
// any thread count. Called inside a parallel region, it runs the groups in order.
typedef void (*kern_group_fn)(int g, void* ctx);
void kern_for_groups(int n, const int* offs, kern_group_fn fn, void* ctx);

// ---- Internal to compute/kernels/ (the ISA files and dispatch.c); not for callers. ----

// The tables each ISA file defines. kern_table_for hands them out after checking the CPU.
extern const kern_table_t kern_ref_table;
extern const kern_table_t kern_avx2_table;
#ifdef MOED_HAVE_AVX512
extern const kern_table_t kern_avx512_table;
#endif
// compute/kernels/avx512.c built a second time without AVX-512, its SIMDe intrinsics emulated
// on AVX2/FMA (-DMOED_KERN_AVX512_EMULATED, target moed_avx512_emu in tests/CMakeLists.txt):
// the same blocking and micro-kernels as kern_avx512_table, runnable on any AVX2 CPU. Not in
// the dispatch table; only tests link it (MOED_HAVE_AVX512_EMU is defined where they do).
extern const kern_table_t kern_avx512_emu_table;
// Element-wise AVX2 kernels (compute/kernels/avx2_swiglu.c).
void avx2_swiglu_fwd(long n, const float* h0, const float* h1, float* a);
void avx2_swiglu_bwd(long n, const float* h0, const float* h1, const float* da, float* dh0,
                     float* dh1);

// One thread's pack buffers, allocated by kern_init (aligned to 64 bytes), sized for the
// largest blocking among the compiled-in tables (kern_init in dispatch.c):
//   a: [(mc + mr) * kc + KERN_PACK_SLACK]  an MC x KC block of A as MR-row micro-panels
//   b: [kc * (nc + nr) + KERN_PACK_SLACK]  a KC x NC block of B as NR-column micro-panels
// The slack lets packing store whole vectors past the last panel.
#define KERN_PACK_SLACK 64
typedef struct {
    float* a;
    float* b;
    size_t a_floats, b_floats; // the sizes above without the slack: a kernel checks its blocking
} kern_pack_t;

// Buffers of thread `tid` (0 <= tid < kern_pack_threads()), or NULL before kern_init.
const kern_pack_t* kern_pack_for(int tid);
int kern_pack_threads(void);

#endif
