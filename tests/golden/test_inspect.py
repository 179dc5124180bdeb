#!/usr/bin/python3
"""`moed inspect CKPT` on checkpoints built with h5py straight from DESIGN.md section 4.

write_checkpoint() builds a complete checkpoint (every root attribute, every weight, Adam
moment and metrics dataset with the documented dtypes) for a small model with a known loss
and expert-load history; the test runs `moed inspect` on it and checks the printed step,
shapes, loss summary and every row of the load table against values computed here with
numpy. Malformed files must give exit code 3 and exactly one error line on stderr; a usage
error gives exit code 2.

write_checkpoint() is also used by test_plot_run.py.

Environment: MOED_BUILD (the build dir, holding `moed`), MOED_SRC (repo root).
Run with Debian's /usr/bin/python3 (python3-h5py, python3-numpy).
"""
import os
import re
import subprocess
import sys
import tempfile

import h5py
import numpy as np

SRC = os.environ.get("MOED_SRC", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BUILD = os.environ.get("MOED_BUILD", os.path.join(SRC, "build"))
MOED = os.path.join(BUILD, "moed")

# The small model: L layers, d_model, d_ff, n_experts, top_k, tokens per step, steps done.
L, D, F, E, K, T, STEPS = 2, 8, 12, 6, 2, 16, 7
# Experts that get no token in the last recorded step, per layer.
DEAD_LAST = {0: [2], 1: [4, 5]}


def known_history(steps=STEPS, n_layers=L, n_experts=E, dead_last=None):
    """A loss history whose minimum is not its last value, and an expert-load history
    [steps, L, E] where every (step, layer) routes exactly T*K slots."""
    dead_last = DEAD_LAST if dead_last is None else dead_last
    rng = np.random.RandomState(1234)
    s = np.arange(steps, dtype=np.float64)
    loss = 2.5 * np.exp(-0.6 * s) + 1e-3
    loss[-1] = loss[-2] * 1.5  # the last step went up again: min != last
    aux = 0.02 + 0.003 * np.cos(s) + 1e-4 * s
    load = np.zeros((steps, n_layers, n_experts), dtype=np.int64)
    for st in range(steps):
        for l in range(n_layers):
            load[st, l] = rng.multinomial(T * K, np.ones(n_experts) / n_experts)
    for l, dead in dead_last.items():
        for e in dead:
            # Hand the dead expert's slots to the next live one: the step total stays T*K.
            live = [x for x in range(n_experts) if x not in dead]
            load[-1, l, live[0]] += load[-1, l, e]
            load[-1, l, e] = 0
    return loss, aux, load


def write_checkpoint(path, step=STEPS, ranks=2, residual=True, skip=(), history=None):
    """Writes a checkpoint in the DESIGN.md section 4 layout. `skip` names datasets to leave
    out (to build broken files). Returns (loss, aux, load) as written."""
    loss, aux, load = history if history is not None else known_history()
    rng = np.random.RandomState(7)
    config = "[model]\nd_model = %d\nd_ff = %d\nn_experts = %d\ntop_k = %d\nn_layers = %d\n" % (
        D, F, E, K, L)
    tensors = {}  # path below the root -> float32 array
    for l in range(L):
        p = "layers/%d/" % l
        tensors[p + "router/weight"] = rng.randn(D, E)
        tensors[p + "router/bias"] = rng.randn(E) * 0.01
        if residual:
            tensors[p + "norm/scale"] = 1.0 + 0.1 * rng.randn(D)
        tensors[p + "experts/w0"] = rng.randn(E, D, F)
        tensors[p + "experts/w1"] = rng.randn(E, D, F)
        tensors[p + "experts/wo"] = rng.randn(E, F, D)
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "moed-checkpoint"
        for name, v in [("format_version", 1), ("step", step), ("n_layers", L), ("d_model", D),
                        ("d_ff", F), ("n_experts", E), ("top_k", K), ("ranks_at_save", ranks)]:
            f.attrs[name] = np.int64(v)
        f.attrs["moed_version"] = "0.1.0"
        f.attrs["config"] = config
        for name, w in tensors.items():
            if "/" + name in skip:
                continue
            f.create_dataset(name, data=w.astype(np.float32))
            if not name.endswith("router/bias"):  # Adam moments of every trained tensor
                f.create_dataset("optimizer/m/" + name, data=(0.01 * w).astype(np.float32))
                f.create_dataset("optimizer/v/" + name, data=(1e-4 * w * w).astype(np.float32))
        for name, data in [("metrics/loss", loss.astype(np.float64)),
                           ("metrics/aux_loss", aux.astype(np.float64)),
                           ("metrics/expert_load", load.astype(np.int64))]:
            if "/" + name not in skip:
                f.create_dataset(name, data=data)
    return loss, aux, load


def run_inspect(*args):
    r = subprocess.run([MOED, "inspect", *args], capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout, r.stderr


failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def close(a, b, rel=1e-6):
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-300)


def field(out, key):
    """The value of a 'key   value' header line."""
    m = re.search(r"^%s\s+(.*)$" % re.escape(key), out, re.M)
    return m.group(1).strip() if m else None


def parse_load_tables(out):
    """{layer: [(expert, total, share, last, flagged), ...]} from the load tables."""
    tables, layer = {}, None
    for line in out.splitlines():
        m = re.match(r"^layer (\d+)\s", line)
        if m:
            layer = int(m.group(1))
            tables[layer] = []
            continue
        m = re.match(r"^\s+(\d+)\s+(\d+)\s+([0-9.]+)\s+(\d+)(.*)$", line)
        if m and layer is not None:
            tables[layer].append((int(m.group(1)), int(m.group(2)), float(m.group(3)),
                                  int(m.group(4)), "no tokens in last step" in m.group(5)))
    return tables


def test_good(tmp):
    path = os.path.join(tmp, "step_00000007.h5")
    loss, aux, load = write_checkpoint(path)
    rc, out, err = run_inspect(path)
    print(out)
    check(rc == 0, "exit code %d on a good checkpoint (stderr: %s)" % (rc, err.strip()))
    check(err == "", "stderr not empty on a good checkpoint: %r" % err)
    check(field(out, "checkpoint") == path, "checkpoint line names the file")
    check(field(out, "format") == "moed-checkpoint, version 1", "format line")
    check(field(out, "step") == str(STEPS), "step line: %r" % field(out, "step"))
    check(field(out, "ranks_at_save") == "2", "ranks_at_save line")
    check(field(out, "moed_version") == "0.1.0", "moed_version line")
    check(field(out, "shapes") == "L=%d d=%d f=%d E=%d k=%d" % (L, D, F, E, K),
          "shapes line: %r" % field(out, "shapes"))
    params = L * (D * E + 3 * E * D * F + D)
    model = field(out, "model") or ""
    check(model.startswith("%d parameters" % params), "parameter count in %r" % model)
    check("optimizer state yes" in model, "optimizer state reported in %r" % model)

    # Loss summary: first, min, the step of the min, last.
    check(re.search(r"loss history\s+%d steps recorded" % STEPS, out) is not None,
          "number of recorded steps")
    for name, v in [("loss", loss), ("aux_loss", aux)]:
        m = re.search(r"^\s+%s\s+(\S+)\s+(\S+)\s+\(step (\d+)\)\s+(\S+)\s*$" % name, out, re.M)
        check(m is not None, "%s summary row present" % name)
        if not m:
            continue
        first, vmin, at, last = float(m.group(1)), float(m.group(2)), int(m.group(3)), float(m.group(4))
        check(close(first, v[0]), "%s first %g != %g" % (name, first, v[0]))
        check(close(vmin, v.min()), "%s min %g != %g" % (name, vmin, v.min()))
        check(at == int(np.argmin(v)), "%s min at step %d != %d" % (name, at, np.argmin(v)))
        check(close(last, v[-1]), "%s last %g != %g" % (name, last, v[-1]))

    # Load table: every row of every layer.
    tables = parse_load_tables(out)
    check(sorted(tables) == list(range(L)), "one load table per layer: %s" % sorted(tables))
    for l in range(L):
        rows = tables.get(l, [])
        check(len(rows) == E, "layer %d: %d rows, want %d" % (l, len(rows), E))
        totals = load[:, l, :].sum(axis=0)
        for e, total, share, last, flagged in rows:
            want_share = totals[e] / totals.mean()
            check(total == totals[e], "layer %d expert %d total %d != %d" % (l, e, total, totals[e]))
            check(abs(share - want_share) <= 6e-4,
                  "layer %d expert %d share %.3f != %.4f" % (l, e, share, want_share))
            check(last == load[-1, l, e], "layer %d expert %d last %d != %d" % (l, e, last, load[-1, l, e]))
            check(flagged == (load[-1, l, e] == 0), "layer %d expert %d flag %s" % (l, e, flagged))
    check("3 experts received no tokens in the last step: layer 0: 2; layer 1: 4, 5" in out,
          "summary of experts without tokens")


def test_no_dead(tmp):
    path = os.path.join(tmp, "alive.h5")
    write_checkpoint(path, history=known_history(dead_last={}))
    rc, out, err = run_inspect(path)
    check(rc == 0, "exit code %d with every expert alive" % rc)
    check("every expert received tokens in the last step" in out, "all-alive summary")
    check(all(not r[4] for rows in parse_load_tables(out).values() for r in rows),
          "no expert flagged when all are alive")


def test_unrecorded_steps(tmp):
    """Steps skipped after a weights-only load are NaN with zero load: not recorded."""
    path = os.path.join(tmp, "gaps.h5")
    loss, aux, load = known_history()
    loss[:2] = aux[:2] = np.nan
    load[:2] = 0
    write_checkpoint(path, history=(loss, aux, load))
    rc, out, err = run_inspect(path)
    check(rc == 0, "exit code %d with unrecorded steps" % rc)
    check(re.search(r"loss history\s+%d steps recorded \(steps 0 \.\. %d; 2 not recorded\)"
                    % (STEPS - 2, STEPS - 1), out) is not None, "count of recorded steps with gaps")
    m = re.search(r"^\s+loss\s+(\S+)\s+(\S+)\s+\(step (\d+)\)", out, re.M)
    check(m is not None and close(float(m.group(1)), loss[2]) and
          close(float(m.group(2)), np.nanmin(loss)), "first/min skip unrecorded steps")


def test_empty_history(tmp):
    path = os.path.join(tmp, "step0.h5")
    empty = (np.zeros(0), np.zeros(0), np.zeros((0, L, E), dtype=np.int64))
    write_checkpoint(path, step=0, history=empty)
    rc, out, err = run_inspect(path)
    check(rc == 0, "exit code %d on a checkpoint with no history (%s)" % (rc, err.strip()))
    check(re.search(r"loss history\s+0 steps recorded", out) is not None, "0 steps recorded")
    check("expert load    none recorded" in out, "no load table without history")


def expect_error(path, want, what, code=3, args=None):
    rc, out, err = run_inspect(*(args if args is not None else [path]))
    lines = err.strip("\n").split("\n") if err.strip() else []
    check(rc == code, "%s: exit code %d, want %d" % (what, rc, code))
    check(len(lines) == 1, "%s: %d stderr lines, want 1: %r" % (what, len(lines), err))
    check(out == "", "%s: nothing on stdout, got %r" % (what, out[:200]))
    if lines:
        check(want in lines[0], "%s: %r lacks %r" % (what, lines[0], want))
        if path and code == 3:
            check(path in lines[0], "%s: message does not name the file" % what)
        print("  ok (%s): %s" % (what, lines[0]))


def test_errors(tmp):
    garbage = os.path.join(tmp, "garbage.h5")
    with open(garbage, "wb") as f:
        f.write(b"\x00not hdf5 at all\n" * 64)
    expect_error(garbage, "not an HDF5 file", "garbage file")

    noloss = os.path.join(tmp, "noloss.h5")
    write_checkpoint(noloss, skip=("/metrics/loss",))
    expect_error(noloss, "missing dataset /metrics/loss", "missing /metrics/loss")

    missing = os.path.join(tmp, "does_not_exist.h5")
    expect_error(missing, "cannot open", "missing file")

    wrongfmt = os.path.join(tmp, "wrongfmt.h5")
    write_checkpoint(wrongfmt)
    with h5py.File(wrongfmt, "a") as f:
        f.attrs["format"] = "something-else"
    expect_error(wrongfmt, "not a moed checkpoint", "wrong format attribute")

    badload = os.path.join(tmp, "badload.h5")
    write_checkpoint(badload)
    with h5py.File(badload, "a") as f:
        del f["metrics/expert_load"]
        f.create_dataset("metrics/expert_load", data=np.zeros((STEPS, L, E + 1), dtype=np.int64))
    expect_error(badload, "/metrics/expert_load is [7, 2, 7], expected [7, 2, 6]",
                 "expert_load of the wrong shape")

    badw = os.path.join(tmp, "badweight.h5")
    write_checkpoint(badw, skip=("/layers/1/experts/wo",))
    expect_error(badw, "missing dataset /layers/1/experts/wo", "missing expert weights")

    expect_error(None, "usage", "no checkpoint argument", code=2, args=[])


def main():
    if not os.access(MOED, os.X_OK):
        print("FAIL: %s not built" % MOED)
        return 1
    with tempfile.TemporaryDirectory(prefix="moed_inspect_") as tmp:
        test_good(tmp)
        test_no_dead(tmp)
        test_unrecorded_steps(tmp)
        test_empty_history(tmp)
        test_errors(tmp)
    if failures:
        print("%d check(s) failed" % len(failures))
        return 1
    print("test_inspect: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
