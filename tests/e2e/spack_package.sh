# deploy/spack/package.py (Spack itself is not installed here): it compiles as Python, and
# tests/common/spack_drift.py finds its variants and dependencies in step with CMakeLists.txt.
# The checker is shown to fail on drift: copies with an option, a dependency or a variant
# condition changed must be rejected, each for the right reason.
source "$MOED_SRC/tests/common/e2e_lib.sh"
PY=/usr/bin/python3
PKG=$MOED_SRC/deploy/spack/package.py
CM=$MOED_SRC/CMakeLists.txt
TCM=$MOED_SRC/tests/CMakeLists.txt
DRIFT=$MOED_SRC/tests/common/spack_drift.py

check "package.py compiles" $PY -c "import py_compile, sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], doraise=True)" "$PKG" "$WORK/package.pyc"
$PY "$DRIFT" "$PKG" "$CM" "$TCM" > "$WORK/agree" || true
cat "$WORK/agree"
check "package.py agrees with CMakeLists.txt" $PY "$DRIFT" "$PKG" "$CM" "$TCM"

# drifted KIND NEEDLE: the checker on the drifted copies exits 1 naming NEEDLE
drifted() {
  set +e
  $PY "$DRIFT" "$WORK/package.py" "$WORK/CMakeLists.txt" "$TCM" > "$WORK/out"
  local rc=$?
  set -e
  check "$1: detected (exit $rc)" [ "$rc" -eq 1 ]
  check "$1: names '$2'" grep -qF -- "$2" "$WORK/out"
  cp "$PKG" "$WORK/package.py"
  cp "$CM" "$WORK/CMakeLists.txt"
}
cp "$PKG" "$WORK/package.py"
cp "$CM" "$WORK/CMakeLists.txt"
echo 'option(MOED_NEWTHING "a new option" OFF)' >> "$WORK/CMakeLists.txt"
drifted "new CMake option" "MOED_NEWTHING"
echo 'pkg_check_modules(ZSTD REQUIRED IMPORTED_TARGET libzstd)' >> "$WORK/CMakeLists.txt"
drifted "new pkg-config module" "pkg:libzstd"
sed -i '/depends_on("inih")/d' "$WORK/package.py"
drifted "dependency dropped" "depends_on('inih')"
sed -i 's/depends_on("hdf5+mpi")/depends_on("hdf5")/' "$WORK/package.py"
drifted "hdf5 without +mpi" "lacks '+mpi'"
sed -i 's/depends_on("openblas", when="+bench")/depends_on("openblas")/' "$WORK/package.py"
drifted "bench dependency unconditional" "when='+bench'"
sed -i 's/self.define_from_variant("MOED_OPENMP", "openmp"),//' "$WORK/package.py"
drifted "variant not passed to CMake" "MOED_OPENMP"
sed -i 's/    depends_on("c", type="build")/&\n    depends_on("zlib")/' "$WORK/package.py"
drifted "unexplained dependency" "'zlib'"
finish
