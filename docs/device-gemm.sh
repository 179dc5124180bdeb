#!/bin/bash
# One device session for the grouped GEMMs alone (issue 4's AVX-512 targets), when the other
# device figures (comm, full steps) are already recorded. Each step has its own time limit,
# cut to what is left of BUDGET seconds (default 500), and writes its own file under $OUT, so
# a run cut short still returns what finished. The 1-thread tables run shape by shape, each
# under its own limit, so that no shape is lost to one slow one (device-run.sh's single
# 1-thread run was cut before its last shape twice), and a second round in the reverse order
# follows while time is left: one run per shape cannot tell a kernel from the machine's drift.
# Bundle: XZ_OPT="-1 -T2" ../shared/tools/device-pack .dev build/moed build/moed-bench \
#           build/tests/test_kernels_avx512 -- config/tiny2.ini; cp docs/device-*.sh .dev/
# Run:    tar xJf .dev/bundle.tar.xz -C /tmp && . /tmp/bundle/env.sh &&
#           BUDGET=500 bash .dev/device-gemm.sh
#         (carry [".dev"], timeout_s 540). Writes 7 files: cpu.txt, peak.txt, gemm1.txt,
#         gemmN.txt, gemm1b.txt, determinism.txt, progress.txt.
# SHAPES="set:shape ..." limits the tables to those shapes (default: all eight), for a run that
# checks one change on the shapes it touches.
BUDGET_DEFAULT=500; . "$(dirname "$0")/device-lib.sh" || exit 1 # NC, ISA, log, lim, reap, cpu_info
cd /tmp/bundle
cpu_info > $OUT/cpu.txt 2>&1
log start
timeout $(lim 25) bin/moed-bench peak > $OUT/peak.txt 2>&1; log peak $?
if [ $ISA = avx512 ]; then
  timeout $(lim 45) bin/test_kernels_avx512 >> $OUT/cpu.txt 2>&1; log test_kernels_avx512 rc=$?
fi
g1() { # $1 = set, $2 = shape, $3 = file
  echo "### set $1 shape $2" >> $OUT/$3
  timeout $(lim 35) bin/moed-bench gemm --isa $ISA --reps 3 --no-ffn --threads 1 \
    --set $1 --shape $2 >> $OUT/$3 2>&1; log "gemm1 $1 $2 $?"
}
all="small:0 small:1 small:2 small:3 big:0 big:1 big:2 big:3"
for s in ${SHAPES:-$all}; do g1 ${s%:*} ${s#*:} gemm1.txt; done
if [ -z "$SHAPES" ]; then
  timeout $(lim 90) bin/moed-bench gemm --isa $ISA --reps 3 --no-ffn --threads $NC \
    > $OUT/gemmN.txt 2>&1
else for s in $SHAPES; do
  timeout $(lim 30) bin/moed-bench gemm --isa $ISA --reps 3 --no-ffn --threads $NC \
    --set ${s%:*} --shape ${s#*:} >> $OUT/gemmN.txt 2>&1
done; fi; log gemm$NC $?
for p in 1 2 4 8; do
  MOED_ISA=$ISA timeout $(lim 15) mpiexec.mpich -n $p bin/moed run files/tiny2.ini \
    --set run.dir=/tmp/r$p --set train.steps=100 --set log.every=1000 2>&1 | tail -1; reap
done > $OUT/determinism.txt; log determinism
for s in $(echo ${SHAPES:-$all} | tr ' ' '\n' | tac); do g1 ${s%:*} ${s#*:} gemm1b.txt; done
log end
