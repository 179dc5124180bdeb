#!/usr/bin/python3
"""deploy/analysis/plot_run.py on h5py-built checkpoints (DESIGN.md section 4 layout, from
test_inspect.write_checkpoint): both PNGs are written where --out says, are valid PNGs of a
sensible size with real content, and their paths are printed; a checkpoint whose aux loss is
zero still plots; a file without /metrics gives exit code 3 and one error line.

Environment: MOED_SRC (repo root). Run with Debian's /usr/bin/python3 (python3-h5py,
python3-numpy, python3-matplotlib).
"""
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_inspect as ti  # noqa: E402  (the checkpoint builder)

SRC = os.environ.get("MOED_SRC", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
SCRIPT = os.path.join(SRC, "deploy", "analysis", "plot_run.py")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MIN_BYTES = 8000  # a titled, labelled plot with data is tens of KB; a blank canvas ~5 KB

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def run(*args):
    r = subprocess.run(["/usr/bin/python3", SCRIPT, *args], capture_output=True, text=True,
                       timeout=300)
    return r.returncode, r.stdout, r.stderr


def png_size(path):
    """(width, height) from the IHDR chunk, or None when the file is not a PNG."""
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != PNG_MAGIC or head[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", head[16:24])


def distinct_colours(path):
    import matplotlib.image as mpimg
    img = mpimg.imread(path)  # [h, w, channels] floats
    flat = (img.reshape(-1, img.shape[-1]) * 255).astype(np.uint8)
    return len(np.unique(flat, axis=0))


def check_png(path, what, min_w, min_h):
    check(os.path.isfile(path), "%s: %s not written" % (what, path))
    if not os.path.isfile(path):
        return
    size = os.path.getsize(path)
    dims = png_size(path)
    check(dims is not None, "%s: %s is not a PNG (magic bytes / IHDR)" % (what, path))
    check(size >= MIN_BYTES, "%s: %s is only %d bytes" % (what, path, size))
    if dims:
        check(dims[0] >= min_w and dims[1] >= min_h,
              "%s: %s is %dx%d, want at least %dx%d" % (what, path, dims[0], dims[1], min_w, min_h))
        ncol = distinct_colours(path)
        check(ncol >= 50, "%s: %s has only %d distinct colours (blank plot?)" % (what, path, ncol))
        print("  %s: %s, %d bytes, %dx%d, %d colours" % (what, os.path.basename(path), size,
                                                          dims[0], dims[1], ncol))


def test_plots(tmp):
    ckpt = os.path.join(tmp, "step_00000007.h5")
    ti.write_checkpoint(ckpt)
    out = os.path.join(tmp, "plots", "run1")  # does not exist yet: the script creates it
    rc, stdout, stderr = run(ckpt, "--out", out)
    check(rc == 0, "exit code %d (stderr: %s)" % (rc, stderr.strip()))
    loss_png, load_png = os.path.join(out, "loss.png"), os.path.join(out, "expert_load.png")
    check(stdout.split() == [loss_png, load_png], "printed paths: %r" % stdout)
    check_png(loss_png, "loss", 600, 300)
    # One heatmap per layer, stacked: taller than one.
    check_png(load_png, "expert_load", 600, 100 * ti.L + 200)


def test_heatmap_data():
    """What the heatmaps show is load / mean load per (step, layer), experts on y."""
    sys.path.insert(0, os.path.dirname(SCRIPT))
    import plot_run
    loss, aux, load = ti.known_history()
    steps = np.arange(len(loss))
    fig = plot_run.load_figure(steps, load.astype(np.float64), "test")
    images = [im for ax in fig.axes for im in ax.get_images()]
    check(len(images) == ti.L, "%d heatmaps, want one per layer (%d)" % (len(images), ti.L))
    for l, im in enumerate(images):
        want = (load[:, l, :] / load[:, l, :].mean(axis=1, keepdims=True)).T  # [E, steps]
        got = np.asarray(im.get_array())
        check(got.shape == want.shape and np.allclose(got, want),
              "layer %d heatmap data is not load / mean load (shape %s)" % (l, got.shape))
        for e in ti.DEAD_LAST.get(l, []):
            check(got.shape == want.shape and got[e, -1] == 0,
                  "layer %d: expert %d got no tokens in the last step but is not 0" % (l, e))
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_zero_aux(tmp):
    ckpt = os.path.join(tmp, "zero_aux.h5")
    loss, aux, load = ti.known_history()
    ti.write_checkpoint(ckpt, history=(loss, np.zeros_like(aux), load))
    out = os.path.join(tmp, "plots_zero_aux")
    rc, stdout, stderr = run(ckpt, "--out", out)
    check(rc == 0, "zero aux loss: exit code %d (stderr: %s)" % (rc, stderr.strip()))
    check_png(os.path.join(out, "loss.png"), "loss, zero aux", 600, 300)


def test_bad_file(tmp):
    ckpt = os.path.join(tmp, "nometrics.h5")
    ti.write_checkpoint(ckpt, skip=("/metrics/loss", "/metrics/aux_loss", "/metrics/expert_load"))
    out = os.path.join(tmp, "plots_bad")
    rc, stdout, stderr = run(ckpt, "--out", out)
    lines = stderr.strip().splitlines()
    check(rc == 3, "no /metrics: exit code %d, want 3" % rc)
    check(len(lines) == 1 and "/metrics/loss" in lines[0] and ckpt in lines[0],
          "no /metrics: one error line naming the file and dataset, got %r" % stderr)
    check(not os.path.exists(os.path.join(out, "loss.png")), "no /metrics: a PNG was written")


def main():
    with tempfile.TemporaryDirectory(prefix="moed_plot_") as tmp:
        test_plots(tmp)
        test_heatmap_data()
        test_zero_aux(tmp)
        test_bad_file(tmp)
    if failures:
        print("%d check(s) failed" % len(failures))
        return 1
    print("test_plot_run: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
