# The README's run: config/tiny.ini at its default steps on 2 ranks lowers the loss at
# least 100x (first step's loss over the last step's).
source "$MOED_SRC/tests/common/e2e_lib.sh"
run_np 2 run "$MOED_SRC/config/tiny.ini" --set run.dir="$WORK/run"
check "tiny.ini exits 0" [ "$RC" -eq 0 ]
cat "$OUT" | tail -3
ratio=$(sed -n 's/.*loss \([0-9.e+-]*\) -> \([0-9.e+-]*\);.*/\1 \2/p' "$OUT" |
        awk '{ if ($2 > 0) printf "%.1f", $1 / $2; else print 0 }')
echo "loss ratio: $ratio"
check "loss falls at least 100x (ratio $ratio)" awk -v r="$ratio" 'BEGIN { exit !(r >= 100) }'
steps=$(wc -l < "$WORK/run/metrics.jsonl")
check "metrics.jsonl has one line per step ($steps)" [ "$steps" -eq 600 ]
check "metrics.jsonl has the documented fields" grep -q '"step":600,"loss":.*"aux_loss":.*"lr":.*"tokens_per_s":.*"gflops":.*"comm_frac":.*"imbalance":.*"expert_load":\[\[' "$WORK/run/metrics.jsonl"
finish
