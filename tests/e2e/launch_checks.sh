# What moed checks about its launch before it touches a file (daemon/cli.c cli_check_launch):
# MOED_EXPECT_RANKS (deploy/slurm/moed.sbatch sets it to SLURM_NTASKS) against the MPI world
# size, compute.threads > 1 in a build without OpenMP (-DMOED_OPENMP=OFF), and MOED_MAX_ISA
# (daemon/cli.c cli_select_isa). Errors: exit code 2, one line, on every rank.
source "$MOED_SRC/tests/common/e2e_lib.sh"
TINY=$MOED_SRC/config/tiny.ini

# expect_error P NEEDLE ARGS...: moed run at P ranks exits 2 with one error line holding NEEDLE
expect_error() {
  local p=$1 needle=$2; shift 2
  run_np "$p" run "$TINY" --set run.dir="$WORK/never" --set train.steps=20 "$@"
  local n
  n=$(grep -c '^moed: error:' "$ERR" || true)
  check "P=$p '$needle': exit code 2 (got $RC)" [ "$RC" -eq 2 ]
  check "P=$p '$needle': exactly one error line (got $n)" [ "$n" -eq 1 ]
  check "P=$p '$needle': message" grep -qF -- "$needle" "$ERR"
  check "P=$p '$needle': nothing written" [ ! -e "$WORK/never" ]
}

for p in 1 2; do
  MOED_EXPECT_RANKS=3 expect_error $p "MOED_EXPECT_RANKS = 3 but the MPI world has $p rank"
  MOED_EXPECT_RANKS=two expect_error $p "MOED_EXPECT_RANKS = 'two': not a positive integer"
  MOED_EXPECT_RANKS=$p run_np $p run "$TINY" --set run.dir="$WORK/ok$p" --set train.steps=20
  check "P=$p MOED_EXPECT_RANKS=$p: runs (exit $RC)" [ "$RC" -eq 0 ]
done

# MOED_MAX_ISA caps the ISAs the kernels hand out: auto picks at most it (and the start-up line
# says why), asking above it is a config error, and a bad value is one.
for p in 1 2; do
  MOED_MAX_ISA=ref expect_error $p "compute.isa = avx2: MOED_MAX_ISA = ref holds moed below it" \
    --set compute.isa=avx2
  MOED_MAX_ISA=sse9 expect_error $p "MOED_MAX_ISA = 'sse9': not one of ref, avx2, avx512"
done
MOED_MAX_ISA=ref run_np 2 run "$TINY" --set run.dir="$WORK/capref" --set train.steps=20
check "MOED_MAX_ISA=ref: runs (exit $RC)" [ "$RC" -eq 0 ]
check "MOED_MAX_ISA=ref: auto picks ref, and says why" grep -qF "isa ref (MOED_MAX_ISA=ref)" "$OUT"
check "MOED_MAX_ISA=ref: metrics.jsonl says ref" grep -qF '"isa":"ref"' "$WORK/capref/metrics.jsonl"
if grep -qw avx512f /proc/cpuinfo; then # the cap below what the CPU runs
  MOED_MAX_ISA=avx2 run_np 1 run "$TINY" --set run.dir="$WORK/capavx2" --set train.steps=20
  check "MOED_MAX_ISA=avx2 on an AVX-512 CPU: auto picks avx2" \
    grep -qF "isa avx2 (MOED_MAX_ISA=avx2)" "$OUT"
  MOED_MAX_ISA=avx2 expect_error 2 "compute.isa = avx512: MOED_MAX_ISA = avx2 holds moed below it" \
    --set compute.isa=avx512
fi

# compute.threads > 1: trains with OpenMP, a config error without (MOED_OPENMP comes from CMake).
case ${MOED_OPENMP:?run through ctest} in
  ON)
    run_np 2 run "$TINY" --set run.dir="$WORK/threads" --set train.steps=20 --set compute.threads=2
    check "OpenMP build: compute.threads=2 runs (exit $RC)" [ "$RC" -eq 0 ]
    check "OpenMP build: and says so" grep -q "2 ranks x 2 threads" "$OUT"
    ;;
  *) expect_error 2 "compute.threads = 2: this moed was built without OpenMP" --set compute.threads=2 ;;
esac
finish
