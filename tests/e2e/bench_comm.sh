# moed-bench comm as a smoke test at P = 2: the exchange table (--alltoallv-only --quick, one
# timed iteration) prints every case with each strategy's row, raw MPI_Alltoallv at exactly
# 1.000x; the full-step table (tiny shapes, one step) prints every strategy; bad options and a
# rank count that does not divide the 16 experts exit 2 with a message. Timings are not
# checked (2 ranks may share the cores with other tests). Skipped (77) in builds without
# moed-bench (the sanitizer build leaves it out).
source "$MOED_SRC/tests/common/e2e_lib.sh"
BENCH=$MOED_BUILD/moed-bench
[ -x "$BENCH" ] || { echo "skip: $BENCH not built"; exit 77; }

run_to "$WORK/out" "$WORK/err" 300 "$MPIEXEC" -n 2 "$BENCH" comm --alltoallv-only --quick --iters 1
cat "$WORK/out" "$WORK/err"
check "comm --alltoallv-only --quick exits 0" [ "$RC" -eq 0 ]
check "P = 2 in the header" grep -q '^moed-bench comm: P = 2, d = 1024, E = 16' "$WORK/out"
# --quick: 512 and 2048 tokens per rank, k = 2 and 8, uniform and skewed.
check "8 cases" [ "$(grep -cE '^  (uniform|skewed) +tokens/rank' "$WORK/out")" -eq 8 ]
# Every case has the five rows, each with min <= avg <= max, GB/s and the ratio to raw.
num='[0-9]+\.[0-9]+'
for row in 'raw MPI_Alltoallv' 'alltoallv' '\.\.\. no unpermute' '\.\.\. rank order' \
  'Alltoallw, types'; do
  check "'$row': a timed row in every case" \
    [ "$(grep -cE "^ +$row +$num +$num +$num +$num +$num$" "$WORK/out")" -eq 8 ]
done
check "min <= avg <= max on every row" \
  awk '$NF ~ /^[0-9]+\.[0-9]+$/ && NF >= 6 {
         n = NF; if ($(n-4) + 0 > $(n-3) + 0 || $(n-3) + 0 > $(n-2) + 0) bad = 1; rows++ }
       END { exit bad || rows != 40 }' "$WORK/out"
check "raw is the ratios' unit" \
  [ "$(grep -cE '^ +raw MPI_Alltoallv .* 1\.000$' "$WORK/out")" -eq 8 ]
# Uniform routing: every rank receives about its own share, tokens x k rows.
check "uniform cases receive about tokens x k rows per rank" \
  awk '/^  uniform/ { split($NF, r, /\.\./); want = $3 * $5
                      if (r[1] > want || r[2] < want || r[2] > 1.2 * want) bad = 1 }
       END { exit bad }' "$WORK/out"
check "no chunked or ring rows with --alltoallv-only" \
  bash -c "! grep -qE '^ +(alltoallv_chunked|ring)' '$WORK/out'"

# Full steps on tiny shapes: every strategy's step, against the blocking step's parts.
run_to "$WORK/steps" "$WORK/err" 300 "$MPIEXEC" -n 2 "$BENCH" comm --steps-only --tokens 256 \
  --ff 16 --reps 1
cat "$WORK/steps" "$WORK/err"
check "comm --steps-only exits 0" [ "$RC" -eq 0 ]
check "the blocking step's parts" \
  grep -qE '^  d 1024 f +16 E 16 k 2 tokens/rank +256: compute [0-9.]+ ms, comm [0-9.]+ ms' \
  "$WORK/steps"
for s in 'alltoallv' 'alltoallv_chunked' '\.\.\. 8 chunks' 'ring \(tokens\)' 'ring \(embed\)'; do
  check "step row '$s'" grep -qE "^ +$s +step +$num ms +$num x max +exposed comm +$num ms +hidden comm +$num ms$" \
    "$WORK/steps"
done
check "no exchange table with --steps-only" bash -c "! grep -q 'raw MPI_Alltoallv' '$WORK/steps'"

# Bad input: a message on stderr and exit 2 (on every rank), never a hang.
bad_run() { # bad_run NP WHAT-TO-FIND ARGS...
  local np=$1 want=$2; shift 2
  run_to /dev/null "$WORK/err" 60 "$MPIEXEC" -n "$np" "$BENCH" comm "$@"
  check "comm $* at P = $np exits 2: $want" bash -c "[ $RC -eq 2 ] && grep -qF -e \"$want\" '$WORK/err'"
}
bad_run 1 "unknown option '--bogus'" --bogus
bad_run 1 "--progress must be test, thread or auto" --progress sometimes
bad_run 3 "P must divide 16" --alltoallv-only --quick
finish
