# Bad configurations: exit code 2 on every rank, the error printed once as one line that
# names the file or key, and no hang, at 1, 2 and 4 ranks.
source "$MOED_SRC/tests/common/e2e_lib.sh"
TINY=$MOED_SRC/config/tiny.ini

printf '[model]\nd_model = 32\nfoo = 1\n' > "$WORK/unknown.ini"
printf '[model]\nd_model = abc\n' > "$WORK/badint.ini"
printf '[nosuch]\nx = 1\n' > "$WORK/section.ini"

# expect P WHAT NEEDLE ARGS...: moed run ARGS at P ranks exits 2 with one "moed: error:" line
# containing NEEDLE.
expect() {
  local p=$1 what=$2 needle=$3; shift 3
  run_np "$p" run "$@" --set run.dir="$WORK/never"
  local n
  n=$(grep -c '^moed: error:' "$ERR" || true)
  check "P=$p $what: exit code 2 (got $RC)" [ "$RC" -eq 2 ]
  check "P=$p $what: exactly one error line (got $n)" [ "$n" -eq 1 ]
  check "P=$p $what: message names '$needle'" grep -qF -- "$needle" "$ERR"
  sed 's/^/    /' "$ERR" | head -3
}

for p in 1 2 4; do
  expect $p "unknown key" "model.foo" "$WORK/unknown.ini"
  expect $p "unknown section" "nosuch" "$WORK/section.ini"
  expect $p "bad integer" "model.d_model" "$WORK/badint.ini"
  expect $p "missing file" "$WORK/missing.ini" "$WORK/missing.ini"
  expect $p "bad --set value" "train.lr" "$TINY" --set train.lr=fast
  expect $p "unknown --set key" "train.nope" "$TINY" --set train.nope=1
  expect $p "out of range" "model.top_k" "$TINY" --set model.top_k=9
  expect $p "bad enum" "compute.isa" "$TINY" --set compute.isa=sse9
  expect $p "bad enum" "compute.prepack" "$TINY" --set compute.prepack=yes
  expect $p "bad dispatcher" "comm.dispatcher" "$TINY" --set comm.dispatcher=alltoall
  expect $p "chunks out of range" "comm.chunks" "$TINY" --set comm.chunks=0
  expect $p "bad chunk axis" "comm.chunk_axis" "$TINY" --set comm.chunk_axis=experts
  expect $p "bad progress mode" "comm.progress" "$TINY" --set comm.progress=poll
  expect $p "ring embed chunks > d_model" "comm.chunks" "$TINY" --set comm.dispatcher=ring \
    --set comm.chunk_axis=embed --set comm.chunks=33
done
# router combinations that cannot work (issue 5), on every rank
for p in 1 2; do
  expect $p "topk_groups > n_groups" "model.topk_groups" "$TINY" --set model.n_groups=2 \
    --set model.topk_groups=3
  expect $p "top_k > eligible experts" "model.top_k" "$TINY" --set model.n_groups=4 \
    --set model.topk_groups=1 --set model.top_k=3
  expect $p "n_experts % n_groups" "model.n_groups" "$TINY" --set model.n_groups=3
  expect $p "negative capacity" "model.capacity_factor" "$TINY" --set model.capacity_factor=-1
  expect $p "too many shared experts" "model.n_shared_experts" "$TINY" \
    --set model.n_shared_experts=65
done
for p in 2 4; do
  expect $p "n_experts % P" "model.n_experts" "$TINY" --set model.n_experts=3 --set model.top_k=1
  expect $p "global_batch_tokens % P" "train.global_batch_tokens" "$TINY" \
    --set train.global_batch_tokens=$((4 * 64 + 1))
  # more chunks than local tokens (256 / P of them)
  expect $p "comm.chunks > local tokens" "comm.chunks" "$TINY" \
    --set comm.dispatcher=alltoallv_chunked --set comm.chunks=$((256 / p + 1))
done
# AVX-512 asked for on a CPU (or build) without it is a config error, not a crash.
if ! grep -q avx512f /proc/cpuinfo; then
  expect 1 "avx512 unavailable" "compute.isa" "$TINY" --set compute.isa=avx512
fi
MOED_ISA=sse9 expect 1 "MOED_ISA bad value" "MOED_ISA" "$TINY"
# the usage errors of the command line itself
set +e
"$MOED" >/dev/null 2>&1; rc=$?
set -e
check "no arguments: exit 2 (got $rc)" [ "$rc" -eq 2 ]
set +e
"$MOED" frobnicate >/dev/null 2>"$WORK/e"; rc=$?
set -e
check "unknown command: exit 2 (got $rc)" [ "$rc" -eq 2 ]
finish
