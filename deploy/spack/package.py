# Spack package for moed. Drop this file into a Spack repository as
# <repo>/packages/moed/package.py (`spack repo create myrepo`, `spack repo add myrepo`).
# moed has no public release or URL yet, so Spack builds it from a checkout:
#   cd <moed checkout> && spack dev-build moed@main          # OpenMP, AVX-512, moed-bench
#   spack dev-build moed@main ~bench ~avx512                 # the daemon alone
#   spack dev-build --test=root moed@main                    # also runs the unit suites
# or, in a Spack environment, `spack develop --path <checkout> moed@main && spack install`.
# Once a repository is published, add its `git = ...` here. Then, on the cluster:
#   spack load moed && sbatch $(spack location -i moed)/share/moed/slurm/moed.sbatch CONFIG
#
# Kept in step with CMakeLists.txt by tests/e2e/spack_package.sh: every variant maps to a CMake
# option, every package CMakeLists.txt finds to a dependency here, and the dependencies CMake
# does not find are listed there with their reason.
from spack.package import *


class Moed(CMakePackage):
    """Expert-parallel Mixture-of-Experts training daemon for CPU clusters: MPI (MPICH)
    token dispatch, AVX2/AVX-512 grouped-GEMM kernels, parallel HDF5 checkpoints, Slurm
    batch scripts with preemption and requeue."""

    version("main")

    variant("openmp", default=True, description="Threads inside a rank (compute.threads)")
    variant(
        "avx512",
        default=True,
        description="Build the AVX-512 kernels (chosen at run time only where the CPU has them)",
    )
    variant("bench", default=True, description="Build moed-bench (compares with OpenBLAS, oneDNN)")

    depends_on("c", type="build")
    depends_on("cmake@3.18:", type="build")
    depends_on("pkgconfig", type="build")

    # MPICH is what moed is developed and tested with (the pkg-config module `mpich`);
    # launch with srun --mpi=pmi2 or mpiexec (deploy/slurm/README.md).
    depends_on("mpi")
    depends_on("hdf5+mpi")
    depends_on("inih")
    # The transport under MPI: with MPICH's ch4:ofi netmod every message goes through
    # libfabric, whose provider FI_PROVIDER selects at run time (deploy/slurm/README.md).
    # moed itself does not link it, hence type="run": one libfabric for MPI and the FI_*
    # settings the Slurm guide documents.
    depends_on("libfabric", type="run")
    # Header-only: the AVX-512 kernels are written with SIMDe's intrinsic names.
    depends_on("simde", type="build", when="+avx512")
    depends_on("openblas", when="+bench")
    depends_on("onednn", when="+bench")
    depends_on("check", type="test")

    def cmake_args(self):
        return [
            self.define_from_variant("MOED_OPENMP", "openmp"),
            self.define_from_variant("MOED_AVX512", "avx512"),
            self.define_from_variant("MOED_BUILD_BENCH", "bench"),
            self.define("MOED_BUILD_TESTS", self.run_tests),
            self.define("MOED_SANITIZE", False),
        ]

    def check(self):
        # the unit suites; the MPI and end-to-end tests need mpiexec.mpich and spare cores
        with working_dir(self.build_directory):
            ctest("-L", "unit", "--output-on-failure")
