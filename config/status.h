// Status codes returned up the call chain to the one place that reports and exits
// (daemon/main.c). The values are the process exit codes of DESIGN.md §5.
#ifndef MOED_STATUS_H
#define MOED_STATUS_H

enum {
    MOED_OK = 0,
    MOED_ERR_OTHER = 1,  // anything else (I/O, MPI, out of memory)
    MOED_ERR_CONFIG = 2, // usage or configuration error
    MOED_ERR_DATA = 3,   // data or checkpoint error
    MOED_ERR_NUMERIC = 4 // NaN/Inf in the loss or the weights
};

#endif
