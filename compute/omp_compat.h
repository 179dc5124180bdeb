// The few OpenMP runtime calls moed uses, so that a build without OpenMP (-DMOED_OPENMP=OFF,
// Spack's ~openmp) compiles the same sources: with OpenMP this is <omp.h>; without, each call
// has the semantics of a team of one thread, and the `#pragma omp` lines (ignored by the
// compiler) leave the serial loops they annotate. compute.threads > 1 is then a config error
// (cli_check_launch), so no result silently depends on the build.
#ifndef MOED_OMP_COMPAT_H
#define MOED_OMP_COMPAT_H

#ifdef _OPENMP
#include <omp.h>
#else
static inline int omp_get_thread_num(void) { return 0; }
static inline int omp_get_num_threads(void) { return 1; }
static inline int omp_get_max_threads(void) { return 1; }
static inline int omp_in_parallel(void) { return 0; }
static inline void omp_set_num_threads(int n) { (void)n; }
#endif

#endif
