#!/usr/bin/env python3
# Writes tests/fixtures/sliding_window_monai.safetensors: MONAI's own `sliding_window_inference` and
# `compute_importance_map` on small cases, for tests/sliding_window.rs. Needs torch and monai
# (`pip install torch monai`); the file is written without the safetensors package.
# Usage: python3 scripts/sliding_window_monai.py [OUT]
#
# Each case `i` runs a seeded 3x3(x3) convolution (zero padding 1, bias) as the predictor, so a window's
# prediction depends on where the window lies. Metadata per case: `case.<i>.roi`, `.overlap`, `.sigma`
# (comma-separated), `.mode`, `.sw_batch_size`; tensors `case.<i>.{input,weight,bias,output}`. Importance
# maps: `imp.<j>` with metadata `imp.<j>.roi` and `imp.<j>.sigma`.
import json
import struct
import sys

import monai
import torch
from monai.data.utils import compute_importance_map
from monai.inferers import sliding_window_inference

CASES = [
    # net_sliding_window_small's two settings on its input size (padding on the last axis for the first)
    dict(shape=[1, 2, 20, 24, 12], cout=3, roi=[16, 16, 16], overlap=[0.25], mode="gaussian", sigma=[0.125], sw=1),
    dict(shape=[1, 1, 20, 24, 12], cout=2, roi=[8, 16, 8], overlap=[0.5], mode="constant", sigma=[0.125], sw=3),
    # padding on two axes with an odd split, per-axis sigma, two images
    dict(shape=[2, 2, 5, 11, 3], cout=2, roi=[8, 4, 6], overlap=[0.75], mode="gaussian", sigma=[0.3, 0.1, 0.5], sw=2),
    # per-axis overlap (0.9 of 3 rounds the interval to 0, hence 1)
    dict(shape=[1, 2, 9, 10, 7], cout=1, roi=[4, 5, 3], overlap=[0.3, 0.6, 0.9], mode="gaussian", sigma=[0.125], sw=5),
    # 2D
    dict(shape=[2, 2, 9, 5], cout=3, roi=[4, 8], overlap=[0.6, 0.3], mode="gaussian", sigma=[0.2, 0.1], sw=4),
]
IMPORTANCE = [
    ([16, 16, 16], [0.125]),
    ([8, 16, 8], [0.125]),
    ([5, 7, 4], [0.1, 0.5, 2.0]),
    ([9, 6], [0.25, 0.125]),
    ([7, 9, 11], [0.05]),  # corners below 1e-3: clamped
]


def one_or_all(v):
    return v[0] if len(v) == 1 else v


def csv(v):
    return ",".join(str(x) for x in v)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/sliding_window_monai.safetensors"
    torch.manual_seed(0)
    tensors, meta = {}, {"monai": monai.__version__, "torch": torch.__version__}
    for i, c in enumerate(CASES):
        x = torch.randn(c["shape"])
        conv_t = torch.nn.Conv3d if len(c["shape"]) == 5 else torch.nn.Conv2d
        conv = conv_t(c["shape"][1], c["cout"], 3, padding=1)
        with torch.no_grad():
            y = sliding_window_inference(
                x, c["roi"], c["sw"], conv, overlap=one_or_all(c["overlap"]), mode=c["mode"],
                sigma_scale=one_or_all(c["sigma"]))
        tensors.update({f"case.{i}.input": x, f"case.{i}.weight": conv.weight, f"case.{i}.bias": conv.bias,
                        f"case.{i}.output": y})
        meta.update({f"case.{i}.roi": csv(c["roi"]), f"case.{i}.overlap": csv(c["overlap"]),
                     f"case.{i}.sigma": csv(c["sigma"]), f"case.{i}.mode": c["mode"],
                     f"case.{i}.sw_batch_size": str(c["sw"])})
    for j, (roi, sigma) in enumerate(IMPORTANCE):
        tensors[f"imp.{j}"] = compute_importance_map(tuple(roi), mode="gaussian", sigma_scale=one_or_all(sigma))
        meta.update({f"imp.{j}.roi": csv(roi), f"imp.{j}.sigma": csv(sigma)})

    header, blobs, off = {"__metadata__": meta}, [], 0
    for k, t in tensors.items():
        b = t.detach().to(torch.float32).contiguous().numpy().tobytes()
        header[k] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    print(f"wrote {out} (MONAI {monai.__version__}, torch {torch.__version__})")


if __name__ == "__main__":
    main()
