#!/usr/bin/python3
"""PyTorch golden test of one moed training step (forward, loss, backward, clip, AdamW).

For each config, tests/golden/golden_dump (built from golden_dump.c) runs one step at P = 1
and writes its inputs, initial weights, outputs, gradients and updated optimizer state as
.npy files. This script recomputes the same step with an independent PyTorch model written
straight from DESIGN.md section 2 (autograd for the backward, torch.nn.utils.clip_grad_norm_
and torch.optim.AdamW for the update) and compares tensor by tensor.

Errors are relative to each reference tensor's largest magnitude: max|got - want| / max|want|.
The assertions use the float64 reference (formula errors show up, rounding does not); the
float32 reference's errors are printed for information. A further check feeds moed's own
gradients to torch's AdamW in float32, which isolates the optimizer from the model.

Environment: MOED_BUILD (the build dir, holding tests/golden_dump), MOED_SRC (repo root).
Run with Debian's /usr/bin/python3 (python3-torch, python3-numpy).
"""
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

TOL = 1e-4

SRC = os.environ.get("MOED_SRC", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BUILD = os.environ.get("MOED_BUILD", os.path.join(SRC, "build"))
DUMP = os.path.join(BUILD, "tests", "golden_dump")

# (name, config file, --set overrides). warmup_steps=0 makes step 0 use the full lr, so the
# update is large enough to see in w1.
CONFIGS = [
    ("tiny", "config/tiny.ini", ["train.warmup_steps=0"]),
    ("tiny-warmup", "config/tiny.ini", []),
    ("two-layer", "config/tiny2.ini", ["train.warmup_steps=0"]),
    ("no-residual", "config/tiny.ini", ["model.residual=false", "train.warmup_steps=0"]),
    ("no-residual-2l", "config/tiny2.ini", ["model.residual=false", "train.warmup_steps=0"]),
    ("sigmoid-groups", "config/tiny.ini",
     ["model.router=sigmoid", "model.n_experts=16", "model.top_k=4", "model.n_groups=4",
      "model.topk_groups=2", "model.routed_scaling=2.0", "train.warmup_steps=0"]),
    ("sigmoid-groups-2l-nonorm", "config/tiny2.ini",
     ["model.router=sigmoid", "model.n_groups=4", "model.topk_groups=2",
      "model.routed_scaling=2.0", "model.norm_topk=false", "train.warmup_steps=0"]),
    ("no-norm-topk", "config/tiny.ini", ["model.norm_topk=false", "train.warmup_steps=0"]),
    ("wd-clip", "config/tiny.ini",
     ["train.weight_decay=0.1", "train.clip=0.05", "train.warmup_steps=0"]),
    ("aux-z", "config/tiny2.ini",
     ["train.aux_loss_coef=0.01", "train.z_loss_coef=0.001", "train.warmup_steps=0"]),
    # aux and z terms large enough to dominate the router gradient (sigmoid: the P_e
    # normalisation by sum_e s_e has a gradient of its own), with two kernel threads
    ("aux-z-strong-sigmoid-2threads", "config/tiny.ini",
     ["model.router=sigmoid", "train.aux_loss_coef=0.5", "train.z_loss_coef=0.05",
      "compute.threads=2", "train.warmup_steps=0"]),
    ("odd-shapes-top1-noclip", "config/tiny.ini",
     ["model.d_model=20", "model.d_ff=36", "model.n_experts=6", "model.top_k=1",
      "train.global_batch_tokens=60", "train.clip=0", "train.warmup_steps=0"]),
    ("odd-shapes-k3-ref", "config/tiny2.ini",
     ["model.d_model=13", "model.d_ff=7", "model.n_experts=5", "model.top_k=3",
      "train.global_batch_tokens=45", "compute.isa=ref", "train.warmup_steps=0"]),
    # issue 5: router options and their combinations
    ("softmax-aux", "config/tiny.ini",
     ["train.aux_loss_coef=0.05", "train.z_loss_coef=0", "train.warmup_steps=0"]),
    ("z-loss", "config/tiny.ini",
     ["train.aux_loss_coef=0", "train.z_loss_coef=0.02", "train.warmup_steps=0"]),
    ("sigmoid-groups-scaling-bias", "config/tiny.ini",
     ["model.router=sigmoid", "model.n_experts=16", "model.top_k=4", "model.n_groups=4",
      "model.topk_groups=2", "model.routed_scaling=2.5", "train.bias_update_rate=0.01",
      "train.warmup_steps=0"]),
    ("capacity-drops", "config/tiny2.ini",
     ["model.capacity_factor=0.6", "train.aux_loss_coef=0.01", "train.warmup_steps=0"]),
    ("capacity-sigmoid-groups-bias", "config/tiny.ini",
     ["model.capacity_factor=1.0", "model.router=sigmoid", "model.n_groups=4",
      "model.topk_groups=2", "model.routed_scaling=2.0", "train.bias_update_rate=0.01",
      "train.warmup_steps=0"]),
    ("shared-experts", "config/tiny2.ini",
     ["model.n_shared_experts=2", "train.warmup_steps=0"]),
    ("shared-no-residual-odd", "config/tiny.ini",
     ["model.n_shared_experts=1", "model.residual=false", "model.d_model=20", "model.d_ff=36",
      "model.n_experts=6", "model.top_k=1", "train.global_batch_tokens=60",
      "train.warmup_steps=0"]),
    ("shared-capacity-bias-z-2threads", "config/tiny.ini",
     ["model.n_shared_experts=1", "model.capacity_factor=0.8", "train.bias_update_rate=0.02",
      "train.z_loss_coef=0.01", "train.aux_loss_coef=0.02", "compute.threads=2",
      "train.warmup_steps=0"]),
]
# configs with a capacity must actually drop slots, or the test would not test dropping
MUST_DROP = {"capacity-drops", "capacity-sigmoid-groups-bias", "shared-capacity-bias-z-2threads"}


def load_dump(outdir):
    with open(os.path.join(outdir, "meta.json")) as fp:
        meta = json.load(fp)
    arrs = {}
    for fn in os.listdir(outdir):
        if fn.endswith(".npy"):
            arrs[fn[:-4]] = np.load(os.path.join(outdir, fn))
    return meta, arrs


def param_names(meta):
    """The trained tensors, in moed's layout order (names as golden_dump writes them)."""
    names = []
    for l in range(meta["L"]):
        names.append(f"layers.{l}.router.weight")
        if meta["residual"]:
            names.append(f"layers.{l}.norm.scale")
        if meta["n_shared_experts"]:
            names += [f"layers.{l}.shared.w0", f"layers.{l}.shared.w1", f"layers.{l}.shared.wo"]
    for l in range(meta["L"]):
        names += [f"layers.{l}.experts.w0", f"layers.{l}.experts.w1", f"layers.{l}.experts.wo"]
    return names


def select_experts(score, bias, k, n_groups, topk_groups):
    """Top-k expert indices per token over score + bias (float64 numpy), DESIGN section 2
    step 3: group-limited routing (group score = sum of the group's two best selection
    scores, the topk_groups best groups stay eligible), ties to the lower index. Orders by
    the key (-value, index) with a stable sort, which gives exactly that tie rule."""
    T, E = score.shape
    v = score + bias[None, :]
    sel = np.zeros((T, k), dtype=np.int64)
    margin = np.inf  # smallest score gap at a selection boundary (how close to a tie)
    for t in range(T):
        eligible = np.ones(E, dtype=bool)
        if n_groups > 1:
            per = E // n_groups
            gs = np.array([np.sum(-np.sort(-v[t, g * per:(g + 1) * per], kind="stable")[:2])
                           for g in range(n_groups)])
            gorder = np.argsort(-gs, kind="stable")
            keep = gorder[:topk_groups]
            if topk_groups < n_groups:
                margin = min(margin, gs[gorder[topk_groups - 1]] - gs[gorder[topk_groups]])
            eligible[:] = False
            for g in keep:
                eligible[g * per:(g + 1) * per] = True
        idx = np.nonzero(eligible)[0]  # ascending, so the stable sort breaks ties low-first
        order = idx[np.argsort(-v[t, idx], kind="stable")]
        sel[t] = order[:k]
        if k < len(order):
            margin = min(margin, v[t, order[k - 1]] - v[t, order[k]])
    return sel, margin


def capacity_keep(sel, E, C):
    """DESIGN section 2: each expert keeps its first C slots in priority order (choice i
    first, then token index); C = 0 keeps everything. Returns a boolean [T, k] mask."""
    T, k = sel.shape
    keep = np.ones((T, k), dtype=bool)
    if C == 0:
        return keep
    taken = np.zeros(E, dtype=np.int64)
    for i in range(k):
        for t in range(T):
            e = sel[t, i]
            keep[t, i] = taken[e] < C
            taken[e] += 1
    return keep


def swiglu_ffn(x, w0, w1, wo):
    return (torch.nn.functional.silu(x @ w0) * (x @ w1)) @ wo


def reference_step(meta, A, dtype):
    """One training step in torch from the dumped inputs and initial weights."""
    d, E, k, L, T = meta["d"], meta["E"], meta["k"], meta["L"], meta["T"]
    residual = bool(meta["residual"])
    names = param_names(meta)
    P = {n: torch.tensor(A["w_" + n], dtype=dtype, requires_grad=True) for n in names}
    x = torch.tensor(A["x"], dtype=dtype, requires_grad=True)
    y = torch.tensor(A["y"], dtype=dtype)
    bias = A["bias"].astype(np.float64)

    h = x
    c = meta["capacity_factor"]
    C = math.ceil(c * T * k / E) if c > 0 else 0
    S = meta["n_shared_experts"]
    sels, keeps, gates_all, margins, vscores = [], [], [], [], []
    aux_total = torch.zeros((), dtype=dtype)
    for l in range(L):
        if residual:
            scale = P[f"layers.{l}.norm.scale"]
            xn = h * torch.rsqrt(h.pow(2).mean(dim=-1, keepdim=True) + 1e-6) * scale
        else:
            xn = h
        logits = xn @ P[f"layers.{l}.router.weight"]
        s = torch.softmax(logits, dim=-1) if meta["router"] == "softmax" else torch.sigmoid(logits)
        sel, margin = select_experts(s.detach().double().numpy(), bias[l], k, meta["n_groups"],
                                     meta["topk_groups"])
        margins.append(margin)
        vscores.append(s.detach().double().numpy() + bias[l][None, :])
        sel_t = torch.from_numpy(sel)
        g = torch.gather(s, 1, sel_t)  # gates from s, never the bias
        if meta["norm_topk"]:
            g = g / g.sum(dim=-1, keepdim=True)
        g = g * meta["routed_scaling"]
        sels.append(sel)
        gates_all.append(g.detach())
        keep = capacity_keep(sel, E, C)  # dropped slots: no output, gates not renormalised
        keeps.append(keep)

        W0, W1, Wo = (P[f"layers.{l}.experts.{w}"] for w in ("w0", "w1", "wo"))
        out = torch.zeros_like(xn)
        for e in range(E):
            tok, slot = np.nonzero((sel == e) & keep)
            if len(tok) == 0:
                continue
            tok_t, slot_t = torch.from_numpy(tok), torch.from_numpy(slot)
            ye = swiglu_ffn(xn[tok_t], W0[e], W1[e], Wo[e])
            out = out.index_add(0, tok_t, g[tok_t, slot_t].unsqueeze(1) * ye)
        for s_ in range(S):  # shared experts: every token, weight 1
            SW0, SW1, SWo = (P[f"layers.{l}.shared.{w}"][s_] for w in ("w0", "w1", "wo"))
            out = out + swiglu_ffn(xn, SW0, SW1, SWo)
        h = h + out if residual else out

        # aux_l = alpha*E*sum_e f_e*P_e, f_e without gradient; z_l = beta*mean_t lse^2
        counts = np.bincount(sel.ravel(), minlength=E)
        f_e = torch.tensor(counts / (T * k), dtype=dtype)
        P_e = (s / s.sum(dim=-1, keepdim=True)).mean(dim=0)
        aux = meta["aux_loss_coef"] * E * (f_e * P_e).sum()
        z = meta["z_loss_coef"] * torch.logsumexp(logits, dim=-1).pow(2).mean()
        aux_total = aux_total + aux + z

    mse = (h - y).pow(2).mean()
    loss = mse + aux_total
    loss.backward()

    # aux-loss-free balancing after the step: b_e += rate*sign(mean load - load_e), loads
    # before dropping, in float32 as moed stores the bias
    bias1 = A["bias"].copy()
    for l in range(L):
        load = np.bincount(sels[l].ravel(), minlength=E).astype(np.float64)
        step = np.float32(meta["bias_update_rate"]) * np.sign(T * k / E - load).astype(np.float32)
        if meta["bias_update_rate"] > 0:
            bias1[l] = bias1[l] + step

    R = {"margins": margins, "keeps": keeps, "bias1": torch.from_numpy(bias1), "vscores": vscores, "out": h.detach(), "loss": loss.detach(), "mse": mse.detach(), "aux": aux_total.detach(),
         "dx": x.grad.detach()}
    for l in range(L):
        R[f"gates_{l}"] = gates_all[l]
    for n in names:
        R["g_" + n] = P[n].grad.detach().clone()

    params = [P[n] for n in names]
    if meta["clip"] > 0:
        gn = torch.nn.utils.clip_grad_norm_(params, meta["clip"])
    else:
        gn = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params))
    R["grad_norm"] = gn.detach().double()
    R["clip_coef"] = min(1.0, meta["clip"] / (float(gn) + 1e-6)) if meta["clip"] > 0 else 1.0
    opt = torch.optim.AdamW(
        [{"params": [P[n] for n in names if ".norm." not in n], "weight_decay": meta["weight_decay"]},
         {"params": [P[n] for n in names if ".norm." in n], "weight_decay": 0.0}],
        lr=meta["lr"], betas=(meta["beta1"], meta["beta2"]), eps=meta["eps"])
    opt.step()
    for n in names:
        st = opt.state[P[n]]
        R["w1_" + n] = P[n].detach()
        R["m_" + n] = st["exp_avg"]
        R["v_" + n] = st["exp_avg_sq"]
    return R, sels


def optimizer_only(meta, A):
    """torch's clip + AdamW in float32 on moed's own gradients: returns the new weights."""
    names = param_names(meta)
    params = []
    for n in names:
        p = torch.tensor(A["w_" + n], requires_grad=True)
        p.grad = torch.tensor(A["g_" + n])
        params.append(p)
    if meta["clip"] > 0:
        torch.nn.utils.clip_grad_norm_(params, meta["clip"])
    opt = torch.optim.AdamW(
        [{"params": [p for p, n in zip(params, names) if ".norm." not in n],
          "weight_decay": meta["weight_decay"]},
         {"params": [p for p, n in zip(params, names) if ".norm." in n], "weight_decay": 0.0}],
        lr=meta["lr"], betas=(meta["beta1"], meta["beta2"]), eps=meta["eps"])
    opt.step()
    return {n: p.detach().numpy() for p, n in zip(params, names)}


def w1_excess(meta, A, R, n):
    """The first AdamW step moves a weight by -lr*c*g / (|c*g| + eps) (m and v start at 0;
    c = the clip factor), whose slope lr*c*eps / (|c*g| + eps)^2 reaches lr/eps at g = 0:
    where a gradient element is within a few eps of zero, a gradient difference far inside
    the gradient tolerance flips or scales that element's whole update. Each element may
    therefore also differ by slope * TOL * max|g| (the effect of a gradient error at the
    gradient tolerance); returns the max error beyond that allowance, relative to max|w1|,
    and how many elements needed the allowance. The optimizer itself is checked without
    any allowance by the adamw-only rows, which feed moed's own gradients to torch."""
    got = A["w1_" + n].astype(np.float64)
    want = R["w1_" + n].numpy()
    g = R["g_" + n].numpy()
    c = R["clip_coef"]
    slope = meta["lr"] * c * meta["eps"] / (np.abs(c * g) + meta["eps"]) ** 2
    allow = slope * TOL * np.max(np.abs(g))
    diff = np.abs(got - want)
    ref = max(np.max(np.abs(want)), 1e-30)
    base = TOL * ref
    excess = np.max(np.maximum(diff - allow, 0.0)) / ref
    return excess, int(np.count_nonzero(diff > base))


def rel_err(got, want):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return float("inf")
    if got.size == 0:
        return 0.0
    ref = np.max(np.abs(want))
    diff = np.max(np.abs(got - want))
    if not np.isfinite(diff):
        return float("inf")
    return diff / max(ref, 1e-30)


def check_config(name, cfg, sets, tmp):
    outdir = os.path.join(tmp, name)
    cmd = [DUMP, outdir, os.path.join(SRC, cfg)]
    for s in sets:
        cmd += ["--set", s]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    if r.returncode != 0:
        print(f"[{name}] golden_dump failed (rc {r.returncode}):\n{r.stdout}{r.stderr}")
        return 0, 1
    meta, A = load_dump(outdir)

    R64, sels = reference_step(meta, A, torch.float64)
    R32, _ = reference_step(meta, A, torch.float32)
    opt32 = optimizer_only(meta, A)

    print(f"\n[{name}] {cfg} {' '.join('--set ' + s for s in sets)}")
    print(f"  d={meta['d']} f={meta['f']} E={meta['E']} k={meta['k']} L={meta['L']} "
          f"T={meta['T']} residual={meta['residual']} router={meta['router']} "
          f"norm_topk={meta['norm_topk']} scaling={meta['routed_scaling']} "
          f"groups={meta['n_groups']}/{meta['topk_groups']} aux={meta['aux_loss_coef']} "
          f"z={meta['z_loss_coef']} lr={meta['lr']:.3g} wd={meta['weight_decay']} "
          f"clip={meta['clip']} capacity={meta['capacity_factor']} "
          f"shared={meta['n_shared_experts']} bias_rate={meta['bias_update_rate']}")
    print(f"  loss={float(A['loss']):.8g} (torch {float(R64['loss']):.8g}), "
          f"grad_norm={float(A['grad_norm']):.6g} (torch {float(R64['grad_norm']):.6g})"
          + ("  [clipping active]" if 0 < meta["clip"] < float(R64["grad_norm"]) else ""))
    print(f"  {'tensor':36s} {'shape':>14s} {'rel err f64':>12s} {'rel err f32':>12s}  result")

    passed = failed = 0

    def report(label, shape, e64, e32, ok, note=""):
        nonlocal passed, failed
        passed += ok
        failed += not ok
        e32s = "" if e32 is None else f"{e32:.2e}"
        print(f"  {label:36s} {str(tuple(shape)):>14s} {e64:12.2e} {e32s:>12s}  "
              f"{'ok' if ok else 'FAIL'}{' (' + note + ')' if note else ''}")

    # selected experts: identical, slot by slot
    for l in range(meta["L"]):
        got = A[f"sel_{l}"].astype(np.int64)
        want = sels[l]
        bad = np.nonzero(np.any(got != want, axis=1))[0]
        ok = len(bad) == 0
        passed += ok
        failed += not ok
        print(f"  {f'sel_{l}':36s} {str(got.shape):>14s} {len(bad):>12d} {'':>12s}  "
              f"{'ok' if ok else 'FAIL'} ({len(bad)} tokens differ; closest selection "
              f"boundary: score gap {R64['margins'][l]:.1e})")
        for t in bad[:3]:
            v = R64["vscores"][l][t]
            print(f"      token {t}: moed {got[t].tolist()} torch {want[t].tolist()}; torch "
                  f"selection scores of those: {v[got[t]].tolist()} {v[want[t]].tolist()}")

    # capacity: the same slots dropped, slot by slot
    for l in range(meta["L"]):
        got = A[f"kept_{l}"] >= 0
        want = R64["keeps"][l]
        nbad = int(np.count_nonzero(got != want))
        ndrop = int(np.count_nonzero(~want))
        ok = nbad == 0 and (ndrop > 0 or name not in MUST_DROP)
        passed += ok
        failed += not ok
        print(f"  {f'kept_{l}':36s} {str(got.shape):>14s} {nbad:>12d} {'':>12s}  "
              f"{'ok' if ok else 'FAIL'} ({ndrop} slots dropped by capacity, {nbad} differ)")

    keys = ["out", "loss", "mse", "aux", "grad_norm", "dx", "bias1"]
    keys += [f"gates_{l}" for l in range(meta["L"])]
    for pre in ("g_", "w1_", "m_", "v_"):
        keys += [pre + n for n in param_names(meta)]
    for key in keys:
        want64 = R64[key].numpy()
        e64 = rel_err(A[key], want64)
        e32 = rel_err(A[key], R32[key].numpy())
        note = ""
        if key.startswith("w1_") and e64 > TOL:
            excess, nallow = w1_excess(meta, A, R64, key[3:])
            ok = excess <= TOL
            note = f"within Adam's step-1 sensitivity to the gradient at {nallow} element(s)"
            report(key, np.shape(A[key]), e64, e32, ok, note)
        else:
            report(key, np.shape(A[key]), e64, e32, e64 <= TOL)

    # The optimizer alone: the update w1 - w, relative to its own largest element, beyond
    # one float32 ulp of w1 (w1 is stored in float32; with a small lr one ulp of w is a
    # sizeable fraction of the update, and the last bit of torch's and moed's float32
    # arithmetic may differ).
    for n in param_names(meta):
        w = A["w_" + n].astype(np.float64)
        want = opt32[n]
        diff = np.abs(A["w1_" + n].astype(np.float64) - want)
        ulp = np.spacing(np.abs(want)).astype(np.float64)
        e = np.max(np.maximum(diff - ulp, 0.0), initial=0.0) / max(np.max(np.abs(want - w)), 1e-30)
        report("adamw-only dw " + n, A["w_" + n].shape, e, None, e <= TOL)
    return passed, failed


def main():
    if not os.path.exists(DUMP):
        print(f"test_golden: {DUMP} not found (build the golden_dump target)")
        return 1
    torch.set_num_threads(1)
    t0 = time.time()
    passed = failed = 0
    only = sys.argv[1:]
    with tempfile.TemporaryDirectory(prefix="moed-golden-") as tmp:
        for name, cfg, sets in CONFIGS:
            if only and name not in only:
                continue
            p, f = check_config(name, cfg, sets, tmp)
            passed += p
            failed += f
    print(f"\ntolerance {TOL:g} (relative to each tensor's max |value|), {time.time() - t0:.1f} s")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
