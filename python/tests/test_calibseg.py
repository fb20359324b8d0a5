"""calibseg's Python package against the repository's fixtures (MONAI / PyTorch reference numbers)."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

import calibseg
from conftest import FIXTURES, load

LOSS_CASES = ["loss_b2_c4_8x8x8.safetensors", "loss_b2_c3_empty_class.safetensors",
              "loss_b3_c3_2d_bins7.safetensors", "loss_b1_c2_saturated.safetensors"]
METRIC_CASES = ["metrics_n4_c4.safetensors", "metrics_n3_c3_exact_edges.safetensors"]


def bins_of(f):
    meta = f.get("__metadata__", {})
    return int(meta.get("num_bins", 20))


@pytest.mark.parametrize("name", METRIC_CASES)
@pytest.mark.parametrize("bg", [False, True])
def test_evaluate_matches_monai_fixture(name, bg):
    f = load(name)
    r = calibseg.evaluate(f["probs"], f["labels"], num_bins=bins_of(f), include_background=bg)
    tag = "bg" if bg else "nobg"
    for k in ("ece", "ace", "mce"):
        np.testing.assert_allclose(r[k], f[f"{k}.{tag}"], rtol=0, atol=1e-5, equal_nan=True)
    if not bg:
        np.testing.assert_array_equal(r["histogram"], f["nobg.reliability_heatmap"])


def test_fortran_order_float16_and_labels_without_channel():
    f = load("metrics_n4_c4.safetensors")
    p, l = f["probs"], f["labels"]
    ref = calibseg.evaluate(p, l)
    fort = calibseg.evaluate(np.asfortranarray(p), np.asfortranarray(l[:, 0]))
    for k in ("dsc", "ece", "ace", "mce"):
        np.testing.assert_array_equal(fort[k], ref[k])
    h = p.astype(np.float16)
    half = calibseg.evaluate(h, l)
    again = calibseg.evaluate(h.astype(np.float32), l)
    np.testing.assert_array_equal(half["ece"], again["ece"])


def test_metric_over_batches_equals_one_evaluate():
    f = load("metrics_n4_c4.safetensors")
    p, l = f["probs"], f["labels"]
    whole = calibseg.evaluate(p, l)
    m = calibseg.CalibrationMetric()
    m.update(p[:1], l[:1])
    m.update(p[1:], l[1:])
    assert m.images == 4
    parts = m.aggregate()
    for k in ("dsc", "ece", "ace", "mce", "histogram"):
        np.testing.assert_array_equal(parts[k], whole[k])
    assert parts["macro"] == whole["macro"]
    m.reset()
    with pytest.raises(ValueError, match="no images to aggregate"):
        m.aggregate()


@pytest.mark.parametrize("name", LOSS_CASES)
def test_losses_and_gradients_match_fixture(name):
    f = load(name)
    x, y, nb = f["logits"], f["labels"], bins_of(f)
    for b in ("hard", "soft"):
        for tag, bg in (("bg", True), ("nobg", False)):
            loss, grad = calibseg.ace_loss(x, y, binning=b, num_bins=nb, include_background=bg)
            np.testing.assert_allclose(loss, f[f"ace.{b}.{tag}.loss"][0], rtol=0, atol=1e-5)
            np.testing.assert_allclose(grad, f[f"ace.{b}.{tag}.grad"], rtol=0, atol=1e-4)
        loss, grad = calibseg.ace_dice_ce_loss(x, y, binning=b, num_bins=nb)
        np.testing.assert_allclose(loss, f[f"ace_dice_ce.{b}.loss"][0], rtol=0, atol=1e-5)
        np.testing.assert_allclose(grad, f[f"ace_dice_ce.{b}.grad"], rtol=0, atol=1e-4)
    loss, grad = calibseg.dice_ce_loss(x, y)
    np.testing.assert_allclose(loss, f["dice_ce.loss"][0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(grad, f["dice_ce.grad"], rtol=0, atol=1e-4)


def test_errors():
    p = np.full((1, 2, 4, 4), 0.5, np.float32)
    l = np.zeros((1, 1, 4, 4), np.int64)
    with pytest.raises(ValueError, match="float32 or float16"):
        calibseg.evaluate(p.astype(np.float64), l)
    with pytest.raises(ValueError, match="labels must be"):
        calibseg.evaluate(p, l[:, :, :3])
    with pytest.raises(ValueError):
        calibseg.evaluate(p, l + 5)  # label out of range
    with pytest.raises(ValueError):
        calibseg.evaluate(p, l, num_bins=0)
    with pytest.raises(ValueError, match="binning"):
        calibseg.ace_loss(p, l, binning="medium")
    assert issubclass(calibseg.GpuError, RuntimeError)


def test_devices_marks_the_one_used():
    d = calibseg.devices()
    assert sum(a["used"] for a in d) == 1


def test_pictures(tmp_path):
    f = load("metrics_n4_c4.safetensors")
    c = calibseg.reliability_diagram(f["probs"], f["labels"], str(tmp_path / "r.png"))
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    np.testing.assert_array_equal(c["count"], f["nobg.bin_count"])
    h = calibseg.dataset_reliability_histogram(f["probs"], f["labels"], str(tmp_path / "h.svg"))
    assert (tmp_path / "h.svg").exists()
    np.testing.assert_array_equal(h["histogram"], f["nobg.reliability_heatmap"])


def test_against_monai_calibration_error_metric_on_random_arrays():
    metrics = pytest.importorskip("monai.metrics")
    torch = pytest.importorskip("torch")
    if not hasattr(metrics, "CalibrationErrorMetric"):
        pytest.skip("this MONAI has no CalibrationErrorMetric (MONAI >= 1.6)")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4, 9, 7, 5)).astype(np.float32)
    p = np.exp(x) / np.exp(x).sum(1, keepdims=True)
    y = rng.integers(0, 4, size=(3, 1, 9, 7, 5))
    onehot = torch.from_numpy(np.ascontiguousarray(np.eye(4, dtype=np.float32)[y[:, 0]].transpose(0, 4, 1, 2, 3)))
    r = calibseg.evaluate(p, y, num_bins=15)
    for key, red in (("ece", "expected"), ("ace", "average"), ("mce", "maximum")):
        m = metrics.CalibrationErrorMetric(num_bins=15, include_background=False,
                                           calibration_reduction=red, metric_reduction="none")
        np.testing.assert_allclose(r[key], m(torch.from_numpy(p), onehot).numpy(), atol=1e-5, equal_nan=True)


def test_each_error_class_is_its_exception(tmp_path):
    f = load("metrics_n4_c4.safetensors")
    p, l = f["probs"], f["labels"]
    with pytest.raises(ValueError, match="probs must be"):
        calibseg.evaluate(p[None], l[None])  # 4 spatial axes
    with pytest.raises(ValueError, match="labels must be a numpy array of integers"):
        calibseg.evaluate(p, l.astype(np.float32))
    with pytest.raises(ValueError, match="non-finite|NaN|nan"):
        calibseg.ace_loss(np.full((1, 2, 4, 4), np.nan, np.float32), np.zeros((1, 4, 4), np.int64))
    with pytest.raises(FileNotFoundError, match="no folder"):
        calibseg.reliability_diagram(p, l, str(tmp_path / "missing" / "folder" / "r.png"))
    with pytest.raises(ValueError, match="drawing failed"):
        calibseg.dataset_reliability_histogram(p, l, str(tmp_path))  # no picture format in the name
    # No adapter: a back end this machine lacks, in a process of its own (the device is opened once).
    code = ("import numpy as np, calibseg\n"
            "try:\n"
            "    calibseg.evaluate(np.full((1, 2, 4), 0.5, np.float32), np.zeros((1, 4), np.int64))\n"
            "except calibseg.GpuError as e:\n"
            "    print('GpuError', e)\n")
    env = dict(os.environ, WGPU_BACKEND="dx12" if sys.platform != "win32" else "metal")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.startswith("GpuError"), out.stdout + out.stderr
    assert "\n" not in out.stdout.strip(), "one line"


def test_metric_over_uneven_batches_equals_one_evaluate_with_background():
    f = load("metrics_n3_c3_exact_edges.safetensors")
    p, l = f["probs"], f["labels"]
    whole = calibseg.evaluate(p, l, num_bins=bins_of(f), include_background=True)
    m = calibseg.CalibrationMetric(num_bins=bins_of(f), include_background=True)
    for i in range(len(p)):
        m.update(np.asfortranarray(p[i:i + 1]), l[i:i + 1, 0])
    parts = m.aggregate()
    for k in ("dsc", "ece", "ace", "mce", "histogram"):
        np.testing.assert_array_equal(parts[k], whole[k])
    assert parts["macro"] == whole["macro"] and parts["micro"] == whole["micro"]


def test_float16_and_fortran_order_for_losses():
    f = load("loss_b2_c4_8x8x8.safetensors")
    x, y = f["logits"], f["labels"]
    loss, grad = calibseg.ace_dice_ce_loss(np.asfortranarray(x), np.asfortranarray(y))
    np.testing.assert_allclose(loss, f["ace_dice_ce.hard.loss"][0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(grad, f["ace_dice_ce.hard.grad"], rtol=0, atol=1e-4)
    assert grad.flags.c_contiguous and grad.dtype == np.float32
    h = x.astype(np.float16)
    lh, gh = calibseg.ace_loss(h, y, binning="soft")
    l32, g32 = calibseg.ace_loss(h.astype(np.float32), y, binning="soft")
    assert lh == l32
    np.testing.assert_array_equal(gh, g32)


# ---- predict: the run folder of tests/fixtures/predict (MONAI 1.5.0 weights and Invertd outputs) ----

PREDICT = FIXTURES / "predict"


def run_folder(tmp_path, weights="run_a"):
    meta = load("predict/monai.safetensors")["__metadata__"]
    p, model = json.loads(meta["plan"]), json.loads(meta["model"])
    plan = {
        "orientation": p["orientation"], "crop_foreground": p["crop_foreground"], "spacing": p["spacing"],
        "normalization": [{"scheme": "zscore", "nonzero": False}], "patch": p["roi"], "batch": 2,
        "model": dict(model, in_channels=2, out_channels=3),
        "window": {k: p[k] for k in ("roi", "overlap", "mode", "sigma_scale", "sw_batch_size")},
        "augment": {"rotate_prob": 0.0, "rotate_range": 0.0, "scale_prob": 0.0, "scale_range": [1.0, 1.0],
                    "shear_prob": 0.0, "shear_range": 0.0, "flip_prob": 0.0, "flip_axes": [],
                    "noise_prob": 0.0, "noise_std": 0.0, "smooth_prob": 0.0, "smooth_sigma": [1.0, 1.0],
                    "intensity_scale_prob": 0.0, "intensity_scale_range": [1.0, 1.0], "contrast_prob": 0.0,
                    "contrast_range": [1.0, 1.0], "gamma_prob": 0.0, "gamma_range": [1.0, 1.0],
                    "lowres_prob": 0.0, "lowres_zoom": [1.0, 1.0]},
        "sampling": {"pos": 1.0, "neg": 1.0, "num_samples": 1, "ratios": None},
        "learning_rate": 1e-3, "num_epochs": 1,
    }
    d = tmp_path / weights
    d.mkdir()
    (d / "plan.json").write_text(json.dumps(plan))
    (d / "model.json").write_text(json.dumps(model))
    shutil.copy(PREDICT / f"{weights}.safetensors", d / "best.safetensors")
    return d


def check_against_monai(got, case, run):
    f = load("predict/monai.safetensors")
    want = f[f"{case}/{run}/probs"]
    assert got.shape == want.shape and got.dtype == np.float32
    pads = json.loads(f["__metadata__"][f"{case}/cropped"])
    inside = tuple(slice(pads[2 * d], want.shape[d + 1] - pads[2 * d + 1]) for d in range(3))
    box = np.zeros(want.shape[1:], bool)
    box[inside] = True
    np.testing.assert_allclose(got[:, box], want[:, box], rtol=0, atol=1e-4 * np.abs(want).max())
    outside = np.zeros_like(got[:, ~box])
    outside[0] = 1  # background outside the crop box
    np.testing.assert_array_equal(got[:, ~box], outside)


@pytest.mark.parametrize("case", ["case_a", "case_b"])
def test_predict_a_nifti_file_as_monai_inverts_it(tmp_path, case):
    run = run_folder(tmp_path)
    got = calibseg.predict(run, str(PREDICT / "imagesTs" / f"{case}_0000.nii.gz"))
    check_against_monai(got, case, "run_a")


def test_predict_an_ensemble_is_the_mean_of_its_runs(tmp_path):
    a, b = run_folder(tmp_path, "run_a"), run_folder(tmp_path, "run_b")
    image = PREDICT / "imagesTs" / "case_b_0000.nii.gz"
    both = calibseg.predict([a, b], image)
    mean = (calibseg.predict(a, image) + calibseg.predict(b, image)) / 2
    np.testing.assert_allclose(both, mean, rtol=0, atol=1e-6)


def test_predict_a_numpy_image_is_the_files_prediction(tmp_path):
    nib = pytest.importorskip("nibabel")
    run = run_folder(tmp_path)
    files = [PREDICT / "imagesTs" / f"case_a_000{c}.nii.gz" for c in range(2)]
    imgs = [nib.load(str(p)) for p in files]
    image = np.stack([np.asarray(i.dataobj, dtype=np.float32) for i in imgs])
    from_file = calibseg.predict(run, files[0])
    from_array = calibseg.predict(run, np.asfortranarray(image), affine=imgs[0].affine)
    np.testing.assert_array_equal(from_array, from_file)


def test_predict_errors(tmp_path):
    run = run_folder(tmp_path)
    with pytest.raises(ValueError, match="plan.json"):
        calibseg.predict(tmp_path, PREDICT / "imagesTs" / "case_a_0000.nii.gz")
    with pytest.raises(ValueError, match="channel"):
        calibseg.predict(run, np.ones((3, 8, 8, 8), np.float32))
    with pytest.raises(ValueError, match="affine"):
        calibseg.predict(run, np.zeros((2, 8, 8, 8), np.float32), affine=np.eye(3))
    with pytest.raises(ValueError, match="checkpoint"):
        calibseg.predict(run, np.zeros((2, 8, 8, 8), np.float32), checkpoint="middle")


# ---- the console script: the command itself ----

def calibseg_script():
    exe = pathlib.Path(sys.executable).parent / ("calibseg.exe" if sys.platform == "win32" else "calibseg")
    if not exe.exists():
        pytest.skip("the console script is not installed beside this interpreter")
    return str(exe)


def test_console_script_is_the_command(tmp_path):
    exe = calibseg_script()
    out = subprocess.run([exe, "devices"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "would use:" in out.stdout
    bad = subprocess.run([exe, "eval", "--no-such-flag"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.startswith("calibseg: ") and bad.stderr.count("\n") == 1
    # predict --model through the script writes what calibseg.predict returns (as nnU-Net's .npz).
    run = run_folder(tmp_path)
    ok = subprocess.run([exe, "predict", "--model", str(run), "--input",
                         str(PREDICT / "imagesTs" / "case_b_0000.nii.gz"), "--output", str(tmp_path / "out"),
                         "--save-probabilities"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    written = np.load(tmp_path / "out" / "case_b.npz")["probabilities"]  # (C, z, y, x)
    np.testing.assert_array_equal(written.transpose(0, 3, 2, 1), calibseg.predict(run, PREDICT / "imagesTs" / "case_b_0000.nii.gz"))
