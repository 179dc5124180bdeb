#!/usr/bin/python3
"""Plot a moed run's history from one of its checkpoints.

    plot_run.py CKPT.h5 [--out DIR]

Writes into DIR (default: the current directory, created if missing):
  loss.png         total loss and aux loss (sum over layers of aux_l + z_l) per step, log y
  expert_load.png  one heatmap per layer: steps on x, experts on y, colour = the expert's
                   load divided by the mean load of its layer at that step (1 = balanced,
                   0 = the expert got no tokens)
and prints the path of each file written.

Reads /metrics/loss, /metrics/aux_loss [steps] and /metrics/expert_load [steps, L, E] of the
checkpoint layout in DESIGN.md section 4. Exit codes as moed's: 0 done, 2 usage, 3 the file is
not a readable checkpoint. Needs Debian's python3-h5py and python3-matplotlib.
"""
import argparse
import os
import sys

import h5py
import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only: no display on a cluster login or compute node
import matplotlib.pyplot as plt  # noqa: E402  (after use())
from matplotlib.colors import TwoSlopeNorm  # noqa: E402


class CheckpointError(Exception):
    pass


def read_history(path):
    """(first step number, loss [n], aux [n], load [n, L, E], step) from a checkpoint."""
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise CheckpointError("%s: cannot open as HDF5 (%s)" % (path, e))
    with f:
        if f.attrs.get("format") not in ("moed-checkpoint", b"moed-checkpoint"):
            raise CheckpointError("%s: not a moed checkpoint (no format = moed-checkpoint)" % path)
        for name in ("metrics/loss", "metrics/aux_loss", "metrics/expert_load"):
            if name not in f:
                raise CheckpointError("%s: missing dataset /%s" % (path, name))
        loss = f["metrics/loss"][()].astype(np.float64)
        aux = f["metrics/aux_loss"][()].astype(np.float64)
        load = f["metrics/expert_load"][()].astype(np.float64)
        step = int(f.attrs.get("step", len(loss)))
    n = len(loss)
    if aux.shape != (n,) or load.ndim != 3 or load.shape[0] != n:
        raise CheckpointError("%s: /metrics shapes disagree: loss %s, aux_loss %s, expert_load %s"
                              % (path, loss.shape, aux.shape, load.shape))
    if n == 0:
        raise CheckpointError("%s: no steps recorded in /metrics, nothing to plot" % path)
    # The history ends at the checkpoint's step: entry i is the step numbered step - n + i.
    return step - n, loss, aux, load, step


def positive(v):
    """v with non-positive values masked (a log axis cannot show them)."""
    return np.ma.masked_where(~(v > 0), v)


def plot_loss(steps, loss, aux, title, out):
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(steps, positive(loss), label="total loss", color="tab:blue", lw=1.5)
    if np.any(aux > 0):
        ax.plot(steps, positive(aux), label="aux loss (Σ aux + z over layers)", color="tab:orange",
                lw=1.2)
    else:
        ax.plot([], [], " ", label="aux loss: 0 at every step (not shown)")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Loss — " + title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def load_share(load):
    """load [n, L, E] -> each expert's load / its layer's mean load at that step [n, L, E]
    (NaN where a layer routed nothing)."""
    mean = load.mean(axis=2, keepdims=True)  # [n, L, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mean > 0, load / mean, np.nan)


def load_figure(steps, load, title):
    """The expert_load figure: one heatmap (imshow of share[:, l, :].T) per layer."""
    n, L, E = load.shape
    share = load_share(load)  # [n, L, E]
    vmax = max(2.0, float(np.nanmax(share)) if np.isfinite(share).any() else 2.0)
    # Diverging colours centred on balance: blue = starved (0), white = mean, red = hot.
    norm = TwoSlopeNorm(vmin=0.0, vcenter=1.0, vmax=vmax)
    height = min(1.2 + 2.4 * L, 40.0)
    fig, axes = plt.subplots(L, 1, figsize=(9, height), squeeze=False, sharex=True)
    extent = (steps[0] - 0.5, steps[-1] + 0.5, -0.5, E - 0.5)
    for l in range(L):
        ax = axes[l, 0]
        im = ax.imshow(share[:, l, :].T, aspect="auto", origin="lower", interpolation="nearest",
                       cmap="RdBu_r", norm=norm, extent=extent)
        ax.set_title("layer %d" % l)
        ax.set_ylabel("expert")
        if E <= 16:
            ax.set_yticks(range(E))
        fig.colorbar(im, ax=ax, label="load / mean load")
    axes[-1, 0].set_xlabel("step")
    fig.suptitle("Expert load share — " + title)
    fig.tight_layout()
    return fig


def plot_load(steps, load, title, out):
    fig = load_figure(steps, load, title)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Plot loss and expert load from a moed checkpoint.")
    ap.add_argument("checkpoint", help="a moed checkpoint file (step_XXXXXXXX.h5)")
    ap.add_argument("--out", default=".", help="directory for the PNGs (default: .)")
    args = ap.parse_args(argv)
    try:
        first, loss, aux, load, step = read_history(args.checkpoint)
    except CheckpointError as e:
        print("plot_run.py: error: %s" % e, file=sys.stderr)
        return 3
    os.makedirs(args.out, exist_ok=True)
    steps = first + np.arange(len(loss))
    title = "%s (step %d)" % (os.path.basename(args.checkpoint), step)
    loss_png = os.path.join(args.out, "loss.png")
    load_png = os.path.join(args.out, "expert_load.png")
    plot_loss(steps, loss, aux, title, loss_png)
    plot_load(steps, load, title, load_png)
    print(loss_png)
    print(load_png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
