// Checks of one kernel table (compute/kernels/kernels.h), shared by test_kernels.c (every ISA
// the CPU runs), test_kernels_avx512.c (the emulated and native AVX-512 tables) and
// test_swiglu_isa.c. Each check fails the running Check test (ck_assert) with a message naming
// the table and the shape.
//
// sgemm: against a double reference in all four transposition cases and both accumulate
// modes, strided inputs with NaN padding (an overread shows), C with guard cells (an
// overwrite shows); sgemm_packed on B packed by pack_b gives sgemm's bits.
// gemm_swiglu: h0, h1 against the double reference, and bit-identical to two sgemm calls and
// swiglu_fwd, both packed on the fly and pre-packed, for any thread count.
#ifndef MOED_KERNEL_CHECKS_H
#define MOED_KERNEL_CHECKS_H

#include <stdint.h>

#include "compute/kernels/kernels.h"

void kc_set_threads(int t);

// A matrix op(X)[rows, cols] stored with padding between rows (or columns) that holds NaN, so
// a kernel that reads past the logical matrix produces NaN and fails the error check.
typedef struct {
    float* buf;  // [rows * ld] or [cols * ld] floats, padding included; free() it
    long rs, cs; // element (i, j) at buf[i*rs + j*cs]
} kc_strided_t;

// Normal values from `seed`; stored [rows][cols + pad], or [cols][rows + pad] when trans.
kc_strided_t kc_make_operand(int rows, int cols, int trans, int pad, uint64_t seed);

// One case: C[m, n] (+)= op(A)[m, k] op(B)[k, n], ldc = n + cpad.
void kc_check_case(const kern_table_t* t, int m, int n, int k, int ta, int tb, int accumulate,
                   int cpad, uint64_t seed);
// Every shape of dims[count][3] = {m, n, k} (dimensions < 1 clamped to 1 where `clamp`) in all
// four transposition cases and both accumulate modes.
void kc_check_shapes(const kern_table_t* t, const int (*dims)[3], int count, int clamp,
                     uint64_t seed);
// Shapes around the table's register and cache blocks (MR, NR, NR/2, KC, MC, NC), and big
// odd ones.
void kc_check_block_edges(const kern_table_t* t);
void kc_check_big_shapes(const kern_table_t* t);
// k = 0 zeroes C (accumulate = 0) or leaves it (1); nothing else touched.
void kc_check_k_zero(const kern_table_t* t);
// Neither stride 1: the generic packing paths.
void kc_check_general_strides(const kern_table_t* t);
// Bit-identical results for 1, 2 and 3 threads.
void kc_check_thread_invariance(const kern_table_t* t);
// A sub-block of the product has the same bits as the same elements of the whole product.
void kc_check_position_invariance(const kern_table_t* t);
// nt products small enough for the weight-rows path (wt_max_m) give the bits of the blocked
// loops, which larger ones take.
void kc_check_wt_path(const kern_table_t* t);
// The same for nt products of at most tp_max_m rows (the transposing path).
void kc_check_tp_path(const kern_table_t* t);
// nn products, fused or not, of wc_min_m to wc_max_m rows (the weight-columns path) give the
// bits of the blocked loops, which other row counts take.
void kc_check_wc_path(const kern_table_t* t);
// The same for nn products of at most rs_max_m rows (the row-streaming path).
void kc_check_rs_path(const kern_table_t* t);
// The same for nn products of at most bip_max_m rows (the in-place first pass).
void kc_check_bip_path(const kern_table_t* t);
// Products of depth up to stream_max_k whose C is written with streaming stores give the bits
// of the same products stored normally, and write nothing outside C.
void kc_check_stream_path(const kern_table_t* t);
// Calls from inside a parallel region: each on its own pack buffers, same bits.
void kc_check_inside_parallel_region(const kern_table_t* t);

// gemm_swiglu on edge shapes (m, n, k of 0, 1, tails, block neighbours, wider than NC),
// threads 1..3, on-the-fly and pre-packed.
void kc_check_gemm_swiglu(const kern_table_t* t);

// pack_b_part: packing B (single and pair, row- and column-major) in blocks of rows and in
// blocks of whole panels, in a scrambled order, gives pack_b's bytes, and nothing past the
// packed size is written.
void kc_check_pack_b_part(const kern_table_t* t);

// swiglu_fwd/bwd against the formula in double, and position invariance (body or tail).
void kc_check_swiglu_formula(const kern_table_t* t);
void kc_check_swiglu_position(const kern_table_t* t);

#endif
