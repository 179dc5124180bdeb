# kill -9 in the middle of a checkpoint (DESIGN.md §4 commit protocol): a job that has
# committed checkpoint 1 and is writing checkpoint 2 is killed, mpiexec and every rank at
# once, while the .tmp file exists. LATEST must still name the step-1 file, that file must
# probe valid, no step-2 file may be committed, resume must pick step 1 without a warning,
# and the next save must clear the leftover .tmp.
#
# Runs tests/ckpt_dump (tests/golden/ckpt_dump.c), which saves through ckpt_save;
# MOED_TEST_CKPT_PAUSE (set by --pause-last) holds the second save between writing the
# data and committing it.
source "$MOED_SRC/tests/common/e2e_lib.sh"
DUMP=$MOED_BUILD/tests/ckpt_dump
CFG=$MOED_SRC/config/tiny.ini
dir=$WORK/ckpt
tmp=$dir/step_00000002.h5.tmp

# setsid: the job gets its own process group (its id is $pid), so one kill reaches mpiexec,
# the Hydra proxy and both ranks together, as a node failure or `kill -9` of a batch job would.
setsid "$MPIEXEC" -n 2 "$DUMP" save "$dir" "$CFG" --steps 2 --pause-last 30 \
  > "$WORK/save.out" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  [ -e "$tmp" ] && break
  sleep 0.05
done
check "the second save started (${tmp##*/} exists)" [ -e "$tmp" ]
sleep 1 # well into the pause: the data is written, nothing is committed
kill -9 -- -"$pid"
set +e
wait "$pid"
rc=$?
set -e
check "the job died by SIGKILL (exit $rc)" [ "$rc" -eq 137 ]
for _ in $(seq 1 100); do
  pgrep -g "$pid" > /dev/null || break
  sleep 0.05
done
check "no process of the job survives" bash -c "! pgrep -g $pid > /dev/null"
cat "$WORK/save.out"

check "LATEST names the step-1 file" [ "$(cat "$dir/LATEST")" = "step_00000001.h5" ]
check "no committed step-2 file" [ ! -e "$dir/step_00000002.h5" ]

set +e
"$MPIEXEC" -n 2 "$DUMP" probe "$dir/step_00000001.h5" "$CFG" > "$WORK/probe.out" 2>&1
rc=$?
"$MPIEXEC" -n 2 "$DUMP" resume "$dir" "$CFG" > "$WORK/resume.out" 2>&1
rc2=$?
set -e
cat "$WORK/probe.out" "$WORK/resume.out"
check "step-1 file probes valid (exit $rc)" grep -q "^ok: step=1 ranks_at_save=2 n_history=1$" "$WORK/probe.out"
check "resume picks step 1 (exit $rc2)" grep -qx "found $dir/step_00000001.h5" "$WORK/resume.out"
check "resume has no warning" bash -c "! grep -q '^note:' '$WORK/resume.out'"

# The killed save's .tmp is cleared by the next successful save.
set +e
timeout -k 5 120 "$MPIEXEC" -n 2 "$DUMP" save "$dir" "$CFG" --steps 2 > "$WORK/save2.out" 2>&1
rc=$?
set -e
check "a later save succeeds (exit $rc)" [ "$rc" -eq 0 ]
check "LATEST names the new step-2 file" [ "$(cat "$dir/LATEST")" = "step_00000002.h5" ]
check "no *.tmp remains" bash -c "! ls '$dir' | grep -q '\.tmp$'"
finish
