#!/usr/bin/env python3
"""Writes the NIfTI golden files in tests/fixtures/nifti/ with nibabel, and nifti.json: for each file
nibabel's view of it (shape, dtype, get_fdata() in Fortran order = the file's voxel order, its sum,
header.get_zooms() and img.affine), which tests/io/nifti.rs compares calibseg's reader with.

    python3 -m venv /work/venv-nib && /work/venv-nib/bin/pip install nibabel numpy
    /work/venv-nib/bin/python scripts/make_nifti_fixtures.py

Deterministic: a rerun with the same nibabel and numpy writes the same bytes (gzip with mtime 0).
"""

import gzip
import io
import json
import os
import struct
import sys

import nibabel as nib
import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "nifti")
SHAPE = (3, 4, 2)
RNG = np.random.default_rng(18)


def values(dtype):
    """Every voxel distinct; integer types reach both ends of their range."""
    n = int(np.prod(SHAPE))
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        v = RNG.normal(0, 100, n).astype(dtype)
        v[0] = np.finfo(dtype).max
        v[1] = np.finfo(dtype).tiny
        v[2] = -0.0
        return v.reshape(SHAPE, order="F")
    info = np.iinfo(dtype)
    v = np.linspace(max(info.min, -1000), min(info.max, 1000), n).astype(dtype)
    v[0], v[-1] = info.min, info.max
    return v.reshape(SHAPE, order="F")


def save(img, name, patch=None):
    """Writes img's bytes (with `patch(bytearray)` applied to them: header fields nibabel itself would
    rewrite on save) to tests/fixtures/nifti/name."""
    path = os.path.join(OUT, name)
    raw = bytearray(img.to_bytes())
    if patch:
        patch(raw)
    raw = bytes(raw)
    if name.endswith(".gz"):
        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as f:
            f.write(raw)
        with open(path, "wb") as f:
            f.write(buf.getvalue())
    else:
        with open(path, "wb") as f:
            f.write(raw)
    return path


def affine_rotated(angle, axis, spacing, offset):
    c, s = np.cos(angle), np.sin(angle)
    r = np.eye(3)
    i, j = [k for k in range(3) if k != axis]
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    a = np.eye(4)
    a[:3, :3] = r @ np.diag(spacing)
    a[:3, 3] = offset
    return a


def main():
    os.makedirs(OUT, exist_ok=True)
    cases = {}
    base = np.diag([0.8, 0.9, 2.5, 1.0])
    base[:3, 3] = [-10.0, 20.0, 5.0]

    def add(name, img, what, patch=None):
        path = save(img, name, patch)
        back = nib.load(path)
        data = back.get_fdata()
        cases[name] = {
            "what": what,
            "shape": list(back.shape),
            "dtype": back.get_data_dtype().name,
            "values": [float(x) for x in data.ravel(order="F")],
            "sum": float(data.sum()),
            "zooms": [float(z) for z in back.header.get_zooms()[:3]],
            "affine": back.affine.tolist(),
        }

    for dt in ["uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]:
        img = nib.Nifti1Image(values(dt), base, dtype=dt)
        img.header.set_slope_inter(1.0, 0.0)
        add(f"dtype_{dt}.nii", img, f"NIfTI-1 {dt}, every voxel distinct, the type's extremes")
    # NIfTI-2, plain and compressed.
    add("nifti2_float64.nii", nib.Nifti2Image(values("float64"), base, dtype="float64"), "NIfTI-2 float64")
    add("nifti2_int16.nii.gz", nib.Nifti2Image(values("int16"), base, dtype="int16"), "NIfTI-2 int16, gzip")
    # Big-endian NIfTI-1 and NIfTI-2.
    for cls, name in [(nib.Nifti1Image, "big_endian_int32.nii"), (nib.Nifti2Image, "big_endian_nifti2_float32.nii")]:
        dt = "int32" if "int32" in name else "float32"
        h = (nib.Nifti1Header if cls is nib.Nifti1Image else nib.Nifti2Header)(endianness=">")
        img = cls(values(dt), base, header=h, dtype=dt)
        assert img.header.endianness == ">"
        add(name, img, f"big-endian {cls.__name__} {dt}")
    # Scaled: stored int16, slope and intercept applied on read.
    img = nib.Nifti1Image(values("int16"), base, dtype="int16")
    img.header.set_slope_inter(0.25, -7.5)
    add("scaled_int16.nii.gz", img, "int16 with scl_slope 0.25, scl_inter -7.5, gzip")
    img = nib.Nifti2Image(values("uint8"), base, dtype="uint8")
    img.header.set_slope_inter(-3.0, 100.0)
    add("scaled_nifti2_uint8.nii", img, "NIfTI-2 uint8 with scl_slope -3, scl_inter 100")
    # Slope 0, NaN or infinite with an intercept of 5: no scaling (nibabel writes slope NaN itself, so the
    # two fields are set in the bytes).
    for slope, tag in [(0.0, "zero"), (float("nan"), "nan"), (float("inf"), "inf")]:
        img = nib.Nifti1Image(values("int16"), base, dtype="int16")

        def patch(raw, slope=slope):
            struct.pack_into("<ff", raw, 112, slope, 5.0)

        add(f"slope_{tag}_int16.nii", img, f"scl_slope {tag}, scl_inter 5: no scaling", patch)
    # sform preferred over qform: both set, different.
    img = nib.Nifti1Image(values("float32"), None, dtype="float32")
    img.set_qform(affine_rotated(0.3, 2, [1.0, 1.5, 3.0], [1, 2, 3]), code=1)
    img.set_sform(affine_rotated(-0.2, 0, [0.7, 0.7, 4.0], [-50, 10, 80]), code=2)
    add("sform_over_qform.nii", img, "sform_code 2 and qform_code 1 with different affines: the sform")
    # qform only, oblique, qfac -1 (a flipped third axis).
    img = nib.Nifti1Image(values("float32"), None, dtype="float32")
    flip = affine_rotated(0.35, 1, [0.9, 1.1, 2.0], [12.5, -30.25, 7.0]) @ np.diag([1, 1, -1, 1])
    img.set_qform(flip, code=1)
    img.set_sform(np.eye(4), code=0)
    assert img.header["pixdim"][0] == -1
    add("qform_oblique.nii", img, "qform_code 1 only: an oblique rotation with qfac -1")
    # NIfTI-2 qform only.
    img = nib.Nifti2Image(values("float32"), None, dtype="float32")
    img.set_qform(affine_rotated(-0.6, 0, [2.0, 0.5, 1.25], [3, 4, 5]), code=1)
    img.set_sform(np.eye(4), code=0)
    add("qform_nifti2.nii", img, "NIfTI-2, qform_code 1 only, oblique")
    # Neither: pixdim scaling about the centre, x flipped.
    img = nib.Nifti1Image(values("float32"), base, dtype="float32")
    img.set_qform(None, code=0)
    img.set_sform(None, code=0)
    img.header.set_zooms((0.8, 0.9, 2.5))
    add("no_transform.nii", img, "qform_code 0 and sform_code 0: the pixdim scaling")
    # Header fields nibabel fixes on load: qfac 0 (taken as 1), a negative and a zero voxel size (their
    # absolute value, 1), on a qform-only image.
    img = nib.Nifti1Image(values("int16"), None, dtype="int16")
    img.set_qform(affine_rotated(0.2, 2, [1.2, 1.1, 2.0], [4, 5, 6]), code=1)
    img.set_sform(np.eye(4), code=0)

    def patch(raw):
        struct.pack_into("<ffff", raw, 76, 0.0, 1.2, -1.1, 0.0)

    add("fixed_pixdim_qform.nii", img, "qfac 0, pixdim[2] -1.1, pixdim[3] 0: nibabel's load-time fixes", patch)
    # 2D: the pixdim scaling padded to three axes.
    img = nib.Nifti1Image(values("float32")[:, :, 0], None, dtype="float32")
    img.set_qform(None, code=0)
    img.set_sform(None, code=0)

    def patch(raw):
        struct.pack_into("<ff", raw, 80, 0.6, 1.7)

    add("no_transform_2d.nii", img, "2D (3, 4), pixdim 0.6 x 1.7, no transform: the pixdim scaling with z = 1", patch)
    # 4D, two channels last (MSD's multi-modal layout).
    four = np.stack([values("float32"), -values("float32")], axis=-1)
    add("channels_last_4d.nii.gz", nib.Nifti1Image(four, base, dtype="float32"), "4D (3, 4, 2, 2), two channels last, gzip")
    # Unsupported: complex.
    save(nib.Nifti1Image(values("float32").astype(np.complex64), base, dtype="complex64"), "complex64.nii")

    meta = {"nibabel": nib.__version__, "numpy": np.__version__, "files": cases}
    with open(os.path.join(OUT, "nifti.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {len(cases) + 1} images and nifti.json to {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
