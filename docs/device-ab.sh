#!/bin/bash
# A/B of two builds on the device, for a change whose effect only that machine can show: the
# build before the change as bin/moed-bench-base, the one with it as bin/moed-bench, run
# alternately (base first in round 1, new first in round 2) so that the machine's drift, which
# moved its 16-thread peak between 1250 and 2160 GFLOP/s within one run, falls on both.
# Bundle:  cp <old build>/moed-bench build/moed-bench-base
#          ../shared/tools/device-pack .dev build/moed build/moed-bench build/moed-bench-base \
#              -- config/tiny2.ini;  cp docs/device-*.sh .dev/
# Run:     tar xJf .dev/bundle.tar.xz -C /tmp && . /tmp/bundle/env.sh && bash .dev/device-ab.sh
#          (carry [".dev"], timeout_s BUDGET + 30). Writes 8 files under $OUT: tests.txt (the
# native AVX-512 kernel suite, when build/tests/test_kernels_avx512 is bundled too),
# ab_base.txt and ab_new.txt (gemm at all threads, every shape, two rounds), layer.txt,
# gemm1.txt (the last shape on one thread), comm.txt (the exchange at P = 16 and 8),
# peak.txt, progress.txt. Used on 2026-11-26 for the group scheduler (docs/performance.md:
# 317 s) and later that day for the team plan of kern_for_groups (reverted).
BUDGET_DEFAULT=400; . "$(dirname "$0")/device-lib.sh" || exit 1 # NC, log, lim, reap
cd /tmp/bundle
bin_of() { [ $1 = base ] && echo bin/moed-bench-base || echo bin/moed-bench; }
log start
if [ -x bin/test_kernels_avx512 ]; then
  timeout $(lim 60) bin/test_kernels_avx512 > $OUT/tests.txt 2>&1; log tests $?
fi
timeout $(lim 25) bin/moed-bench peak > $OUT/peak.txt 2>&1; log peak $?
for round in 1 2; do
  order="base new"; [ $round = 2 ] && order="new base"
  for set in small big; do for sh in 0 1 2 3; do for v in $order; do
    echo "### round $round set $set shape $sh $v" >> $OUT/ab_$v.txt
    timeout $(lim 40) $(bin_of $v) gemm --isa avx512 --threads $NC --set $set --shape $sh \
      --reps 3 --no-ffn >> $OUT/ab_$v.txt 2>&1
  done; done; done
  log round $round
done
for v in base new; do
  echo "### $v" >> $OUT/layer.txt
  timeout $(lim 40) $(bin_of $v) layer --threads $NC --reps 3 >> $OUT/layer.txt 2>&1; log layer $v $?
done
timeout $(lim 45) bin/moed-bench gemm --isa avx512 --threads 1 --set big --shape 3 --reps 3 \
  --no-ffn > $OUT/gemm1.txt 2>&1; log gemm1 $?
export UCX_TLS=self,posix # the fastest set device-run.sh found there on 2026-11-26
for P in 16 8; do
  echo "### P=$P"; timeout $(lim 35) mpiexec.mpich -n $P bin/moed-bench comm --alltoallv-only --quick
  reap
done > $OUT/comm.txt 2>&1; log comm
log end
