# Resume and reshard (issue 3): a run stopped by a real signal at some step and resumed from
# its checkpoint - at the same or at another rank count - ends with weights and a loss
# history bit-identical to a run that was never interrupted.
source "$MOED_SRC/tests/common/e2e_lib.sh"
CFG=$MOED_SRC/config/tiny2.ini
STEPS=250  # long enough that a signal after 3 steps always lands mid-run
SETS=(--set model.d_model=64 --set model.d_ff=128 --set train.global_batch_tokens=512
      --set train.steps=$STEPS --set log.every=1000 --set checkpoint.resume=auto)

run_np 1 run "$CFG" "${SETS[@]}" --set run.dir="$WORK/ref"
check "reference run exits 0" [ "$RC" -eq 0 ]
REF=$(digest_of "$OUT")
losses_of "$WORK/ref" > "$WORK/ref.losses"
echo "reference digest $REF"

# stop_at P SIG DIR: train at P ranks and send SIG to mpiexec after a few steps.
stop_at() {
  local p=$1 sig=$2 dir=$3
  set +e
  timeout -k 5 300 "$MPIEXEC" -n "$p" "$MOED" run "$CFG" "${SETS[@]}" --set run.dir="$dir" \
    > "$dir.out" 2>&1 &
  local pid=$!
  for _ in $(seq 1 600); do
    [ -s "$dir/metrics.jsonl" ] && [ "$(wc -l < "$dir/metrics.jsonl")" -ge 3 ] && break
    sleep 0.05
  done
  kill -"$sig" "$(pgrep -P $pid)"
  wait $pid
  local rc=$?
  set -e
  check "P=$p SIG$sig: exit 0 (got $rc)" [ "$rc" -eq 0 ]
  check "P=$p SIG$sig: stopped with a checkpoint" grep -q "SIG$sig received: stopped cleanly after [0-9]* steps; checkpoint" "$dir.out"
  grep -o "stopped cleanly after [0-9]* steps" "$dir.out" || tail -3 "$dir.out"
}

# resume_at P SRC NAME: copy the stopped run SRC and resume it at P ranks to the end.
resume_at() {
  local p=$1 src=$2 name=$3 dir=$WORK/$3
  cp -r "$src" "$dir"
  run_np "$p" run "$CFG" "${SETS[@]}" --set run.dir="$dir"
  check "$name: exits 0" [ "$RC" -eq 0 ]
  check "$name: says it resumed" grep -q "resumed from .* at step" "$OUT"
  local d
  d=$(digest_of "$OUT")
  check "$name: final weights identical to the uninterrupted run ($d vs $REF)" [ "$d" = "$REF" ]
  losses_of "$dir" > "$dir.losses"
  check "$name: every step's loss identical to the uninterrupted run" cmp -s "$dir.losses" "$WORK/ref.losses"
}

stop_at 2 TERM "$WORK/a2"
resume_at 2 "$WORK/a2" "P=2 -> P=2"
resume_at 1 "$WORK/a2" "P=2 -> P=1"
resume_at 4 "$WORK/a2" "P=2 -> P=4"
stop_at 1 USR1 "$WORK/b1"
resume_at 2 "$WORK/b1" "P=1 -> P=2"
stop_at 4 INT "$WORK/c4"
resume_at 1 "$WORK/c4" "P=4 -> P=1"

# A finished run resumed again has nothing to do and keeps its weights.
run_np 1 run "$CFG" "${SETS[@]}" --set run.dir="$WORK/ref"
check "resuming a finished run trains nothing" grep -q "nothing to train" "$OUT"
check "and reports the same weights" [ "$(digest_of "$OUT")" = "$REF" ]
finish
