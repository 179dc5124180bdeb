// Pieces every command shares: loading the configuration with its --set overrides, choosing
// the kernel ISA, and the agreement that turns per-rank errors into one reported line and
// one exit code on every rank.
#ifndef MOED_CLI_H
#define MOED_CLI_H

#include <mpi.h>

#include "config/config.h"

#define CLI_ERRLEN 1024

// Parses CONFIG (argv[i]) and the --set overrides after it; MOED_ISA overrides compute.isa;
// then validates for `nranks`. Returns 0 or 2 with a message in err.
int cli_load_config(cfg_t* c, int argc, char** argv, int i, int nranks, char* err);
// What the launch and the build allow, checked before anything is opened: MOED_EXPECT_RANKS
// (set by deploy/slurm/moed.sbatch to SLURM_NTASKS) must equal the MPI world size, which
// catches launchers that start P independent "rank 0 of 1" copies; compute.threads > 1 needs
// an OpenMP build. 0 or 2 with a message in err.
int cli_check_launch(const cfg_t* c, int nranks, char* err);
// MOED_MAX_ISA (ref, avx2, avx512), when set, caps the ISAs the kernels hand out. 0 or 2.
int cli_max_isa(char* err);
// Applies MOED_MAX_ISA, then c->compute.isa (and its thread count to the pack buffers). 0, 2
// (a bad MOED_MAX_ISA, an ISA this CPU, build or cap cannot run) or 1 (out of memory).
int cli_select_isa(const cfg_t* c, char* err);
// Every rank passes its own status; all get the worst one. The lowest failing rank prints
// its message (rank 0 when it failed too), so an error appears once, as one line.
int cli_agree(int status, const char* msg, int rank, MPI_Comm comm);

#endif
