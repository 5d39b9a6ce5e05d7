"""Newton's Hessian products (``solvers/hessian.py``): torch's BLAS or SciPy's OpenBLAS ``?syrk``,
the same Gram matrix to rounding, and the measured choice between them (``step="auto"``; the
torch product otherwise, so a solve is the same from run to run)."""

import numpy as np
import pytest
import torch

import torch_logreg as tl
from torch_logreg import functional as F
from torch_logreg.solvers import fit_exact, hessian
from torch_logreg.steps import measure

from helpers import make_targets


@pytest.fixture(autouse=True)
def fresh_choices(monkeypatch):
    monkeypatch.setenv("TORCH_LOGREG_CACHE", "")
    measure.clear_cache()
    yield
    measure.clear_cache()


def data(n: int, d: int, dtype=torch.float64, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64).to(dtype)
    s = torch.rand(n, generator=gen, dtype=torch.float64).to(dtype) / n
    return X, s


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("blocks", ["one", "many"])
@pytest.mark.parametrize("n,d", [(1, 1), (7, 3), (500, 40)])
def test_openblas_gram_equals_the_torch_gram_in_float64(monkeypatch, bias, blocks, n, d):
    if blocks == "many":  # blocks of 2 or 4 rows, the last one short
        monkeypatch.setattr(F, "ROW_BLOCK_BYTES", 8 * 2 * d)
        monkeypatch.setattr(F, "MIN_BLOCK_ROWS", 2 if n < 100 else 4)
    X, s = data(n, d, seed=n * d)
    got = hessian.openblas_gram(X, s, bias)
    want = F.gram(X, s, bias)
    assert got.shape == want.shape == ((d + 1, d + 1) if bias else (d, d))
    assert torch.equal(got, got.T)  # mirrored exactly
    # each entry within rounding of its n-term sum of |x_i s x_j|
    size = F.gram(X.abs(), s, bias)
    assert ((got - want).abs() <= 1e-13 * (n + 8) * size).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("n,rows", [(1, 256), (256, 256), (1000, 256), (1000, 300), (5000, 1024)])
def test_gram_in_blocks_of_rows_equals_the_plain_product(monkeypatch, dtype, bias, n, rows):
    """One block, exact multiples and a short last block: the sums in float64 of the whole
    ``[1, x]^T diag(s) [1, x]``, within the rounding of each entry's sum."""
    d = 12
    monkeypatch.setattr(F, "ROW_BLOCK_BYTES", rows * d * torch.finfo(dtype).bits // 8)
    assert [stop - start for start, stop in F.row_blocks(torch.empty(n, d, dtype=dtype))][0] == min(n, rows)
    X, s = data(n, d, dtype, seed=n)
    got = F.gram(X, s, bias)
    assert got.dtype == dtype and got.shape == ((d + 1, d + 1) if bias else (d, d))
    Xa = torch.cat([torch.ones(n, 1, dtype=torch.float64), X.double()], 1) if bias else X.double()
    want = Xa.T @ (Xa * s.double()[:, None])
    size = Xa.abs().T @ (Xa.abs() * s.double()[:, None])
    eps = torch.finfo(dtype).eps
    assert ((got.double() - want).abs() <= 4 * eps * (n + 8) * size).all()


def test_row_blocks_cover_the_rows_in_order_and_only_on_the_cpu():
    x = torch.empty(10_000, 100, dtype=torch.float64)
    blocks = F.row_blocks(x)
    assert blocks[0] == (0, F.ROW_BLOCK_BYTES // 800) and blocks[-1][1] == 10_000
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
    assert F.row_blocks(torch.empty(1000, 100_000))[0] == (0, F.MIN_BLOCK_ROWS)  # wide rows: the fewest rows
    assert F.row_blocks(torch.empty(0, 5)) == [(0, 0)]
    meta = torch.empty(10_000, 100, device="meta")
    assert F.row_blocks(meta) == [(0, 10_000)]  # another device: one product


def test_openblas_gram_in_float32_is_within_rounding_of_float64():
    X, s = data(800, 30, torch.float32, seed=3)
    got = hessian.openblas_gram(X, s, True)
    assert got.dtype == torch.float32
    want = F.gram(X.double(), s.double(), True)
    size = F.gram(X.double().abs(), s.double(), True)
    eps = torch.finfo(torch.float32).eps
    assert ((got.double() - want).abs() <= 4 * eps * (800 + 8) * size).all()


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_products_apply_to_dense_cpu_floats_only():
    X, _ = data(10, 3)
    assert set(hessian.products(X)) == {"torch", "openblas"}
    assert set(hessian.products(X.to_sparse_csr())) == {"torch"}
    assert set(hessian.products(X.to(torch.bfloat16))) == {"torch"}


def fake_clock(monkeypatch, slow: str):
    """The selector's clock advanced only by the products: 10 ms a call of ``slow``, 1 ms the other."""
    now = [0.0]
    monkeypatch.setattr(measure, "clock", lambda: now[0])
    calls = {"torch": 0, "openblas": 0}
    originals = {"torch": F.gram, "openblas": hessian.openblas_gram}

    def timed(name):
        def product(*args):
            calls[name] += 1
            now[0] += 0.01 if name == slow else 0.001
            return originals[name](*args)
        return product

    monkeypatch.setattr(hessian.F, "gram", timed("torch"))
    monkeypatch.setattr(hessian, "openblas_gram", timed("openblas"))
    return calls


@pytest.mark.parametrize("slow,fast", [("torch", "openblas"), ("openblas", "torch")])
def test_auto_keeps_the_faster_product_and_remembers_it(monkeypatch, slow, fast):
    monkeypatch.setattr(measure, "TINY_WORK", 0)
    calls = fake_clock(monkeypatch, slow)
    X, _ = data(300, 8)
    chosen = hessian.choose(X, True, "auto")
    assert chosen.name == fast and chosen.selection.source == "measured"
    assert set(chosen.selection.seconds) == {"torch", "openblas"} and calls["torch"] and calls["openblas"]
    calls.update(torch=0, openblas=0)
    again = hessian.choose(X, True, "auto")
    assert again.name == fast and again.selection.source == "cache" and not any(calls.values())


def test_rule_and_tiny_problems_take_the_torch_product_unmeasured(monkeypatch):
    calls = fake_clock(monkeypatch, "torch")
    X, _ = data(300, 8)
    for step in ("rule", "fused", "auto"):  # "auto": 2,400 entries are too few to measure
        chosen = hessian.choose(X, True, step)
        assert chosen.name == "torch" and chosen.selection.source == "rule"
    assert not any(calls.values())


@pytest.mark.parametrize("kind", ["binary", "multilabel", "regression"])
def test_newton_on_the_openblas_product_reaches_the_same_optimum(monkeypatch, kind):
    gen = torch.Generator().manual_seed(1)
    n, d = 400, 6
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = make_targets(kind, n, gen)
    models = {}
    for name in ("torch", "openblas"):
        used = []
        chosen = _Chosen(name, hessian.products(X)[name], used)
        monkeypatch.setattr(hessian, "choose", lambda *a, _chosen=chosen, **k: _chosen)
        model = (tl.LogisticRegression(d, n_outputs=3) if kind == "multilabel" else
                 tl.LogisticRegression(d) if kind == "binary" else tl.LinearRegression(d)).double()
        result = fit_exact(model, X, y, solver="newton", l2=1e-2, tol=1e-12)
        assert result.converged and used  # the product was called
        models[name] = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    np.testing.assert_allclose(models["openblas"], models["torch"], rtol=1e-10, atol=1e-12)


class _Chosen:
    """A stand-in for hessian.choose's result that records each call of the product."""

    def __init__(self, name, product, used):
        self.name = name
        self.product = lambda *args: used.append(1) or product(*args)


def test_fit_exact_checks_the_step_name():
    X, y = data(20, 2)[0], torch.arange(20) % 2
    with pytest.raises(tl.UsageError, match="step"):
        fit_exact(tl.LogisticRegression(2).double(), X, y, step="fastest")
