#!/usr/bin/env python3
# Writes tests/fixtures/sampling_monai.json: MONAI 1.5.0's crop-centre arithmetic and nnU-Net's five-fold
# split rule, for tests/training/cache.rs. Needs numpy and monai (the /work/venv-monai of the session, or
# `pip install monai==1.5.0 numpy`). Deterministic: rerun and the file is byte-identical.
# Usage: python3 scripts/make_sampling_fixtures.py [OUT]
#
# "centres": MONAI's `correct_crop_centers(center, spatial_size, label_spatial_shape, allow_smaller=True)`
# on seeded cases (patches smaller than, equal to and larger than the case), and the crop box
# `SpatialCrop(roi_center, roi_size)` then takes (`Crop.compute_slices`: start = max(c - size // 2, 0),
# end = min(start + size, shape)).
# "splits": nnU-Net's `generate_crossval_split(sorted(names), seed=12345, n_splits=5)`, i.e. sklearn's
# `KFold(5, shuffle=True, random_state=12345).split(names)`. sklearn is not needed: KFold's shuffled split
# is `np.random.RandomState(12345).shuffle(arange(n))`, then consecutive test folds of sizes n // 5 (+1 for
# the first n % 5), train and val each in sorted index order; that rule is written out below.
import json
import sys

import numpy as np
from monai.transforms.utils import correct_crop_centers


def crop_box(center, size, shape):
    start = [max(int(c) - s // 2, 0) for c, s in zip(center, size)]
    end = [min(st + s, n) for st, s, n in zip(start, size, shape)]
    return start, end


def kfold(names, seed=12345, k=5):
    names = sorted(names)
    n = len(names)
    idx = np.arange(n)
    np.random.RandomState(seed).shuffle(idx)
    sizes = np.full(k, n // k, dtype=int)
    sizes[: n % k] += 1
    out, cur = [], 0
    for s in sizes:
        test = np.zeros(n, dtype=bool)
        test[idx[cur : cur + s]] = True
        cur += s
        out.append({"train": [names[i] for i in np.arange(n)[~test]], "val": [names[i] for i in np.arange(n)[test]]})
    return out


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/sampling_monai.json"
    rs = np.random.RandomState(20261203)
    centres = []
    for _ in range(200):
        shape = [int(v) for v in rs.randint(1, 40, size=3)]
        size = [int(v) for v in rs.randint(1, 48, size=3)]
        center = [int(rs.randint(0, n)) for n in shape]
        fixed = [int(v) for v in correct_crop_centers(center, size, shape, allow_smaller=True)]
        start, end = crop_box(fixed, size, shape)
        centres.append(dict(shape=shape, size=size, center=center, corrected=fixed, start=start, end=end))
    splits = []
    for n in [5, 6, 7, 11, 23]:
        names = [f"case_{i:03d}" for i in rs.permutation(n)]
        splits.append(dict(names=names, splits=kfold(names)))
    with open(out, "w") as f:
        json.dump(dict(centres=centres, splits=splits), f, indent=None, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
