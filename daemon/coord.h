// Rank 0 coordinates: it owns the schedule and the stop decision and broadcasts one control
// record before every step, so all ranks agree on the step, its learning rate, and whether
// to stop at this step boundary. Signal handlers (SIGINT, SIGTERM, SIGUSR1) only set a flag.
#ifndef MOED_COORD_H
#define MOED_COORD_H

#include <mpi.h>

typedef struct {
    long step; // index of the step about to run (0-based)
    double lr; // its learning rate
    int stop;  // nonzero: stop before this step; the value is the signal number
} control_t;

void coord_install_signals(void);
// Rank 0 fills `ctl` from the schedule and the signal flag; every rank receives it.
void coord_control(control_t* ctl, int rank, long step, long steps, long warmup, double lr,
                   double lr_min, MPI_Comm comm);

#endif
