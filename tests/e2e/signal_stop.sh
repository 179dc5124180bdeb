# SIGTERM and SIGINT sent to mpiexec reach every rank; rank 0 decides, all ranks stop at the
# same step boundary and exit 0 with a line saying so (no hang, no partial step). SIGTERM
# once more with the chunked dispatcher's progress thread running (it blocks the signals,
# the main thread stops at the step boundary, the thread is joined on the way out).
source "$MOED_SRC/tests/common/e2e_lib.sh"
for case in TERM INT TERM-thread; do
  sig=${case%-thread}
  extra=()
  [ "$case" = TERM-thread ] &&
    extra=(--set comm.dispatcher=alltoallv_chunked --set comm.progress=thread)
  dir=$WORK/run-$case
  set +e
  timeout -k 5 120 "$MPIEXEC" -n 2 "$MOED" run "$MOED_SRC/config/tiny.ini" --set run.dir="$dir" \
    --set train.steps=100000000 "${extra[@]}" > "$WORK/out-$case" 2> "$WORK/err-$case" &
  pid=$!
  for _ in $(seq 1 200); do
    [ -s "$dir/metrics.jsonl" ] && [ "$(wc -l < "$dir/metrics.jsonl")" -ge 20 ] && break
    sleep 0.1
  done
  # Signal mpiexec itself, as a user or Slurm would; not `timeout`, which would also signal
  # the whole process group and so hand mpiexec the signal twice (a second SIGINT makes
  # Hydra kill the job).
  kill -$sig "$(pgrep -P $pid)"
  wait $pid; rc=$?
  set -e
  tail -2 "$WORK/out-$case"
  [ "$rc" -eq 0 ] || tail -5 "$WORK/err-$case"
  check "SIG$case: exit 0 (got $rc)" [ "$rc" -eq 0 ]
  check "SIG$case: says it stopped" grep -q "SIG$sig received: stopped cleanly after [0-9]* steps" "$WORK/out-$case"
  n=$(sed -n 's/.*stopped cleanly after \([0-9]*\) steps.*/\1/p' "$WORK/out-$case")
  lines=$(wc -l < "$dir/metrics.jsonl")
  check "SIG$case: metrics.jsonl holds exactly the $n completed steps ($lines)" [ "$n" = "$lines" ]
done
finish
