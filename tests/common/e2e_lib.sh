# Shared by tests/e2e/*.sh: paths, a bounded mpiexec, and assertions that say what failed.
set -euo pipefail
: "${MOED_BUILD:?run through ctest (MOED_BUILD unset)}"
: "${MOED_SRC:?run through ctest (MOED_SRC unset)}"
MPIEXEC=${MOED_MPIEXEC:-mpiexec.mpich}
MOED=$MOED_BUILD/moed
export HYDRA_LAUNCHER=fork
WORK=$(mktemp -d /tmp/moed-e2e.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
FAILS=0
PASSES=0

# run_np P ARGS...: moed under mpiexec with P ranks; a hang fails after 300 s instead of
# blocking the suite. Sets OUT, ERR (files) and RC.
run_np() {
  local p=$1; shift
  OUT=$WORK/out.$RANDOM; ERR=$WORK/err.$RANDOM
  set +e
  timeout -k 5 300 "$MPIEXEC" -n "$p" "$MOED" "$@" >"$OUT" 2>"$ERR"
  RC=$?
  set -e
}

# run_to OUT ERR SECS CMD...: CMD with stdout and stderr to files, killed after SECS; sets RC
# (the script goes on when CMD fails: its exit code is what a test checks).
run_to() {
  local out=$1 err=$2 secs=$3; shift 3
  set +e
  timeout -k 5 "$secs" "$@" >"$out" 2>"$err"
  RC=$?
  set -e
}

pass() { PASSES=$((PASSES + 1)); echo "ok: $*"; }
fail() { FAILS=$((FAILS + 1)); echo "FAIL: $*"; }
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }

# digest_of FILE: the weights digest from moed's final line
digest_of() { sed -n 's/.*weights digest \([0-9a-f]*\).*/\1/p' "$1"; }
# losses_of DIR: every step's loss from metrics.jsonl, as printed (%.17g, exact)
losses_of() { sed -n 's/.*"loss":\([^,]*\),.*/\1/p' "$1/metrics.jsonl"; }

finish() {
  echo "$PASSES passed, $FAILS failed"
  [ "$FAILS" -eq 0 ]
}
