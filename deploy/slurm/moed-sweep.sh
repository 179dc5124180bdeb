#!/bin/bash
# moed-sweep.sh: a parameter sweep as one Slurm job array, one task per run, each task a
# moed.sbatch job (own run directory, checkpoints, preemption and requeue). README.md beside
# this file has the guide.
#
#   moed-sweep.sh [--dry-run] [--max-parallel N] CONFIG... [--grid section.key=v1,v2,...]...
#                 [--set section.key=value]... [-- sbatch options]
#
# Runs are every CONFIG crossed with every combination of the --grid values; --set applies
# to all of them. The list goes to <sweep dir>/sweep.txt, one run a line ("CONFIG --set ..."),
# and task i of the array trains line i+1. Run directories: <sweep dir>/<array job>_<task>.
#   moed-sweep.sh config/tiny.ini --grid train.lr=0.01,0.003 --grid model.top_k=1,2 \
#       -- --ntasks=4 --cpus-per-task=2 --time=00:30:00
# Environment: MOED_SWEEP_DIR (default ./sweeps/sweep-<date>-<time>); the variables of
# moed.sbatch (MOED, MOED_LAUNCHER, ...) pass through to every task.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
die() { echo "moed-sweep: error: $*" >&2; exit 2; }

DRY=0 MAXPAR= CONFIGS=() GRIDS=() SETS=() SBATCH_OPTS=()
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) DRY=1 ;;
    --max-parallel) MAXPAR=${2:?--max-parallel needs a number}; shift ;;
    --grid) GRIDS+=("${2:?--grid needs section.key=v1,v2,...}"); shift ;;
    --set) SETS+=(--set "${2:?--set needs section.key=value}"); shift ;;
    --) shift; SBATCH_OPTS=("$@"); break ;;
    -*) die "unknown option '$1' (see the header of $0)" ;;
    *) [ -f "$1" ] || die "$1: no such config file"
       [[ $1 =~ ^[^[:space:]]+$ ]] || die "'$1': config paths with spaces are not supported"
       CONFIGS+=("$(cd "$(dirname "$1")" && pwd)/$(basename "$1")") ;;
  esac
  shift
done
[ ${#CONFIGS[@]} -gt 0 ] || die "usage: moed-sweep.sh [--dry-run] CONFIG... [--grid k=v1,v2]... [-- sbatch options]"
[ -z "$MAXPAR" ] || [[ $MAXPAR =~ ^[1-9][0-9]*$ ]] || die "--max-parallel $MAXPAR: not a positive integer"

# The cross product, built up one --grid at a time: each line is "CONFIG --set k=v ...".
RUNS=()
for c in "${CONFIGS[@]}"; do RUNS+=("$c"); done
for g in "${GRIDS[@]}"; do
  [[ $g == *=* ]] || die "--grid $g: expected section.key=v1,v2,..."
  key=${g%%=*}
  IFS=, read -r -a values <<< "${g#*=}"
  [ ${#values[@]} -gt 0 ] || die "--grid $g: no values"
  next=()
  for r in "${RUNS[@]}"; do
    for v in "${values[@]}"; do
      [[ $v =~ ^[^[:space:]]+$ ]] || die "--grid $g: value '$v' is empty or has spaces"
      next+=("$r --set $key=$v")
    done
  done
  RUNS=("${next[@]}")
done

SWEEP_DIR=${MOED_SWEEP_DIR:-$PWD/sweeps/sweep-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$SWEEP_DIR"
SWEEP_DIR=$(cd "$SWEEP_DIR" && pwd)
printf '%s\n' "${RUNS[@]}" > "$SWEEP_DIR/sweep.txt"
N=${#RUNS[@]}
ARRAY=0-$((N - 1))${MAXPAR:+%$MAXPAR}
# The common --set overrides travel as arguments; each task prepends its own line.
CMD=(sbatch --parsable --array="$ARRAY" --job-name=moed-sweep
     --output="$SWEEP_DIR/%A_%a.out" "${SBATCH_OPTS[@]}" "$HERE/moed.sbatch" "${SETS[@]}")
echo "moed-sweep: $N runs listed in $SWEEP_DIR/sweep.txt"
if [ "$DRY" = 1 ]; then
  cat "$SWEEP_DIR/sweep.txt"
  echo "moed-sweep: would run: MOED_SWEEP_LIST=$SWEEP_DIR/sweep.txt ${CMD[*]}"
  exit 0
fi
JOB=$(MOED_SWEEP_LIST=$SWEEP_DIR/sweep.txt MOED_SWEEP_DIR=$SWEEP_DIR "${CMD[@]}")
echo "moed-sweep: submitted array job $JOB ($ARRAY); run directories $SWEEP_DIR/${JOB}_<task>"
