#!/usr/bin/env python3
"""Writes the golden files of `calibseg predict --model` in tests/fixtures/predict/: a small nnU-Net test
set written by nibabel (imagesTs/<case>_0000.nii.gz, _0001: two channels, anisotropic voxels, axes
permuted and flipped against RAS, a zero border so that CropForegroundd cuts a box smaller than the image;
labelsTs/<case>.nii.gz), the weights of two seeded random-init MONAI SegResNetDS networks
(run_a.safetensors, run_b.safetensors, MONAI state_dict keys), and monai.safetensors: for each case and
run, what MONAI 1.5.0 makes of it: LoadImaged, EnsureChannelFirstd, CropForegroundd(source_key="image"),
Orientationd("RAS"), Spacingd(bilinear), NormalizeIntensityd(nonzero=False, channel_wise=True), the
network in eval mode through sliding_window_inference (gaussian, sigma 0.125), softmax over the classes,
then Invertd(nearest_interp=False) back onto the original grid: `<case>/<run>/probs` f32 [C, X, Y, Z]
(MONAI's array of the file's axes; zero outside the crop box, where Invertd pads). `<case>/<run>/tta`:
the same with nnU-Net's mirroring inside each window (the logits averaged over the 8 axis-flip
combinations of the window, each flipped back) before the softmax. Metadata: the plan's settings
(`plan`, JSON in calibseg's plan keys), the network's keyword arguments (`model`), the crop boxes
(`<case>/crop_start`, `<case>/crop_end`).

    /work/venv-monai/bin/python scripts/make_predict_fixtures.py

Deterministic: a rerun writes the same bytes (gzip mtime 0, fixed header order, seeded weights and data).
"""

import gzip
import io
import itertools
import json
import os
import struct

import monai
import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.networks.nets import SegResNetDS
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    Invertd,
    LoadImaged,
    NormalizeIntensityd,
    Orientationd,
    Spacingd,
)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "predict")
RNG = np.random.default_rng(19)
MODEL = {"spatial_dims": 3, "init_filters": 4, "in_channels": 2, "out_channels": 3, "norm": "INSTANCE",
         "blocks_down": [1, 1], "dsdepth": 1}
PLAN = {"orientation": "RAS", "crop_foreground": True, "spacing": [1.5, 1.3, 2.0],
        "normalization": [{"scheme": "zscore", "nonzero": False}], "roi": [8, 8, 8], "overlap": 0.5,
        "mode": "gaussian", "sigma_scale": 0.125, "sw_batch_size": 2}
RUNS = {"run_a": 1900, "run_b": 1901}


def write_bytes(name, raw):
    path = os.path.join(OUT, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as f:
        f.write(raw)
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def blob(shape, centre, radii):
    g = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    return sum(((g[d] - centre[d]) / radii[d]) ** 2 for d in range(3)) <= 1.0


def write_case(name, shape, affine, centre, radii):
    body = blob(shape, centre, radii)
    organ = blob(shape, centre, [r / 2 for r in radii])
    ch0 = np.where(body, 100.0 + 20.0 * RNG.standard_normal(shape), 0.0)
    ch1 = np.where(body, 40.0 + 5.0 * RNG.standard_normal(shape), 0.0)
    ch0[organ] += 80.0
    for c, ch in enumerate([ch0, ch1]):
        write_bytes(f"imagesTs/{name}_{c:04d}.nii.gz", nib.Nifti1Image(ch.astype(np.float32), affine).to_bytes())
    label = np.where(body, 1, 0) + np.where(organ, 1, 0)
    write_bytes(f"labelsTs/{name}.nii.gz", nib.Nifti1Image(label.astype(np.uint8), affine).to_bytes())


CASES = {
    # voxel axis 0 to the left (-x), axis 1 superior (+z), axis 2 anterior (+y)
    "case_a": ((20, 16, 12), [[-0.9, 0, 0, 12.0], [0, 0, 2.5, -20.0], [0, 1.1, 0, 5.0], [0, 0, 0, 1]],
               (10.0, 8.5, 5.5), (7.5, 6.0, 4.5)),
    # flipped y, anisotropic z
    "case_b": ((18, 14, 10), [[1.2, 0, 0, -8.0], [0, -0.8, 0, 6.0], [0, 0, 2.2, 1.0], [0, 0, 0, 1]],
               (9.0, 7.0, 5.0), (6.5, 5.5, 3.5)),
}


def save(name, tensors, meta):
    meta = {k: str(v) for k, v in sorted({**meta, "torch": torch.__version__, "monai": monai.__version__}.items())}
    header, blobs, offset = {"__metadata__": meta}, [], 0
    for key in sorted(tensors):
        data = np.ascontiguousarray(tensors[key], dtype=np.float32).tobytes()
        header[key] = {"dtype": "F32", "shape": list(tensors[key].shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path = os.path.join(OUT, name)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB)")


def mirrored(net):
    """nnU-Net's mirroring of a window batch: the mean of the logits over every axis-flip combination."""
    combos = [c for r in range(4) for c in itertools.combinations((2, 3, 4), r)]

    def run(x):
        total = None
        for axes in combos:
            y = net(torch.flip(x, axes) if axes else x)
            y = torch.flip(y, axes) if axes else y
            total = y if total is None else total + y
        return total / len(combos)

    return run


def main():
    torch.use_deterministic_algorithms(True)
    for name, (shape, affine, centre, radii) in CASES.items():
        write_case(name, shape, np.array(affine, dtype=float), centre, radii)
    pre = Compose([
        LoadImaged(keys="image"), EnsureChannelFirstd(keys="image"),
        CropForegroundd(keys="image", source_key="image"),
        Orientationd(keys="image", axcodes=PLAN["orientation"]),
        Spacingd(keys="image", pixdim=PLAN["spacing"], mode="bilinear"),
        NormalizeIntensityd(keys="image", nonzero=False, channel_wise=True),
    ])
    post = Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=False)
    tensors, meta = {}, {"plan": json.dumps(PLAN), "model": json.dumps(MODEL), "cases": json.dumps(list(CASES))}
    for run, seed in RUNS.items():
        torch.manual_seed(seed)
        net = SegResNetDS(**MODEL).eval()
        save(f"{run}.safetensors", dict(net.state_dict()), {"seed": seed})
        for name in CASES:
            files = [os.path.join(OUT, f"imagesTs/{name}_{c:04d}.nii.gz") for c in range(2)]
            d = pre({"image": files})
            for tag, predictor in [("probs", net), ("tta", mirrored(net))]:
                with torch.no_grad():
                    logits = sliding_window_inference(
                        d["image"][None], PLAN["roi"], PLAN["sw_batch_size"], predictor, overlap=PLAN["overlap"],
                        mode=PLAN["mode"], sigma_scale=PLAN["sigma_scale"])
                e = dict(d)
                e["pred"] = MetaTensor(torch.softmax(logits[0].as_tensor(), 0))
                inv = post(e)["pred"]
                tensors[f"{name}/{run}/{tag}"] = np.asarray(inv)
                assert tuple(inv.shape[1:]) == CASES[name][0], (inv.shape, CASES[name][0])
            op = d["image"].applied_operations[0]
            box = op["extra_info"]["cropped"]
            meta[f"{name}/cropped"] = json.dumps([int(v) for v in box])
            print(name, run, tuple(d["image"].shape))
    save("monai.safetensors", tensors, meta)


if __name__ == "__main__":
    main()
