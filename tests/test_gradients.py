"""The manual gradient against the closed form, autograd and finite differences."""

import itertools

import pytest
import torch

import torch_logreg as tl
from torch_logreg.gradients import (
    TOLERANCES,
    ManualFunction,
    autograd_gradient,
    autograd_objective,
    closed_form_gradient,
    compare_gradients,
    rounding_scale,
)
from torch_logreg.solvers import fit_exact

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


# --- near an optimum: an entry is a tiny sum of terms of size ~1 ---------------------------------


def at_optimum(kind: str, sort: bool = False, offset: float = 0.0, n: int = 2000):
    """A float64 model fit by Newton to a max-abs gradient of 1e-13, then every parameter moved by
    ``offset``; its data ``X`` and prepared targets ``T`` (rows sorted by target when ``sort``: long
    runs of residuals of one sign, the hardest order for a sum)."""
    gen = torch.Generator().manual_seed(21)
    X = torch.randn(n, 5, generator=gen, dtype=torch.float64) * 2 + 1
    y = make_targets(kind, n, gen)
    if sort:
        order = (y if y.dim() == 1 else y[:, 0]).argsort(stable=True)
        X, y = X[order], y[order]
    model = make_model(kind, 5).double()
    fit_exact(model, X, y, solver="newton", tol=1e-13, warn=False, check_separation=False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(offset)
    T = model.targets(y, n)
    return model, X, T


def max_gradient(model, X, T, l2: float = 0.0) -> float:
    _, grads = model.objective_and_grad(X, T, l2)
    return max(g.abs().max().item() for g in grads.values())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("offset,largest", [(1e-9, 1e-7), (0.0, 1e-13)])
@pytest.mark.parametrize("sort", [False, True])
def test_float64_check_passes_near_the_optimum(kind, offset, largest, sort):
    """Near the optimum a gradient entry is ~1e-9 or less, the cancelled sum of N terms of size
    ~1/N: the closed form and autograd sum them in another order, which changes that tiny result by
    a large fraction of itself. The check allows each entry the rounding of its terms instead."""
    model, X, T = at_optimum(kind, sort, offset)
    assert max_gradient(model, X, T) <= largest
    report = compare_gradients(model, X, T)
    assert report.passed, str(report)
    assert {c.reference for c in report.comparisons} == {"closed_form", "autograd", "finite_difference"}


@pytest.mark.slow
def test_grad_check_every_does_not_fail_near_the_optimum():
    model, X, T = at_optimum("softmax")
    history = tl.fit(model, X, T, solver="gd", lr=0.1, epochs=4, tol=0.0, grad_check_every=1, device="cpu")
    assert [s for s, _ in history.grad_checks] == [0, 1, 2, 3]
    assert max(e for _, e in history.grad_checks) <= TOLERANCES[torch.float64]["finite_difference"]


def _offset_backward(model, name: str, offset: torch.Tensor) -> None:
    """Make the model's manual backward return its gradient plus ``offset`` for ``name``."""
    original = model.linear.backward

    def backward(grad_output, need_input_grad=True):
        out = original(grad_output, need_input_grad)
        model.linear.grads[name] = model.linear.grads[name] + offset
        return out

    model.linear.backward = backward


@pytest.mark.parametrize("kind", ["binary", "softmax"])
@pytest.mark.parametrize("name", ["weight", "bias"])
def test_rounding_sized_difference_passes_and_a_real_error_fails_near_the_optimum(kind, name):
    """Deterministic, whatever the machine's rounding: a difference of a few eps times the summed
    size of the terms (what another summation order may give) passes although it is many times the
    gradient itself, and an error of 1e-6 of the terms' size (each term off by 1e-6 relative) fails."""
    model, X, T = at_optimum(kind, offset=1e-9)
    eps = torch.finfo(torch.float64).eps
    terms = rounding_scale(model, X, T)[f"linear.{name}"]
    _, grads = model.objective_and_grad(X, T)
    gradient = grads[f"linear.{name}"].abs().max().item()

    rounding = 4 * eps * terms
    # a relative test against the result (floor 1e-12) would call this a failure
    assert rounding.max().item() > 10 * TOLERANCES[torch.float64]["autograd"] * max(gradient, 1e-12)
    _offset_backward(model, name, rounding)
    report = compare_gradients(model, X, T, references=("closed_form", "autograd"))
    assert report.passed, str(report)

    model, X, T = at_optimum(kind, offset=1e-9)
    _offset_backward(model, name, 1e-6 * terms)
    report = compare_gradients(model, X, T, references=("closed_form", "autograd"))
    assert not report.passed
    failed = {(c.reference, c.parameter) for c in report.comparisons if not c.passed}
    assert failed == {("closed_form", f"linear.{name}"), ("autograd", f"linear.{name}")}


def test_a_relative_error_is_still_caught_away_from_the_optimum():
    gen = torch.Generator().manual_seed(8)
    model = tl.SoftmaxRegression(4, 3).double()
    randomize(model, gen)
    X = torch.randn(500, 4, generator=gen, dtype=torch.float64)
    T = model.targets(torch.randint(0, 3, (500,), generator=gen), 500)
    _, grads = model.objective_and_grad(X, T)
    _offset_backward(model, "weight", 1e-6 * grads["linear.weight"])
    report = compare_gradients(model, X, T, references=("closed_form", "autograd"))
    assert not report.passed and report.worst().parameter == "linear.weight"


@pytest.mark.parametrize("kind", [*KINDS, "mlp"])
@pytest.mark.parametrize("l2", [0.0, 0.1])
def test_rounding_scale_bounds_the_gradient(kind, l2):
    """The summed size of the terms is at least the size of their sum, entry by entry."""
    gen = torch.Generator().manual_seed(13)
    model = (tl.MLP(4, [6, 5], n_outputs=3) if kind == "mlp" else make_model(kind, 4)).double()
    randomize(model, gen)
    X = torch.randn(50, 4, generator=gen, dtype=torch.float64)
    T = model.targets(make_targets("multilabel" if kind == "mlp" else kind, 50, gen), 50)
    _, grads = model.objective_and_grad(X, T, l2)
    scale = rounding_scale(model, X, T, l2)
    assert set(scale) == set(grads)
    for name, g in grads.items():
        assert scale[name].shape == g.shape
        assert bool((scale[name] >= g.abs()).all()), name


def test_rounding_scale_of_a_logistic_model():
    gen = torch.Generator().manual_seed(14)
    model = tl.LogisticRegression(3).double()
    randomize(model, gen)
    X = torch.randn(20, 3, generator=gen, dtype=torch.float64)
    T = model.targets(torch.randint(0, 2, (20,), generator=gen), 20)
    W, b = model.linear.weight, model.linear.bias
    z_size = X.abs() @ W.abs().T + b.abs()
    per_row = (torch.sigmoid(X @ W.T + b) + T + z_size) / 20
    scale = rounding_scale(model, X, T, l2=0.5)
    torch.testing.assert_close(scale["linear.weight"], per_row.T @ X.abs() + 0.5 * W.abs())
    torch.testing.assert_close(scale["linear.bias"], per_row.sum(0))


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
