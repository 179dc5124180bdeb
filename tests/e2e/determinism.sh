# DESIGN §3: bit-identical losses (every step) and final weights for P = 1, 2, 4 and for 1 vs
# 2 threads per rank, on tiny.ini and on the 2-layer tiny2.ini; on tiny2.ini also with
# comm.dispatcher = alltoallv_chunked (3 chunks, which divide no rank's token count).
source "$MOED_SRC/tests/common/e2e_lib.sh"
STEPS=25
for cfg in tiny tiny2; do
  ref=
  variants=("1 1 alltoallv" "2 1 alltoallv" "4 1 alltoallv" "1 2 alltoallv" "2 2 alltoallv")
  if [ $cfg = tiny2 ]; then
    variants+=("2 1 alltoallv_chunked" "4 2 alltoallv_chunked")
  fi
  for variant in "${variants[@]}"; do
    set -- $variant; p=$1; th=$2; disp=$3
    dir=$WORK/$cfg-p$p-t$th-$disp
    OMP_NUM_THREADS=$th run_np "$p" run "$MOED_SRC/config/$cfg.ini" --set run.dir="$dir" \
      --set train.steps=$STEPS --set compute.threads="$th" --set comm.dispatcher=$disp \
      --set comm.chunks=3
    check "$cfg P=$p threads=$th $disp exits 0" [ "$RC" -eq 0 ]
    d=$(digest_of "$OUT")
    losses_of "$dir" > "$dir/losses"
    check "$cfg P=$p threads=$th $disp logged $STEPS losses" [ "$(wc -l < "$dir/losses")" -eq $STEPS ]
    if [ -z "$ref" ]; then
      ref=$d; refdir=$dir
      echo "$cfg reference digest $ref"
      if [ "$cfg" = tiny ]; then tiny_ref=$ref; fi
    else
      check "$cfg P=$p threads=$th $disp final weights identical ($d vs $ref)" [ "$d" = "$ref" ]
      check "$cfg P=$p threads=$th $disp every loss identical" cmp -s "$dir/losses" "$refdir/losses"
    fi
  done
done
# One expert per rank (E = P = 4), where the exchange skips its reorder pass, against P = 1.
for p in 1 4; do
  run_np $p run "$MOED_SRC/config/tiny2.ini" --set run.dir="$WORK/e4-p$p" --set train.steps=$STEPS \
    --set model.n_experts=4
  check "tiny2 E=4 P=$p exits 0" [ "$RC" -eq 0 ]
  e4[$p]=$(digest_of "$OUT")
done
check "tiny2 E=4: P=4 (one expert per rank) = P=1 (${e4[4]} vs ${e4[1]})" \
  [ -n "${e4[1]}" -a "${e4[4]}" = "${e4[1]}" ]
# The check must be able to fail: a different seed gives a different digest.
run_np 1 run "$MOED_SRC/config/tiny.ini" --set run.dir="$WORK/seed" --set train.steps=$STEPS \
  --set train.seed=99
d=$(digest_of "$OUT")
check "a different seed changes the digest ($d vs $tiny_ref)" test -n "$d" -a "$d" != "$tiny_ref"
finish
