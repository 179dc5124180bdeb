// Permute/unpermute between token order and expert order by a stable counting sort.
// A "slot" is one (token t, choice i) pair; slot rows are ordered by (expert, token), so
// rows bound for the same rank are contiguous and each expert's rows are in token order.
#ifndef MOED_PERMUTE_H
#define MOED_PERMUTE_H

// counts[e] = slots routed to expert e; slot_pos[t*k + i] = row of slot (t, i) in expert
// order. A slot whose sel is negative (dropped) gets slot_pos -1 and no row.
void permute_plan(int T, int k, int E, const int* sel, // [T, k]
                  int* counts,                         // [E]
                  int* slot_pos);                      // [T, k]

// dst[slot_pos[t,i]] = src[t]: token rows copied to their slots.
void permute_rows(int T, int k, int w, const int* slot_pos,
                  const float* src, // [T, w]
                  float* dst);      // [n_slots, w]
// Backward of permute_rows: out[t] = sum_i rows[slot_pos[t,i]] (in choice order i).
void permute_rows_backward(int T, int k, int w, const int* slot_pos,
                           const float* rows, // [n_slots, w]
                           float* out);       // [T, w]

// out[t] = sum_i gates[t,i] * rows[slot_pos[t,i]] (in choice order i): the weighted
// top-k combination.
void unpermute_forward(int T, int k, int w, const int* slot_pos,
                       const float* gates, // [T, k]
                       const float* rows,  // [n_slots, w]
                       float* out);        // [T, w]
// dgates[t,i] = <dout[t], rows[slot]>, drows[slot] = gates[t,i] * dout[t].
void unpermute_backward(int T, int k, int w, const int* slot_pos, const float* gates,
                        const float* rows, // [n_slots, w]
                        const float* dout, // [T, w]
                        float* dgates,     // [T, k]
                        float* drows);     // [n_slots, w]

#endif
