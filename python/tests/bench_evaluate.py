"""Times calibseg.evaluate beside MONAI's CalibrationErrorMetric on the same arrays (run by hand, not by
pytest): python python/tests/bench_evaluate.py [N C X Y Z]. Needs MONAI and torch."""

import sys
import time

import numpy as np
import torch
try:
    from monai.metrics import CalibrationErrorMetric
except ImportError:  # MONAI < 1.6
    CalibrationErrorMetric = None

import calibseg

shape = tuple(int(s) for s in sys.argv[1:]) or (8, 4, 96, 96, 96)
rng = np.random.default_rng(0)
logits = rng.standard_normal(shape, dtype=np.float32)
probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
labels = rng.integers(0, shape[1], size=(shape[0], 1) + shape[2:]).astype(np.int64)
calibseg.evaluate(probs[:1, :, :8, :8, :8], labels[:1, :, :8, :8, :8])  # opens the device, builds kernels
t = time.perf_counter()
r = calibseg.evaluate(probs, labels)
t_calibseg = time.perf_counter() - t
if CalibrationErrorMetric is None:
    print(f"shape {shape}: calibseg.evaluate {t_calibseg:.2f} s; this MONAI has no CalibrationErrorMetric")
    sys.exit(0)
onehot = np.eye(shape[1], dtype=np.float32)[labels[:, 0]].transpose(0, 4, 1, 2, 3)
p, y = torch.from_numpy(probs), torch.from_numpy(np.ascontiguousarray(onehot))
m = CalibrationErrorMetric(num_bins=20, include_background=False, calibration_reduction="expected",
                           metric_reduction="none")
t = time.perf_counter()
ece = m(p, y)
t_monai = time.perf_counter() - t
print(f"shape {shape}: calibseg.evaluate {t_calibseg:.2f} s (ECE, ACE, MCE, DSC, histogram); "
      f"MONAI CalibrationErrorMetric(ECE) {t_monai:.2f} s; torch threads {torch.get_num_threads()}; "
      f"adapter {[d['name'] for d in calibseg.devices() if d['used']]}; "
      f"max |ECE diff| {np.nanmax(np.abs(r['ece'] - ece.numpy())):.2e}")
