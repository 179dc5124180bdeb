// CHECK for the MPI test programs: on failure, the rank, place, condition and a printf
// message on stderr, then MPI_Abort so no other rank is left waiting in a collective.
#ifndef MOED_TEST_MPI_CHECK_H
#define MOED_TEST_MPI_CHECK_H

#include <mpi.h>
#include <stdio.h>

#define TU_MPI_CHECK(rank, cond, ...)                                                              \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "rank %d: %s:%d: CHECK(%s) failed: ", (rank), __FILE__, __LINE__,      \
                    #cond);                                                                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            MPI_Abort(MPI_COMM_WORLD, 1);                                                          \
        }                                                                                          \
    } while (0)

#endif
