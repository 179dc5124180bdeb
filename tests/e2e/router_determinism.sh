# DESIGN §3 for the router options of issue 5: capacity dropping (which needs every rank's
# counts), shared experts (replicated, tree-reduced gradients), sigmoid + group-limited
# routing + scaling, aux-loss-free bias updates and skewed routing that leaves experts and
# ranks without tokens give bit-identical losses (every step) and final weights at P = 1, 2, 4,
# with the alltoallv and alltoallv_chunked dispatchers; ring (which reorders the k-slot sum)
# within 1e-5 of them.
source "$MOED_SRC/tests/common/e2e_lib.sh"
STEPS=20
declare -A SETS
SETS[all-options]="model.capacity_factor=0.8 model.n_shared_experts=1 model.router=sigmoid
  model.n_groups=4 model.topk_groups=2 model.routed_scaling=2.0 train.bias_update_rate=0.01
  train.aux_loss_coef=0.01 train.z_loss_coef=0.001"
SETS[skewed-capacity]="model.capacity_factor=1.0 data.skew=3.0 model.top_k=1
  model.n_shared_experts=2"
for name in all-options skewed-capacity; do
  cfg=tiny2; [ "$name" = skewed-capacity ] && cfg=tiny
  args=()
  for s in ${SETS[$name]}; do args+=(--set "$s"); done
  ref=
  for variant in "1 alltoallv" "2 alltoallv" "4 alltoallv" "2 alltoallv_chunked" \
                 "4 alltoallv_chunked"; do
    set -- $variant; p=$1; disp=$2
    dir=$WORK/$name-p$p-$disp
    run_np "$p" run "$MOED_SRC/config/$cfg.ini" --set run.dir="$dir" --set train.steps=$STEPS \
      "${args[@]}" --set comm.dispatcher=$disp --set comm.chunks=3
    check "$name P=$p $disp exits 0" [ "$RC" -eq 0 ]
    d=$(digest_of "$OUT")
    losses_of "$dir" > "$dir/losses"
    check "$name P=$p logged $STEPS losses" [ "$(wc -l < "$dir/losses")" -eq $STEPS ]
    if [ -z "$ref" ]; then
      ref=$d; refdir=$dir
      dropped=$(sed -n 's/.*"dropped":\[\([0-9,]*\)\].*/\1/p' "$dir/metrics.jsonl" |
                tr ',' '\n' | awk '{ s += $1 } END { print s + 0 }')
      check "$name drops slots by capacity ($dropped over $STEPS steps)" [ "$dropped" -gt 0 ]
      if [ "$name" = skewed-capacity ]; then
        idle=$(sed -n 's/.*"expert_load":\[\[\([0-9,]*\)\]\].*/\1/p' "$dir/metrics.jsonl" |
               grep -cE '(^|,)0(,|$)' || true)
        check "$name leaves some expert without tokens in $idle steps" [ "$idle" -gt 0 ]
      fi
    else
      check "$name P=$p $disp final weights identical ($d vs $ref)" [ "$d" = "$ref" ]
      check "$name P=$p $disp every loss identical" cmp -s "$dir/losses" "$refdir/losses"
    fi
  done
  for axis in tokens embed; do
    dir=$WORK/$name-ring-$axis
    run_np 2 run "$MOED_SRC/config/$cfg.ini" --set run.dir="$dir" --set train.steps=$STEPS \
      "${args[@]}" --set comm.dispatcher=ring --set comm.chunk_axis=$axis --set comm.chunks=2
    check "$name ring ($axis) P=2 exits 0" [ "$RC" -eq 0 ]
    worst=$(paste <(losses_of "$dir") "$refdir/losses" |
            awk '{ r = ($1 - $2) / $2; if (r < 0) r = -r; if (r > w) w = r } END { printf "%.2e", w }')
    check "$name ring ($axis) P=2 losses within 1e-5 of alltoallv (worst $worst)" \
      awk -v w="$worst" 'BEGIN { exit !(w <= 1e-5) }'
  done
done
finish
