#!/usr/bin/env python3
"""PyTorch + MONAI's memory for one training step of the paper's SegResNetDS, the figures to set beside
`cargo run --release --example step_memory` (the same step on calibseg).

The step: MONAI's SegResNetDS (init 32, blocks 1,2,2,4,4, dsdepth 4, instance norm, 4 classes) on
`[2, 1, S, S, S]` in training mode, MONAI's DeepSupervisionLoss (exp weights) around 0.33 (Dice + CE + hard
mL1-ACE) (`make_fixtures.py`'s mL1-ACE and MONAI's DiceLoss), backward and AdamW (lr 1e-4, weight decay
1e-5), float32 on the CPU. For each size it prints
- the bytes the forward and its loss keep for the backward: the storages autograd saves
  (`saved_tensors_hooks`), less the weights and the input, the figure calibseg's example counts the same way;
- the peak over the whole first step from `torch.distributed._tools.mem_tracker.MemTracker` (every live
  tensor: weights, gradients, AdamW's moments, activations, temporaries), which is what
  `torch.cuda.max_memory_allocated` reports for the step on a GPU.

Run from the repository root (about two minutes and 12 GiB of memory at 128^3 on 2 cores):

    python3 -m venv .venv && .venv/bin/pip install torch monai safetensors numpy
    .venv/bin/python scripts/torch_step_memory.py [SIZES...]      # default 32 64 128
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch
import torch.nn.functional as F
from monai.losses import DeepSupervisionLoss, DiceLoss
from monai.networks.nets import SegResNetDS
from torch.distributed._tools.mem_tracker import MemTracker

from make_fixtures import DICE_ARGS, ace

MIB = 2**20
CLASSES = 4


def paper_loss(z, y):
    target = y.long()
    dice = DiceLoss(include_background=True, **DICE_ARGS)(z, target)
    return 0.33 * (dice + F.cross_entropy(z, target[:, 0]) + ace(z, target, "hard", True, 20)[0][0])


def setup(size):
    torch.manual_seed(0)
    net = SegResNetDS(spatial_dims=3, init_filters=32, in_channels=1, out_channels=CLASSES,
                      blocks_down=(1, 2, 2, 4, 4), dsdepth=4, norm="INSTANCE")
    net.train()
    x = torch.randn(2, 1, size, size, size)
    # Float labels, as MONAI's DeepSupervisionLoss resamples them to each output's size.
    y = torch.randint(0, CLASSES, (2, 1, size, size, size)).float()
    return net, x, y, DeepSupervisionLoss(paper_loss)


def measure(size):
    """One first training step: the bytes of the weights, of the storages its forward and loss save for the
    backward (not the weights' or the input's), and MemTracker's peak over the whole step by kind."""
    net, x, y, loss_fn = setup(size)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=1e-5)
    weights = {p.untyped_storage().data_ptr() for p in net.parameters()}
    weights.add(x.untyped_storage().data_ptr())
    saved = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in weights:
            saved[s.data_ptr()] = s.nbytes()
        return t

    tracker = MemTracker()
    tracker.track_external(net, opt, x, y)
    with tracker:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        del loss
    peak = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]
    weight_bytes = sum(p.numel() * p.element_size() for p in net.parameters())
    return weight_bytes, sum(saved.values()), {str(k).split(".")[-1]: v for k, v in peak.items()}


def main():
    sizes = [int(s) for s in sys.argv[1:]] or [32, 64, 128]
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    for s in sizes:
        weights, kept, peak = measure(s)
        voxels = 2 * s**3
        print(f"[2, 1, {s}^3]: weights {weights / MIB:.1f} MiB; kept by the forward and loss for the backward "
              f"{kept / MIB:.1f} MiB ({kept / voxels:.1f} bytes per voxel of the batch)", flush=True)
        kinds = ", ".join(f"{k.lower()} {v / MIB:.1f}" for k, v in peak.items() if k != "Total" and v > 0)
        print(f"[2, 1, {s}^3] one training step: peak {peak['Total'] / MIB:.1f} MiB ({kinds} MiB)", flush=True)


if __name__ == "__main__":
    main()
