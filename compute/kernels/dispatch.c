// The dispatch table: which ISA file serves `kern`, what the CPU can run, and the per-thread
// pack buffers every blocked kernel borrows (allocated once here, never per call).
#include "compute/kernels/kernels.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

const kern_table_t* kern = &kern_ref_table; // valid before kern_select: always runnable

// The tables compiled into this build, indexed by kern_isa_t (NULL: not compiled in).
static const kern_table_t* const compiled[KERN_N_ISA] = {
    [KERN_REF] = &kern_ref_table,
    [KERN_AVX2] = &kern_avx2_table,
#ifdef MOED_HAVE_AVX512
    [KERN_AVX512] = &kern_avx512_table,
#endif
};

int kern_cpu_supports(kern_isa_t isa) {
    switch (isa) {
    case KERN_REF: return 1;
    case KERN_AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case KERN_AVX512:
        // The AVX-512 file is built with F, DQ, VL and BW; it needs all four.
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw");
    default: return 0;
    }
}

static kern_isa_t max_isa = (kern_isa_t)(KERN_N_ISA - 1);
static const char* const isa_names[KERN_N_ISA] = {
    [KERN_REF] = "ref", [KERN_AVX2] = "avx2", [KERN_AVX512] = "avx512"};

void kern_set_max_isa(kern_isa_t isa) {
    max_isa = (int)isa < 0 ? KERN_REF : isa >= KERN_N_ISA ? (kern_isa_t)(KERN_N_ISA - 1) : isa;
}

kern_isa_t kern_max_isa(void) { return max_isa; }

int kern_isa_by_name(const char* name) {
    for (int i = 0; name && i < KERN_N_ISA; i++)
        if (strcmp(name, isa_names[i]) == 0) return i;
    return -1;
}

const char* kern_isa_name(kern_isa_t isa) {
    return (int)isa >= 0 && isa < KERN_N_ISA ? isa_names[isa] : "?";
}

const kern_table_t* kern_table_for(kern_isa_t isa) {
    if ((int)isa < 0 || isa >= KERN_N_ISA || isa > max_isa) return NULL;
    if (!compiled[isa] || !kern_cpu_supports(isa)) return NULL;
    return compiled[isa];
}

kern_isa_t kern_best_isa(void) {
    for (int isa = KERN_N_ISA - 1; isa > KERN_REF; isa--)
        if (kern_table_for((kern_isa_t)isa)) return (kern_isa_t)isa;
    return KERN_REF;
}

int kern_select(int isa) {
    if (isa < 0) isa = (int)kern_best_isa();
    const kern_table_t* t = kern_table_for((kern_isa_t)isa);
    if (!t) return -1;
    kern = t;
    return 0;
}

// ---- pack buffers ----

static kern_pack_t* packs; // [n_packs]
static int n_packs;

// One thread's pack buffers, A then B in one block that is 2 MiB-aligned and asked to be
// backed by transparent huge pages: the L2 cache is physically indexed, and with 4 KiB pages
// the A block and the B panels land on random sets, so that some runs (some physical
// placements) lose a fifth of their speed to conflict misses. Huge pages give every run the
// same placement (and spare the TLB misses of walking a 4 MiB B block).
static float* pack_alloc(size_t bytes) {
    const size_t huge = (size_t)2 << 20;
    bytes = (bytes + huge - 1) & ~(huge - 1); // aligned_alloc: a multiple of the alignment
    float* p = aligned_alloc(huge, bytes);
    if (!p) return NULL;
#ifdef MADV_HUGEPAGE
    madvise(p, bytes, MADV_HUGEPAGE); // advice only: the kernel may not have huge pages
#endif
    memset(p, 0, bytes); // touch the pages now, from start-up, not inside the first GEMM
    return p;
}

int kern_init(int max_threads) {
    if (max_threads < 1) max_threads = 1;
    kern_shutdown();
    // Size for the largest blocking among the compiled tables, so that kern_select may
    // switch ISA after kern_init without reallocating.
    size_t a_floats = 0, b_floats = 0;
    for (int isa = 0; isa < KERN_N_ISA; isa++) {
        const kern_table_t* t = compiled[isa];
        if (!t || t->kc == 0) continue; // unblocked (ref): needs no buffer
        size_t a = (size_t)(t->mc + t->mr) * t->kc, b = (size_t)t->kc * (t->nc + t->nr);
        if (a > a_floats) a_floats = a;
        if (b > b_floats) b_floats = b;
    }
    packs = calloc((size_t)max_threads, sizeof *packs);
    if (!packs) return -1;
    n_packs = max_threads;
    // A's part rounded to whole cache lines keeps B 64-byte aligned.
    size_t a_len = (a_floats + KERN_PACK_SLACK + 15) & ~(size_t)15;
    size_t b_len = b_floats + KERN_PACK_SLACK;
    for (int t = 0; t < max_threads; t++) {
        packs[t].a = pack_alloc((a_len + b_len) * sizeof(float));
        if (!packs[t].a) {
            kern_shutdown();
            return -1;
        }
        packs[t].b = packs[t].a + a_len;
        packs[t].a_floats = a_floats;
        packs[t].b_floats = b_floats;
    }
    return 0;
}

void kern_shutdown(void) {
    for (int t = 0; t < n_packs; t++) free(packs[t].a); // b lives in the same block
    free(packs);
    packs = NULL;
    n_packs = 0;
}

const kern_pack_t* kern_pack_for(int tid) {
    return (tid >= 0 && tid < n_packs) ? &packs[tid] : NULL;
}

int kern_pack_threads(void) { return n_packs; }
