"""The steps equal the reference step (float64, 1e-12 relative), and the selector picks them
where they apply."""

import itertools

import pytest
import torch

import torch_logreg as tl
from torch_logreg.models import single_linear
from torch_logreg.steps import fused_cpu
from torch_logreg.steps.batch import BatchStep
from torch_logreg.steps.common import transpose
from torch_logreg.steps.feature_major import FeatureMajorStep

from helpers import (
    KINDS,
    assert_reuses_buffers_and_follows_updates,
    assert_same_fit,
    make_model,
    make_targets,
    randomize,
    train_variants,
)

GRID = list(itertools.product(KINDS, (True, False), (0.0, 0.1), (1, 7, 1000), (1, 5, 100)))


@pytest.mark.parametrize("kind,bias,l2,n,d", GRID)
def test_fast_step_equals_reference_step(kind, bias, l2, n, d):
    gen = torch.Generator().manual_seed(GRID.index((kind, bias, l2, n, d)))
    model = make_model(kind, d, bias=bias).double()
    randomize(model, gen)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    T = model.targets(make_targets(kind, n, gen), n)
    loss_ref, grads_ref = model.objective_and_grad(X, T, l2)
    loss_fast, grads_fast = FeatureMajorStep(model, X, T).step(X, T, l2)
    assert abs(loss_fast.item() - loss_ref.item()) <= 1e-12 * max(abs(loss_ref.item()), 1e-300)
    assert grads_fast.keys() == grads_ref.keys()
    for name, g in grads_ref.items():
        scale = g.abs().max().item()
        assert (grads_fast[name] - g).abs().max().item() <= 1e-12 * max(scale, 1e-300), name


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("solver", ["gd", "nesterov"])
@pytest.mark.parametrize("step", ["rule", "feature_major", "row_major"])
def test_fit_with_and_without_fast_path_agree(kind, solver, step):
    fast, ref = train_variants(kind, [{"fast_path": True, "step": step}, {"fast_path": False}], seed=1, solver=solver,
                               lr=0.2, epochs=30, l2=0.01, tol=0, device="cpu")
    # the rule gives a problem this small to the batch kernel where numba is there
    expected = {"rule": "row_major" if fused_cpu.available() else "feature_major"}.get(step, step)
    assert fast[0].stepper.selection.step == expected and ref[0].stepper.name == "reference"
    assert_same_fit(fast, ref)


def test_fast_path_only_where_it_applies():
    X, y = torch.randn(50, 3), torch.randint(0, 2, (50,))
    small = "row_major" if fused_cpu.available() else "feature_major"  # the batch kernel, or torch
    assert tl.Trainer(tl.LogisticRegression(3), X, y, device="cpu").stepper.name == small
    assert tl.Trainer(tl.LogisticRegression(3), X, y, batch_size=10, device="cpu").stepper.name == "batch"
    assert tl.Trainer(tl.LogisticRegression(3), X, y, grad_check_every=5, device="cpu").stepper.name == "reference"
    assert tl.Trainer(tl.LogisticRegression(3), X, y, fast_path=False, device="cpu").stepper.name == "reference"
    assert tl.Trainer(tl.MLP(3, [4]), X, y, device="cpu").stepper.name == "reference"
    assert tl.Trainer(tl.MLP(3, [4]), X, y, batch_size=10, device="cpu").stepper.name == "reference"
    assert single_linear(tl.MLP(3, [4])) is None
    with pytest.raises(TypeError, match="single Linear layer"):
        FeatureMajorStep(tl.MLP(3, [4]), X, torch.zeros(50, 1))


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (4097, 2), (10000, 7)])
def test_transpose(shape):
    X = torch.randn(*shape)
    assert torch.equal(transpose(X), X.T.contiguous())


def test_transpose_leaves_room_for_extra_rows():
    X = torch.randn(9, 4)
    out = transpose(X, extra_rows=2)
    assert out.shape == (6, 9) and out.is_contiguous()
    assert torch.equal(out[:4], X.T)


@pytest.mark.parametrize("kind", KINDS)
def test_fast_step_reuses_its_buffers_and_follows_in_place_updates(kind):
    gen = torch.Generator().manual_seed(3)
    model = make_model(kind, 5).double()
    X = torch.randn(40, 5, generator=gen, dtype=torch.float64)
    T = model.targets(make_targets(kind, 40, gen), 40)
    assert_reuses_buffers_and_follows_updates(FeatureMajorStep(model, X, T), model, X, T, seed=5)


BATCH_GRID = list(itertools.product(KINDS, (True, False), (0.0, 0.1), (1, 7, 64), (1, 5)))


@pytest.mark.parametrize("kind,bias,l2,nb,d", BATCH_GRID)
def test_batch_step_equals_reference_step(kind, bias, l2, nb, d):
    gen = torch.Generator().manual_seed(BATCH_GRID.index((kind, bias, l2, nb, d)))
    model = make_model(kind, d, bias=bias).double()
    randomize(model, gen)
    step = BatchStep(model, 64, torch.float64, "cpu")
    for n in (nb, max(1, nb // 2)):  # a full batch, then a shorter last one in the same buffers
        X = torch.randn(n, d, generator=gen, dtype=torch.float64)
        T = model.targets(make_targets(kind, n, gen), n)
        loss_ref, grads_ref = model.objective_and_grad(X, T, l2)
        loss, grads = step.step(X, T, l2)
        assert abs(loss.item() - loss_ref.item()) <= 1e-12 * max(abs(loss_ref.item()), 1e-300)
        assert grads.keys() == grads_ref.keys()
        for name, g in grads_ref.items():
            assert grads[name].shape == g.shape
            assert (grads[name] - g).abs().max().item() <= 1e-12 * max(g.abs().max().item(), 1e-300), name
    flat = torch.cat([grads[k].reshape(-1) for k in grads])
    assert torch.equal(step.flat_grad, flat)  # the gradients are views of the flat buffer, in order


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("solver", ["gd", "nesterov"])
def test_minibatch_fit_with_and_without_fast_path_agree(kind, solver):
    fast, ref = train_variants(kind, [{"fast_path": True}, {"fast_path": False}], seed=4, solver=solver, lr=0.2,
                               epochs=8, batch_size=32, l2=0.01, tol=0, device="cpu")
    assert fast[0].stepper.name == "batch" and ref[0].stepper.name == "reference"
    assert_same_fit(fast, ref)
    assert fast[2].grad_norm == pytest.approx(ref[2].grad_norm, rel=1e-10)


def test_batch_step_on_an_empty_batch_matches_the_reference():
    model = tl.LogisticRegression(3).double()
    X = torch.zeros(0, 3, dtype=torch.float64)
    T = model.targets(torch.zeros(0, dtype=torch.long), 0)
    loss_ref, grads_ref = model.objective_and_grad(X, T, 0.1)
    loss, grads = BatchStep(model, 8, torch.float64, "cpu").step(X, T, 0.1)
    assert torch.isnan(loss) and torch.isnan(loss_ref)
    for k, g in grads_ref.items():
        torch.testing.assert_close(grads[k], g, equal_nan=True)
