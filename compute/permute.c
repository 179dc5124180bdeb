#include "compute/permute.h"

#include <string.h>

void permute_plan(int T, int k, int E, const int* sel, int* counts, int* slot_pos) {
    for (int e = 0; e < E; e++) counts[e] = 0;
    for (long s = 0; s < (long)T * k; s++)
        if (sel[s] >= 0) counts[sel[s]]++;
    // Stable counting sort: start[e] is the next free row of expert e, and slots are
    // visited in (token, choice) order, so each expert's rows stay in token order.
    int off = 0, start[4096]; // [E] (E <= 4096, validated)
    for (int e = 0; e < E; e++) start[e] = off, off += counts[e];
    for (long s = 0; s < (long)T * k; s++) slot_pos[s] = sel[s] >= 0 ? start[sel[s]]++ : -1;
}

void permute_rows(int T, int k, int w, const int* slot_pos, const float* src, float* dst) {
    for (int t = 0; t < T; t++)
        for (int i = 0; i < k; i++) {
            int p = slot_pos[(long)t * k + i];
            if (p >= 0) memcpy(dst + (long)p * w, src + (long)t * w, sizeof(float) * w);
        }
}

void permute_rows_backward(int T, int k, int w, const int* slot_pos, const float* rows,
                           float* out) {
    for (int t = 0; t < T; t++) {
        float* o = out + (long)t * w;
        for (int j = 0; j < w; j++) o[j] = 0;
        for (int i = 0; i < k; i++) {
            int p = slot_pos[(long)t * k + i];
            if (p < 0) continue;
            const float* r = rows + (long)p * w;
            for (int j = 0; j < w; j++) o[j] += r[j];
        }
    }
}

void unpermute_forward(int T, int k, int w, const int* slot_pos, const float* gates,
                       const float* rows, float* out) {
    for (int t = 0; t < T; t++) {
        float* o = out + (long)t * w;
        for (int j = 0; j < w; j++) o[j] = 0;
        for (int i = 0; i < k; i++) {
            int p = slot_pos[(long)t * k + i];
            if (p < 0) continue;
            float g = gates[(long)t * k + i];
            const float* r = rows + (long)p * w;
            for (int j = 0; j < w; j++) o[j] += g * r[j];
        }
    }
}

void unpermute_backward(int T, int k, int w, const int* slot_pos, const float* gates,
                        const float* rows, const float* dout, float* dgates, float* drows) {
    for (int t = 0; t < T; t++) {
        const float* d = dout + (long)t * w;
        for (int i = 0; i < k; i++) {
            int p = slot_pos[(long)t * k + i];
            if (p < 0) {
                dgates[(long)t * k + i] = 0;
                continue;
            }
            const float* r = rows + (long)p * w;
            float* dr = drows + (long)p * w;
            float g = gates[(long)t * k + i];
            double dot = 0;
            for (int j = 0; j < w; j++) {
                dot += (double)d[j] * r[j];
                dr[j] = g * d[j];
            }
            dgates[(long)t * k + i] = (float)dot;
        }
    }
}
