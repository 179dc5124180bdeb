# deploy/slurm/moed.sbatch against a real Slurm (issue 7): munged, slurmctld and slurmd for one
# node on this machine, configured by a generated slurm.conf with every file under a temporary
# directory, and stopped on exit (also on failure). Jobs:
#   J1  srun --mpi=pmi2, 2 tasks: completes, world size 2, the loss falls, a checkpoint is
#       committed
#   J2  --time/--signal=B:USR1 and --requeue: the test sends the preemption notice (the
#       SIGUSR1 to the batch shell that --signal sends before the time limit) a few steps in;
#       the job checkpoints, requeues itself, resumes, and ends bit-identical to an
#       uninterrupted run
#   J3  MOED_LAUNCHER=mpiexec: mpiexec.mpich inside the allocation (Hydra's Slurm bootstrap)
#   J4  srun --mpi=none: every task is "rank 0 of 1"; moed refuses to start (exit 2) and the
#       job is not requeued
#   J5  deploy/slurm/moed-sweep.sh: a two-run job array over train.lr
#   J7  a config moed rejects: the job fails with exit code 2, nothing is launched
#   J6  a real time limit: --time=1 --signal=B:USR1@50 with more steps than fit; Slurm's
#       signal makes it checkpoint and requeue, the next start resumes, scancel ends it
# CTest label `slurm`; about a minute on an idle 2-core machine.
source "$MOED_SRC/tests/common/e2e_lib.sh"
SBATCH_SCRIPT=$MOED_SRC/deploy/slurm/moed.sbatch

pkgs=()
for p in slurmctld slurmd slurm-client munge; do
  dpkg-query -W -f='${Status}' "$p" 2> /dev/null | grep -q 'install ok installed' || pkgs+=("$p")
done
if [ ${#pkgs[@]} -gt 0 ]; then
  echo "installing ${pkgs[*]}"
  apt-get update -q > /dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}" > /dev/null
fi

S=$WORK/slurm # all daemon state, sockets, pids and logs
mkdir -p "$S"/{munge,state,spool,log}
export SLURM_CONF=$S/slurm.conf
stop_all() {
  # jobs first, so that no slurmstepd outlives slurmd; then the daemons by their pid files
  if [ -f "$S/slurmctld.pid" ]; then
    scancel --full --quiet --user=root 2> /dev/null || true
    for _ in $(seq 1 30); do [ -z "$(squeue -h 2> /dev/null)" ] && break; sleep 0.5; done
  fi
  local f
  for f in "$S/slurmd.pid" "$S/slurmctld.pid" "$S/munge/munged.pid"; do
    [ -s "$f" ] && kill "$(cat "$f")" 2> /dev/null || true
  done
  sleep 1
  if [ -n "${MOED_KEEP_WORK:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap stop_all EXIT

# --- the cluster --------------------------------------------------------------------------
read -r PORT_CTLD PORT_D < <(/usr/bin/python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
H=$(hostname -s)
CPUS=$(($(nproc) < 2 ? 2 : $(nproc)))
dd if=/dev/urandom of="$S/munge/munge.key" bs=1024 count=1 status=none
chmod 700 "$S/munge"
chmod 600 "$S/munge/munge.key"
munged --force --key-file="$S/munge/munge.key" --socket="$S/munge/sock" \
  --pid-file="$S/munge/munged.pid" --log-file="$S/munge/munged.log" --seed-file="$S/munge/seed"
# cred_expire=5: a requeued batch job may restart 5 s after it ended instead of the default
# 120 s. config_overrides lets a 1-core machine pose as the 2 CPUs the jobs ask for.
cat > "$SLURM_CONF" << EOF
ClusterName=moedtest
SlurmctldHost=$H
SlurmctldPort=$PORT_CTLD
SlurmdPort=$PORT_D
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$S/munge/sock,cred_expire=5
CredType=cred/munge
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd.log
SlurmdParameters=config_overrides
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ProctrackType=proctrack/pgid
TaskPlugin=task/none
MpiDefault=pmi2
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobRequeue=1
KillWait=5
MinJobAge=600
NodeName=$H CPUs=$CPUS RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=$H Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 1 60); do sinfo -h -o %t 2> /dev/null | grep -q idle && break; sleep 0.5; done
if ! sinfo -h -o %t | grep -q idle; then
  tail -5 "$S"/log/*.log
  fail "slurmctld + slurmd came up with an idle node"
  finish
  exit 1
fi
pass "slurmctld + slurmd up: $(sinfo -h -o '%P %D %t %c')"

# --- jobs -----------------------------------------------------------------------------------
export MOED=$MOED_BUILD/moed
unset HYDRA_LAUNCHER # inside the allocation mpiexec.mpich must use Hydra's Slurm bootstrap
CFG=$MOED_SRC/config/tiny.ini
submit() { # submit NAME [ENV=VALUE...] -- [sbatch options] -- [moed args]: prints the job id
  local name=$1
  shift
  local envs=()
  while [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  local opts=()
  while [ "$1" != -- ]; do opts+=("$1"); shift; done
  shift
  env "${envs[@]}" MOED_RUN_DIR="$WORK/$name" sbatch --parsable --job-name="$name" \
    --output="$WORK/$name.out" --ntasks=2 --nodes=1 "${opts[@]}" "$SBATCH_SCRIPT" "$CFG" \
    --set log.every=50 "$@"
}
job_field() { scontrol show job "$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1; }
wait_gone() { # wait_gone JOB SECONDS: until the job has left the queue for good
  for _ in $(seq 1 $(($2 * 2))); do
    [ -z "$(squeue -h -j "$1" 2> /dev/null)" ] && return 0
    sleep 0.5
  done
  return 1
}

# Long enough that the notice, sent once 5 steps are logged, lands mid-run even on an idle
# machine (about 1 ms a step there; 200 steps used to finish before the signal arrived).
J2_STEPS=3000
J1=$(submit j1 -- -- --set train.steps=300)
J2=$(submit j2 -- --time=2 --signal=B:USR1@60 --requeue -- --set train.steps=$J2_STEPS)
J3=$(submit j3 MOED_LAUNCHER=mpiexec -- -- --set train.steps=50)
J4=$(submit j4 MOED_SRUN_MPI=none -- -- --set train.steps=50)
SW=$(MOED_SWEEP_DIR="$WORK/sweep" "$MOED_SRC/deploy/slurm/moed-sweep.sh" "$CFG" \
  --grid train.lr=0.01,0.003 --set train.steps=30 -- --ntasks=2)
echo "$SW"
J5=$(echo "$SW" | sed -n 's/.*submitted array job \([0-9]*\).*/\1/p')
# J6: the real thing: --time=1 with --signal=B:USR1@50, and more steps than fit in it.
J6=$(submit j6 -- --time=1 --signal=B:USR1@50 --requeue -- --set train.steps=2000000 \
  --set log.every=10000)
# J7: a config moed rejects: the job fails with moed's exit code 2 before launching ranks.
J7=$(submit j7 -- -- --set model.top_k=99)
echo "submitted $J1 $J2 $J3 $J4 $J6 $J7, array $J5"

# The uninterrupted reference for J2, outside Slurm, while the jobs run.
(HYDRA_LAUNCHER=fork timeout -k 5 300 "$MPIEXEC" -n 2 "$MOED" run "$CFG" --set log.every=50 \
  --set train.steps=$J2_STEPS --set run.dir="$WORK/ref" > "$WORK/ref.out" 2>&1) &
REF_PID=$!

wait_gone "$J1" 180 || true
check "J1: completed ($(job_field "$J1" JobState))" [ "$(job_field "$J1" JobState)" = COMPLETED ]
check "J1: world size matched SLURM_NTASKS" grep -q "world size 2 = SLURM_NTASKS" "$WORK/j1/moed.log"
check "J1: launched with srun --mpi=pmi2" grep -q "launching: srun --mpi=pmi2" "$WORK/j1/moed.log"
first=$(losses_of "$WORK/j1" | sed -n 1p)
last=$(losses_of "$WORK/j1" | sed -n '$p')
check "J1: the loss fell more than 10x ($first -> $last)" \
  awk -v a="$first" -v b="$last" 'BEGIN { exit !(b > 0 && b * 10 < a) }'
check "J1: LATEST names the final checkpoint" \
  [ "$(cat "$WORK/j1/checkpoints/LATEST" 2> /dev/null)" = step_00000300.h5 ]
check "J1: the checkpoint is complete (moed inspect: step 300)" \
  bash -c "'$MOED' inspect '$WORK/j1/checkpoints/step_00000300.h5' | grep -qx 'step *300'"

# J2: once it has trained a few steps, the preemption notice to the batch shell.
for _ in $(seq 1 600); do
  [ -s "$WORK/j2/metrics.jsonl" ] && [ "$(wc -l < "$WORK/j2/metrics.jsonl")" -ge 5 ] && break
  sleep 0.2
done
scancel --signal=USR1 --batch "$J2" || true
wait_gone "$J2" 240 || true
wait $REF_PID || true
REF=$(digest_of "$WORK/ref.out")
check "reference run finished ($REF)" [ -n "$REF" ]
check "J2: completed ($(job_field "$J2" JobState))" [ "$(job_field "$J2" JobState)" = COMPLETED ]
check "J2: requeued at least once (Restarts=$(job_field "$J2" Restarts))" \
  [ "$(job_field "$J2" Restarts)" -ge 1 ]
check "J2: forwarded the notice to moed" grep -q "SIGUSR1 received: asking moed" "$WORK/j2/moed.log"
check "J2: moed stopped cleanly with a checkpoint" \
  grep -q "SIGUSR1 received: stopped cleanly after [0-9]* steps; checkpoint" "$WORK/j2/moed.log"
check "J2: requeued itself with work left" \
  grep -q "stopped at step [0-9]* of $J2_STEPS: requeueing" "$WORK/j2/moed.log"
check "J2: the restart logged SLURM_RESTART_COUNT" grep -q "restart 1 on" "$WORK/j2/moed.log"
check "J2: resumed from LATEST" grep -q "moed: resumed from .* at step" "$WORK/j2/moed.log"
check "J2: finished all steps" grep -q "finished: step $J2_STEPS of $J2_STEPS" "$WORK/j2/moed.log"
D=$(digest_of "$WORK/j2/moed.log" | tail -1)
check "J2: final weights bit-identical to the uninterrupted run ($D vs $REF)" [ "$D" = "$REF" ]
losses_of "$WORK/ref" > "$WORK/ref.losses"
losses_of "$WORK/j2" > "$WORK/j2.losses"
check "J2: every step's loss identical to the uninterrupted run" cmp -s "$WORK/j2.losses" "$WORK/ref.losses"

wait_gone "$J3" 120 || true
check "J3 (mpiexec.mpich in the allocation): completed" [ "$(job_field "$J3" JobState)" = COMPLETED ]
check "J3: world size matched" grep -q "world size 2 = SLURM_NTASKS" "$WORK/j3/moed.log"

wait_gone "$J4" 120 || true
check "J4 (srun --mpi=none): failed ($(job_field "$J4" JobState))" [ "$(job_field "$J4" JobState)" = FAILED ]
check "J4: exit code 2" [ "$(job_field "$J4" ExitCode)" = 2:0 ]
check "J4: moed named the rank-count mismatch" \
  grep -q "MOED_EXPECT_RANKS = 2 but the MPI world has 1 rank" "$WORK/j4/moed.log"
check "J4: not requeued" [ "$(job_field "$J4" Restarts)" = 0 ]
check "J4: no checkpoint written" [ ! -e "$WORK/j4/checkpoints/LATEST" ]

wait_gone "$J5" 120 || true
check "J5 (sweep): two runs listed" [ "$(wc -l < "$WORK/sweep/sweep.txt")" -eq 2 ]
i=0
for lr in 0.01 0.003; do
  d=$WORK/sweep/${J5}_$i
  check "J5 task $i: completed" [ "$(job_field "${J5}_$i" JobState)" = COMPLETED ]
  check "J5 task $i: trained with lr = $lr" grep -qx "lr = $lr" "$d/config.ini"
  check "J5 task $i: finished its 30 steps" grep -q "finished: step 30 of 30" "$d/moed.log"
  i=$((i + 1))
done

# J6: Slurm itself signals 50 s before the 1-minute limit (its time-limit check runs every
# 30 s, so 10 to 40 s in); the job checkpoints and requeues; the next start resumes. Then the
# test cancels it: a user's scancel must end the job, not requeue it.
for _ in $(seq 1 600); do
  grep -q "moed: resumed from" "$WORK/j6/moed.log" 2> /dev/null && break
  sleep 0.5
done
check "J6: the time-limit signal reached moed" \
  grep -q "SIGUSR1 received: stopped cleanly after [0-9]* steps; checkpoint" "$WORK/j6/moed.log"
check "J6: requeued with work left" grep -q "requeueing job $J6" "$WORK/j6/moed.log"
check "J6: restarted (restart 1) and resumed" grep -q "restart 1 on" "$WORK/j6/moed.log"
scancel "$J6" || true
wait_gone "$J6" 60 || true
check "J6: scancel ends it ($(job_field "$J6" JobState), Restarts=$(job_field "$J6" Restarts))" \
  [ "$(job_field "$J6" JobState)" = CANCELLED ]
check "J6: not requeued after scancel" grep -q "by SIGTERM (scancel or preemption): not requeueing" "$WORK/j6/moed.log"

wait_gone "$J7" 120 || true
check "J7 (bad config): failed ($(job_field "$J7" JobState))" [ "$(job_field "$J7" JobState)" = FAILED ]
check "J7: exit code 2 ($(job_field "$J7" ExitCode))" [ "$(job_field "$J7" ExitCode)" = 2:0 ]
check "J7: moed's error line names the key" grep -q "^moed: error: .*model.top_k" "$WORK/j7/moed.log"
check "J7: the script says it did not start" grep -q "configuration is invalid .*; not starting" "$WORK/j7.out"
check "J7: nothing launched" bash -c "! grep -q launching '$WORK/j7/moed.log'"

if [ "$FAILS" -gt 0 ]; then
  for j in j1 j2 j3 j4 j6 j7; do echo "--- $j"; grep -v "^step" "$WORK/$j/moed.log" 2> /dev/null | tail -8; done
  tail -5 "$S/log/slurmctld.log"
fi
finish
