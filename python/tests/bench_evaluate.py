"""Times calibseg.evaluate beside MONAI's CalibrationErrorMetric on the same arrays and cores (run by hand,
not by pytest): python python/tests/bench_evaluate.py [N C X Y Z]. Needs torch and a MONAI that has
CalibrationErrorMetric (1.6 or later, or monai-weekly)."""

import os
import sys
import time

import numpy as np
import torch

import calibseg

try:
    from monai.metrics import CalibrationErrorMetric
except ImportError:  # MONAI < 1.6
    CalibrationErrorMetric = None

shape = tuple(int(s) for s in sys.argv[1:]) or (8, 4, 96, 96, 96)
rng = np.random.default_rng(0)
logits = rng.standard_normal(shape, dtype=np.float32)
probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
labels = rng.integers(0, shape[1], size=(shape[0], 1) + shape[2:]).astype(np.int64)
calibseg.evaluate(probs[:1, :, :8, :8, :8], labels[:1, :, :8, :8, :8])  # opens the device, builds kernels
t = time.perf_counter()
r = calibseg.evaluate(probs, labels)
t_calibseg = time.perf_counter() - t
adapter = [d["name"] for d in calibseg.devices() if d["used"]]
print(f"shape {shape}, {os.cpu_count()} CPUs, adapter {adapter}")
print(f"calibseg.evaluate (ECE, ACE, MCE, DSC, histogram in one call): {t_calibseg:.2f} s")
if CalibrationErrorMetric is None:
    sys.exit("this MONAI has no CalibrationErrorMetric")
onehot = np.eye(shape[1], dtype=np.float32)[labels[:, 0]].transpose(0, 4, 1, 2, 3)
p, y = torch.from_numpy(probs), torch.from_numpy(np.ascontiguousarray(onehot))
total = 0.0
for key, reduction in (("ece", "expected"), ("ace", "average"), ("mce", "maximum")):
    m = CalibrationErrorMetric(num_bins=20, include_background=False, calibration_reduction=reduction,
                               metric_reduction="none")
    t = time.perf_counter()
    value = m(p, y)
    elapsed = time.perf_counter() - t
    total += elapsed
    diff = np.nanmax(np.abs(r[key] - value.numpy()))
    print(f"MONAI CalibrationErrorMetric({reduction}): {elapsed:.2f} s (torch threads "
          f"{torch.get_num_threads()}); max |{key} difference| {diff:.1e}")
print(f"MONAI, the three together: {total:.2f} s")
