# Aux-loss-free balancing (DESIGN.md §2) on config/balance.ini, whose skewed inputs make the
# router collapse: with train.bias_update_rate the max/mean expert load falls below 1.2
# (per step at some point, and over the last 100 steps' summed loads), without it it never
# does and the dead-expert warning fires. Loads come from metrics.jsonl.
source "$MOED_SRC/tests/common/e2e_lib.sh"
PY=/usr/bin/python3

# imbalance DIR: "<min per-step max/mean over the run> <max/mean of the last 100 steps' sums>"
imbalance() {
  "$PY" - "$1/metrics.jsonl" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def imb(load):
    mean = sum(load) / len(load)
    return max(load) / mean
per_step = [max(imb(l) for l in r["expert_load"]) for r in rows]
last = [[sum(col) for col in zip(*[r["expert_load"][0] for r in rows[-100:]])]]
print(f"{min(per_step):.4f} {imb(last[0]):.4f}")
PYEOF
}

run_np 2 run "$MOED_SRC/config/balance.ini" --set run.dir="$WORK/on"
check "balanced run exits 0" [ "$RC" -eq 0 ]
tail -2 "$OUT"
read -r on_min on_last < <(imbalance "$WORK/on")
echo "with bias balancing: lowest per-step max/mean $on_min, last 100 steps $on_last"
check "with balancing a step reaches max/mean < 1.2 ($on_min)" awk -v x="$on_min" 'BEGIN { exit !(x < 1.2) }'
check "with balancing the last 100 steps' load is within 1.2 ($on_last)" awk -v x="$on_last" 'BEGIN { exit !(x < 1.2) }'
ratio=$(sed -n 's/.*loss \([0-9.e+-]*\) -> \([0-9.e+-]*\);.*/\1 \2/p' "$OUT" | awk '{ printf "%.1f", $1 / $2 }')
check "the balanced run still learns (loss falls ${ratio}x >= 50x)" awk -v r="$ratio" 'BEGIN { exit !(r >= 50) }'

run_np 2 run "$MOED_SRC/config/balance.ini" --set run.dir="$WORK/off" --set train.bias_update_rate=0
check "unbalanced run exits 0" [ "$RC" -eq 0 ]
read -r off_min off_last < <(imbalance "$WORK/off")
echo "without: lowest per-step max/mean $off_min, last 100 steps $off_last"
check "without balancing no step gets below 1.2 ($off_min)" awk -v x="$off_min" 'BEGIN { exit !(x >= 1.2) }'
check "without balancing the router collapses ($off_last >= 2)" awk -v x="$off_last" 'BEGIN { exit !(x >= 2) }'
check "the dead-expert warning names layer, expert and the step count" \
  grep -q "^moed: warning: layer 0 expert [0-9]* has received no tokens for 50 steps" "$OUT"
run_np 1 run "$MOED_SRC/config/balance.ini" --set run.dir="$WORK/on1" --set train.steps=100
d1=$(digest_of "$OUT")
run_np 2 run "$MOED_SRC/config/balance.ini" --set run.dir="$WORK/on2" --set train.steps=100
d2=$(digest_of "$OUT")
check "bias balancing: P=1 and P=2 give the same weights ($d1 / $d2)" [ -n "$d1" -a "$d1" = "$d2" ]
finish
