// moed-bench: kernel, layer and comm benchmarks, one subcommand per file. A subcommand is a
// function `int bench_NAME(int argc, char** argv)` that gets the options after its name and
// returns the exit code; to add one, declare it here and add a line to the table in main.c.
// Benchmarks print figures; they do not assert.
#ifndef MOED_BENCH_H
#define MOED_BENCH_H

#include "compute/kernels/kernels.h"

typedef int (*bench_fn)(int argc, char** argv);

int bench_peak(int argc, char** argv);  // bench/peak.c:  FMA peak per ISA and thread count
int bench_gemm(int argc, char** argv);  // bench/gemm.c:  grouped GEMM vs OpenBLAS and oneDNN
int bench_layer(int argc, char** argv); // bench/layer.c: one MoE layer's training step
int bench_ckpt(int argc, char** argv);  // bench/ckpt.c:  checkpoint save/load bandwidth vs dd
int bench_comm(int argc, char** argv);  // bench/comm.c:  dispatch/combine strategies, overlap

// Measured FMA throughput in GFLOP/s of `threads` threads together running independent FMAs
// of `isa`'s vector width (KERN_REF: scalar). Measured once per (isa, threads), then cached.
// Returns 0 when the CPU lacks the ISA.
double bench_peak_gflops(kern_isa_t isa, int threads);
// Measures it again and keeps the larger: the most this machine has shown in the run.
double bench_peak_remeasure(kern_isa_t isa, int threads);

// Numeric option values: *out = val when it is a whole number (or, for the double, a finite
// number) in [lo, hi], and 0 returned; otherwise a one-line error naming the subcommand, the
// option and the value, and -1 (the subcommand then exits 2).
int bench_int_arg(const char* cmd, const char* opt, const char* val, long lo, long hi, int* out);
int bench_double_arg(const char* cmd, const char* opt, const char* val, double lo, double hi,
                     double* out);

// An option the subcommand does not know: one line pointing to moed-bench --help (where the
// table in main.c lists every subcommand's options), and the exit code 2.
int bench_unknown(const char* cmd, const char* opt);

// Wall-clock seconds (monotonic).
double bench_now(void);
// Median of x[n] (sorts x in place).
double bench_median(double* x, int n);

#endif
