#include "compute/capacity.h"

#include <math.h>

long capacity_slots(double c, long T, int k, int E) {
    if (c <= 0) return 0;
    return (long)ceil(c * (double)T * k / E);
}

void capacity_count(int T, int k, int E, const int* sel, int* counts) {
    for (int j = 0; j < k * E; j++) counts[j] = 0;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < k; i++) counts[i * E + sel[(long)t * k + i]]++;
}

long capacity_keep(int T, int k, int E, const int* sel, const int* all_counts, int rank, int nranks,
                   long C, int* kept) {
    long dropped = 0;
    long taken[4096]; // [E] slots of expert e ahead of this rank's next slot (E <= 4096)
    for (int e = 0; e < E; e++) taken[e] = 0;
    for (int i = 0; i < k; i++) {
        // ahead of choice i on this rank: every rank's choices < i (already in taken), and
        // lower ranks' choice i (global token order within the same choice)
        long at[4096];
        for (int e = 0; e < E; e++) at[e] = taken[e];
        for (int p = 0; p < rank; p++)
            for (int e = 0; e < E; e++) at[e] += all_counts[((long)p * k + i) * E + e];
        for (int t = 0; t < T; t++) {
            long s = (long)t * k + i;
            int e = sel[s];
            kept[s] = at[e]++ < C ? e : -1;
            dropped += kept[s] < 0;
        }
        for (int p = 0; p < nranks; p++)
            for (int e = 0; e < E; e++) taken[e] += all_counts[((long)p * k + i) * E + e];
    }
    return dropped;
}

long capacity_loads(int k, int E, const int* all_counts, int nranks, long C, int64_t* load) {
    long dropped = 0;
    for (int e = 0; e < E; e++) load[e] = 0;
    for (int p = 0; p < nranks; p++)
        for (int i = 0; i < k; i++)
            for (int e = 0; e < E; e++) load[e] += all_counts[((long)p * k + i) * E + e];
    for (int e = 0; C > 0 && e < E; e++) dropped += load[e] > C ? load[e] - C : 0;
    return dropped;
}
