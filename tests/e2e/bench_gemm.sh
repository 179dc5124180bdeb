# moed-bench gemm's uneven groups, as a smoke test: the uneven E=8 shape (groups of 0, 1, 7,
# 33, 517 ... rows) runs through ours, OpenBLAS and oneDNN at 1 thread, one round, and with
# --check every result must match OpenBLAS's; --set/--shape run one shape (64 groups of 32 on
# 2 threads, checked the same way); bad options exit 2. On an AVX-512 CPU the header says
# whether the peers were held to AVX2 beside our avx2. Skipped (77) in builds without moed-bench (the sanitizer build leaves it out).
source "$MOED_SRC/tests/common/e2e_lib.sh"
BENCH=$MOED_BUILD/moed-bench
[ -x "$BENCH" ] || { echo "skip: $BENCH not built"; exit 77; }

run_to "$WORK/out" "$WORK/err" 300 "$BENCH" gemm --uneven-only --quick --reps 1 --threads 1 \
  --no-ffn --check
cat "$WORK/out" "$WORK/err"
check "gemm --uneven-only --quick --check exits 0" [ "$RC" -eq 0 ]
check "one uneven shape, no even one" \
  [ "$(grep -c '^E=8 uneven groups, 4096 rows in all, d=512 f=1024, 1 thread' "$WORK/out")" -eq 1 -a \
    "$(grep -c '^E=[0-9]* groups x' "$WORK/out")" -eq 0 ]
# The printed group sizes sum to the total and include the empty and the 1-row group.
sizes=$(grep -A1 '^E=8 uneven' "$WORK/out" | tail -1)
check "group sizes printed, summing to 4096" \
  [ "$(echo "$sizes" | wc -w)" -eq 8 -a \
    "$(echo "$sizes" | awk '{for (i = 1; i <= NF; i++) t += $i; print t}')" -eq 4096 ]
check "sizes include 0 and 1 rows" bash -c "echo ' $sizes ' | grep -q ' 0 ' && echo ' $sizes ' | grep -q ' 1 '"
# Five products and their sum, each with positive rates for ours, OpenBLAS and oneDNN, and a
# relative difference from OpenBLAS for oneDNN and ours.
for prod in up down dA dW dX; do
  line=$(grep -E "^  $prod +" "$WORK/out" | head -1)
  check "$prod: rates and diffs printed" \
    bash -c "echo '$line' | grep -qE '\| +[0-9]+\.[0-9] +[0-9.]+ \| +[0-9]+\.[0-9] +[0-9]+\.[0-9] \|.*oneDNN [0-9.]+e[-+][0-9]+ [a-z0-9]+ [0-9.]+e[-+][0-9]+'"
done
check "the all row has ratios vs OpenBLAS and oneDNN" \
  bash -c "grep -E '^  all ' '$WORK/out' | grep -qE '\| +[0-9]+\.[0-9]{2} +[0-9]+\.[0-9]{2}$'"
check "no check failure" bash -c "! grep -q 'check FAILED' '$WORK/out'"
check "rows-dependent dims shown as var" [ "$(grep -cE '^  (up|down|dA|dW|dX) .* var ' "$WORK/out")" -eq 5 ]

set +e
"$BENCH" gemm --uneven-only --bogus >/dev/null 2>"$WORK/err"; RC=$?
set -e
check "unknown option exits 2 with a message" \
  bash -c "[ $RC -eq 2 ] && grep -q \"unknown option '--bogus'\" '$WORK/err'"
set +e
"$BENCH" gemm --uneven-only --ffn-only >/dev/null 2>"$WORK/err"; RC=$?
set -e
check "--uneven-only with --ffn-only exits 2" \
  bash -c "[ $RC -eq 2 ] && grep -q 'leave nothing to run' '$WORK/err'"
# --set / --shape pick one shape: 64 groups of 32 rows at d=512 f=1024, nothing else. On 2
# threads ours hands those groups out whole (kern_for_groups); --check compares the result.
run_to "$WORK/out1" "$WORK/err" 120 "$BENCH" gemm --set small --shape 1 --reps 1 --threads 2 \
  --no-ffn --check
cat "$WORK/out1"
check "--set small --shape 1 --threads 2 exits 0" [ "$RC" -eq 0 ]
check "--set small --shape 1 runs that shape alone" \
  [ "$(grep -c '^E=' "$WORK/out1")" -eq 1 -a \
    "$(grep -c '^E=64 groups x 32 rows, d=512 f=1024, 2 threads' "$WORK/out1")" -eq 1 ]
check "2 threads: every product checked against OpenBLAS, none failed" \
  bash -c "[ \$(grep -cE '^  (up|down|dA|dW|dX) .*oneDNN [0-9.]+e[-+][0-9]+ [a-z0-9]+ [0-9.]+e' '$WORK/out1') -eq 5 ] && ! grep -q 'check FAILED' '$WORK/out1'"
check "the peak the table's % is of is printed" grep -qE '^  %peak of [0-9]+\.[0-9] GF/s' "$WORK/out1"
# gmm, the issue's name for it, is the same subcommand
run_to "$WORK/out2" "$WORK/err" 120 "$BENCH" gmm --set small --shape 1 --reps 1 --threads 1 \
  --no-ffn --no-peers
check "moed-bench gmm runs gemm's shape" \
  [ "$RC" -eq 0 -a "$(grep -c '^E=64 groups x 32 rows, d=512 f=1024, 1 thread' "$WORK/out2")" -eq 1 ]
# Against our avx2 on an AVX-512 CPU the peers would run AVX-512: the header says so, and
# whether they were held to AVX2 for the run.
if grep -q avx512f /proc/cpuinfo; then
  check "AVX-512 CPU, peers free: the header says they use it" \
    grep -q "^peers: this CPU has AVX-512; OpenBLAS and oneDNN use it beside our avx2 unless" "$WORK/out"
  run_to "$WORK/out3" "$WORK/err" 120 env OPENBLAS_CORETYPE=Haswell DNNL_MAX_CPU_ISA=AVX2 \
    "$BENCH" gemm --isa avx2 --set small --shape 1 --reps 1 --threads 1 --no-ffn
  check "AVX-512 CPU, peers held to AVX2: the header says so" \
    bash -c "[ $RC -eq 0 ] && grep -q '^peers: .*held to AVX2' '$WORK/out3'"
else
  check "no AVX-512: no peers line" bash -c "! grep -q '^peers:' '$WORK/out'"
fi
for bad in "--shape 4" "--set medium"; do
  set +e
  "$BENCH" gemm $bad >/dev/null 2>"$WORK/err"; RC=$?
  set -e
  check "gemm $bad exits 2 with a message" bash -c "[ $RC -eq 2 ] && [ -s '$WORK/err' ]"
done
finish
