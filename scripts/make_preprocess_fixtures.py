#!/usr/bin/env python3
"""Writes the preprocessing golden files in tests/fixtures/preprocess/: small NIfTI cases written by
nibabel, and monai.safetensors with what MONAI's transforms (LoadImaged, EnsureChannelFirstd,
CropForegroundd(source_key="image"), Orientationd, Spacingd(mode=("bilinear", "nearest")),
NormalizeIntensityd / ScaleIntensityRanged) make of them for a few settings: per setting the image
(f32 [C, X, Y, Z]), the image before the intensity transform (`spaced`, Spacingd's output) and the
label (f32 [1, X, Y, Z]) as tensors, the affine (JSON, row major, f64) and the
settings themselves (JSON, in calibseg's `Transforms` form) as metadata. tests/io/preprocess.rs runs
calibseg's preprocessing on the same files and compares.

    python3 -m venv /work/venv-monai
    /work/venv-monai/bin/pip install torch monai==1.5.0 nibabel numpy
    /work/venv-monai/bin/python scripts/make_preprocess_fixtures.py

MONAI 1.5.0 (torch 2.6) is the reference. Deterministic: a rerun writes the same bytes (gzip with mtime 0,
a fixed header order).

Why `spaced` is kept: NormalizeIntensityd(nonzero=True) after Spacingd counts as nonzero the values of
about 1e-15 that MONAI's float64 grid leaves next to the foreground's edge where an output voxel falls on
an input voxel; no float32 resampling reproduces which voxels those are, so the tests check that setting
stage by stage (Spacingd's output, then the normalisation of MONAI's own Spacingd output).

Target spacings are chosen so that no output voxel of the axis-aligned cases lands exactly halfway
between two input voxels (the ratios have odd denominators), where nearest interpolation's tie would
depend on the last bit of the coordinate.
"""

import gzip
import io
import json
import os
import struct

import monai
import nibabel as nib
import numpy as np
import torch
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    LoadImaged,
    NormalizeIntensityd,
    Orientationd,
    ScaleIntensityRanged,
    Spacingd,
)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "preprocess")
RNG = np.random.default_rng(18)


def write_nifti(img, name):
    raw = img.to_bytes()
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as f:
        f.write(raw)
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(buf.getvalue())
    return name


def blob(shape, centre, radii):
    """An ellipsoid mask on a grid of `shape` (array axes = file axes)."""
    g = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    return sum(((g[d] - centre[d]) / radii[d]) ** 2 for d in range(3)) <= 1.0


def mr_case():
    """Two channels, anisotropic voxels, the voxel axes permuted and flipped against RAS: voxel axis 0
    runs to the left (-x), axis 1 superior (+z), axis 2 anterior (+y). A zero border around the body."""
    shape = (20, 16, 12)
    body = blob(shape, (10.0, 8.5, 5.5), (7.5, 6.0, 4.5))
    organ = blob(shape, (8.0, 9.0, 5.0), (3.5, 3.0, 2.5))
    ch0 = np.where(body, 100.0 + 20.0 * RNG.standard_normal(shape), 0.0)
    ch1 = np.where(body, 40.0 + 5.0 * RNG.standard_normal(shape), 0.0)
    ch0[organ] += 80.0
    affine = np.array([
        [-0.9, 0.0, 0.0, 12.0],
        [0.0, 0.0, 2.5, -20.0],
        [0.0, 1.1, 0.0, 5.0],
        [0.0, 0.0, 0.0, 1.0],
    ])
    label = np.where(body, 1, 0) + np.where(organ, 1, 0)
    four_d = np.stack([ch0, ch1], axis=-1).astype(np.float32)
    write_nifti(nib.Nifti1Image(four_d, affine), "mr_4d.nii.gz")
    for c, ch in enumerate([ch0, ch1]):
        write_nifti(nib.Nifti1Image(ch.astype(np.float32), affine), f"mr_{c:04d}.nii.gz")
    write_nifti(nib.Nifti1Image(label.astype(np.uint8), affine), "mr_label.nii.gz")


def ct_case():
    """One int16 channel with scl_slope/scl_inter, slightly oblique (rotated 7 degrees about z and 4
    about x), anisotropic; air (-1000) around a body of soft tissue with a bright structure."""
    shape = (18, 18, 10)
    body = blob(shape, (9.0, 8.5, 4.5), (7.0, 6.5, 4.0))
    bone = blob(shape, (6.0, 10.0, 4.0), (2.5, 2.0, 2.0))
    hu = np.where(body, 40.0 + 30.0 * RNG.standard_normal(shape), -1000.0)
    hu[bone] = 700.0 + 50.0 * RNG.standard_normal(bone.sum())
    stored = np.round((hu + 1024.0) / 0.5).astype(np.int16)  # slope 0.5, intercept -1024

    def rot(angle, i, j):
        r = np.eye(3)
        c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        return r

    affine = np.eye(4)
    affine[:3, :3] = rot(7.0, 0, 1) @ rot(4.0, 1, 2) @ np.diag([0.8, 0.8, 3.0])
    affine[:3, 3] = [-7.5, 3.25, 11.0]
    img = nib.Nifti1Image(stored, affine)
    img.header.set_slope_inter(0.5, -1024.0)
    write_nifti(img, "ct.nii.gz")
    label = np.where(body, 1, 0) + 2 * np.where(bone, 1, 0)
    write_nifti(nib.Nifti1Image(label.astype(np.int16), affine), "ct_label.nii.gz")


# (name, image files, label file, calibseg Transforms (JSON form), MONAI's intensity transform)
SETTINGS = [
    ("mr_coarser_zscore_channelwise", ["mr_4d.nii.gz"], "mr_label.nii.gz",
     {"crop_foreground": True, "orientation": "RAS", "spacing": [1.5, 2.0, 1.5],
      "normalization": [{"scheme": "zscore", "nonzero": True, "channel_wise": True}]}),
    ("mr_finer_zscore_whole", ["mr_0000.nii.gz", "mr_0001.nii.gz"], "mr_label.nii.gz",
     {"crop_foreground": True, "orientation": "RAS", "spacing": [0.6, 1.3, 0.7],
      "normalization": [{"scheme": "zscore", "nonzero": True, "channel_wise": False}]}),
    ("mr_lps_no_crop", ["mr_4d.nii.gz"], "mr_label.nii.gz",
     {"crop_foreground": False, "orientation": "LPS", "spacing": [1.5, 2.0, 1.5],
      "normalization": [{"scheme": "zscore", "nonzero": False, "channel_wise": True}]}),
    ("ct_coarser_range_clip", ["ct.nii.gz"], "ct_label.nii.gz",
     {"crop_foreground": True, "orientation": "RAS", "spacing": [1.3, 1.1, 2.1],
      "normalization": [{"scheme": "range", "a_min": -100.0, "a_max": 200.0, "b_min": 0.0, "b_max": 1.0,
                         "clip": True}]}),
    ("ct_finer_range", ["ct.nii.gz"], "ct_label.nii.gz",
     {"crop_foreground": False, "orientation": "RAS", "spacing": [0.7, 0.6, 1.7],
      "normalization": [{"scheme": "range", "a_min": -54.0, "a_max": 242.0, "b_min": -1.0, "b_max": 1.0,
                         "clip": False}]}),
]


def monai_transforms(t):
    keys = ["image", "label"]
    out = [LoadImaged(keys=keys), EnsureChannelFirstd(keys=keys)]
    if t["crop_foreground"]:
        out.append(CropForegroundd(keys=keys, source_key="image"))
    out.append(Orientationd(keys=keys, axcodes=t["orientation"]))
    out.append(Spacingd(keys=keys, pixdim=t["spacing"], mode=("bilinear", "nearest")))
    (n,) = t["normalization"]
    if n["scheme"] == "zscore":
        out.append(NormalizeIntensityd(keys="image", nonzero=n["nonzero"], channel_wise=n["channel_wise"]))
    else:
        out.append(ScaleIntensityRanged(keys="image", a_min=n["a_min"], a_max=n["a_max"], b_min=n["b_min"],
                                        b_max=n["b_max"], clip=n["clip"]))
    return Compose(out)


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


def main():
    os.makedirs(OUT, exist_ok=True)
    mr_case()
    ct_case()
    tensors, meta = {}, {"settings": json.dumps([s[0] for s in SETTINGS])}
    for name, images, label, t in SETTINGS:
        image_key = [os.path.join(OUT, f) for f in images]
        inputs = {"image": image_key if len(image_key) > 1 else image_key[0], "label": os.path.join(OUT, label)}
        d = monai_transforms(t)(dict(inputs))
        tensors[f"{name}/image"] = d["image"].numpy()
        before = Compose(list(monai_transforms(t).transforms[:-1]))(dict(inputs))
        assert before["image"].shape == d["image"].shape
        tensors[f"{name}/spaced"] = before["image"].numpy()
        tensors[f"{name}/label"] = d["label"].numpy()
        assert np.allclose(d["image"].affine.numpy(), d["label"].affine.numpy())
        meta[f"{name}/affine"] = json.dumps(d["image"].affine.numpy().astype(np.float64).tolist())
        meta[f"{name}/transforms"] = json.dumps({**t, "images": images, "label": label})
        print(name, tuple(d["image"].shape), tuple(d["label"].shape))
    save("monai.safetensors", tensors, meta)


if __name__ == "__main__":
    main()
