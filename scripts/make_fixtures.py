#!/usr/bin/env python3
"""Writes the golden files in tests/fixtures/ that the loss, metric and network tests compare against.

Run it from the repository root in a virtual environment with the reference code:

    python3 -m venv .venv && .venv/bin/pip install torch monai safetensors numpy && .venv/bin/python scripts/make_fixtures.py

Usage: make_fixtures.py [OUT]        writes every file into OUT (default tests/fixtures)
       make_fixtures.py --check DIR  recomputes the outputs of the golden files in DIR from their own inputs
                                     (and weights) and prints the largest difference per file: how the files
                                     were compared with another set of golden files

What computes what (float32 throughout, gradients by torch autograd):
- mL1-ACE, hard and soft binning: written here from the maths of the authors' reference code (section 1 of
  the project's mL1-ACE reference notes): float32 `linspace(0, 1 + eps, M + 1)` edges, `bucketize(right=False)`,
  per image and class; the soft kernel through the same left/right half-bin assignment as the reference,
  so that a value exactly on a centre belongs to the segment ending there; empty classes count as 0 in the mean.
- Dice, Dice + CE: MONAI's `DiceLoss` and `DiceCELoss` (softmax, squared_pred, smooth_nr=0, smooth_dr=1e-5,
  batch=False); CE: torch's `cross_entropy`; the paper's losses: 0.33 Dice + 0.33 CE + 0.33 mL1-ACE.
- Metrics: MONAI's `CalibrationErrorMetric` and `calibration_binning`; the reliability heat map from MONAI's bins.
- Networks: MONAI's `SegResNetDS` and `SegResNet` and `sliding_window_inference` themselves.

Seeded (numpy's PCG64 for the data, torch's generator for the weights, one CPU thread), so a rerun with the
same torch and MONAI writes the same numbers. The layout of every file is in tests/fixtures/README.md.
"""
import json
import os
import struct
import sys

import monai
import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss, DiceLoss
from monai.networks.nets import SegResNet, SegResNetDS
from safetensors import safe_open

EPS = torch.finfo(torch.float32).eps
EMPTY_WEIGHT = 0.01
DICE_ARGS = dict(softmax=True, to_onehot_y=True, squared_pred=True, smooth_nr=0.0, smooth_dr=1e-5, batch=False)

# ---- mL1-ACE -----------------------------------------------------------------------------------------


def hard_bin_stats(p, y, m):
    """Per-bin voxel count, sum of p and sum of y of `[B, C, V]` values (bins left-open, right-closed)."""
    edges = torch.linspace(0.0, 1.0 + EPS, m + 1)
    k = torch.bucketize(p.detach().contiguous(), edges[1:], right=False)
    zeros = torch.zeros(p.shape[0], p.shape[1], m)
    count = zeros.scatter_add(2, k, torch.ones_like(p))
    return count, zeros.scatter_add(2, k, p), zeros.scatter_add(2, k, y)


def soft_bin_stats(p, y, m):
    """Per-bin kernel weight sum, weighted sum of p and of y: each value is split between the two nearest
    bin centres by linear interpolation (all to the end bin beyond the outer centres)."""
    half = torch.linspace(0.0, 1.0 + EPS, 2 * m + 1)
    centres = half[1::2]
    h = torch.bucketize(p.detach().contiguous(), half[1 : 2 * m], right=False)  # half-bin 0 .. 2m-1
    left = (h - 1).clamp(min=0) // 2
    right = (h + 1).clamp(max=2 * m - 1) // 2
    # Far sentinels in the two end segments: both weights go to the same bin and their derivatives cancel.
    lo = torch.where(h == 0, torch.tensor(-10000.0), centres[left])
    hi = torch.where(h == 2 * m - 1, torch.tensor(10000.0), centres[right])
    w_left = (hi - p) / (hi - lo)
    w_right = (p - lo) / (hi - lo)
    zeros = torch.zeros(p.shape[0], p.shape[1], m)

    def spread(v):
        return zeros.scatter_add(2, left, w_left * v).scatter_add(2, right, w_right * v)

    return spread(torch.ones_like(p)), spread(p), spread(y)


def ace(logits, labels, binning, background, m):
    """mL1-ACE of logits (softmax inside): loss `[1]`, per image and class `[B, C']`, bin statistics."""
    c = logits.shape[1]
    p = torch.softmax(logits, 1).flatten(2)
    y = one_hot(labels, c).flatten(2)
    if not background:
        p, y = p[:, 1:], y[:, 1:]
    weight, sum_p, sum_y = (hard_bin_stats if binning == "hard" else soft_bin_stats)(p, y, m)
    kept = weight > 0 if binning == "hard" else weight >= EMPTY_WEIGHT
    safe = torch.where(kept, weight, torch.ones_like(weight))  # no 0/0 in the backward of dropped bins
    gap = torch.where(kept, (sum_p / safe - sum_y / safe).abs(), torch.zeros_like(weight))
    per_bin_mean = gap.sum(2) / kept.sum(2)
    present = (y.sum(2) > 0).float()
    per_image_class = per_bin_mean * present
    return per_image_class.mean().reshape(1), per_image_class, (weight, sum_p, sum_y)


def one_hot(labels, c):
    return F.one_hot(labels[:, 0].long(), c).movedim(-1, 1).float()


# ---- loss files --------------------------------------------------------------------------------------


def loss_outputs(logits, labels, m):
    """Every `loss_*` output for these inputs, gradients with respect to the logits."""
    out = {}

    def record(key, fn, extra=None):
        z = logits.clone().requires_grad_(True)
        value = fn(z)
        loss = value[0] if isinstance(value, tuple) else value
        (grad,) = torch.autograd.grad(loss.sum(), z)
        out[f"{key}.loss"] = loss.detach().reshape(1)
        out[f"{key}.grad"] = grad
        if extra is not None:
            extra(value)

    target = labels.long()
    for binning in ["hard", "soft"]:
        for bg in ["bg", "nobg"]:
            key = f"ace.{binning}.{bg}"

            def stats(v, key=key):
                out[f"{key}.per_image_class"] = v[1].detach()
                for name, t in zip(["bin_weight", "bin_sum_p", "bin_sum_y"], v[2]):
                    out[f"{key}.{name}"] = t.detach()

            record(key, lambda z, b=binning, g=bg: ace(z, labels, b, g == "bg", m), stats)
    record("dice.bg", lambda z: DiceLoss(include_background=True, **DICE_ARGS)(z, target))
    record("dice.nobg", lambda z: DiceLoss(include_background=False, **DICE_ARGS)(z, target))
    record("ce", lambda z: F.cross_entropy(z, target[:, 0]))
    record("dice_ce", lambda z: DiceCELoss(include_background=True, **DICE_ARGS)(z, target))
    for binning in ["hard", "soft"]:
        record(
            f"ace_dice_ce.{binning}",
            lambda z, b=binning: 0.33 * DiceLoss(include_background=True, **DICE_ARGS)(z, target)
            + 0.33 * F.cross_entropy(z, target[:, 0])
            + 0.33 * ace(z, labels, b, True, m)[0][0],
        )
    return out


def loss_case(rng, shape, m, scale=2.0, absent=None):
    """Logits ~ N(0, scale^2) and labels that agree with them more often than chance; `absent` = (image,
    class) removed from that image's labels."""
    logits = rng.normal(0.0, scale, shape).astype(np.float32)
    noisy = logits / scale + rng.normal(0.0, 1.2, shape)
    labels = noisy.argmax(1)[:, None].astype(np.int32)
    if absent is not None:
        b, c = absent
        others = [k for k in range(shape[1]) if k != c]
        swap = rng.choice(others, size=labels[b].shape).astype(np.int32)
        labels[b] = np.where(labels[b] == c, swap, labels[b])
    return torch.from_numpy(logits), torch.from_numpy(labels)


# ---- metric files ------------------------------------------------------------------------------------


def metric_outputs(probs, labels, m):
    """MONAI's per-image ECE/ACE/MCE with and without background, and the background-free bin statistics
    and reliability heat map."""
    # Imported here, so that the losses above load with a MONAI that lacks the calibration metrics
    # (`scripts/torch_step_memory.py` imports its mL1-ACE on MONAI 1.5.0).
    from monai.metrics import CalibrationErrorMetric
    from monai.metrics.calibration import calibration_binning

    out = {}
    y = one_hot(labels, probs.shape[1])
    for bg, tag in [(True, "bg"), (False, "nobg")]:
        for key, reduction in [("ece", "expected"), ("ace", "average"), ("mce", "maximum")]:
            metric = CalibrationErrorMetric(
                num_bins=m, include_background=bg, calibration_reduction=reduction, metric_reduction="none"
            )
            metric(y_pred=probs, y=y)
            out[f"{key}.{tag}"] = metric.aggregate().float()
    mean_p, mean_y, count = calibration_binning(probs[:, 1:], y[:, 1:], num_bins=m)
    count_, sum_p, sum_y = hard_bin_stats(probs[:, 1:].flatten(2), y[:, 1:].flatten(2), m)
    # The sums are ours (MONAI returns means); they must be MONAI's means times MONAI's counts.
    assert torch.equal(count, count_)
    filled = count > 0
    assert torch.allclose(sum_p[filled] / count[filled], mean_p[filled], rtol=1e-6, atol=0)
    assert torch.equal(sum_y[filled] / count[filled], mean_y[filled])
    out["nobg.bin_count"], out["nobg.bin_sum_p"], out["nobg.bin_sum_y"] = count, sum_p, sum_y
    # [c, a, k]: images whose mean label in confidence bin k lies in accuracy bin a (empty bins skipped).
    edges = torch.linspace(0.0, 1.0 + EPS, m + 1)
    heat = torch.zeros(probs.shape[1] - 1, m, m, dtype=torch.int32)
    accuracy_bin = torch.bucketize(torch.nan_to_num(mean_y), edges[1:], right=False).clamp(max=m - 1)
    for n, c, k in filled.nonzero().tolist():
        heat[c, accuracy_bin[n, c, k], k] += 1
    out["nobg.reliability_heatmap"] = heat
    return out


def metric_case(rng, shape, on_edges=None):
    """Softmax probabilities of N(0, 2^2) logits with agreeing labels; `on_edges` = number of bins: a third
    of the foreground values replaced by every bin edge, 0 and 1 in turn (then channels do not sum to 1)."""
    logits = rng.normal(0.0, 2.0, shape)
    labels = (logits / 2.0 + rng.normal(0.0, 1.0, shape)).argmax(1)[:, None].astype(np.int32)
    probs = torch.softmax(torch.from_numpy(logits.astype(np.float32)), 1)
    if on_edges is not None:
        edges = torch.linspace(0.0, 1.0 + EPS, on_edges + 1)
        special = torch.cat([edges[:-1], torch.tensor([1.0])])  # e_0 = 0 .. e_{M-1}, and 1
        fg = probs[:, 1:].reshape(-1)
        chosen = torch.from_numpy(rng.permutation(fg.numel())[: fg.numel() // 3])
        fg[chosen] = special[torch.arange(chosen.numel()) % special.numel()]
        probs[:, 1:] = fg.reshape(probs[:, 1:].shape)
    return probs.contiguous(), torch.from_numpy(labels)


# ---- network files -----------------------------------------------------------------------------------


def build_network(name, config):
    if name == "SegResNetDS":
        # calibseg reads a missing norm as instance norm (the paper's); MONAI's default is batch norm.
        config = {"norm": "INSTANCE", **config}
    return {"SegResNetDS": SegResNetDS, "SegResNet": SegResNet}[name](**config)


def randomise_norms(net, gen):
    """Norm weights and biases away from MONAI's 1 and 0, so a transposed or missing one shows."""
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, (torch.nn.InstanceNorm3d, torch.nn.GroupNorm)) and mod.weight is not None:
                mod.weight.copy_(0.5 + torch.rand(mod.weight.shape, generator=gen))
                mod.bias.copy_(0.2 * torch.randn(mod.bias.shape, generator=gen))


def network_outputs(name, net, x, projections):
    """Eval output (SegResNetDS), training outputs, and the gradients of sum_i sum(output_i * projection_i)."""
    out = {}
    if name == "SegResNetDS":
        net.eval()
        with torch.no_grad():
            out["eval.output"] = net(x)
    net.train()
    xv = x.clone().requires_grad_(True)
    outs = net(xv)
    outs = outs if isinstance(outs, list) else [outs]
    for i, o in enumerate(outs):
        out[f"train.output.{i}"] = o.detach()
    loss = sum((o * p).sum() for o, p in zip(outs, projections))
    params = dict(net.named_parameters())
    grads = torch.autograd.grad(loss, [xv, *params.values()])
    out["grad.input"] = grads[0]
    for key, g in zip(params, grads[1:]):
        out[f"grad.{key}"] = g
    return out, len(outs)


def sliding_window_outputs(net, x, settings):
    net.eval()
    out = {}
    with torch.no_grad():
        for i, s in enumerate(settings):
            out[f"sw.{i}.output"] = sliding_window_inference(
                x,
                s["roi"],
                s.get("sw_batch_size", 1),
                net,
                overlap=s["overlap"],
                mode=s["mode"],
                sigma_scale=s.get("sigma_scale", 0.125),
                padding_mode="constant",
                cval=0.0,
            )
    return out


# ---- the files ---------------------------------------------------------------------------------------

LOSS_CASES = [
    # name, shape, bins, logit scale, (image, class) absent
    ("loss_b2_c4_8x8x8", [2, 4, 8, 8, 8], 20, 2.0, None),
    ("loss_b2_c3_empty_class", [2, 3, 6, 10, 7], 20, 2.0, (1, 2)),
    ("loss_b3_c3_2d_bins7", [3, 3, 16, 16], 7, 2.0, None),
    # N(0, 50^2): differences beyond 104 underflow exp in float32, so probabilities are exactly 0 and 1
    ("loss_b1_c2_saturated", [1, 2, 12, 12, 12], 20, 50.0, None),
]
METRIC_CASES = [
    ("metrics_n4_c4", [4, 4, 10, 10, 10], 20, False),
    ("metrics_n3_c3_exact_edges", [3, 3, 8, 8], 20, True),
]
NETWORKS = [
    # file, MONAI class, constructor arguments, input shape (non-cubic: an axis mix-up shows)
    (
        "net_segresnetds_small",
        "SegResNetDS",
        {"init_filters": 4, "in_channels": 1, "out_channels": 3, "blocks_down": [1, 2, 2, 4], "dsdepth": 2,
         "norm": "INSTANCE"},
        [1, 1, 24, 16, 32],
    ),
    (
        "net_segresnet_small",
        "SegResNet",
        {"init_filters": 4, "in_channels": 1, "out_channels": 3, "blocks_down": [1, 2, 2, 4],
         "blocks_up": [1, 1, 1], "norm": ["GROUP", {"num_groups": 2}]},
        [1, 1, 16, 8, 24],
    ),
]
SLIDING_WINDOW = (
    "net_sliding_window_small",
    # no norm: calibseg's default (instance norm), which the command's tests rely on
    {"init_filters": 4, "in_channels": 1, "out_channels": 3, "blocks_down": [1, 2, 2], "dsdepth": 1},
    [1, 1, 20, 24, 12],  # larger than the first window in two axes, smaller in the third (MONAI pads)
    [{"roi": [16, 16, 16], "overlap": 0.25, "mode": "gaussian"},
     {"roi": [8, 16, 8], "overlap": 0.5, "mode": "constant", "sw_batch_size": 2}],
)


def save(out_dir, name, tensors, meta):
    """A safetensors file with its header in a fixed order (the library's own writer orders the metadata
    differently from run to run), so that a rerun writes the same bytes."""
    meta = {k: str(v) for k, v in sorted({**meta, "torch": torch.__version__, "monai": monai.__version__}.items())}
    header, blobs, offset = {"__metadata__": meta}, [], 0
    for key in sorted(tensors):
        t = tensors[key].detach().contiguous()
        dtype = {torch.float32: "F32", torch.int32: "I32"}[t.dtype]
        data = t.numpy().tobytes()
        header[key] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path = os.path.join(out_dir, f"{name}.safetensors")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB)")


def write_all(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    for seed, (name, shape, m, scale, absent) in enumerate(LOSS_CASES):
        logits, labels = loss_case(np.random.default_rng(100 + seed), shape, m, scale, absent)
        if absent is not None:
            assert not (labels[absent[0]] == absent[1]).any()
        meta = {"num_bins": m, "empty_weight": EMPTY_WEIGHT, "shape": json.dumps(shape)}
        save(out_dir, name, {"logits": logits, "labels": labels, **loss_outputs(logits, labels, m)}, meta)
    for seed, (name, shape, m, edges) in enumerate(METRIC_CASES):
        probs, labels = metric_case(np.random.default_rng(200 + seed), shape, m if edges else None)
        meta = {"num_bins": m, "shape": json.dumps(shape)}
        save(out_dir, name, {"probs": probs, "labels": labels, **metric_outputs(probs, labels, m)}, meta)
    for seed, (name, arch, config, shape) in enumerate(NETWORKS):
        gen = torch.Generator().manual_seed(300 + seed)
        torch.manual_seed(300 + seed)
        net = build_network(arch, config)
        randomise_norms(net, gen)
        x = torch.randn(shape, generator=gen)
        net.train()
        with torch.no_grad():
            shapes = [o.shape for o in (lambda o: o if isinstance(o, list) else [o])(net(x))]
        projections = [torch.randn(s, generator=gen) for s in shapes]
        outputs, _ = network_outputs(arch, net, x, projections)
        params = {f"param.{k}": v for k, v in net.state_dict().items()}
        proj = {f"train.projection.{i}": p for i, p in enumerate(projections)}
        meta = {"network": arch, "config": json.dumps(config),
                "loss": "sum_i sum(train.output.i * train.projection.i)"}
        save(out_dir, name, {**params, "input": x, **outputs, **proj}, meta)
    name, config, shape, settings = SLIDING_WINDOW
    gen = torch.Generator().manual_seed(400)
    torch.manual_seed(400)
    net = build_network("SegResNetDS", config)
    randomise_norms(net, gen)
    x = torch.randn(shape, generator=gen)
    params = {f"param.{k}": v for k, v in net.state_dict().items()}
    meta = {"network": "SegResNetDS", "config": json.dumps(config), "settings": json.dumps(settings)}
    save(out_dir, name, {**params, "input": x, **sliding_window_outputs(net, x, settings)}, meta)


# ---- --check -----------------------------------------------------------------------------------------


def compare(name, want, got):
    """Largest difference of each output relative to its largest entry (absolute for integers)."""
    worst = (0.0, "")
    for key, w in sorted(want.items()):
        g = got[key]
        assert g.shape == w.shape, f"{name} {key}: shape {list(g.shape)} vs {list(w.shape)}"
        if not w.dtype.is_floating_point:
            d = (g.long() - w.long()).abs().max().item()
        else:
            d = ((g.double() - w.double()).abs().max() / w.double().abs().max().clamp(min=1e-30)).item()
        worst = max(worst, (d, key))
    print(f"{name}: {len(want)} outputs, largest difference {worst[0]:.2e} of the largest entry ({worst[1]})")


def check(directory):
    for file in sorted(os.listdir(directory)):
        if not file.endswith(".safetensors"):
            continue
        name = file[: -len(".safetensors")]
        with safe_open(os.path.join(directory, file), "pt") as f:
            meta = f.metadata()
            t = {k: f.get_tensor(k) for k in f.keys()}
        if name.startswith("loss_"):
            got = loss_outputs(t["logits"], t["labels"], int(meta["num_bins"]))
        elif name.startswith("metrics_"):
            got = metric_outputs(t["probs"], t["labels"], int(meta["num_bins"]))
        elif name.startswith("net_"):
            net = build_network(meta["network"], json.loads(meta["config"]))
            net.load_state_dict({k[len("param."):]: v for k, v in t.items() if k.startswith("param.")})
            if "settings" in meta:
                got = sliding_window_outputs(net, t["input"], json.loads(meta["settings"]))
            else:
                n = sum(1 for k in t if k.startswith("train.projection."))
                got, _ = network_outputs(
                    meta["network"], net, t["input"], [t[f"train.projection.{i}"] for i in range(n)]
                )
        else:
            continue
        compare(name, {k: v for k, v in t.items() if k in got}, got)


if __name__ == "__main__":
    torch.set_num_threads(1)
    if len(sys.argv) > 2 and sys.argv[1] == "--check":
        check(sys.argv[2])
    else:
        write_all(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures")
