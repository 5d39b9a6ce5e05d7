"""The single-pass fused CPU step equals the reference step; its float32 maths is accurate."""

import itertools
import math

import numpy as np
import pytest
import torch

import torch_logreg as tl
from torch_logreg.steps import fused_cpu, poly_f32, select
from torch_logreg.steps.feature_major import FeatureMajorStep
from torch_logreg.steps.fused_cpu import FusedStep
from torch_logreg.steps.row_major import RowMajorStep

from helpers import make_model, make_targets, randomize, scale_to_logits

pytestmark = pytest.mark.skipif(not fused_cpu.available(), reason="numba is not importable")

# row counts around the tile and chunk edges; float64 rows of 100 features make tiles of 20 rows,
# of 200 features wide rows (64-row tiles, no prefetch: fused_cpu.tile_rows)
GRID = list(itertools.product(("binary", "regression"), (True, False), (0.0, 0.1), (1, 63, 65, 1000, 8193),
                              (1, 5, 100, 200)))


def _case(kind, bias, n, d, dtype, seed, logit_scale=None):
    gen = torch.Generator().manual_seed(seed)
    model = make_model(kind, d, bias=bias).to(dtype)
    randomize(model, gen)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    if logit_scale is not None:
        scale_to_logits(model.double(), X, logit_scale)
        model = model.to(dtype)
    T = model.targets(make_targets(kind, n, gen), n)
    return model, X.to(dtype), T.to(dtype)


def _max_rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-300)).item()


@pytest.mark.parametrize("kind,bias,l2,n,d", GRID)
def test_fused_step_equals_reference_step_float64(kind, bias, l2, n, d):
    model, X, T = _case(kind, bias, n, d, torch.float64, GRID.index((kind, bias, l2, n, d)))
    loss_ref, grads_ref = model.objective_and_grad(X, T, l2)
    loss, grads = FusedStep(model, X, T).step(X, T, l2)
    assert loss.dtype == torch.float64 and loss.dim() == 0
    assert abs(loss.item() - loss_ref.item()) <= 1e-12 * abs(loss_ref.item())
    assert grads.keys() == grads_ref.keys()
    for name, g in grads_ref.items():
        assert grads[name].shape == g.shape and grads[name].dtype == g.dtype
        assert _max_rel(grads[name], g) <= 1e-12, name


def test_the_grid_covers_both_kinds_of_tile():
    assert fused_cpu.tile_rows(100, 8) == (20, True)
    assert fused_cpu.tile_rows(200, 8) == (fused_cpu.WIDE_TILE_ROWS, False)


@pytest.mark.parametrize("logit_scale", [1.0, 30.0, 1e4])
def test_fused_step_handles_large_logits_float64(logit_scale):
    model, X, T = _case("binary", True, 5000, 8, torch.float64, 3, logit_scale)
    loss_ref, grads_ref = model.objective_and_grad(X, T)
    loss, grads = FusedStep(model, X, T).step(X, T)
    assert math.isfinite(loss.item())
    assert loss.item() == pytest.approx(loss_ref.item(), rel=1e-12)
    for name, g in grads_ref.items():
        assert _max_rel(grads[name], g) <= 1e-12, name


@pytest.mark.parametrize("kind", ["binary", "regression"])
@pytest.mark.parametrize("logit_scale", [3.0, 30.0, 300.0])
def test_fused_float32_step_is_as_accurate_as_torch_float32(kind, logit_scale):
    """Against the float64 answer, the fused float32 step errs no more than torch's float32
    reference step does (plus a few float32 roundings)."""
    model64, X64, T64 = _case(kind, True, 20000, 40, torch.float64, 5, logit_scale)
    loss_true, grads_true = model64.objective_and_grad(X64, T64)
    model32, X32, T32 = model64.float(), X64.float(), T64.float()
    loss_ref, grads_ref = model32.objective_and_grad(X32, T32)
    loss, grads = FusedStep(model32, X32, T32).step(X32, T32)
    eps = torch.finfo(torch.float32).eps
    assert loss.dtype == torch.float32
    assert abs(loss.item() - loss_true.item()) <= abs(loss_ref.item() - loss_true.item()) + 4 * eps * abs(loss_true.item())
    for name, g in grads_true.items():
        assert _max_rel(grads[name], g) <= _max_rel(grads_ref[name], g) + 8 * eps, name


def _ulps(approx, exact):
    """Error in units in the last place of the float32 nearest the exact value."""
    ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    return np.abs(approx.astype(np.float64) - exact) / ulp


def test_float32_exp_is_within_one_and_a_half_ulps():
    """Whether LLVM contracts the polynomial into FMAs depends on the CPU it compiles for:
    measured 0.86 ulp with FMA, 1.12 ulp without; the bound holds either way."""
    z = np.concatenate([np.linspace(-100, 100, 400_001), [0.0, -0.0, 87.0, -87.0, 1e-30]]).astype(np.float32)
    e = np.empty_like(z)
    poly_f32.exp_neg_abs(z, e, np.empty(z.shape, dtype=np.int32), z.size)
    exact = np.exp(-np.minimum(np.abs(z.astype(np.float64)), 87.0))  # clamped where it would leave normal range
    assert _ulps(e, exact).max() <= 1.5


def test_float32_log1p_is_within_three_ulps():
    e = np.concatenate([np.linspace(0, 1, 20_001), np.geomspace(1e-38, 1e-3, 2_000)]).astype(np.float32)
    approx = np.array([poly_f32.log1p_unit(v) for v in e], dtype=np.float32)
    exact = np.log1p(e.astype(np.float64))
    assert approx[0] == 0.0
    assert _ulps(approx[1:], exact[1:]).max() <= 3.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bad", ["nan_weight", "inf_weight", "inf_x"])
def test_non_finite_values_reach_the_loss(dtype, bad):
    model, X, T = _case("binary", True, 1000, 4, dtype, 7)
    with torch.no_grad():
        if bad == "nan_weight":
            model.linear.weight[0, 1] = float("nan")
        elif bad == "inf_weight":
            model.linear.weight[0, 1] = float("inf")
            model.linear.weight[0, 2] = float("-inf")
        else:
            X[17, 2] = float("inf")
    loss, _ = FusedStep(model, X, T).step(X, T)
    assert not torch.isfinite(loss).item()  # the loop's divergence check reads the loss


@pytest.mark.skipif(fused_cpu.numba is None or fused_cpu.numba.config.NUMBA_NUM_THREADS < 2,
                    reason="needs two threads")
def test_result_does_not_depend_on_the_thread_count():
    model, X, T = _case("binary", True, 40000, 30, torch.float64, 9)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            step = FusedStep(model, X, T)
            assert step.threads == threads and step.chunks >= 2
            results.append(step.step(X, T, 0.01))
    finally:
        torch.set_num_threads(before)
    (l1, g1), (l2, g2) = results
    assert torch.equal(l1, l2)
    assert all(torch.equal(g1[k], g2[k]) for k in g1)


def test_make_step_picks_the_fused_kernel_where_it_applies():
    d = fused_cpu.MIN_FEATURES
    big = torch.randn(fused_cpu.MIN_ENTRIES // d, d)
    y = torch.randint(0, 2, (big.shape[0],))
    for model in (tl.LogisticRegression(d), tl.LinearRegression(d)):
        step = select.full_batch(model, big, model.targets(y.float() if model.link == "identity" else y, big.shape[0]))
        assert isinstance(step, FusedStep)
    small = big[:100]  # a small problem goes to the batch kernel
    assert isinstance(select.full_batch(tl.LogisticRegression(d), small, torch.zeros(100, 1)), RowMajorStep)
    narrow = torch.randn(fused_cpu.MIN_ENTRIES // 8, 8)  # large, but too few features to pay
    assert isinstance(select.full_batch(tl.LogisticRegression(8), narrow, torch.zeros(narrow.shape[0], 1)),
                      FeatureMajorStep)
    softmax = tl.SoftmaxRegression(d, 3)
    assert isinstance(select.full_batch(softmax, big, softmax.targets(y, big.shape[0])), FeatureMajorStep)
    multilabel = tl.LogisticRegression(d, n_outputs=2)
    assert not fused_cpu.supports(multilabel, big)
    assert not fused_cpu.supports(tl.LogisticRegression(d), big.T.contiguous().T)  # not row-contiguous
    assert not fused_cpu.supports(tl.LogisticRegression(d), big.half())
    with pytest.raises(TypeError, match="fused CPU step"):
        FusedStep(tl.MLP(d, [4]), big, torch.zeros(big.shape[0], 1))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["binary", "regression"])
def test_fit_on_the_fused_path_equals_the_reference_fit(kind):
    gen = torch.Generator().manual_seed(11)
    n, d = fused_cpu.MIN_ENTRIES // 40 + 1, 40
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = make_targets(kind, n, gen)
    out = []
    for fast in (True, False):
        model = make_model(kind, d).double()
        trainer = tl.Trainer(model, X, y, solver="nesterov", lr=0.1, epochs=20, l2=0.01, tol=0, device="cpu",
                             fast_path=fast)
        assert (trainer.stepper.name == "fused_cpu") == fast
        history = trainer.run()
        out.append((torch.cat([p.detach().reshape(-1) for p in model.parameters()]), history.train_loss))
    (w_fast, loss_fast), (w_ref, loss_ref) = out
    assert _max_rel(w_fast, w_ref) <= 1e-12
    assert loss_fast == pytest.approx(loss_ref, rel=1e-12)


def test_divergence_on_the_fused_path_keeps_the_last_finite_weights():
    gen = torch.Generator().manual_seed(12)
    d = fused_cpu.MIN_FEATURES
    n = fused_cpu.MIN_ENTRIES // d
    X = torch.randn(n, d, generator=gen) * 1e3
    y = X[:, 0] * 1e3
    model = tl.LinearRegression(d)
    finite = []

    class LastFinite(tl.Callback):
        def on_epoch_end(self, state):
            if state.checked and math.isfinite(state.train_loss):
                finite.append([p.detach().clone() for p in model.parameters()])

    trainer = tl.Trainer(model, X, y, lr=10.0, epochs=50, tol=0, device="cpu", callbacks=[LastFinite()])
    assert trainer.stepper.name == "fused_cpu"
    with pytest.raises(tl.TrainingDiverged):
        trainer.run()
    assert finite, "diverged before the first check"
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), finite[-1]))
