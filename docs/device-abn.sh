#!/bin/bash
# A/B/C/... of kernel variants on the device, for the small-group shapes where its Xeon and the
# Zen 5 dev box disagree: every bin/moed-bench-* in the bundle beside bin/moed-bench ("new"),
# run alternately shape by shape, the order rotated each round so that the machine's drift
# falls on all of them, ours only (--no-peers), 1 thread (THREADS), then one round at all threads.
# Bundle:  cp <other build>/moed-bench build/moed-bench-<name>   (one per variant)
#          XZ_OPT="-1 -T2" ../shared/tools/device-pack .dev build/moed-bench build/moed-bench-* \
#              -- config/tiny2.ini;  cp docs/device-*.sh .dev/
# Run:     tar xJf .dev/bundle.tar.xz -C /tmp && . /tmp/bundle/env.sh &&
#            BUDGET=360 bash .dev/device-abn.sh
#          (carry [".dev"], timeout_s BUDGET + 40). SHAPES="set:shape ..." picks the shapes
# (default: the groups of 32 and the 64 uneven groups, both sets), THREADS the rounds' thread
# count (default 1; e.g. THREADS=16 SHAPES="small:0 big:0 small:2 big:2" for the large groups
# on all cores). Writes under $OUT: ab1.txt (the two rounds), abN.txt (all threads, one round),
# sys.txt (CPU, transparent huge pages), progress.txt.
BUDGET_DEFAULT=360; . "$(dirname "$0")/device-lib.sh" || exit 1 # NC, log, lim, cpu_info
cd /tmp/bundle
vs=(new); for b in bin/moed-bench-*; do [ -e "$b" ] && vs+=("${b#bin/moed-bench-}"); done
bin_of() { [ $1 = new ] && echo bin/moed-bench || echo bin/moed-bench-$1; }
(cpu_info; echo "variants: ${vs[*]}") > $OUT/sys.txt 2>&1
log start
one() { # $1 variant, $2 set:shape, $3 threads, $4 file
  echo "### $1 ${2%:*} ${2#*:} threads $3" >> $OUT/$4
  timeout $(lim 30) $(bin_of $1) gemm --isa avx512 --no-peers --no-ffn --reps 3 --threads $3 \
    --set ${2%:*} --shape ${2#*:} >> $OUT/$4 2>&1
}
n=${#vs[@]}
(sleep 3; grep AnonHugePages /proc/meminfo >> $OUT/sys.txt) & # during the first run
for round in 0 1; do
  c=0
  for sh in ${SHAPES:-big:1 small:1 big:3 small:3}; do
    for i in $(seq 0 $((n - 1))); do # round 0 forwards, round 1 backwards, from shifted starts
      [ $round = 0 ] && k=$(( (i + c) % n )) || k=$(( (2 * n - 1 - i + c) % n ))
      one ${vs[$k]} $sh ${THREADS:-1} ab1.txt
    done
    c=$((c + 1))
  done
  log round $round
done
for sh in big:1 small:3; do for v in "${vs[@]}"; do one $v $sh $NC abN.txt; done; done
log end
