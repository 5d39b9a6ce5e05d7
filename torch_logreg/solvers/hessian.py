"""The Gram product behind Newton's Hessian, ``x~^T diag(s) x~``, and the measured choice of BLAS.

For one sigmoid or identity output the Hessian is one such ``(A, A)`` product per output
(:func:`~torch_logreg.functional.block_diagonal_hessian`): ``N A^2`` multiply-adds, nearly all of a
Newton iteration on a tall X. Which library computes it fastest depends on the CPU and the BLAS:

* ``"torch"``: :func:`~torch_logreg.functional.gram`, ``x^T (diag(s) x)`` in torch's BLAS (MKL in
  the x86 wheels), the whole square, added up a block of rows at a time;
* ``"openblas"``: for each block, ``y = sqrt(s) x`` and the upper triangle of ``y^T y`` by
  ``?syrk`` from SciPy's OpenBLAS (half the multiply-adds), then mirrored. OpenBLAS carries kernels
  for each CPU family (Intel and AMD); MKL is tuned for Intel's. ``s >= 0`` always holds here
  (``w p (1 - p)`` or ``w``, with non-negative weights ``w``).

On the reference Intel machine torch's product is the faster (figures: benchmarks/README.md).
Where the solve is asked to measure (``fit_exact(..., step="auto")``), :func:`choose` times both once
per machine and shape class through the steps' selector
(:func:`torch_logreg.steps.measure.choose`: the same budget, margin, and process and disk caches)
and keeps the faster; otherwise the torch product is used, and a solve gives the same bits from
run to run. The two agree to rounding (a test bounds each entry's
difference by the rounding of its sum).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from .. import functional as F
from ..steps import measure


def openblas_gram(x: Tensor, s: Tensor, bias: bool = False) -> Tensor:
    """:func:`~torch_logreg.functional.gram` (``x`` dense on the CPU, float32 or float64, ``s >= 0``)
    by SciPy's OpenBLAS, in the same blocks of rows (:func:`~torch_logreg.functional.row_blocks`):
    ``sqrt(s) x`` of each block into a small buffer, its ``y^T y`` added to the upper triangle by
    ``?syrk``; then the triangle mirrored, and the bias's row and column from ``sum(s)`` and
    ``x^T s``."""
    from scipy.linalg import blas

    syrk = blas.dsyrk if x.dtype == torch.float64 else blas.ssyrk
    d = x.shape[1]
    blocks = F.row_blocks(x)
    buffer = F.row_block_buffer(x, blocks)
    upper = np.zeros((d, d), dtype=buffer.numpy().dtype, order="F")  # accumulated in place by ?syrk
    border = x.new_zeros(d) if bias else None
    for start, stop in blocks:
        xb, sb = x[start:stop], s[start:stop]
        y = torch.mul(xb, sb.sqrt()[:, None], out=buffer[: stop - start])
        # y (M, D) row-major is y^T (D, M) column-major: syrk of y^T without transposing gives y^T y, no copy
        upper = syrk(1.0, y.numpy().T, beta=1.0, c=upper, trans=0, lower=0, overwrite_c=1)
        if border is not None:
            border.addmv_(xb.T, sb)
    triangle = torch.from_numpy(upper)
    inner = triangle.triu() + triangle.triu(1).T
    return inner if border is None else F.bordered(inner, s.sum(), border)


def products(x: Tensor) -> dict[str, Callable[..., Tensor]]:
    """The products that apply to ``x``: torch's always; OpenBLAS's for a dense CPU float32 or
    float64 ``x`` where SciPy's BLAS imports."""
    found: dict[str, Callable[..., Tensor]] = {"torch": F.gram}
    if x.layout == torch.strided and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        try:
            from scipy.linalg import blas  # noqa: F401
        except ImportError:  # pragma: no cover - scipy is a dependency
            return found
        found["openblas"] = openblas_gram
    return found


class Product:
    """A Gram product by ``name``: ``product(x, s, bias)``, as :func:`~torch_logreg.functional.gram`;
    ``step`` runs it once on the arguments it was made with (what the selector times), and
    ``selection`` says how it was chosen (:class:`~torch_logreg.steps.measure.Selection`)."""

    def __init__(self, name: str, product: Callable[..., Tensor], x: Tensor, s: Tensor | None, bias: bool) -> None:
        self.name, self.product = name, product
        self._args = (x, s, bias)
        self.selection: measure.Selection | None = None

    def step(self, X, T, l2: float = 0.0) -> None:
        self.product(*self._args)


def choose(x: Tensor, bias: bool, step: str = "rule") -> Product:
    """The Gram product for Newton's Hessians on ``x`` (a :class:`Product`: ``name``, ``product``,
    ``selection``). Measured (once per machine and shape class) only for ``step="auto"``; the
    torch product otherwise."""
    # the candidates are looked for only where they are measured: SciPy's import alone costs a
    # fresh process most of a short solve (benchmarks/README.md)
    found = products(x) if step == "auto" else {"torch": F.gram}
    n, d = x.shape
    if len(found) == 1:
        chosen = Product("torch", found["torch"], x, None, bias)
        why = "asked for the rule" if step != "auto" else "the only product that applies"
        chosen.selection = measure.Selection("torch", "rule", reason=why)
        return chosen
    s = torch.ones(n, dtype=x.dtype, device=x.device)  # the values do not change the time
    candidates = {name: functools.partial(Product, name, p, x, s, bias) for name, p in found.items()}
    key = ("gram", measure.device_name(x.device), str(x.dtype).removeprefix("torch."), bias, measure.log2(n),
           measure.log2(d), ",".join(found), torch.get_num_threads(), torch.__version__)
    return measure.choose(key, candidates, x, None, work=n * d)


def dense_hessian_bytes(n_features: int, n_outputs: int, bias: bool = True, softmax: bool = False,
                        itemsize: int = 8) -> int:
    """The bytes Newton's dense Hessian takes with one copy for its factorisation: ``2 K A^2``
    entries for one sigmoid or identity output per class (``K`` blocks ``(A, A)``), ``2 (K A)^2``
    for a softmax (the full matrix), ``A = n_features + bias``, of ``itemsize`` bytes each."""
    a = n_features + int(bias)
    entries = (n_outputs * a) ** 2 if softmax else n_outputs * a * a
    return 2 * entries * itemsize


def check_dense_hessian(n_features: int, n_outputs: int, bias: bool = True, softmax: bool = False,
                        itemsize: int = 8, device=None, setting: str = "solver") -> None:
    """A :class:`~torch_logreg.memory.MemoryBoundError` when Newton's dense Hessian for this shape
    (:func:`dense_hessian_bytes`) exceeds the device's memory (:func:`torch_logreg.memory.check`);
    ``setting`` names the option that chose newton in the message."""
    from .. import memory

    need = dense_hessian_bytes(n_features, n_outputs, bias, softmax, itemsize)
    memory.check(need, f"{setting} = 'newton' on {n_features:,} features ({n_outputs} output(s)) forms a dense "
                       "Hessian that", f"use {setting} = 'lbfgs', 'proximal' or 'cd', which need no Hessian, or "
                                      "fewer features", device)


def dense_hessian_fits(n_features: int, n_outputs: int, bias: bool = True, softmax: bool = False,
                       itemsize: int = 8, device=None) -> bool:
    """Whether :func:`check_dense_hessian` passes (what ``solver="auto"`` asks before newton)."""
    from .. import memory

    return dense_hessian_bytes(n_features, n_outputs, bias, softmax, itemsize) <= memory.device_memory(device)
