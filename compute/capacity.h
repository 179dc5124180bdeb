// Expert capacity (DESIGN.md §2): with capacity_factor c > 0 each expert keeps at most
// C = ceil(c·T·k/E) of the slots routed to it in a step, in priority order: slot rank i
// (the i-th choice of a token) first, then global token index. Every rank holds a
// contiguous block of tokens, so with the per-(rank, choice, expert) counts of all ranks
// each rank finds its own kept slots locally, and the result is the same for every P.
#ifndef MOED_CAPACITY_H
#define MOED_CAPACITY_H

#include <stdint.h>

// C for T global tokens (0 when c = 0: dropless).
long capacity_slots(double c, long T, int k, int E);

// counts[i*E + e] = local slots of choice i routed to expert e.
void capacity_count(int T, int k, int E, const int* sel, // [T, k]
                    int* counts);                        // [k, E]

// kept[t,i] = sel[t,i] when the slot is within its expert's capacity, else -1.
// all_counts: every rank's capacity_count, rank-major. Returns this rank's dropped slots.
long capacity_keep(int T, int k, int E, const int* sel, // [T, k]
                   const int* all_counts,               // [P, k, E]
                   int rank, int nranks, long C,
                   int* kept); // [T, k]

// Global per-expert loads (before dropping) and the slots dropped over all ranks, from
// all_counts: load[e] = sum over ranks and choices; dropped = sum_e max(0, load[e] - C)
// (0 when C = 0: dropless).
long capacity_loads(int k, int E, const int* all_counts, int nranks, long C,
                    int64_t* load); // [E]

#endif
