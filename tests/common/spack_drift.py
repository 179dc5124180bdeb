"""Checks that deploy/spack/package.py and CMakeLists.txt agree (tests/e2e/spack_package.sh).

    spack_drift.py PACKAGE_PY CMAKELISTS...

Spack is not installed here, so package.py is read as Python syntax (ast), not imported.
Exit 0 when they agree; 1 with one line per disagreement otherwise:
  - every CMake option() is set in cmake_args, from a variant unless listed in OPTION_NOT_VARIANT;
    every variant feeds exactly one option, and no define names an option that does not exist;
  - every package CMake finds (pkg_check_modules, find_library, find_package) has the Spack
    dependency FINDS maps it to, with the variant condition of the CMake option that guards it;
  - every Spack dependency is either such a mapping or listed in NOT_FOUND_BY_CMAKE.
"""
import ast
import re
import sys

# CMake find -> (Spack dependency name, required spec fragment or None)
FINDS = {
    "pkg:mpich": ("mpi", None),
    "pkg:hdf5-mpich": ("hdf5", "+mpi"),
    "pkg:inih": ("inih", None),
    "pkg:check": ("check", None),
    "pkg:openblas": ("openblas", None),
    "lib:dnnl": ("onednn", None),
    "package:OpenMP": (None, None),  # the compiler's runtime, no package
    "package:PkgConfig": ("pkgconfig", None),
    "program:mpiexec.mpich": ("mpi", None),  # the launcher that comes with MPICH
}
# Spack dependencies CMakeLists.txt does not find, and why.
NOT_FOUND_BY_CMAKE = {
    "c": "the C compiler",
    "cmake": "the build system",
    "libfabric": "MPICH's ch4:ofi transport, run time only (FI_PROVIDER)",
    "simde": "header-only, included by compute/kernels/avx512.c",
}
# CMake options that are set in cmake_args but are not variants, and why.
OPTION_NOT_VARIANT = {
    "MOED_BUILD_TESTS": "follows spack install --test",
    "MOED_SANITIZE": "developer builds only",
}
# Options that switch a find on: a dependency found only under them needs `when="+variant"`.
GUARDS = {"pkg:openblas": "MOED_BUILD_BENCH", "lib:dnnl": "MOED_BUILD_BENCH",
          "package:OpenMP": "MOED_OPENMP"}


def read_cmake(paths):
    options, finds = set(), set()
    for path in paths:
        text = re.sub(r"#[^\n]*", "", open(path).read())
        options |= set(re.findall(r"\boption\(\s*(\w+)", text))
        for args in re.findall(r"\bpkg_check_modules\(([^)]*)\)", text):
            words = [w for w in args.split() if w not in ("REQUIRED", "QUIET", "IMPORTED_TARGET")]
            finds |= {"pkg:" + m for m in words[1:]}
        for args in re.findall(r"\bfind_library\(([^)]*)\)", text):
            finds.add("lib:" + args.split()[1])
        for args in re.findall(r"\bfind_package\(([^)]*)\)", text):
            finds.add("package:" + args.split()[0])
        for args in re.findall(r"\bfind_program\(([^)]*)\)", text):
            words = args.split()
            finds.add("program:" + words[words.index("NAMES") + 1 if "NAMES" in words else 1])
    return options, finds


def call_name(node):
    f = node.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None


def read_package(path):
    tree = ast.parse(open(path).read(), path)
    variants, deps, defines = {}, [], {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        name, args = call_name(node), [a.value for a in node.args if isinstance(a, ast.Constant)]
        kw = {k.arg: k.value.value for k in node.keywords if isinstance(k.value, ast.Constant)}
        if name == "variant":
            variants[args[0]] = kw.get("default")
        elif name == "depends_on":
            spec = args[0]
            deps.append((re.match(r"[\w-]+", spec).group(0), spec, kw.get("when")))
        elif name == "define_from_variant":
            defines[args[0]] = args[1]
        elif name == "define":
            defines[args[0]] = None
    return variants, deps, defines


def main(argv):
    variants, deps, defines = read_package(argv[1])
    options, finds = read_cmake(argv[2:])
    problems = []
    option_variant = {}
    for opt in sorted(options):
        if opt not in defines:
            problems.append(f"CMake option {opt} is not set in package.py's cmake_args")
        elif defines[opt] is None and opt not in OPTION_NOT_VARIANT:
            problems.append(f"CMake option {opt} has no variant (define_from_variant)")
        elif defines[opt] is not None:
            option_variant[opt] = defines[opt]
    for opt, var in defines.items():
        if opt not in options:
            problems.append(f"package.py defines {opt}, which CMakeLists.txt has no option() for")
        if var is not None and var not in variants:
            problems.append(f"package.py maps {opt} to variant '{var}', which is not declared")
    for var in sorted(variants):
        if var not in option_variant.values():
            problems.append(f"variant '{var}' feeds no CMake option")

    by_name = {}
    for name, spec, when in deps:
        by_name.setdefault(name, []).append((spec, when))
    mapped = set()
    for find in sorted(finds):
        if find not in FINDS:
            problems.append(f"CMakeLists.txt finds {find}, which spack_drift.py does not map")
            continue
        dep, fragment = FINDS[find]
        if dep is None:
            continue
        mapped.add(dep)
        if dep not in by_name:
            problems.append(f"CMakeLists.txt finds {find} but package.py has no depends_on('{dep}')")
            continue
        if fragment and not any(fragment in spec for spec, _ in by_name[dep]):
            problems.append(f"package.py's depends_on('{dep}') lacks '{fragment}' ({find})")
        guard = GUARDS.get(find)
        if guard and guard in option_variant:
            want = "+" + option_variant[guard]
            if not all(when == want for _, when in by_name[dep]):
                problems.append(f"depends_on('{dep}') should say when='{want}' ({guard})")
    for name in sorted(by_name):
        if name not in mapped and name not in NOT_FOUND_BY_CMAKE:
            problems.append(f"package.py depends on '{name}', which CMakeLists.txt does not find")
    for name in sorted(NOT_FOUND_BY_CMAKE):
        if name not in by_name:
            problems.append(f"spack_drift.py lists '{name}' but package.py does not depend on it")

    for p in problems:
        print("drift: " + p)
    print(f"{len(options)} options, {len(finds)} finds, {len(variants)} variants, "
          f"{len(deps)} dependencies: {'agree' if not problems else 'DRIFT'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
