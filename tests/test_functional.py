"""Losses on logits: values against torch's own implementations, stability at +-1e4."""

import pytest
import torch
import torch.nn.functional as torchF

from torch_logreg import functional as F


def test_binary_cross_entropy_matches_torch():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(50, 3, generator=gen, dtype=torch.float64) * 5
    t = torch.randint(0, 2, (50, 3), generator=gen).double()
    loss, grad = F.binary_cross_entropy(z, t)
    ref = torchF.binary_cross_entropy_with_logits(z, t, reduction="sum") / 50
    assert torch.allclose(loss, ref, rtol=1e-14, atol=0)
    # sigmoid(z) - t without cancellation: -sigmoid(-z) where t = 1. The gradient is computed to
    # absolute rounding (relative rounding is not reachable from sigmoid(z) - 1 at large z)
    exact = torch.where(t == 1, -torch.sigmoid(-z), torch.sigmoid(z)) / 50
    assert torch.allclose(grad, exact, rtol=0, atol=1e-15 * exact.abs().max().item())


def test_categorical_cross_entropy_matches_torch():
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(40, 5, generator=gen, dtype=torch.float64) * 5
    idx = torch.randint(0, 5, (40,), generator=gen)
    t = torchF.one_hot(idx, 5).double()
    loss, grad = F.categorical_cross_entropy(z, t)
    assert torch.allclose(loss, torchF.cross_entropy(z, idx), rtol=1e-14, atol=0)
    # p - t without cancellation: 1 - p_true is the sum of the other classes' probabilities
    p = torch.softmax(z, 1)
    exact = torch.where(t == 1, -(p * (1 - t)).sum(1, keepdim=True), p) / 40
    assert torch.allclose(grad, exact, rtol=0, atol=1e-15 * exact.abs().max().item())


def test_half_squared_error():
    z = torch.tensor([[1.0], [3.0]], dtype=torch.float64)
    t = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    loss, grad = F.half_squared_error(z, t)
    assert loss.item() == pytest.approx(0.5 * (1 + 4) / 2)
    assert torch.equal(grad, torch.tensor([[0.5], [1.0]], dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_binary_extreme_logits_are_finite_and_exact(dtype):
    z = torch.tensor([[1e4], [-1e4], [1e4], [-1e4]], dtype=dtype)
    t = torch.tensor([[1.0], [0.0], [0.0], [1.0]], dtype=dtype)
    loss, grad = F.binary_cross_entropy(z, t)
    # two confident right answers cost 0, two confident wrong ones cost 1e4 each
    assert torch.isfinite(loss) and loss.item() == pytest.approx(2e4 / 4, rel=1e-12)
    assert torch.equal(grad, torch.tensor([[0.0], [0.0], [0.25], [-0.25]], dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_softmax_extreme_logits_are_finite_and_exact(dtype):
    z = torch.tensor([[1e4, -1e4, 0.0], [1e4, -1e4, 0.0]], dtype=dtype)
    t = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], dtype=dtype)
    loss, grad = F.categorical_cross_entropy(z, t)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(2e4 / 2, rel=1e-12)
    assert torch.equal(grad, torch.tensor([[0.0, 0, 0], [0.5, -0.5, 0]], dtype=dtype))


def test_log_sigmoid_is_stable():
    z = torch.tensor([-1e4, -50.0, 0.0, 50.0, 1e4], dtype=torch.float64)
    assert torch.allclose(F.log_sigmoid(z), torchF.logsigmoid(z), rtol=1e-15, atol=0)
    assert torch.isfinite(F.log_sigmoid(z)).all()
