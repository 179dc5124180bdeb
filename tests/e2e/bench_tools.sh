# moed-bench peak, layer and ckpt as smoke tests (gemm and comm have their own): each runs on
# its smallest settings and prints its table; the checkpoint round trip reports the loaded
# state identical to the saved one at P = 1 and 2; and every subcommand refuses a bad value
# with one line naming the option and exit 2. Timings are not checked (other tests may share
# the cores). Skipped (77) in builds without moed-bench (the sanitizer build leaves it out).
source "$MOED_SRC/tests/common/e2e_lib.sh"
BENCH=$MOED_BUILD/moed-bench
[ -x "$BENCH" ] || { echo "skip: $BENCH not built"; exit 77; }
num='[0-9]+\.[0-9]'

run_to "$WORK/peak" "$WORK/err" 120 "$BENCH" peak --threads 1
cat "$WORK/peak" "$WORK/err"
check "peak exits 0" [ "$RC" -eq 0 ]
check "peak: a scalar rate" grep -qE "^ref +scalar .* $num+ GF/s +$num+ GF/s +$num+ GF/s" "$WORK/peak"
if grep -q avx2 /proc/cpuinfo; then
  check "peak: an avx2 rate above the scalar one" \
    awk '$1 == "ref" { r = $(NF-5) } $1 == "avx2" { a = $(NF-5) } END { exit !(a > r && r > 0) }' \
    "$WORK/peak"
fi

run_to "$WORK/layer" "$WORK/err" 300 "$BENCH" layer --reps 1
cat "$WORK/layer" "$WORK/err"
check "layer exits 0" [ "$RC" -eq 0 ]
for shape in coarse fine-grained; do
  check "layer: $shape row with a step time, a rate, shares of peak and all/off" \
    grep -qE "^$shape +[0-9 ]+ +$num+ +$num+ +$num+% +$num+% +[0-9]+\.[0-9]{2}$" "$WORK/layer"
done
check "layer: shares of peak within (0, 100%]" \
  awk '/^(coarse|fine-grained) / { for (i = NF-1; i >= NF-2; i--) { v = $i + 0
         if (v <= 0 || v > 100) bad = 1 } } END { exit bad }' "$WORK/layer"

for np in 1 2; do
  run_to "$WORK/ckpt$np" "$WORK/err" 300 "$MPIEXEC" -n $np "$BENCH" ckpt --gib 0.01 --reps 1 \
    --dir "$WORK/ck$np" --fadvise-only
  cat "$WORK/ckpt$np" "$WORK/err"
  check "ckpt at P = $np exits 0" [ "$RC" -eq 0 ]
  check "ckpt at P = $np: the loaded state is the saved one" \
    grep -q '^load check: loaded state identical to the saved one' "$WORK/ckpt$np"
  check "ckpt at P = $np: a table row" grep -qE "^ +$np +[0-9]+ +$num" "$WORK/ckpt$np"
done

# MOED_MAX_ISA: a bad value is refused before any subcommand runs; a cap is reported.
MOED_MAX_ISA=sse9 run_to /dev/null "$WORK/err" 60 "$BENCH" peak
check "moed-bench with MOED_MAX_ISA=sse9: exit 2, one line naming it" \
  bash -c "[ $RC -eq 2 ] && [ \$(wc -l < '$WORK/err') -eq 1 ] && grep -qF 'MOED_MAX_ISA' '$WORK/err'"
MOED_MAX_ISA=ref run_to "$WORK/capgemm" "$WORK/err" 60 "$BENCH" gemm --isa avx2 --quick
check "moed-bench gemm --isa avx2 under MOED_MAX_ISA=ref: exit 2, names the cap" \
  bash -c "[ $RC -eq 2 ] && grep -qF 'MOED_MAX_ISA holds some back' '$WORK/err'"

# Bad values: one line naming the option, exit 2, for every subcommand.
while IFS='|' read -r args want; do
  run_to /dev/null "$WORK/err" 60 "$BENCH" $args
  check "moed-bench $args: exit 2, '$want'" \
    bash -c "[ $RC -eq 2 ] && [ \$(wc -l < '$WORK/err') -eq 1 ] && grep -qF -e \"$want\" '$WORK/err'"
done <<'EOF'
peak --threads 0|--threads takes a whole number in [1, 4096], not '0'
peak --bogus|unknown option '--bogus'
gemm --reps 65|--reps takes a whole number in [1, 64], not '65'
gemm --threads x|--threads takes a whole number in [1, 4096], not 'x'
layer --bogus|unknown option '--bogus'
layer --reps 0|--reps takes a whole number in [1, 64], not '0'
layer --threads 2x|--threads takes a whole number in [1, 4096], not '2x'
ckpt --gib -1|--gib takes a number in [0.001, 1024], not '-1'
ckpt --reps 33|--reps takes a whole number in [1, 32], not '33'
comm --iters 0|--iters takes a whole number in [1, 100000], not '0'
comm --reps 33|--reps takes a whole number in [1, 32], not '33'
comm --prepack some|--prepack must be off, forward or all
comm --ff 1e3|--ff takes a whole number in [1, 65536], not '1e3'
nosuch|unknown subcommand 'nosuch'
EOF
finish
