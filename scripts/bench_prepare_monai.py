#!/usr/bin/env python3
"""Times MONAI's preprocessing of a dataset with the same Compose `calibseg prepare` runs, so the two can
be compared in one sitting on the same cores:

    LoadImaged -> EnsureChannelFirstd -> CropForegroundd(source_key="image") (when the plan crops)
    -> Orientationd(axcodes) -> Spacingd(pixdim, mode=("bilinear", "nearest"))
    -> NormalizeIntensityd(nonzero, channel_wise=True) or ScaleIntensityRanged

with the settings read from the `plan.json` calibseg wrote, and each case's image (f32) and label (u8)
written as safetensors, as calibseg's cache holds them (so both sides pay the output).

    calibseg synth --out /tmp/ds --cases 8 --shape 256,256,100
    calibseg prepare /tmp/ds --out /tmp/cache --threads 2          # prints nothing to time; use `time`
    /work/venv-monai/bin/python scripts/bench_prepare_monai.py /tmp/ds /tmp/cache/plan.json \
        --out /tmp/monai-cache --threads 2

`--threads` is torch.set_num_threads (and the cases run one after another, as a Compose over a list
does); `--workers W` runs W processes over the cases instead, each with threads/W torch threads.
Prints one JSON line: total seconds, seconds per case, the cases, the versions. Needs MONAI 1.5.0,
torch, nibabel, numpy.
"""

import argparse
import json
import os
import struct
import sys
import time


def dataset_cases(root):
    with open(os.path.join(root, "dataset.json")) as f:
        d = json.load(f)
    if "training" in d:  # MSD
        return [(os.path.join(root, c["image"]), os.path.join(root, c["label"])) for c in d["training"]]
    ending = d.get("file_ending", ".nii.gz")
    channels = len(d["channel_names"])
    names = sorted(n[: -len(ending)] for n in os.listdir(os.path.join(root, "labelsTr")) if n.endswith(ending))
    return [
        (
            [os.path.join(root, "imagesTr", f"{n}_{c:04d}{ending}") for c in range(channels)],
            os.path.join(root, "labelsTr", f"{n}{ending}"),
        )
        for n in names
    ]


def compose(plan):
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

    keys = ["image", "label"]
    out = [LoadImaged(keys=keys), EnsureChannelFirstd(keys=keys)]
    if plan["crop_foreground"]:
        out.append(CropForegroundd(keys=keys, source_key="image"))
    out.append(Orientationd(keys=keys, axcodes=plan["orientation"]))
    out.append(Spacingd(keys=keys, pixdim=plan["spacing"], mode=("bilinear", "nearest")))
    norms = plan["normalization"]
    if any(n != norms[0] for n in norms):
        sys.exit("bench_prepare_monai: per-channel normalizations that differ are not supported here")
    n = norms[0]
    if n["scheme"] == "zscore":
        out.append(NormalizeIntensityd(keys="image", nonzero=n["nonzero"], channel_wise=True))
    else:
        out.append(ScaleIntensityRanged(keys="image", a_min=n["a_min"], a_max=n["a_max"], b_min=n["b_min"],
                                        b_max=n["b_max"], clip=n["clip"]))
    return Compose(out)


def save(path, image, label):
    import numpy as np

    tensors = {"image": (np.ascontiguousarray(image, dtype=np.float32), "F32"),
               "label": (np.ascontiguousarray(label, dtype=np.uint8), "U8")}
    header, blobs, offset = {}, [], 0
    for key, (a, dtype) in tensors.items():
        data = a.tobytes()
        header[key] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    os.replace(tmp, path)


def run_cases(args):
    cases, plan, out, threads = args
    import torch

    torch.set_num_threads(threads)
    t = compose(plan)
    times = []
    for image, label in cases:
        start = time.perf_counter()
        d = t({"image": image, "label": label})
        name = os.path.basename(label).split(".")[0]
        save(os.path.join(out, name + ".safetensors"), d["image"].numpy(), d["label"].numpy())
        times.append(time.perf_counter() - start)
    return times


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset")
    p.add_argument("plan", help="the plan.json calibseg prepare wrote")
    p.add_argument("--out", required=True, help="folder for the preprocessed cases")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--workers", type=int, default=1)
    a = p.parse_args()
    with open(a.plan) as f:
        plan = json.load(f)
    os.makedirs(a.out, exist_ok=True)
    cases = dataset_cases(a.dataset)
    import monai
    import torch

    start = time.perf_counter()
    if a.workers <= 1:
        per_case = run_cases((cases, plan, a.out, a.threads))
    else:
        import multiprocessing as mp

        per = max(1, a.threads // a.workers)
        chunks = [(cases[w:: a.workers], plan, a.out, per) for w in range(a.workers)]
        with mp.get_context("spawn").Pool(a.workers) as pool:
            per_case = [t for ts in pool.map(run_cases, chunks) for t in ts]
    total = time.perf_counter() - start
    print(json.dumps({"total_s": round(total, 3), "per_case_s": [round(t, 3) for t in per_case],
                      "cases": len(cases), "threads": a.threads, "workers": a.workers,
                      "monai": monai.__version__, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
