# Sourced by scripts/run and scripts/test: installs the Debian packages moed needs (only the
# missing ones, so a second run does nothing), then configures and builds into $BUILD.
# MPICH is used through its own names (mpiexec.mpich, pkg-config mpich), so an OpenMPI that
# another package pulled in and made the default `mpicc`/`mpiexec` is never picked up.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
PKGS=(build-essential cmake pkg-config mpich libmpich-dev libhdf5-mpich-dev libfabric-dev
      check libinih-dev libopenblas-dev libdnnl-dev libsimde-dev
      python3-torch python3-numpy python3-h5py python3-matplotlib)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "scripts: installing ${missing[*]}"
  SUDO=; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo ${CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD" -j "$(nproc)"
