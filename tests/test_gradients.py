"""The manual gradient against the closed form, autograd and finite differences."""

import itertools

import pytest
import torch

import torch_logreg as tl
from torch_logreg.gradients import (
    ManualFunction,
    autograd_gradient,
    autograd_objective,
    closed_form_gradient,
)

from helpers import KINDS, make_model, make_targets, randomize, scale_to_logits

GRID = list(itertools.product(KINDS, (True, False), (0.0, 0.1), (1, 7, 1000), (1, 5, 100), (None, 1e4)))
SEEDS = {case: i for i, case in enumerate(GRID)}


@pytest.mark.parametrize("kind,bias,l2,n,d,logit_scale", GRID)
def test_manual_matches_closed_form_and_autograd(kind, bias, l2, n, d, logit_scale):
    gen = torch.Generator().manual_seed(SEEDS[(kind, bias, l2, n, d, logit_scale)])
    model = make_model(kind, d, bias=bias).double()
    randomize(model, gen)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    if logit_scale:
        scale_to_logits(model, X, logit_scale)
    T = model.targets(make_targets(kind, n, gen), n)

    loss, manual = model.objective_and_grad(X, T, l2)
    assert torch.isfinite(loss)
    ref_loss = autograd_objective(model, X, T, l2).detach()
    assert abs(loss.item() - ref_loss.item()) <= 1e-10 * max(1.0, abs(ref_loss.item()))

    for reference in (closed_form_gradient(model, X, T, l2), autograd_gradient(model, X, T, l2)):
        assert set(reference) == set(manual) == {n for n, _ in model.named_parameters()}
        for name, g in manual.items():
            r = reference[name]
            assert torch.isfinite(g).all()
            scale = max(g.abs().max().item(), r.abs().max().item(), 1e-300)
            assert (g - r).abs().max().item() <= 1e-10 * scale, (name, (g - r).abs().max().item(), scale)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("l2", [0.0, 0.1])
def test_check_gradients_report_passes_with_finite_differences(kind, l2):
    gen = torch.Generator().manual_seed(3)
    model = make_model(kind, 5).double()
    randomize(model, gen)
    X = torch.randn(20, 5, generator=gen, dtype=torch.float64)
    report = tl.check_gradients(model, X, make_targets(kind, 20, gen), l2=l2)
    assert report.passed, str(report)
    refs = {c.reference for c in report.comparisons}
    assert refs == {"closed_form", "autograd", "finite_difference"}
    fd = [c for c in report.comparisons if c.reference == "finite_difference"]
    assert all(c.max_rel_error < 1e-6 for c in fd)
    assert "PASS" in str(report)


def test_check_gradients_catches_a_wrong_gradient():
    """A report that cannot fail proves nothing: break the backward and see it fail."""
    gen = torch.Generator().manual_seed(4)
    model = tl.LogisticRegression(4).double()
    randomize(model, gen)
    X = torch.randn(30, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 2, (30,), generator=gen)
    original = model.linear.backward

    def wrong_backward(grad_output, need_input_grad=True):
        out = original(grad_output, need_input_grad)
        model.linear.grads["weight"] = model.linear.grads["weight"] * (1 + 1e-6)
        return out

    model.linear.backward = wrong_backward
    report = tl.check_gradients(model, X, y)
    assert not report.passed
    worst = report.worst()
    assert worst.parameter == "linear.weight"
    assert "FAIL" in str(report)


def test_closed_form_is_skipped_for_stacked_layers():
    torch.manual_seed(9)
    model = tl.MLP(3, [4], n_outputs=1).double()
    X = torch.randn(10, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (10,))
    report = tl.check_gradients(model, X, y)
    assert "closed_form" in report.skipped
    assert report.passed, str(report)


def test_float32_report_uses_float32_tolerances():
    gen = torch.Generator().manual_seed(5)
    model = tl.SoftmaxRegression(6, 4)
    randomize(model, gen)
    X = torch.randn(50, 6, generator=gen)
    report = tl.check_gradients(model, X, torch.randint(0, 4, (50,), generator=gen))
    assert report.passed, str(report)
    assert all(c.tolerance >= 1e-4 for c in report.comparisons)


@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck_linear_manual_backward(bias):
    torch.manual_seed(0)
    layer = tl.Linear(4, 3, bias=bias).double()
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, *p: ManualFunction.apply(layer, x, *p), (x, *layer.parameters()))


@pytest.mark.parametrize("layer_cls", [tl.Sigmoid, tl.Tanh, tl.ReLU])
def test_gradcheck_activation_manual_backward(layer_cls):
    torch.manual_seed(1)
    layer = layer_cls()
    x = torch.randn(5, 3, dtype=torch.float64)
    x = (x + 0.1 * torch.sign(x)).requires_grad_()  # keep ReLU away from its kink
    assert torch.autograd.gradcheck(lambda x: ManualFunction.apply(layer, x), (x,))


def test_manual_function_rejects_foreign_parameters():
    layer = tl.Linear(2, 1).double()
    other = torch.nn.Parameter(torch.zeros(1, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="own parameters"):
        ManualFunction.apply(layer, torch.zeros(1, 2, dtype=torch.float64), other, layer.bias)
