# compute.prepack (issue 4): expert weights pre-packed in the kernels' layout and repacked by
# the optimizer's fused pass give the same bits as packing on the fly. Shapes with several KC
# blocks on both sides of every product and partial panels (d = 264, f = 270 on avx2: KC 256,
# NR 16), capacity and shared experts, 1 and 2 threads, the avx2 and ref kernels, P = 1 and 2:
# losses at every step and the final weights identical for off, forward and all. Then a run
# stopped at a checkpoint and resumed (the load repacks) matches the uninterrupted run, and
# alltoallv_chunked on the copies matches too. On a CPU with AVX-512 the avx512 kernels
# (KC 192, NR 32) run the same checks. Each ISA has its own bits (DESIGN §3), so every
# comparison pins the ISA rather than take compute.isa = auto.
source "$MOED_SRC/tests/common/e2e_lib.sh"
STEPS=6
common=(--set model.d_model=264 --set model.d_ff=270 --set train.global_batch_tokens=32
        --set model.capacity_factor=1.5 --set model.n_shared_experts=1 --set train.steps=$STEPS
        --set train.warmup_steps=2)
variants=("avx2 1 1" "avx2 2 2" "ref 1 1")
grep -q avx512f /proc/cpuinfo && variants+=("avx512 1 1" "avx512 2 2")
for variant in "${variants[@]}"; do
  set -- $variant; isa=$1; threads=$2; p=$3
  ref=
  for pp in off forward all; do
    dir=$WORK/$isa-t$threads-p$p-$pp
    run_np "$p" run "$MOED_SRC/config/tiny2.ini" --set run.dir="$dir" "${common[@]}" \
      --set compute.isa=$isa --set compute.threads=$threads --set compute.prepack=$pp
    check "$isa threads=$threads P=$p prepack=$pp exits 0" [ "$RC" -eq 0 ]
    d=$(digest_of "$OUT")
    losses_of "$dir" > "$dir/losses"
    check "$isa threads=$threads P=$p prepack=$pp logged $STEPS losses" \
      [ "$(wc -l < "$dir/losses")" -eq $STEPS ]
    if [ -z "$ref" ]; then
      ref=$d; refdir=$dir
    else
      check "$isa threads=$threads P=$p prepack=$pp weights identical to off ($d vs $ref)" \
        [ "$d" = "$ref" ]
      check "$isa threads=$threads P=$p prepack=$pp every loss identical to off" \
        cmp -s "$dir/losses" "$refdir/losses"
    fi
  done
done

# alltoallv_chunked reads the copies too (chunk products on the packed panels, in row tiles).
for pp in forward all; do
  dir=$WORK/chunked-$pp
  run_np 2 run "$MOED_SRC/config/tiny2.ini" --set run.dir="$dir" "${common[@]}" \
    --set compute.isa=avx2 --set compute.threads=2 --set compute.prepack=$pp \
    --set comm.dispatcher=alltoallv_chunked \
    --set comm.chunks=3
  check "alltoallv_chunked P=2 prepack=$pp exits 0" [ "$RC" -eq 0 ]
  losses_of "$dir" > "$dir/losses"
  check "alltoallv_chunked P=2 prepack=$pp every loss identical to alltoallv, prepack off" \
    cmp -s "$dir/losses" "$WORK/avx2-t2-p2-off/losses"
done

# Resume: 3 steps, checkpoint, then 3 more from it, against 6 in one go (prepack = all, so the
# load must repack).
dir=$WORK/resume
run_np 2 run "$MOED_SRC/config/tiny2.ini" --set run.dir="$dir" "${common[@]}" \
  --set train.steps=$STEPS --set checkpoint.every=3 --set checkpoint.keep=5 --set compute.prepack=all
check "resume: full run exits 0" [ "$RC" -eq 0 ]
full=$(digest_of "$OUT")
run_np 2 run "$MOED_SRC/config/tiny2.ini" --set run.dir="$WORK/resume2" "${common[@]}" \
  --set train.steps=$STEPS --set checkpoint.dir="$dir/checkpoints" --set checkpoint.resume=auto \
  --set checkpoint.keep=5 --set compute.prepack=all
check "resume: a second run of the finished job exits 0" [ "$RC" -eq 0 ]
rm -f "$dir/checkpoints/step_00000006.h5"
echo step_00000003.h5 > "$dir/checkpoints/LATEST"
run_np 2 run "$MOED_SRC/config/tiny2.ini" --set run.dir="$WORK/resume3" "${common[@]}" \
  --set train.steps=$STEPS --set checkpoint.dir="$dir/checkpoints" --set checkpoint.resume=auto \
  --set checkpoint.keep=5 --set compute.prepack=all
check "resume from step 3 exits 0" [ "$RC" -eq 0 ]
check "resume from step 3 (repacked on load) gives the uninterrupted weights" \
  [ "$(digest_of "$OUT")" = "$full" ]
finish
