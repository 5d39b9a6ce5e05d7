"""The Gram product behind Newton's Hessian (:func:`torch_logreg.functional.gram`, a block of rows
at a time): the plain product to rounding; and ``fit_exact``'s ``step``, where "auto" (which
measured the Hessian's BLAS) is read as "rule" with a warning."""

import pytest
import torch

import torch_logreg as tl
from torch_logreg import functional as F
from torch_logreg.solvers import fit_exact


def data(n: int, d: int, dtype=torch.float64, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64).to(dtype)
    s = torch.rand(n, generator=gen, dtype=torch.float64).to(dtype) / n
    return X, s


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


def test_fit_exact_checks_the_step_name():
    X, y = data(20, 2)[0], torch.arange(20) % 2
    with pytest.raises(tl.UsageError, match="step"):
        fit_exact(tl.LogisticRegression(2).double(), X, y, step="fastest")


def test_fit_exact_reads_auto_as_the_rule_with_a_warning():
    X, y = data(300, 8)[0], (torch.arange(300) % 3 == 0).long()
    weights = {}
    for step in ("rule", "auto"):
        model = tl.LogisticRegression(8).double()
        if step == "auto":
            with pytest.warns(FutureWarning, match="no longer measures"):
                fit_exact(model, X, y, solver="newton", l2=1e-2, tol=1e-10, step=step)
        else:
            fit_exact(model, X, y, solver="newton", l2=1e-2, tol=1e-10, step=step)
        weights[step] = [p.detach().clone() for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(weights["rule"], weights["auto"]))
