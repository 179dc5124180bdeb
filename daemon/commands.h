// The sub-commands of `moed` (DESIGN.md §5), one file each. Each takes main's argc/argv
// unchanged (argv[1] is the command name) and returns the process exit code
// (config/status.h): 0 done, 2 usage, 3 data or checkpoint error, 4 NaN/Inf, 1 anything else.
#ifndef MOED_COMMANDS_H
#define MOED_COMMANDS_H

#include <mpi.h>

// `moed run CONFIG [--set section.key=value]...`: training; collective over `comm`.
int cmd_run(int argc, char** argv, MPI_Comm comm);

// `moed forward --checkpoint CKPT --input X.h5 --output Y.h5 [--set section.key=value]...`:
// inference with saved weights at any rank count; collective over `comm`.
int cmd_forward(int argc, char** argv, MPI_Comm comm);

// `moed inspect CKPT` (daemon/inspect.c): a human-readable summary of a checkpoint file
// (attributes, shapes, loss history, per-expert load), read with serial HDF5; needs no
// MPI_Init. Errors are one line on stderr.
int cmd_inspect(int argc, char** argv);

#endif
