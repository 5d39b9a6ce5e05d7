"""Global-norm clipping followed by each update rule equals ``torch.nn.utils.clip_grad_norm_``
followed by its ``torch.optim`` namesake, step for step over 40 steps in float64."""

import math

import pytest
import torch

import torch_logreg as tl
from torch_logreg import optimizers

from helpers import REFERENCES

# --- clipping the global gradient norm ---------------------------------------------------------

STEPS, LR = 40, 0.05


def gradient_function(seed: int):
    """``grad(params) -> (objective, grads)``: an MLP's manual gradient at the given weights, one
    function for both sides, so they differ only by clipping and update."""
    gen = torch.Generator().manual_seed(seed)
    model = tl.MLP(6, [10], n_outputs=3, activation="tanh", link="softmax").double()
    X = torch.randn(50, 6, generator=gen, dtype=torch.float64)
    T = model.targets(torch.randint(0, 3, (50,), generator=gen), 50)

    def grad(params):
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(params[name])
        _, grads = model.objective_and_grad(X, T, 1e-3)
        return {k: g.clone() for k, g in grads.items()}

    start = {k: (3.0 * torch.randn(p.shape, generator=gen, dtype=torch.float64)) for k, p in model.named_parameters()}
    return grad, start


@pytest.mark.slow
@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf])
@pytest.mark.parametrize("solver", list(REFERENCES))
def test_clipping_then_the_update_rule_equal_torch_over_40_steps(solver, norm_type):
    grad, start = gradient_function(seed=len(solver))
    first_norm = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(g, norm_type) for g in grad(start).values()]), norm_type).item()
    max_norm = 0.3 * first_norm  # clips at the start; unclipped steps later, as the gradient shrinks or not

    ours = {k: v.clone() for k, v in start.items()}
    optimizer = optimizers.make(solver, ours)
    theirs = {k: torch.nn.Parameter(v.clone()) for k, v in start.items()}
    cls, kwargs = REFERENCES[solver]
    reference = cls(list(theirs.values()), lr=LR, **kwargs)
    clipped = 0
    for _ in range(STEPS):
        grads = grad(ours)
        total = optimizers.clip_grad_norm(grads, max_norm, norm_type)
        optimizer.step(ours, grads, LR)

        for k, g in grad({k: p.detach() for k, p in theirs.items()}).items():
            theirs[k].grad = g
        expected_total = torch.nn.utils.clip_grad_norm_(list(theirs.values()), max_norm, norm_type)
        reference.step()
        clipped += bool(expected_total > max_norm)

        assert abs(total.item() - expected_total.item()) <= 1e-10 * expected_total.item()
        for k, p in theirs.items():
            scale = p.detach().abs().max().item()
            assert (ours[k] - p.detach()).abs().max().item() <= 1e-10 * scale, k
    assert clipped > 0


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
def test_clip_grad_norm_on_its_own(norm_type):
    gen = torch.Generator().manual_seed(1)
    grads = {"a.weight": torch.randn(4, 3, generator=gen, dtype=torch.float64),
             "a.bias": torch.randn(4, generator=gen, dtype=torch.float64)}
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads.values()]
    for p, g in zip(params, grads.values()):
        p.grad = g.clone()
    for max_norm in (0.5, 1e6):  # clipped, and left as it was (multiplied by exactly 1)
        before = {k: g.clone() for k, g in grads.items()}
        total = optimizers.clip_grad_norm(grads, max_norm, norm_type)
        expected = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type)
        assert torch.equal(total, expected)
        for g, p in zip(grads.values(), params):
            assert torch.equal(g, p.grad)
        if max_norm == 1e6:
            assert all(torch.equal(grads[k], before[k]) for k in grads)
        else:
            after = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g, norm_type) for g in grads.values()]),
                                             norm_type)
            assert after.item() < max_norm
    zeros = {"w": torch.zeros(3, dtype=torch.float64)}
    assert optimizers.clip_grad_norm(zeros, 1.0).item() == 0.0 and torch.equal(zeros["w"], torch.zeros(3, dtype=torch.float64))
    with pytest.raises(tl.UsageError, match="max_norm"):
        optimizers.clip_grad_norm(grads, 0.0)
    with pytest.raises(tl.UsageError, match="norm_type"):
        optimizers.clip_grad_norm(grads, 1.0, -2.0)
