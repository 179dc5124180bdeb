#!/usr/bin/python3
"""`moed forward` (issue 3): saved weights run on an input file at P = 1, 2 and 4 give
bit-identical outputs and routing; the outputs equal the training forward (checked through
a one-step training run on the same rows with lr = 0); and they match an independent torch
float64 forward of the checkpoint's weights. Bad inputs, NaN/Inf in the input or in HDF5
training data among them, exit 3 with one line. Prints `N passed, M failed`."""
import os
import shutil
import subprocess
import sys
import tempfile

import h5py
import numpy as np
import torch

BUILD = os.environ["MOED_BUILD"]
SRC = os.environ["MOED_SRC"]
MOED = os.path.join(BUILD, "moed")
MPIEXEC = os.environ.get("MOED_MPIEXEC", "mpiexec.mpich")
ENV = dict(os.environ, HYDRA_LAUNCHER="fork", OMP_NUM_THREADS="1")
passed, failed = 0, 0


def check(what, ok, detail=""):
    global passed, failed
    print(("ok: " if ok else "FAIL: ") + what + (f" ({detail})" if detail else ""))
    passed, failed = passed + bool(ok), failed + (not ok)


def moed(p, *args):
    r = subprocess.run([MPIEXEC, "-n", str(p), MOED, *args], env=ENV, capture_output=True,
                       text=True, timeout=300)
    if r.returncode != 0:
        print(r.stdout[-2000:], r.stderr[-2000:])
    return r


def torch_forward(ck, x):
    """Forward of the stack from the checkpoint's weights, float64, straight from DESIGN 2."""
    L, E, k = ck.attrs["n_layers"], ck.attrs["n_experts"], ck.attrs["top_k"]
    h = torch.tensor(x, dtype=torch.float64)
    experts, weights = [], []
    for l in range(L):
        g = ck[f"layers/{l}"]
        scale = torch.tensor(g["norm/scale"][...], dtype=torch.float64)
        xn = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6) * scale
        s = torch.softmax(xn @ torch.tensor(g["router/weight"][...], dtype=torch.float64), -1)
        v = s.numpy() + g["router/bias"][...][None, :]
        sel = np.stack([np.argsort(-row, kind="stable")[:k] for row in v])
        gate = torch.gather(s, 1, torch.from_numpy(sel))
        gate = gate / gate.sum(-1, keepdim=True)
        W0, W1, Wo = (torch.tensor(g[f"experts/{w}"][...], dtype=torch.float64)
                      for w in ("w0", "w1", "wo"))
        out = torch.zeros_like(h)
        for i in range(k):
            e = torch.from_numpy(sel[:, i])
            xe = xn.unsqueeze(1)
            y = (torch.nn.functional.silu(xe @ W0[e]) * (xe @ W1[e])) @ Wo[e]
            out = out + gate[:, i:i + 1] * y.squeeze(1)
        h = h + out
        experts.append(sel)
        weights.append(gate.numpy())
    return h.numpy(), np.stack(experts, 1), np.stack(weights, 1)


def main():
    tmp = tempfile.mkdtemp(prefix="moed-forward.")
    try:
        cfg = os.path.join(SRC, "config", "tiny2.ini")
        # a short run with a nonzero router bias, so selection != gates matters
        r = moed(1, "run", cfg, "--set", f"run.dir={tmp}/run", "--set", "train.steps=20",
                 "--set", "train.bias_update_rate=0.01", "--set", "log.every=100")
        check("training run exits 0", r.returncode == 0)
        ckpt = f"{tmp}/run/checkpoints/step_00000020.h5"
        rng = np.random.default_rng(5)
        d = 32
        with h5py.File(f"{tmp}/x300.h5", "w") as f:  # 300 rows: batches of 256 plus padding
            f["x"] = rng.standard_normal((300, d)).astype(np.float32)
        outs = {}
        for p in (1, 2, 4):
            r = moed(p, "forward", "--checkpoint", ckpt, "--input", f"{tmp}/x300.h5",
                     "--output", f"{tmp}/y{p}.h5")
            check(f"forward at P={p} exits 0", r.returncode == 0, r.stdout.strip()[-200:])
            with h5py.File(f"{tmp}/y{p}.h5") as f:
                outs[p] = {n: f[n][...] for n in ("y", "routing/experts", "routing/weights")}
        for n, dt, shape in (("y", np.float32, (300, d)), ("routing/experts", np.int32, (300, 2, 2)),
                             ("routing/weights", np.float32, (300, 2, 2))):
            check(f"{n} is {np.dtype(dt).name} {shape}", outs[1][n].dtype == dt and outs[1][n].shape == shape,
                  f"{outs[1][n].dtype} {outs[1][n].shape}")
            for p in (2, 4):
                check(f"{n} at P={p} bit-identical to P=1", np.array_equal(outs[p][n], outs[1][n]))

        # The same rows stored big-endian: HDF5 converts, the outputs are the same bits.
        with h5py.File(f"{tmp}/x300be.h5", "w") as f:
            f["x"] = h5py.File(f"{tmp}/x300.h5")["x"][...].astype(">f4")
        r = moed(2, "forward", "--checkpoint", ckpt, "--input", f"{tmp}/x300be.h5", "--output",
                 f"{tmp}/ybe.h5")
        same = r.returncode == 0 and np.array_equal(h5py.File(f"{tmp}/ybe.h5")["y"][...],
                                                    outs[1]["y"])
        check("big-endian float32 input: exit 0, the same y bits", same, r.stderr.strip())

        with h5py.File(ckpt) as ck:
            x = h5py.File(f"{tmp}/x300.h5")["x"][...]
            y, ex, w = torch_forward(ck, x.astype(np.float64))
            bias = np.stack([ck[f"layers/{l}/router/bias"][...] for l in range(2)])
        check("the checkpoint's router bias is nonzero", np.abs(bias).max() > 0)
        err = np.abs(outs[1]["y"] - y).max() / np.abs(y).max()
        check("y matches the torch float64 forward within 1e-5", err < 1e-5, f"{err:.2e}")
        check("selected experts match torch", np.array_equal(outs[1]["routing/experts"], ex))
        err = np.abs(outs[1]["routing/weights"] - w).max()
        check("gate weights match torch within 1e-5", err < 1e-5, f"{err:.2e}")

        # The training forward on the same rows: one step with lr = 0 from the same checkpoint
        # on a file of exactly T = 256 rows with y = 0 and no aux terms, so its loss is
        # mean(h_L^2) of exactly the rows forward computed.
        with h5py.File(f"{tmp}/xy256.h5", "w") as f:
            f["x"] = x[:256]
            f["y"] = np.zeros((256, d), np.float32)
        with h5py.File(f"{tmp}/x256.h5", "w") as f:
            f["x"] = x[:256]
        r = moed(2, "forward", "--checkpoint", ckpt, "--input", f"{tmp}/x256.h5", "--output",
                 f"{tmp}/y256.h5")
        check("forward on 256 rows exits 0", r.returncode == 0)
        y256 = h5py.File(f"{tmp}/y256.h5")["y"][...].astype(np.float64)
        shutil.copytree(f"{tmp}/run", f"{tmp}/run2")
        r = moed(2, "run", cfg, "--set", f"run.dir={tmp}/run2", "--set", "train.steps=21",
                 "--set", "checkpoint.resume=auto", "--set", "data.source=hdf5", "--set",
                 f"data.path={tmp}/xy256.h5", "--set", "train.lr=0", "--set", "train.lr_min=0",
                 "--set", "train.aux_loss_coef=0", "--set", "train.z_loss_coef=0",
                 "--set", "train.bias_update_rate=0.01")
        check("one resumed training step on the same rows exits 0", r.returncode == 0)
        import json
        last = [json.loads(l) for l in open(f"{tmp}/run2/metrics.jsonl")][-1]
        want = np.mean(y256 ** 2)
        rel = abs(last["loss"] - want) / want
        check("training forward loss equals mean(forward y^2) to double rounding", rel < 1e-13,
              f"step {last['step']}: {last['loss']!r} vs {want!r}, rel {rel:.1e}")

        # bad inputs: a missing /x, and a checkpoint that is not HDF5
        with h5py.File(f"{tmp}/nox.h5", "w") as f:
            f["z"] = np.zeros((3, d), np.float32)
        r = moed(2, "forward", "--checkpoint", ckpt, "--input", f"{tmp}/nox.h5", "--output",
                 f"{tmp}/bad.h5")
        check("input without /x: exit 3, one line naming /x",
              r.returncode == 3 and r.stderr.count("moed: error:") == 1 and "/x" in r.stderr,
              r.stderr.strip())
        open(f"{tmp}/garbage.h5", "w").write("not hdf5\n" * 100)
        r = moed(2, "forward", "--checkpoint", f"{tmp}/garbage.h5", "--input", f"{tmp}/x300.h5",
                 "--output", f"{tmp}/bad.h5")
        check("garbage checkpoint: exit 3, one line", r.returncode == 3 and
              r.stderr.count("moed: error:") == 1, r.stderr.strip())
        r = moed(1, "forward", "--checkpoint", ckpt)
        check("missing --input: exit 2", r.returncode == 2, r.stderr.strip())

        # An output that is the input or the checkpoint (here through a link and another
        # spelling of the path) is refused before anything is opened: exit 2, files unchanged.
        os.symlink(f"{tmp}/x300.h5", f"{tmp}/xlink.h5")
        before = {f: open(f, "rb").read() for f in (f"{tmp}/x300.h5", ckpt)}
        for out, other in ((f"{tmp}/xlink.h5", "--input"), (f"{tmp}/run/../{ckpt[len(tmp) + 1:]}",
                                                            "--checkpoint")):
            r = moed(2, "forward", "--checkpoint", ckpt, "--input", f"{tmp}/x300.h5", "--output",
                     out)
            check(f"--output the same file as {other}: exit 2, one line naming both",
                  r.returncode == 2 and r.stderr.count("moed: error:") == 1
                  and f"is the same file as {other}" in r.stderr, r.stderr.strip())
        check("the input and the checkpoint are unchanged",
              all(open(f, "rb").read() == b for f, b in before.items()))

        # Non-finite inputs: exit 3 with one line naming the file, row and column (and the
        # rank that read it), and no partial output left behind.
        for p, row, col, val, name in ((2, 200, 7, np.nan, "NaN"), (1, 290, 0, -np.inf, "Inf")):
            xb = x.copy()
            xb[row, col] = val
            with h5py.File(f"{tmp}/xbad.h5", "w") as f:
                f["x"] = xb
            open(f"{tmp}/stale.h5", "w").write("an older output\n")
            r = moed(p, "forward", "--checkpoint", ckpt, "--input", f"{tmp}/xbad.h5", "--output",
                     f"{tmp}/stale.h5")
            want = f"xbad.h5: dataset /x row {row} column {col} is {name}: the input must be finite"
            rank = "rank 1: " if p == 2 else ""  # row 200 is rank 1's at P = 2 (T = 256)
            check(f"input with {name} at row {row}, P={p}: exit 3, one line naming file, row, "
                  "column and rank", r.returncode == 3 and r.stderr.count("moed: error:") == 1
                  and f"moed: error: {rank}{tmp}/{want}" in r.stderr, r.stderr.strip())
            check(f"input with {name}: no output file left", not os.path.exists(f"{tmp}/stale.h5"))

        # The same for training data (data.source = hdf5): every rank stops at the same step.
        xy = {"x": x[:256].copy(), "y": np.zeros((256, d), np.float32)}
        xy["y"][100, 1] = np.inf
        with h5py.File(f"{tmp}/xybad.h5", "w") as f:
            f["x"], f["y"] = xy["x"], xy["y"]
        r = moed(2, "run", cfg, "--set", f"run.dir={tmp}/run3", "--set", "train.steps=2",
                 "--set", "train.warmup_steps=1", "--set", "data.source=hdf5", "--set",
                 f"data.path={tmp}/xybad.h5")
        want = f"{tmp}/xybad.h5: dataset /y row 100 column 1 is Inf (batch of step 0): the data " \
            "must be finite"
        check("training data with Inf: exit 3, one line naming file, dataset, row, column, step",
              r.returncode == 3 and r.stderr.count("moed: error:") == 1 and want in r.stderr,
              r.stderr.strip())

        # A bad row in a later batch: the steps before it are saved, and once the data is
        # fixed the run resumes there and ends bit-identical to a run that never stopped.
        good = {"x": rng.standard_normal((512, d)).astype(np.float32),
                "y": rng.standard_normal((512, d)).astype(np.float32)}
        for name, bad_value in (("good512", None), ("bad512", np.nan)):
            with h5py.File(f"{tmp}/{name}.h5", "w") as f:
                f["x"], f["y"] = good["x"], good["y"].copy()
                if bad_value is not None:
                    f["y"][300, 5] = bad_value  # in step 1's batch (rows 256..511)
        steps = ["--set", "train.steps=4", "--set", "train.warmup_steps=1"]
        r = moed(2, "run", cfg, "--set", f"run.dir={tmp}/run4", *steps, "--set",
                 "data.source=hdf5", "--set", f"data.path={tmp}/bad512.h5")
        latest = open(f"{tmp}/run4/checkpoints/LATEST").read().strip() \
            if os.path.exists(f"{tmp}/run4/checkpoints/LATEST") else None
        check("bad row in step 1's batch: exit 3, the step before it saved",
              r.returncode == 3 and "dataset /y row 300 column 5 is NaN (batch of step 1)"
              in r.stderr and "stopped at the batch of step 1; checkpoint" in r.stdout
              and latest == "step_00000001.h5", f"{r.stderr.strip()} / LATEST {latest}")
        r = moed(2, "run", cfg, "--set", f"run.dir={tmp}/run4", *steps, "--set",
                 "data.source=hdf5", "--set", f"data.path={tmp}/good512.h5", "--set",
                 "checkpoint.resume=auto")
        resumed = r.returncode == 0 and "at step 1" in r.stdout
        r2 = moed(2, "run", cfg, "--set", f"run.dir={tmp}/run5", *steps, "--set",
                  "data.source=hdf5", "--set", f"data.path={tmp}/good512.h5")
        digest = [x.stdout.rsplit("weights digest ", 1)[-1].strip() for x in (r, r2)]
        check("fixed data: resumes at step 1 and ends bit-identical to an unbroken run",
              resumed and r2.returncode == 0 and digest[0] == digest[1], f"{digest}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
