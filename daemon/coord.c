#include "daemon/coord.h"

#include <signal.h>
#include <string.h>

#include "compute/optim.h"

static volatile sig_atomic_t stop_signal = 0;

static void on_signal(int sig) { stop_signal = sig; }

void coord_install_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL); // Slurm's --signal=B:USR1@T before a time limit
}

void coord_control(control_t* ctl, int rank, long step, long steps, long warmup, double lr,
                   double lr_min, MPI_Comm comm) {
    if (rank == 0) {
        ctl->step = step;
        ctl->lr = lr_schedule(step, steps, warmup, lr, lr_min);
        ctl->stop = (int)stop_signal;
    }
    // One byte block: every rank runs the same binary, so the struct layout agrees.
    MPI_Bcast(ctl, (int)sizeof *ctl, MPI_BYTE, 0, comm);
}
