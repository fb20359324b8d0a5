"""calibseg: GPU calibration metrics, reliability pictures, mL1-ACE losses and prediction on numpy arrays.

The work is done by the calibseg Rust crate through wgpu (Vulkan, Metal, DX12, GL); one device is opened
lazily per process (``WGPU_BACKEND``, ``WGPU_ADAPTER_NAME`` honoured) and reused, and the GIL is released
while it works. Bad input raises ``ValueError`` with calibseg's one-line message, a file that cannot be
read or written ``OSError``; no adapter or a device error raises ``GpuError`` (a ``RuntimeError``).
``calibseg.torch`` (where torch is installed) has the losses as PyTorch modules.
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
    predict,
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
    "predict",
    "reliability_diagram",
]


def main() -> int:
    """The ``calibseg`` console script: the command itself (``calibseg --help``), with this process's
    arguments; exits with the command's status."""
    import signal
    import sys

    from ._calibseg import run_command

    # Ctrl-C ends the command at once, as it ends the native binary (Python's handler would wait for it).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.stdout.flush()
    sys.exit(run_command(["calibseg"] + sys.argv[1:]))
