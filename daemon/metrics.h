// Rank 0's reporting: the progress line (DESIGN.md §6) and one JSON object per step in
// <run.dir>/metrics.jsonl. Files are opened at start-up; the step loop only formats.
#ifndef MOED_METRICS_H
#define MOED_METRICS_H

#include <stdint.h>
#include <stdio.h>

#include "daemon/train.h"

typedef struct {
    FILE* jsonl;     // metrics.jsonl
    FILE* out;       // progress stream (stdout)
    int tty;         // redraw one line with \r
    int every;       // log.every
    long steps;      // total steps of the run
    double t_start;  // wall clock at the first step
    long first_step; // step index at which this process started
    double first_loss;
    const char* isa;
    int pending_newline;
} metrics_t;

// Returns 0, or -1 with a message in err when metrics.jsonl cannot be opened.
int metrics_open(metrics_t* mt, const char* run_dir, long steps, int every, const char* isa,
                 char* err, size_t errlen);
// One finished step (step = optimizer steps completed, 1-based). wall = seconds of the step.
void metrics_step(metrics_t* mt, const train_t* tr, long step, const step_stats_t* st, double wall);
void metrics_close(metrics_t* mt);

#endif
