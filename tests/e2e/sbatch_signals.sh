# deploy/slurm/moed.sbatch against stop requests that land while it is still starting, run
# directly (Slurm's job variables set by hand, MOED_LAUNCHER=mpiexec, MOED_REQUEUE=0), so no
# Slurm daemon is needed and the timing is ours: a moed wrapper whose `config` takes 3 s holds
# the script in its start-up, and the test signals the batch shell then, as --signal=B:USR1@T
# or scancel would. Before the traps moved to the top of the script, such a signal killed the
# shell and the job with it (seen in e2e_slurm when the time-limit notice came early):
#   USR1 (the notice): moed is still launched, the notice forwarded once it is up, a
#     checkpoint committed, and the script says how to continue; exit 0
#   TERM (a cancel): nothing launched, nothing written, one line saying so; exit 0
# The Slurm end to end test (e2e_slurm) covers notices that come after the launch.
source "$MOED_SRC/tests/common/e2e_lib.sh"
SBATCH_SCRIPT=$MOED_SRC/deploy/slurm/moed.sbatch
SLOW=$WORK/slow-moed
printf '#!/bin/bash\n[ "$1" = config ] && sleep 3\nexec "%s" "$@"\n' "$MOED" > "$SLOW"
chmod +x "$SLOW"

# start NAME SIGNAL: runs the script with run directory $WORK/NAME, sends SIGNAL to its shell
# once it has logged its first line (it is then in the 3 s check), waits for it (at most
# 120 s); sets RC.
start() {
  local name=$1 sig=$2 pid dog
  SLURM_JOB_ID=41 SLURM_NTASKS=2 SLURM_CPUS_PER_TASK=1 SLURM_JOB_NODELIST=localhost \
    MOED="$SLOW" MOED_LAUNCHER=mpiexec MOED_MPIEXEC="$MPIEXEC" MOED_REQUEUE=0 \
    MOED_RUN_DIR="$WORK/$name" bash "$SBATCH_SCRIPT" "$MOED_SRC/config/tiny.ini" \
    --set train.steps=2000000 --set log.every=100000 > "$WORK/$name.out" 2>&1 &
  pid=$!
  # not `timeout`: the signal must reach the script's own shell, which timeout would take
  (sleep 120 && pkill -9 -P "$pid" && kill -9 "$pid") > /dev/null 2>&1 &
  dog=$!
  for _ in $(seq 1 100); do
    grep -q "restart 0 on" "$WORK/$name/moed.log" 2> /dev/null && break
    sleep 0.1
  done
  kill -"$sig" "$pid"
  set +e
  wait "$pid"
  RC=$?
  pkill -P "$dog" 2> /dev/null || true
  kill "$dog" 2> /dev/null || true
  set -e
}

start notice USR1
LOG=$WORK/notice/moed.log
check "USR1 during start-up: the script exits 0 (got $RC)" [ "$RC" -eq 0 ]
check "USR1 during start-up: moed was launched" grep -q "launching: " "$LOG"
check "USR1 during start-up: forwarded once moed was up" \
  grep -q "SIGUSR1 received: asking moed to checkpoint and stop" "$LOG"
check "USR1 during start-up: moed stopped with a checkpoint" \
  grep -q "^moed: SIGUSR1 received: stopped cleanly after [0-9]* steps; checkpoint" "$LOG"
check "USR1 during start-up: LATEST names it" [ -s "$WORK/notice/checkpoints/LATEST" ]
check "USR1 during start-up: the script says how to continue" \
  grep -q "stopped at step [0-9]* of 2000000; MOED_REQUEUE=0, resubmit to continue" "$LOG"

start cancel TERM
LOG=$WORK/cancel/moed.log
check "TERM during start-up: the script exits 0 (got $RC)" [ "$RC" -eq 0 ]
check "TERM during start-up: one line says it did not start" \
  grep -q "SIGTERM received before the launch (scancel or preemption): not starting" "$WORK/cancel.out"
check "TERM during start-up: nothing launched" bash -c "! grep -q 'launching: ' '$LOG'"
check "TERM during start-up: no checkpoint" [ ! -e "$WORK/cancel/checkpoints/LATEST" ]
finish
