"""Checkpoints as h5py (serial) sees them: every dataset and attribute of DESIGN.md §4 with
its documented shape, dtype and value.

tests/golden/ckpt_dump (built from ckpt_dump.c) trains a few steps of a small two-layer
config at P = 1 and at P = 2 and saves a checkpoint after each step. The test checks:
  - root attributes: format, format_version, step, dimensions, ranks_at_save, moed_version,
    config (the resolved INI, parsed back for the dimensions);
  - every weight, optimizer moment and metric dataset: presence, shape, dtype; nothing else;
  - values: finite weights, v >= 0, non-zero router biases (aux-loss-free balancing on),
    per-step expert loads summing to T*k in every layer,
    loss = mse + aux (so loss > aux), norm/scale present exactly with model.residual;
  - global-index placement: the P = 1 and P = 2 files are equal in every dataset, bit for bit
    (training is P-independent, DESIGN.md §3, and experts are stored by global index);
  - a residual = false file has no norm/scale datasets;
  - the commit protocol's visible result: LATEST names the newest file, no *.tmp remains.

Environment: MOED_BUILD (the build dir, holding tests/ckpt_dump), MOED_SRC (repo root).
"""

import configparser
import math
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np

SRC = os.environ.get("MOED_SRC", os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
BUILD = os.environ.get("MOED_BUILD", os.path.join(SRC, "build"))
DUMP = os.path.join(BUILD, "tests", "ckpt_dump")
MPIEXEC = os.environ.get("MOED_MPIEXEC", "mpiexec.mpich")
CONFIG = os.path.join(SRC, "config", "tiny.ini")

L, D, F, E, K, T, STEPS = 2, 16, 24, 8, 2, 64, 3
SETS = [f"model.n_layers={L}", f"model.d_model={D}", f"model.d_ff={F}",
        f"model.n_experts={E}", f"model.top_k={K}", f"train.global_batch_tokens={T}",
        "train.bias_update_rate=0.001"]

failures = []
CAPACITY = 0.5


def check(ok, what):
    print(("ok: " if ok else "FAIL: ") + what)
    if not ok:
        failures.append(what)


def save(outdir, p, extra=()):
    cmd = [MPIEXEC, "-n", str(p), DUMP, "save", outdir, CONFIG, "--steps", str(STEPS)]
    for s in list(SETS) + list(extra):
        cmd += ["--set", s]
    env = dict(os.environ, HYDRA_LAUNCHER="fork", OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    if r.returncode != 0:
        sys.exit(f"ckpt_dump failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return os.path.join(outdir, "step_%08d.h5" % STEPS)


def trained_tensors(residual, S=0):
    """Paths below /layers of every trained tensor, with their global shapes."""
    out = {}
    for l in range(L):
        out[f"{l}/router/weight"] = (D, E)
        if residual:
            out[f"{l}/norm/scale"] = (D,)
        if S:
            out[f"{l}/shared/w0"] = (S, D, F)
            out[f"{l}/shared/w1"] = (S, D, F)
            out[f"{l}/shared/wo"] = (S, F, D)
        out[f"{l}/experts/w0"] = (E, D, F)
        out[f"{l}/experts/w1"] = (E, D, F)
        out[f"{l}/experts/wo"] = (E, F, D)
    return out


def expected_datasets(residual, S=0):
    """Every dataset path of the layout -> (shape, dtype)."""
    exp = {}
    for name, shape in trained_tensors(residual, S).items():
        exp[f"layers/{name}"] = (shape, np.float32)
        exp[f"optimizer/m/layers/{name}"] = (shape, np.float32)
        exp[f"optimizer/v/layers/{name}"] = (shape, np.float32)
    for l in range(L):
        exp[f"layers/{l}/router/bias"] = ((E,), np.float32)
    exp["metrics/loss"] = ((STEPS,), np.float64)
    exp["metrics/aux_loss"] = ((STEPS,), np.float64)
    exp["metrics/expert_load"] = ((STEPS, L, E), np.int64)
    return exp


def all_datasets(f):
    found = {}
    f.visititems(lambda name, obj: found.__setitem__(name, obj)
                 if isinstance(obj, h5py.Dataset) else None)
    return found


def as_str(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def check_file(path, p, residual=True, S=0, dropped=False):
    tag = f"P={p}{'' if residual else ' residual=false'}{f' shared={S}' if S else ''}"
    with h5py.File(path, "r") as f:
        a = f.attrs
        check(as_str(a["format"]) == "moed-checkpoint", f"{tag}: format attribute")
        ints = {"format_version": 1, "step": STEPS, "n_layers": L, "d_model": D, "d_ff": F,
                "n_experts": E, "top_k": K, "ranks_at_save": p}
        for k, v in ints.items():
            check(k in a and np.issubdtype(np.asarray(a[k]).dtype, np.integer) and int(a[k]) == v,
                  f"{tag}: attribute {k} = {v} (got {a.get(k)!r})")
        check(len(as_str(a["moed_version"])) > 0, f"{tag}: moed_version = {as_str(a['moed_version'])}")
        cfg_text = as_str(a["config"])
        check("[model]" in cfg_text, f"{tag}: config attribute holds the INI text")
        ini = configparser.ConfigParser(inline_comment_prefixes=(";", "#"))
        ini.read_string(cfg_text)
        check(int(ini["model"]["d_model"]) == D and int(ini["model"]["n_experts"]) == E
              and int(ini["model"]["n_layers"]) == L,
              f"{tag}: config attribute parses back to the saved dimensions")

        exp = expected_datasets(residual, S)
        got = all_datasets(f)
        check(set(got) == set(exp), f"{tag}: exactly the documented datasets "
              f"(missing {sorted(set(exp) - set(got))}, extra {sorted(set(got) - set(exp))})")
        for name, (shape, dtype) in exp.items():
            if name in got:
                d = got[name]
                if d.shape != shape or d.dtype != np.dtype(dtype):
                    check(False, f"{tag}: {name} is {d.dtype}{d.shape}, expected "
                          f"{np.dtype(dtype)}{shape}")
        check(all(got[n].shape == s and got[n].dtype == np.dtype(t)
                  for n, (s, t) in exp.items() if n in got),
              f"{tag}: every dataset has its documented shape and dtype")

        weights = [n for n in exp if exp[n][1] == np.float32]
        check(all(np.isfinite(f[n][()]).all() for n in weights), f"{tag}: all float32 finite")
        check(all((f[n][()] >= 0).all() for n in weights if n.startswith("optimizer/v/")),
              f"{tag}: second moments >= 0")
        check(all(np.abs(f[n][()]).max() > 0 for n in weights if n.startswith("optimizer/m/")),
              f"{tag}: first moments were saved (non-zero after {STEPS} steps)")
        bias = np.stack([f[f"layers/{l}/router/bias"][()] for l in range(L)])
        check(np.abs(bias).max() > 0, f"{tag}: router biases saved (non-zero with "
              "train.bias_update_rate > 0)")
        load = f["metrics/expert_load"][()]
        # loads count slots before capacity dropping, so they sum to T*k with a capacity too
        check((load.sum(axis=2) == T * K).all(), f"{tag}: expert_load sums to T*k = {T * K} "
              f"in every step and layer")
        if dropped:
            C = math.ceil(CAPACITY * T * K / E)
            check((load > C).any(), f"{tag}: some expert was over its capacity C = {C}")
        loss, aux = f["metrics/loss"][()], f["metrics/aux_loss"][()]
        check(np.isfinite(loss).all() and np.isfinite(aux).all() and (aux > 0).all()
              and (loss > aux).all(), f"{tag}: loss {loss} > aux_loss {aux} > 0")
        if residual:
            scale = f["layers/0/norm/scale"][()]
            check(np.abs(scale - 1).max() > 0, f"{tag}: norm/scale trained away from 1")
        return {n: f[n][()] for n in exp}


def check_dir(outdir, tag):
    names = sorted(os.listdir(outdir))
    check(not [n for n in names if n.endswith(".tmp")], f"{tag}: no *.tmp left ({names})")
    with open(os.path.join(outdir, "LATEST")) as fp:
        latest = fp.read()
    check(latest == "step_%08d.h5\n" % STEPS, f"{tag}: LATEST names the newest file ({latest!r})")


def main():
    if not os.path.exists(DUMP):
        sys.exit(f"{DUMP} not built")
    with tempfile.TemporaryDirectory(prefix="moed-ckpt-h5py.") as tmp:
        data = {}
        for p in (1, 2):
            outdir = os.path.join(tmp, f"p{p}")
            data[p] = check_file(save(outdir, p), p)
            check_dir(outdir, f"P={p}")
        differ = [n for n in data[1] if data[1][n].tobytes() != data[2][n].tobytes()]
        check(not differ, f"P=1 and P=2 files equal in every dataset, bit for bit "
              f"(differ: {differ})")
        check_file(save(os.path.join(tmp, "nores"), 2, ["model.residual=false"]), 2,
                   residual=False)
        # shared experts (replicated [S, ...] stacks, rank 0 writes them) and a capacity
        check_file(save(os.path.join(tmp, "shared"), 2,
                        ["model.n_shared_experts=2", f"model.capacity_factor={CAPACITY}"]), 2,
                   S=2, dropped=True)
    if failures:
        sys.exit(f"{len(failures)} check(s) failed")
    print("test_ckpt_h5py: all checks passed")


if __name__ == "__main__":
    main()
