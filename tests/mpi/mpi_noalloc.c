// The step loop does not allocate: every malloc/calloc/realloc/aligned_alloc made by moed's
// own code (this program is linked with --wrap for them, which redirects only calls from
// our objects, not MPICH's or libc's internals) is counted while steps run.
// moed-test-ranks: 1 2
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compute/kernels/kernels.h"
#include "compute/optim.h"
#include "daemon/coord.h"
#include "daemon/data.h"
#include "daemon/metrics.h"
#include "tests/common/testutil.h"

// volatile: gcc assumes malloc touches no user globals and would drop the flag stores
static volatile int counting = 0;
static volatile long n_alloc = 0;

void* __real_malloc(size_t n);
void* __real_calloc(size_t a, size_t b);
void* __real_realloc(void* p, size_t n);
void* __real_aligned_alloc(size_t al, size_t n);
void* __wrap_malloc(size_t n) {
    n_alloc += counting;
    return __real_malloc(n);
}
void* __wrap_calloc(size_t a, size_t b) {
    n_alloc += counting;
    return __real_calloc(a, b);
}
void* __wrap_realloc(void* p, size_t n) {
    n_alloc += counting;
    return __real_realloc(p, n);
}
void* __wrap_aligned_alloc(size_t al, size_t n) {
    n_alloc += counting;
    return __real_aligned_alloc(al, n);
}

#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "rank %d: %s:%d: %s\n", rank, __FILE__, __LINE__, #cond);              \
            MPI_Abort(MPI_COMM_WORLD, 1);                                                          \
        }                                                                                          \
    } while (0)

static int rank;

// Four steps with comm.dispatcher = `dispatcher`, comm.chunk_axis = `axis` and
// comm.progress = `progress`; none of the last three may allocate.
static void run(const char* dispatcher, const char* axis, const char* progress) {
    char err[CFG_ERRLEN], kv[64];
    cfg_t c;
    cfg_defaults(&c);
    REQUIRE(cfg_set(&c, "model.n_layers=2", err, sizeof err) == 0);
    REQUIRE(cfg_set(&c, "train.bias_update_rate=0.001", err, sizeof err) == 0);
    REQUIRE(cfg_set(&c, "model.capacity_factor=1.0", err, sizeof err) == 0);
    REQUIRE(cfg_set(&c, "model.n_shared_experts=1", err, sizeof err) == 0);
    snprintf(kv, sizeof kv, "comm.dispatcher=%s", dispatcher);
    REQUIRE(cfg_set(&c, kv, err, sizeof err) == 0);
    snprintf(kv, sizeof kv, "comm.chunk_axis=%s", axis);
    REQUIRE(cfg_set(&c, kv, err, sizeof err) == 0);
    snprintf(kv, sizeof kv, "comm.progress=%s", progress);
    REQUIRE(cfg_set(&c, kv, err, sizeof err) == 0);
    n_alloc = 0;

    static train_t tr;
    static data_t D;
    arena_t a, ad;
    REQUIRE(tu_train_new(&tr, &a, &c, MPI_COMM_WORLD) == 0);
    REQUIRE(tr.disp.thread == (!strcmp(progress, "thread") && strcmp(dispatcher, "alltoallv")));
    arena_begin_count(&ad);
    data_layout(&D, &c, tr.Tl, &ad);
    long n = (long)tr.Tl * c.model.d_model;
    REQUIRE(arena_reserve(&ad) == 0);
    data_layout(&D, &c, tr.Tl, &ad);
    REQUIRE(data_open(&D, &c, rank, 1, MPI_COMM_SELF, err, sizeof err) == 0);
    metrics_t mt;
    char dir[] = "/tmp/moed-noalloc.XXXXXX";
    if (rank == 0)
        REQUIRE(mkdtemp(dir) && metrics_open(&mt, dir, 4, 1, "test", err, sizeof err) == 0);

    step_stats_t st;
    control_t ctl;
    float* xb = malloc(sizeof(float) * n); // test-side buffers, before counting starts
    float* yb = malloc(sizeof(float) * n);
    for (long step = 0; step < 4; step++) {
        counting = step > 0; // the first step may warm up MPI; ours must not allocate at all
        coord_control(&ctl, rank, step, 4, 1, 1e-3, 1e-4, MPI_COMM_WORLD);
        REQUIRE(data_batch(&D, step, tr.T, tr.t0, xb, yb, err, sizeof err) == 0);
        REQUIRE(train_step(&tr, xb, yb, ctl.lr, &st) == 0);
        if (rank == 0) metrics_step(&mt, &tr, step + 1, &st, 0.01);
        counting = 0;
    }
    printf("rank %d: %s (%s, progress %s): %ld allocations by moed code during 3 steps\n", rank,
           dispatcher, axis, progress, n_alloc);
    REQUIRE(n_alloc == 0);
    // the counter itself works: an allocation while counting is seen
    counting = 1;
    void* volatile probe = malloc(16); // volatile: gcc may elide a malloc/free pair
    free(probe);
    counting = 0;
    REQUIRE(n_alloc == 1);
    if (rank == 0) metrics_close(&mt);
    free(xb), free(yb);
    tu_train_free(&tr, &a);
    arena_free(&ad);
    kern_shutdown();
}

int main(int argc, char** argv) {
    int provided;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    REQUIRE(provided == MPI_THREAD_MULTIPLE);
    run("alltoallv", "tokens", "test");
    // The progress thread is created with the training state, not in the step loop.
    for (int th = 0; th < 2; th++) {
        const char* progress = th ? "thread" : "test";
        run("alltoallv_chunked", "tokens", progress);
        run("ring", "tokens", progress);
        run("ring", "embed", progress);
    }
    MPI_Finalize();
    return 0;
}
