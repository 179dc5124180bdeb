# `cmake --install` (cmake/install.cmake) into a temporary prefix, then the installed tree used
# from an unrelated directory, as on a cluster: the installed moed trains the installed example
# config, the installed plot script reads its checkpoint, the Slurm scripts are there and
# executable. Nothing may refer back to the source or build tree.
source "$MOED_SRC/tests/common/e2e_lib.sh"
P=$WORK/prefix
set +e
cmake --install "$MOED_BUILD" --prefix "$P" > "$WORK/install.log" 2>&1
RC=$?
set -e
check "cmake --install exits 0 (got $RC)" [ "$RC" -eq 0 ]
for f in bin/moed share/moed/slurm/moed.sbatch share/moed/slurm/moed-sweep.sh \
  share/moed/analysis/plot_run.py; do
  check "installed and executable: $f" [ -x "$P/$f" ]
done
for f in share/moed/config/tiny.ini share/moed/config/tiny2.ini share/moed/slurm/README.md \
  share/moed/analysis/README.md share/doc/moed/README.md share/doc/moed/performance.md; do
  check "installed: $f" [ -f "$P/$f" ]
done
if [ -x "$MOED_BUILD/moed-bench" ]; then
  check "installed: bin/moed-bench" [ -x "$P/bin/moed-bench" ]
  check "installed moed-bench runs" bash -c "'$P/bin/moed-bench' --help | grep -q '^usage: moed-bench'"
fi
check "installed shell scripts parse" bash -n "$P/share/moed/slurm/moed.sbatch"
check "installed sweep script parses" bash -n "$P/share/moed/slurm/moed-sweep.sh"
set +e
env -u SLURM_JOB_ID -u SLURM_NTASKS "$P/share/moed/slurm/moed.sbatch" x.ini > /dev/null 2> "$WORK/nojob"
RC=$?
set -e
check "moed.sbatch outside a job: exit 2 (got $RC)" [ "$RC" -eq 2 ]
check "moed.sbatch outside a job: says so" grep -q "not inside a Slurm job" "$WORK/nojob"
set +e
"$P/share/moed/slurm/moed-sweep.sh" --dry-run --grid train.lr=1,2 > /dev/null 2> "$WORK/nocfg"
RC=$?
set -e
check "moed-sweep.sh without a config: exit 2 (got $RC)" [ "$RC" -eq 2 ]
(cd "$WORK" && MOED_SWEEP_DIR="$WORK/sw" "$P/share/moed/slurm/moed-sweep.sh" --dry-run \
  "$P/share/moed/config/tiny.ini" "$P/share/moed/config/tiny2.ini" --grid train.lr=0.01,0.003 \
  --grid model.top_k=1,2 > "$WORK/dry")
check "moed-sweep.sh --dry-run lists 2 configs x 2 x 2 runs" [ "$(wc -l < "$WORK/sw/sweep.txt")" -eq 8 ]
check "moed-sweep.sh --dry-run: the last run" \
  grep -qx "$P/share/moed/config/tiny2.ini --set train.lr=0.003 --set model.top_k=2" "$WORK/sw/sweep.txt"
check "moed-sweep.sh --dry-run: one array of 8" grep -q "sbatch --parsable --array=0-7 " "$WORK/dry"

# From elsewhere: default run.dir ("run") lands in the current directory.
mkdir "$WORK/elsewhere"
cd "$WORK/elsewhere"
set +e
timeout -k 5 300 "$MPIEXEC" -n 2 "$P/bin/moed" run "$P/share/moed/config/tiny.ini" \
  --set train.steps=20 > out 2> err
RC=$?
set -e
check "installed moed run exits 0 (got $RC)" [ "$RC" -eq 0 ]
check "trained 20 steps into ./run" [ "$(wc -l < run/metrics.jsonl)" -eq 20 ]
check "committed ./run/checkpoints/step_00000020.h5" [ "$(cat run/checkpoints/LATEST)" = step_00000020.h5 ]
check "the installed moed's version" bash -c "'$P/bin/moed' --version | grep -q '^moed '"
/usr/bin/python3 "$P/share/moed/analysis/plot_run.py" run/checkpoints/step_00000020.h5 --out plots > plot.out 2>&1 || true
check "installed plot_run.py wrote loss.png" [ -s plots/loss.png ]
check "no installed file names the source or build tree" \
  bash -c "! grep -rlsI -e '$MOED_SRC' -e '$MOED_BUILD' '$P/share'"
finish
