"""calibseg: GPU calibration metrics, reliability pictures and mL1-ACE losses on numpy arrays.

The work is done by the calibseg Rust crate through wgpu (Vulkan, Metal, DX12, GL); one device is opened
lazily per process (``WGPU_BACKEND``, ``WGPU_ADAPTER_NAME`` honoured) and reused. Bad input raises
``ValueError`` with calibseg's one-line message; no adapter or a device error raises ``GpuError``
(a ``RuntimeError``).
"""

from ._calibseg import (
    CalibrationMetric,
    GpuError,
    ace_dice_ce_loss,
    ace_loss,
    dataset_reliability_histogram,
    devices,
    dice_ce_loss,
    evaluate,
    reliability_diagram,
)

__all__ = [
    "CalibrationMetric",
    "GpuError",
    "ace_dice_ce_loss",
    "ace_loss",
    "dataset_reliability_histogram",
    "devices",
    "dice_ce_loss",
    "evaluate",
    "reliability_diagram",
]
