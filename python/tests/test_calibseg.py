"""calibseg's Python package against the repository's fixtures (MONAI / PyTorch reference numbers)."""

import numpy as np
import pytest

import calibseg
from conftest import load

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
