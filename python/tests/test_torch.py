"""calibseg.torch against the fixtures' reference losses and autograd gradients (scripts/make_fixtures.py:
mL1-ACE from the paper authors' code's maths, MONAI's Dice/DiceCE), where torch is importable."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import calibseg  # noqa: E402
import calibseg.torch as ct  # noqa: E402
from conftest import load  # noqa: E402

CASES = ["loss_b2_c4_8x8x8.safetensors", "loss_b2_c3_empty_class.safetensors",
         "loss_b3_c3_2d_bins7.safetensors", "loss_b1_c2_saturated.safetensors"]
MODULES = [(ct.HardL1ACELoss, "ace.hard"), (ct.SoftL1ACELoss, "ace.soft"),
           (ct.HardL1ACEandDiceCELoss, "ace_dice_ce.hard"), (ct.SoftL1ACEandDiceCELoss, "ace_dice_ce.soft")]


def step(module, f, target=None, dtype=torch.float32):
    x = torch.from_numpy(f["logits"]).to(dtype).requires_grad_()
    y = torch.from_numpy(f["labels"]) if target is None else target
    loss = module(x, y)
    loss.backward()
    return loss, x.grad


@pytest.mark.parametrize("name", CASES)
def test_modules_loss_and_backward_are_the_fixtures(name):
    f = load(name)
    nb = int(f["__metadata__"]["num_bins"])
    for cls, key in MODULES:
        for bg in ((True, False) if key.startswith("ace.") else (True,)):
            tag = key + (".bg" if bg else ".nobg") if key.startswith("ace.") else key
            loss, grad = step(cls(num_bins=nb, include_background=bg), f)
            assert loss.dtype == torch.float32 and loss.shape == ()
            np.testing.assert_allclose(loss.item(), f[f"{tag}.loss"][0], rtol=0, atol=1e-5)
            np.testing.assert_allclose(grad.numpy(), f[f"{tag}.grad"], rtol=0, atol=1e-4)


def test_lambdas_one_hot_targets_and_upstream_gradients():
    f = load("loss_b2_c4_8x8x8.safetensors")
    labels = torch.from_numpy(f["labels"]).long()
    one_hot = torch.nn.functional.one_hot(labels[:, 0], 4).movedim(-1, 1).float()
    module = ct.SoftL1ACEandDiceCELoss(lambda_dice=1.0, lambda_ce=1.0, lambda_ace=0.0)
    loss, grad = step(module, f, target=one_hot)
    np.testing.assert_allclose(loss.item(), f["dice_ce.loss"][0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(grad.numpy(), f["dice_ce.grad"], rtol=0, atol=1e-4)
    # Labels without the channel axis, and a scaled upstream gradient through the autograd graph.
    x = torch.from_numpy(f["logits"]).requires_grad_()
    (3.0 * ct.HardL1ACELoss()(x, labels[:, 0])).backward()
    np.testing.assert_allclose(x.grad.numpy(), 3.0 * f["ace.hard.bg.grad"], rtol=0, atol=3e-4)


def test_float16_tensors_keep_their_dtype():
    f = load("loss_b3_c3_2d_bins7.safetensors")
    loss, grad = step(ct.HardL1ACELoss(num_bins=7), f, dtype=torch.float16)
    assert loss.dtype == torch.float16 and grad.dtype == torch.float16
    want_loss, want_grad = calibseg.ace_loss(f["logits"].astype(np.float16), f["labels"], num_bins=7,
                                             include_background=True)
    assert loss.item() == np.float16(want_loss)
    np.testing.assert_array_equal(grad.numpy(), want_grad.astype(np.float16))


def test_bad_targets_raise_value_error():
    x = torch.zeros((1, 2, 4, 4), requires_grad=True)
    with pytest.raises(ValueError, match="non-integer"):
        ct.HardL1ACELoss()(x, torch.full((1, 1, 4, 4), 0.5))
    with pytest.raises(ValueError, match="labels must be"):
        ct.HardL1ACELoss()(x, torch.zeros((1, 1, 3, 4), dtype=torch.long))
