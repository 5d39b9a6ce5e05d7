"""Newton's Hessian from one read of X (``solvers/hessian_rows.py``): the same matrix as the torch
path to rounding, finite and accurate for large logits, the same bits on any thread count, and the
same Newton solve."""

import math

import numpy as np
import pytest
import torch

import torch_logreg as tl
from torch_logreg import functional as F
from torch_logreg.solvers import fit_exact
from torch_logreg.steps import fused_cpu

from helpers import make_targets

pytestmark = pytest.mark.skipif(not fused_cpu.available(), reason="numba is not importable")


def _rows():
    from torch_logreg.solvers import hessian_rows

    return hessian_rows


def _case(n, d, dtype=torch.float64, seed=0, weighted=False, scale=0.3):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    theta = torch.randn(1, d + 1, generator=gen, dtype=torch.float64) * scale
    w = torch.rand(n, generator=gen, dtype=torch.float64) * 2 if weighted else None
    return X.to(dtype), theta.to(dtype), None if w is None else w.to(dtype)


def _torch_hessian(X, theta, link, bias, w):
    z = X @ theta[:, 1:].T + theta[:, 0] if bias else X @ theta.T
    return F.block_diagonal_hessian(X, F.diagonal_curvature(link, z, w), bias)


@pytest.mark.parametrize("link", ["sigmoid", "identity"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("n,d", [(1, 1), (5, 3), (333, 17), pytest.param(40000, 30, marks=pytest.mark.slow)])
@pytest.mark.parametrize("blocks", ["default", "of 3 rows"])
def test_equals_the_torch_hessian_in_float64(monkeypatch, link, bias, weighted, n, d, blocks):
    """40,000 x 30 makes five blocks of rows by default, the last one short."""
    X, theta, w = _case(n, d, seed=n + d, weighted=weighted)
    if not bias:
        theta = theta[:, 1:]
    scaler = _rows().RowScaler(X, link, bias, w)
    if blocks != "default":  # the torch path keeps its default blocks
        monkeypatch.setattr(F, "ROW_BLOCK_BYTES", 3 * 8 * d)
        monkeypatch.setattr(F, "MIN_BLOCK_ROWS", 3)
        scaler = _rows().RowScaler(X, link, bias, w)
        assert len(scaler.blocks) == -(-n // 3)
        monkeypatch.undo()
    got = scaler.hessian(theta)
    want = _torch_hessian(X, theta, link, bias, w)
    assert got.shape == want.shape == (1, d + bias, d + bias) and got.dtype == torch.float64
    assert ((got - want).abs().max() / want.abs().max()).item() <= 1e-12
    assert ((got - got.transpose(1, 2)).abs().max() / got.abs().max()).item() <= 1e-14  # as x^T (s x) rounds


def test_float32_agrees_with_float64_to_float32_rounding():
    X, theta, w = _case(5000, 40, seed=3, weighted=True)
    want = _torch_hessian(X, theta, "sigmoid", True, w)
    X32, theta32, w32 = X.float(), theta.float(), w.float()
    got = _rows().RowScaler(X32, "sigmoid", True, w32).hessian(theta32)
    assert got.dtype == torch.float32
    assert ((got.double() - want).abs().max() / want.abs().max()).item() <= 1e-5


@pytest.mark.parametrize("scale", [10.0, 100.0, 1000.0])
def test_large_logits_keep_their_curvature(scale):
    """``p (1 - p)`` loses its digits where p is near 1; ``e / (1 + e)^2`` keeps them: the Hessian
    matches one formed from the exact curvature, and stays finite and positive."""
    X, theta, _ = _case(2000, 5, seed=11, scale=scale)
    got = _rows().RowScaler(X, "sigmoid", True, None).hessian(theta)[0]
    z = (X @ theta[0, 1:] + theta[0, 0]).numpy()
    e = np.exp(-np.abs(z))
    s = torch.from_numpy(e / (1 + e) ** 2 / X.shape[0])
    want = F.gram(X, s, True)
    assert torch.isfinite(got).all()
    assert got[0, 0].item() > 0 or s.max().item() == 0
    assert ((got - want).abs().max() / want.abs().max().clamp_min(1e-300)).item() <= 1e-12


@pytest.mark.skipif(fused_cpu.numba is None or fused_cpu.numba.config.NUMBA_NUM_THREADS < 2, reason="needs two threads")
def test_the_same_bits_on_one_thread_or_two():
    import numba

    X, theta, w = _case(60000, 40, seed=5, weighted=True)
    before = numba.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            results.append(_rows().RowScaler(X, "sigmoid", True, w).hessian(theta))
    finally:
        numba.set_num_threads(before)
    assert torch.equal(results[0], results[1])


def test_applies_only_where_it_forms_the_solve_hessian():
    rows = _rows()
    X = torch.randn(10, 3, dtype=torch.float64)
    assert rows.applies(X, "sigmoid", 1)
    assert not rows.applies(X, "softmax", 3)
    assert not rows.applies(X, "sigmoid", 2)  # several outputs: one product per output
    assert not rows.applies(X.T, "sigmoid", 1)
    assert not rows.applies(X.to(torch.bfloat16), "sigmoid", 1)


@pytest.mark.parametrize("kind", ["binary", "regression"])
@pytest.mark.parametrize("weighted", [False, True])
def test_newton_solve_equals_the_torch_path_solve(kind, weighted, monkeypatch):
    """The solve takes the kernel where it applies, and ends where the torch path's solve ends."""
    rows = _rows()
    gen = torch.Generator().manual_seed(7)
    n, d = 3000, 12
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = make_targets(kind, n, gen)
    w = torch.rand(n, generator=gen, dtype=torch.float64) if weighted else None
    make = (lambda: tl.LogisticRegression(d).double()) if kind == "binary" else (lambda: tl.LinearRegression(d).double())

    calls = []
    real = rows.RowScaler.hessian
    monkeypatch.setattr(rows.RowScaler, "hessian", lambda self, theta: calls.append(1) or real(self, theta))
    fast = make()
    r_fast = fit_exact(fast, X, y, solver="newton", l2=1e-3, sample_weight=w, tol=1e-12, warn=False)
    assert calls, "the solve did not take the one-read Hessian"
    monkeypatch.setattr(rows, "applies", lambda *a, **k: False)
    plain = make()
    r_plain = fit_exact(plain, X, y, solver="newton", l2=1e-3, sample_weight=w, tol=1e-12, warn=False)
    for a, b in zip(fast.parameters(), plain.parameters()):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)
    assert r_fast.converged and r_plain.converged
    assert math.isclose(r_fast.loss, r_plain.loss, rel_tol=1e-14)
