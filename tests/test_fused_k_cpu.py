"""The single-pass fused step for any number of outputs on CPU (``steps/fused_k_cpu.py``) equals the
reference step within the rounding of another summation order, on every kind, with and without an
intercept and an L2 term, for row counts of one chunk, many chunks and a short last one; its
result does not depend on the number of threads; the loop takes it when forced or the rule takes it;
where it cannot run, it says why."""

import itertools

import pytest
import torch

from torch_logreg.steps import fused_k_cpu, select
from torch_logreg.steps.fused_k_cpu import FusedKStep

from helpers import (
    KINDS,
    assert_reuses_buffers_and_follows_updates,
    assert_same_fit,
    assert_step_equals_reference,
    step_problem,
    train_variants,
)

pytestmark = pytest.mark.skipif(fused_k_cpu.numba is None, reason="numba is not importable")

#: one row, fewer rows than a tile, one chunk of tiles, many chunks with a short last one
SIZES = (1, 37, 640, 5003)
GRID = list(itertools.product(KINDS, (True, False), (0.0, 0.1), (torch.float64, torch.float32), SIZES))


def problem(kind: str, n: int, d: int = 9, *, bias: bool = True, dtype=torch.float64, seed: int = 0):
    return step_problem(kind, n, d, bias=bias, dtype=dtype, seed=seed)


@pytest.mark.parametrize("kind,bias,l2,dtype,n", GRID)
def test_fused_k_step_equals_reference_step(kind, bias, l2, dtype, n):
    model, X, T = problem(kind, n, bias=bias, dtype=dtype, seed=GRID.index((kind, bias, l2, dtype, n)))
    assert_step_equals_reference(FusedKStep(model, X, T), model, X, T, l2)


@pytest.mark.parametrize("kind", KINDS)
def test_fused_k_step_follows_in_place_updates(kind):
    model, X, T = problem(kind, 700, 5, seed=3)
    # its gradients are fresh tensors each step (the chunks' float64 sums, cast once)
    assert_reuses_buffers_and_follows_updates(FusedKStep(model, X, T), model, X, T, same_buffers=False)


def test_the_result_does_not_depend_on_the_thread_count():
    model, X, T = problem("softmax", 5003, seed=1)
    results = []
    for threads in (1, 2):
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            loss, grads = FusedKStep(model, X, T).step(X, T, 0.1)
        finally:
            torch.set_num_threads(old)
        results.append((loss.clone(), {k: g.clone() for k, g in grads.items()}))
    (a, ga), (b, gb) = results
    assert torch.equal(a, b) and all(torch.equal(ga[k], gb[k]) for k in ga)


def test_no_rows_give_a_nan_loss_and_zero_gradients_like_the_reference():
    model, X, T = problem("softmax", 0)
    loss, grads = FusedKStep(model, X, T).step(X, T, 0.0)
    loss_ref, grads_ref = model.objective_and_grad(X, T, 0.0)
    assert torch.isnan(loss) and torch.isnan(loss_ref)
    assert all(torch.equal(grads[k], grads_ref[k]) for k in grads_ref)


@pytest.mark.parametrize("kind", KINDS)
def test_a_forced_fused_step_fits_like_the_reference(kind):
    fused, ref = train_variants(kind, [{"step": "fused"}, {"step": "reference"}], seed=2, solver="nesterov", lr=0.2,
                                epochs=15, l2=0.01, tol=0, device="cpu")
    assert fused[0].stepper.selection.step == "fused" and ref[0].stepper.name == "reference"
    assert_same_fit(fused, ref)


def test_where_it_cannot_run_it_says_why():
    model, X, T = problem("softmax", 10)
    assert "contiguous" in fused_k_cpu.problem(model, X.T.contiguous().T)
    assert "dtype" in fused_k_cpu.problem(model, X.float())
    with pytest.raises(TypeError, match="fused K-output CPU step"):
        FusedKStep(model, X.float(), T.float())


@pytest.mark.parametrize("kind,dtype,wide", [
    ("softmax", torch.float32, fused_k_cpu.RULE_MIN_FEATURES_VECTOR_LINK),  # its exponentials vectorised
    ("multilabel", torch.float32, fused_k_cpu.RULE_MIN_FEATURES_VECTOR_LINK),
    ("softmax", torch.float64, fused_k_cpu.RULE_MIN_FEATURES),  # the C library's exp, a row at a time
])
def test_the_rule_takes_it_for_few_outputs_on_a_wide_x(kind, dtype, wide):
    """From ``rule_min_features`` features and up to RULE_MAX_OUTPUTS outputs (a problem too large
    for the one-thread batch kernel), the fixed rule takes this step; a narrower X or more outputs
    keep the feature-major step."""
    from torch_logreg.steps.feature_major import FeatureMajorStep

    k_max = fused_k_cpu.RULE_MAX_OUTPUTS
    for d, k, expected in ((wide, 2, FusedKStep), (wide, k_max, FusedKStep), (wide - 1, 3, FeatureMajorStep),
                           (wide, k_max + 1, FeatureMajorStep)):
        n = 2 * (1 << 21) // (d * k) + 1  # twice the batch kernel's one-thread limit
        model, X, T = step_problem(kind, n, d, dtype=dtype, outputs=k)
        assert fused_k_cpu.rule_min_features(model, dtype) == wide
        assert isinstance(select.full_batch(model, X, T, step="rule"), expected), (d, k)


def test_outputs_without_exponentials_keep_the_plain_threshold():
    class Identity:  # several identity outputs: nothing to vectorise in the link
        link = "identity"

    assert fused_k_cpu.rule_min_features(Identity, torch.float32) == fused_k_cpu.RULE_MIN_FEATURES


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bad", ["nan_weight", "inf_weight", "minus_inf_weight", "inf_x"])
def test_non_finite_values_reach_the_softmax_loss(dtype, bad):
    """The loop's divergence check reads the loss: a NaN or an infinity in the weights or in X must
    reach it, through the float32 softmax's vectorised exponentials too (their argument is clamped
    below, so only the loss terms carry it)."""
    model, X, T = problem("softmax", 700, 6, dtype=dtype, seed=8)
    with torch.no_grad():
        if bad == "nan_weight":
            model.linear.weight[1, 2] = float("nan")
        elif bad == "inf_weight":
            model.linear.weight[0, 3] = float("inf")
        elif bad == "minus_inf_weight":
            model.linear.weight[2, 0] = float("-inf")
        else:
            X[123, 4] = float("inf")
    loss, _ = FusedKStep(model, X, T).step(X, T, 0.0)
    assert not torch.isfinite(loss).item()
