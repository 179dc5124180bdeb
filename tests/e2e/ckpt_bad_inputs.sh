# Bad checkpoints and datasets through `moed run` (issue 3): each gives exit code 3 and one
# error line naming the file and what is wrong, at 1 and 2 ranks; a bad LATEST falls back
# to the newest valid checkpoint and says so.
source "$MOED_SRC/tests/common/e2e_lib.sh"
TINY=$MOED_SRC/config/tiny.ini
PY=/usr/bin/python3
COMMON=(--set train.steps=5 --set train.warmup_steps=2 --set log.every=100)

run_np 1 run "$TINY" "${COMMON[@]}" --set run.dir="$WORK/good"
GOOD=$WORK/good/checkpoints/step_00000005.h5
check "a good checkpoint was written" [ -f "$GOOD" ]
run_np 1 run "$TINY" "${COMMON[@]}" --set run.dir="$WORK/d16" --set model.d_model=16
D16=$WORK/d16/checkpoints/step_00000005.h5

# case NAME: a run dir whose only checkpoint is FILE (LATEST names it)
case_dir() {
  local dir=$WORK/case-$1
  mkdir -p "$dir/checkpoints"
  cp "$2" "$dir/checkpoints/step_00000005.h5"
  echo step_00000005.h5 > "$dir/checkpoints/LATEST"
  echo "$dir"
}
# expect3 P WHAT NEEDLE DIR [ARGS]: resuming from DIR exits 3 with one line holding NEEDLE
expect3() {
  local p=$1 what=$2 needle=$3 dir=$4; shift 4
  run_np "$p" run "$TINY" "${COMMON[@]}" --set run.dir="$dir" --set checkpoint.resume=auto "$@"
  local n
  n=$(grep -c '^moed: error:' "$ERR" || true)
  check "P=$p $what: exit 3 (got $RC)" [ "$RC" -eq 3 ]
  check "P=$p $what: one error line (got $n)" [ "$n" -eq 1 ]
  check "P=$p $what: names '$needle'" grep -qF -- "$needle" "$ERR"
  sed 's/^/    /' "$ERR" | head -2
}

head -c 4096 /dev/urandom > "$WORK/garbage.h5"
size=$(stat -c %s "$GOOD")
head -c $((size / 2)) "$GOOD" > "$WORK/truncated.h5"
cp "$GOOD" "$WORK/missing.h5"
$PY -c "import h5py,sys; f=h5py.File(sys.argv[1],'r+'); del f['layers/0/experts/w1']" "$WORK/missing.h5"
cp "$GOOD" "$WORK/nan.h5"
$PY -c "
import h5py, numpy as np, sys
f = h5py.File(sys.argv[1], 'r+'); w = f['layers/0/experts/wo']; a = w[...]; a[5, 3, 7] = np.nan; w[...] = a" "$WORK/nan.h5"

for p in 1 2; do
  expect3 $p "not HDF5" "not an HDF5 file" "$(case_dir garbage-$p "$WORK/garbage.h5")"
  expect3 $p "truncated" "truncated" "$(case_dir trunc-$p "$WORK/truncated.h5")"
  expect3 $p "missing dataset" "layers/0/experts/w1" "$(case_dir missing-$p "$WORK/missing.h5")"
  expect3 $p "wrong shapes (d_model 16)" "d_model" "$(case_dir d16-$p "$D16")"
  expect3 $p "config disagrees (n_experts)" "n_experts" "$(case_dir ne-$p "$GOOD")" \
    --set model.n_experts=4
  expect3 $p "NaN in a weight" "NaN" "$(case_dir nan-$p "$WORK/nan.h5")"
done

# A garbage LATEST with a valid checkpoint beside it: fall back, say so, resume.
dir=$(case_dir latest "$GOOD")
echo "not a file name" > "$dir/checkpoints/LATEST"
run_np 2 run "$TINY" --set train.steps=8 --set train.warmup_steps=2 --set log.every=100 --set run.dir="$dir" \
  --set checkpoint.resume=auto
check "bad LATEST: exit 0 (got $RC)" [ "$RC" -eq 0 ]
check "bad LATEST: a warning names LATEST" grep -q "warning:.*LATEST" "$OUT"
check "bad LATEST: resumed at step 5" grep -q "resumed from .*step_00000005.h5 at step 5" "$OUT"
check "bad LATEST: LATEST now names step 8" grep -qx "step_00000008.h5" "$dir/checkpoints/LATEST"

# data.source = hdf5 with a dataset of the wrong width
$PY -c "
import h5py, numpy as np, sys
f = h5py.File(sys.argv[1], 'w'); f['x'] = np.zeros((64, 16), np.float32); f['y'] = np.zeros((64, 16), np.float32)" "$WORK/narrow.h5"
for p in 1 2; do
  run_np $p run "$TINY" "${COMMON[@]}" --set run.dir="$WORK/ds$p" --set data.source=hdf5 \
    --set data.path="$WORK/narrow.h5"
  check "P=$p dataset of the wrong width: exit 3 (got $RC)" [ "$RC" -eq 3 ]
  check "P=$p dataset of the wrong width: message names /x" grep -q "narrow.h5.*/x" "$ERR"
  head -1 "$ERR"
done

# A checkpoint directory that cannot be created (under a regular file) fails before the first
# step, not at the first save after the training it would have thrown away.
touch "$WORK/plainfile"
for p in 1 2; do
  run_np $p run "$TINY" "${COMMON[@]}" --set run.dir="$WORK/cd$p" \
    --set checkpoint.dir="$WORK/plainfile/checkpoints"
  n=$(grep -c '^moed: error:' "$ERR" || true)
  check "P=$p unusable checkpoint.dir: exit 3 (got $RC)" [ "$RC" -eq 3 ]
  check "P=$p unusable checkpoint.dir: one error line (got $n)" [ "$n" -eq 1 ]
  check "P=$p unusable checkpoint.dir: names the path and the key" \
    grep -qF "$WORK/plainfile/checkpoints: cannot create directory: Not a directory (checkpoint.dir)" "$ERR"
  check "P=$p unusable checkpoint.dir: no step was run" bash -c "! grep -q '^step ' '$OUT'"
  head -1 "$ERR"
done
finish
