"""PyTorch loss modules whose backward is calibseg's analytic gradient (torch is not a dependency).

Names and options are the paper code's (``cai4cai/Average-Calibration-Losses``): ``HardL1ACELoss``,
``SoftL1ACELoss``, ``HardL1ACEandDiceCELoss``, ``SoftL1ACEandDiceCELoss`` with ``include_background``,
``softmax``, ``num_bins``, ``lambda_dice``, ``lambda_ce``, ``lambda_ace`` (and ``empty_weight`` of the soft
binning). Each is a ``torch.nn.Module`` around a ``torch.autograd.Function``, so
``loss = loss_fn(predictions, ground_truth); loss.backward()`` works in any PyTorch loop, on tensors on
any torch device, while calibseg computes on the GPU wgpu reaches.

Tensors pass through host memory. A forward call copies the input to a host float32 array (4 bytes per
element; the native layer makes one more such copy before the upload) and the labels to int32 (4 bytes
per voxel, 8 more in the native layer), and gets the gradient back as a host float32 array of the input's
size, which is kept (moved to the input's device and dtype) until backward. Peak host memory is about 12
bytes per input element plus 12 per voxel, on top of the tensors themselves; tensors on a CUDA or MPS
device are also copied to the host and back.
"""

from typing import Any, Callable, Dict

import numpy as np
import torch

from . import ace_dice_ce_loss, ace_loss

__all__ = ["HardL1ACELoss", "SoftL1ACELoss", "HardL1ACEandDiceCELoss", "SoftL1ACEandDiceCELoss"]


def _host_f32(x: torch.Tensor) -> np.ndarray:
    return x.detach().to("cpu", torch.float32).contiguous().numpy()


def _labels(target: torch.Tensor, input: torch.Tensor) -> np.ndarray:
    """Class indices ``(N, 1, *spatial)`` from index labels ``(N, 1, *spatial)`` / ``(N, *spatial)`` or
    one-hot ``(N, C, *spatial)`` targets (the paper code's ``to_onehot_y=False`` form)."""
    target = target.detach()
    if target.dim() == input.dim() and target.shape[1] == input.shape[1] and input.shape[1] > 1:
        target = target.argmax(1, keepdim=True)
    elif target.is_floating_point():
        rounded = target.round()
        if not torch.equal(rounded, target):
            raise ValueError("target holds non-integer class indices (give indices or a one-hot target)")
        target = rounded
    return target.to("cpu", torch.int32).contiguous().numpy()


class _CalibsegLoss(torch.autograd.Function):
    """The loss value forward; calibseg's gradient (computed in the same call) backward."""

    @staticmethod
    def forward(ctx: Any, input: torch.Tensor, target: torch.Tensor, fn: Callable, kwargs: Dict[str, Any]):
        loss, grad = fn(_host_f32(input), _labels(target, input), **kwargs)
        ctx.save_for_backward(torch.from_numpy(grad).to(input.device, input.dtype))
        return torch.tensor(loss, dtype=input.dtype, device=input.device)

    @staticmethod
    def backward(ctx: Any, upstream: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad * upstream, None, None, None


class HardL1ACELoss(torch.nn.Module):
    """Hard-binned marginal L1 average calibration error (hL1-ACE), mean over images and classes.

    ``input`` ``(N, C, *spatial)``: logits with ``softmax=True`` (the paper's configuration), else
    probabilities. ``target``: class indices ``(N, 1, *spatial)`` or ``(N, *spatial)``, or one-hot
    ``(N, C, *spatial)``. Classes absent from an image count 0 (``ignore_empty_classes``).
    """

    binning = "hard"

    def __init__(self, num_bins: int = 20, include_background: bool = True, softmax: bool = True,
                 empty_weight: float = 0.01) -> None:
        super().__init__()
        self.kwargs: Dict[str, Any] = dict(binning=self.binning, num_bins=num_bins,
                                           include_background=include_background, softmax=softmax,
                                           empty_weight=empty_weight)

    _fn = staticmethod(ace_loss)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _CalibsegLoss.apply(input, target, self._fn, self.kwargs)


class SoftL1ACELoss(HardL1ACELoss):
    """Soft-binned (hat kernels) marginal L1 average calibration error (sL1-ACE); bins holding less weight
    than ``empty_weight`` are skipped. Input and target as :class:`HardL1ACELoss`."""

    binning = "soft"


class HardL1ACEandDiceCELoss(HardL1ACELoss):
    """``lambda_ace * hL1-ACE + lambda_dice * Dice + lambda_ce * CE`` (0.33 each: the paper's training
    loss; MONAI's Dice with ``squared_pred=True, smooth_nr=0, smooth_dr=1e-5``). Input and target as
    :class:`HardL1ACELoss`."""

    _fn = staticmethod(ace_dice_ce_loss)

    def __init__(self, num_bins: int = 20, include_background: bool = True, softmax: bool = True,
                 lambda_dice: float = 0.33, lambda_ce: float = 0.33, lambda_ace: float = 0.33,
                 empty_weight: float = 0.01) -> None:
        super().__init__(num_bins, include_background, softmax, empty_weight)
        self.kwargs.update(lambda_dice=lambda_dice, lambda_ce=lambda_ce, lambda_ace=lambda_ace)


class SoftL1ACEandDiceCELoss(HardL1ACEandDiceCELoss):
    """``lambda_ace * sL1-ACE + lambda_dice * Dice + lambda_ce * CE``, as :class:`HardL1ACEandDiceCELoss`
    with soft binning."""

    binning = "soft"
