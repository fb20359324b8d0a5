#!/usr/bin/env python3
# Writes tests/fixtures/augment_monai.json: MONAI 1.5.0's `Affine` (the transform `RandAffine` applies
# once its parameters are drawn) on small seeded volumes, for tests/training/augment_gpu.rs. Needs numpy,
# torch and monai (the /work/venv-monai of the session, or `pip install monai==1.5.0 torch numpy`).
# Deterministic: rerun and the file is byte-identical.
# Usage: python3 scripts/make_augment_fixtures.py [OUT]
#
# Each case: a source crop `source` [X, Y, Z] (an image channel of seeded normals and a label of seeded
# classes 0..3), the parameters (rotate_params, shear_params, translate_params, scale_params: one factor
# for all axes, as the plan draws), the output `spatial_size` (the patch), MONAI's `AffineGrid` matrix
# (`affine`, 4x4 row major) and the outputs of `Affine(..., padding_mode="border")` with mode "bilinear"
# for the image and "nearest" for the label (MONAI's `RandAffined` modes), C-order flattened.
import json
import sys

import numpy as np
import torch
from monai.transforms import Affine
from monai.transforms.spatial.array import AffineGrid


def case(rs, source, patch, rotate, shear, translate, scale):
    image = rs.standard_normal(size=(1, *source)).astype(np.float32)
    label = rs.randint(0, 4, size=(1, *source)).astype(np.float32)
    params = dict(
        rotate_params=rotate,
        shear_params=shear,
        translate_params=translate,
        scale_params=[scale] * 3,
    )
    _, affine = AffineGrid(**params)(spatial_size=patch)
    outs = {}
    for name, data, mode in [("image", image, "bilinear"), ("label", label, "nearest")]:
        t = Affine(**params, spatial_size=patch, mode=mode, padding_mode="border", image_only=True)
        outs[name] = np.asarray(t(torch.from_numpy(data)), dtype=np.float32)
    f = lambda a: [float(v) for v in np.asarray(a, dtype=np.float32).ravel()]
    return dict(
        source=list(source),
        patch=list(patch),
        rotate=[float(v) for v in rotate],
        shear=[float(v) for v in shear],
        translate=[float(v) for v in translate],
        scale=float(scale),
        affine=[[float(v) for v in row] for row in np.asarray(affine, dtype=np.float64)],
        image=f(image),
        label=f(label),
        out_image=f(outs["image"]),
        out_label=f(outs["label"]),
    )


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/augment_monai.json"
    rs = np.random.RandomState(20261203)
    zero3, zero6 = [0.0] * 3, [0.0] * 6
    u = lambda r, n: [float(v) for v in rs.uniform(-r, r, size=n)]
    cases = [
        # One transform at a time, then all of them; odd and even source/patch excesses.
        case(rs, (11, 9, 8), (7, 5, 6), u(0.5, 3), zero6, zero3, 1.0),
        case(rs, (11, 9, 8), (7, 5, 6), zero3, zero6, zero3, 1.3),
        case(rs, (11, 9, 8), (7, 5, 6), zero3, zero6, zero3, 0.8),
        case(rs, (11, 9, 8), (7, 5, 6), zero3, u(0.2, 6), zero3, 1.0),
        case(rs, (11, 9, 8), (7, 5, 6), zero3, zero6, u(1.5, 3), 1.0),
        case(rs, (12, 10, 9), (6, 7, 5), u(0.52, 3), u(0.1, 6), u(0.6, 3), 1.15),
        case(rs, (9, 13, 7), (9, 9, 4), u(0.3, 3), zero6, u(0.3, 3), 0.9),
    ]
    with open(out, "w") as f:
        json.dump(dict(monai="1.5.0", cases=cases), f, indent=None, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
