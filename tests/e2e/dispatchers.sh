# comm.dispatcher through moed run.
# - The progress line and metrics.jsonl split each step into compute, exposed comm and
#   comm hidden behind compute: zero hidden for the blocking alltoallv, some for
#   alltoallv_chunked and ring; alltoallv_chunked ends with alltoallv's weights.
# - comm.progress = thread (both overlapping strategies): the same weights as with MPI_Test
#   progress, and some comm hidden.
# - ring, both chunk axes: the same weights with 1 and 2 threads per rank at P = 2.
# - auto: the timings of every strategy and the choice are printed, and the run is
#   bit-identical to one that names the chosen strategy outright (the timing passes do
#   not touch the weights). With comm.chunks larger than the local tokens and d_model, the
#   chunked and embed candidates are skipped, not an error.
source "$MOED_SRC/tests/common/e2e_lib.sh"
CFG=$MOED_SRC/config/tiny2.ini
# overlap_sum DIR: the sum over steps of comm_overlap_s in DIR/metrics.jsonl
overlap_sum() {
  sed -n 's/.*"comm_overlap_s":\([^,]*\),.*/\1/p' "$1/metrics.jsonl" |
    awk '{ s += $1 } END { printf "%.9f", s }'
}
declare -A digest
for disp in alltoallv alltoallv_chunked ring; do
  run_np 2 run "$CFG" --set run.dir="$WORK/$disp" --set train.steps=20 \
    --set comm.dispatcher=$disp
  check "$disp exits 0 (got $RC)" [ "$RC" -eq 0 ]
  check "$disp: progress line shows the hidden share" grep -q 'comm [0-9]*% (+[0-9]*% hidden)' "$OUT"
  check "$disp: metrics.jsonl has compute_s, comm_exposed_s, comm_overlap_s" \
    grep -q '"compute_s":[0-9.e-]*,"comm_exposed_s":[0-9.e-]*,"comm_overlap_s":' \
    "$WORK/$disp/metrics.jsonl"
  digest[$disp]=$(digest_of "$OUT")
  hid=$(overlap_sum "$WORK/$disp")
  echo "    $disp: hidden comm over 20 steps $hid s"
  if [ $disp = alltoallv ]; then
    check "alltoallv hides nothing ($hid s)" awk "BEGIN { exit !($hid == 0) }"
  else
    check "$disp hides some comm ($hid s)" awk "BEGIN { exit !($hid > 0) }"
  fi
done
check "alltoallv_chunked = alltoallv (${digest[alltoallv_chunked]})" \
  [ "${digest[alltoallv_chunked]}" = "${digest[alltoallv]}" ]
# comm.progress = thread: the same weights as alltoallv, and the comm still hidden
for disp in alltoallv_chunked ring; do
  run_np 2 run "$CFG" --set run.dir="$WORK/$disp-thread" --set train.steps=20 \
    --set comm.dispatcher=$disp --set comm.progress=thread
  check "$disp with the progress thread exits 0 (got $RC)" [ "$RC" -eq 0 ]
  hid=$(overlap_sum "$WORK/$disp-thread")
  echo "    $disp, progress thread: hidden comm over 20 steps $hid s"
  check "$disp with the progress thread hides some comm ($hid s)" awk "BEGIN { exit !($hid > 0) }"
  dt=$(digest_of "$OUT")
  check "$disp: the progress thread changes no weight ($dt vs ${digest[$disp]})" \
    [ -n "$dt" -a "$dt" = "${digest[$disp]}" ]
done
# ring at a fixed P: the same weights with 2 threads per rank (and the embed axis as well)
for axis in tokens embed; do
  OMP_NUM_THREADS=2 run_np 2 run "$CFG" --set run.dir="$WORK/ring-$axis-t2" --set train.steps=20 \
    --set comm.dispatcher=ring --set comm.chunk_axis=$axis --set compute.threads=2
  d2=$(digest_of "$OUT")
  run_np 2 run "$CFG" --set run.dir="$WORK/ring-$axis-t1" --set train.steps=20 \
    --set comm.dispatcher=ring --set comm.chunk_axis=$axis
  d1=$(digest_of "$OUT")
  check "ring $axis: 1 and 2 threads per rank give the same weights ($d1 vs $d2)" \
    [ -n "$d1" -a "$d1" = "$d2" ]
done
for p in 1 2; do
  run_np $p run "$CFG" --set run.dir="$WORK/auto$p" --set train.steps=25 \
    --set comm.dispatcher=auto
  check "P=$p auto exits 0 (got $RC)" [ "$RC" -eq 0 ]
  line=$(grep 'comm.dispatcher = auto' "$OUT" || true)
  dauto=$(digest_of "$OUT")
  echo "    $line"
  n=$(echo "$line" | grep -o '[0-9.]* ms' | wc -l)
  check "P=$p auto printed 4 timings (got $n)" [ "$n" -eq 4 ]
  choice=$(echo "$line" | sed -n 's/.*; using //p')
  check "P=$p auto printed its choice" [ -n "$choice" ]
  sets=()
  for kv in $choice; do sets+=(--set "$kv"); done
  run_np $p run "$CFG" --set run.dir="$WORK/chosen$p" --set train.steps=25 "${sets[@]}"
  check "P=$p $choice exits 0" [ "$RC" -eq 0 ]
  dchosen=$(digest_of "$OUT")
  check "P=$p auto = $choice: weights digest ($dauto vs $dchosen)" \
    [ -n "$dauto" -a "$dauto" = "$dchosen" ]
  losses_of "$WORK/auto$p" > "$WORK/la" && losses_of "$WORK/chosen$p" > "$WORK/lc"
  check "P=$p auto = $choice: every loss identical" cmp -s "$WORK/la" "$WORK/lc"
done
run_np 2 run "$CFG" --set run.dir="$WORK/big" --set train.steps=20 --set comm.dispatcher=auto \
  --set comm.chunks=200
check "auto with comm.chunks=200 exits 0 (got $RC)" [ "$RC" -eq 0 ]
check "auto with comm.chunks=200 skips two candidates" \
  [ "$(grep -o 'skipped' "$OUT" | wc -l)" -eq 2 ]
finish
