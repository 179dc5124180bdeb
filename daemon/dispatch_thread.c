// comm.progress = thread: a progress thread per rank that completes the nonblocking
// exchanges of alltoallv_chunked and ring while the compute threads run (daemon/dispatch.h).
//
// Ownership, so that no request is touched by two threads at once (MPI forbids it even
// under MPI_THREAD_MULTIPLE): the main thread writes reqs[i] by posting, then sets pend[i]
// (release) and wakes the thread; from then on only the thread calls MPI_Test on reqs[i],
// and it clears pend[i] (release) once the request completed. The main thread reads reqs[i]
// again only after it saw pend[i] == 0 (acquire). The in-flight time (active, t_since,
// t_inflight) is kept under mu, the completion side by the thread, before pend[i] clears.
#define _GNU_SOURCE // sched_getaffinity, CPU_COUNT
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include "config/config.h"
#include "config/status.h"
#include "daemon/dispatch.h"

static int pending(const dispatch_t* ds, int i) {
    return __atomic_load_n(&ds->pend[i], __ATOMIC_ACQUIRE);
}

// One pass of MPI_Test over the requests the thread owns; returns how many it owns still.
static int test_pass(dispatch_t* ds) {
    int left = 0;
    for (int i = 0; i < ds->nreq; i++) {
        if (!pending(ds, i)) continue;
        // An error ends the request as completion does: as in test mode, exchange errors
        // are not reported mid-step (daemon/layer.c), and a waiter must not hang on it.
        int done = 0, rc = MPI_Test(&ds->reqs[i], &done, MPI_STATUS_IGNORE);
        if (!done && rc == MPI_SUCCESS) {
            left++;
            continue;
        }
        pthread_mutex_lock(&ds->mu);
        if (--ds->active == 0) ds->t_inflight += MPI_Wtime() - ds->t_since;
        __atomic_store_n(&ds->pend[i], 0, __ATOMIC_RELEASE);
        pthread_cond_broadcast(&ds->done);
        pthread_mutex_unlock(&ds->mu);
    }
    return left;
}

static void* progress_main(void* arg) {
    dispatch_t* ds = arg;
    pthread_mutex_lock(&ds->mu);
    for (;;) {
        // Asleep while nothing is in flight: no core is taken between exchanges.
        while (ds->active == 0 && !ds->quit) pthread_cond_wait(&ds->wake, &ds->mu);
        if (ds->quit) break;
        pthread_mutex_unlock(&ds->mu);
        // Spin while something is in flight: each MPI_Test is a turn of MPICH's progress
        // engine, which moves the bytes on this thread's core. A request handed over during
        // a pass is picked up by the next one (active > 0 keeps the loop going).
        while (test_pass(ds) > 0 && !__atomic_load_n(&ds->quit, __ATOMIC_RELAXED)) {
            // A breath between passes: under MPI_THREAD_MULTIPLE each MPI_Test takes MPICH's
            // global lock, and a thread that re-takes it at once could keep the main
            // thread's next MPI_Ialltoallv waiting for it.
            for (int i = 0; i < 32; i++) __builtin_ia32_pause();
        }
        pthread_mutex_lock(&ds->mu);
    }
    pthread_mutex_unlock(&ds->mu);
    return NULL;
}

void dispatch_thread_hand(dispatch_t* ds, int i) {
    pthread_mutex_lock(&ds->mu);
    if (ds->active++ == 0) ds->t_since = MPI_Wtime();
    __atomic_store_n(&ds->pend[i], 1, __ATOMIC_RELEASE);
    pthread_cond_signal(&ds->wake);
    pthread_mutex_unlock(&ds->mu);
}

void dispatch_thread_wait(dispatch_t* ds, int i) {
    if (!pending(ds, i)) return; // completed already (or never posted): nothing exposed
    pthread_mutex_lock(&ds->mu);
    double t0 = MPI_Wtime();
    // Asleep, not spinning: the core goes to the progress thread (or the other ranks).
    while (pending(ds, i)) pthread_cond_wait(&ds->done, &ds->mu);
    ds->t_wait += MPI_Wtime() - t0;
    pthread_mutex_unlock(&ds->mu);
}

// Cores this process may run on (its affinity mask; the online cores if that fails). Under
// Slurm's cpusets this is the job's share of the node, not the whole node.
static long usable_cores(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
    return sysconf(_SC_NPROCESSORS_ONLN);
}

// Ranks sharing this node (a collective over comm).
static int node_ranks(MPI_Comm comm) {
    MPI_Comm node;
    int n = 1;
    if (MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) != MPI_SUCCESS)
        return n;
    MPI_Comm_size(node, &n);
    MPI_Comm_free(&node);
    return n;
}

int dispatch_start(dispatch_t* ds, int cfg_dispatcher, int cfg_progress, int threads, MPI_Comm comm,
                   char* err, int errlen) {
    ds->thread = 0;
    // Plain alltoallv never has anything in flight: no thread to keep asleep.
    if (cfg_dispatcher == CFG_DISPATCH_ALLTOALLV || cfg_progress == CFG_PROGRESS_TEST)
        return MOED_OK;
    int level = MPI_THREAD_SINGLE;
    MPI_Query_thread(&level);
    int ranks = node_ranks(comm); // collective: every rank calls it, whatever it decides
    if (cfg_progress == CFG_PROGRESS_AUTO) {
        // Ranks unbound (mpiexec's default) share the mask: each needs threads + 1 of it. A
        // rank bound to its own cores sees only those and so falls back to test unless
        // they are plenty: the safe side, as a thread without a core slows the step.
        long cores = usable_cores();
        if (level < MPI_THREAD_MULTIPLE || (long)ranks * (threads + 1) > cores) return MOED_OK;
    } else if (level < MPI_THREAD_MULTIPLE) {
        snprintf(err, errlen,
                 "comm.progress = thread needs MPI_THREAD_MULTIPLE, the MPI library gave level %d",
                 level);
        return MOED_ERR_CONFIG;
    }
    ds->active = 0;
    ds->quit = 0;
    for (int i = 0; i < ds->nreq; i++) ds->pend[i] = 0;
    pthread_mutex_init(&ds->mu, NULL);
    pthread_cond_init(&ds->wake, NULL);
    pthread_cond_init(&ds->done, NULL);
    // Stop signals go to the main thread (coord.c's handler): the progress thread blocks
    // them all, so a SIGTERM never lands in the middle of its MPI_Test loop.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&ds->th, NULL, progress_main, ds);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the comm progress thread (error %d)", rc);
        return MOED_ERR_OTHER;
    }
    ds->thread = 1;
    return MOED_OK;
}

void dispatch_stop(dispatch_t* ds) {
    if (!ds->thread) return;
    pthread_mutex_lock(&ds->mu);
    __atomic_store_n(&ds->quit, 1, __ATOMIC_RELAXED);
    pthread_cond_signal(&ds->wake);
    pthread_mutex_unlock(&ds->mu);
    pthread_join(ds->th, NULL);
    pthread_cond_destroy(&ds->done);
    pthread_cond_destroy(&ds->wake);
    pthread_mutex_destroy(&ds->mu);
    ds->thread = 0;
}
