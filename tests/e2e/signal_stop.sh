# SIGTERM and SIGINT sent to mpiexec reach every rank; rank 0 decides, all ranks stop at the
# same step boundary and exit 0 with a line saying so (no hang, no partial step).
source "$MOED_SRC/tests/common/e2e_lib.sh"
for sig in TERM INT; do
  dir=$WORK/run-$sig
  set +e
  timeout -k 5 120 "$MPIEXEC" -n 2 "$MOED" run "$MOED_SRC/config/tiny.ini" --set run.dir="$dir" \
    --set train.steps=100000000 > "$WORK/out-$sig" 2> "$WORK/err-$sig" &
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
  tail -2 "$WORK/out-$sig"
  [ "$rc" -eq 0 ] || tail -5 "$WORK/err-$sig"
  check "SIG$sig: exit 0 (got $rc)" [ "$rc" -eq 0 ]
  check "SIG$sig: says it stopped" grep -q "SIG$sig received: stopped cleanly after [0-9]* steps" "$WORK/out-$sig"
  n=$(sed -n 's/.*stopped cleanly after \([0-9]*\) steps.*/\1/p' "$WORK/out-$sig")
  lines=$(wc -l < "$dir/metrics.jsonl")
  check "SIG$sig: metrics.jsonl holds exactly the $n completed steps ($lines)" [ "$n" = "$lines" ]
done
finish
