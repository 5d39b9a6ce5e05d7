"""Newton's Hessian on the CPU from one read of X: the logits, the curvature and ``diag(s) X``
together in a numba kernel, a block of rows at a time, each block's product added while it is in
the caches.

For one sigmoid or identity output the Hessian at ``theta = [b, w]`` is ``x~^T diag(s) x~``
(:mod:`~torch_logreg.solvers.hessian`). Formed in torch
(:func:`~torch_logreg.functional.gram`) it reads X for the logits ``X w + b`` (a matrix-vector
product), then in blocks of rows for ``diag(s) X``, the product and the bias's row ``x^T s``. The
kernel here reads each row of a block once for its logit, its curvature ``s_n``, the scaled row
``s_n x_n`` (written to a buffer of one block) and the bias's row; torch's BLAS then adds the
block's ``x^T (diag(s) x)`` from the caches: one read of X instead of two, a little faster than
torch's (figures: benchmarks/README.md).

``s_n = v_n e / (1 + e)^2`` with ``e = exp(-|z_n|)`` for the sigmoid (``p (1 - p)`` written so it
keeps its digits where ``p`` is near 0 or 1, as :func:`~torch_logreg.functional.diagonal_curvature`
computes it) and ``s_n = v_n`` for the identity, where ``v_n`` is the sample's weight over N. The
logit is summed in X's dtype, ``s_n`` in float64, the scaled row in X's dtype as the torch path
rounds it, and the bias's row in float64. Rows are cut into chunks fixed by the shape, summed in
chunk order, so the result does not depend on the thread count.

Used by Newton's solve where the selector's rule takes the kernels (``select.dense_kernels_pay``), X is a
dense float32 or float64 CPU tensor, and the model has one output: otherwise
the torch path forms the Hessian. Both agree to rounding (tests bound the difference).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .. import functional as F
from ..steps import jit

jit.threads_as_torch()  # before numba's import (jit.threads_as_torch says why)
try:  # pragma: no branch - numba is installed with the package; guard for a broken install
    import numba
    from numba import njit, prange
except ImportError:  # pragma: no cover
    numba = None

#: entries of X per chunk of rows within a block (one thread's unit of work), fixed by the shape so
#: the order of the sums does not depend on the number of threads
CHUNK_ENTRIES = 1 << 15
#: fast-math flags: reassociation (the vectorised dot product) and contraction (FMA)
_FLAGS = {"reassoc", "contract", "nsz"}


def applies(X: Tensor, link: str, outputs: int) -> bool:
    """Whether :class:`RowScaler` forms this solve's Hessians: numba importable, one sigmoid or
    identity output, a dense contiguous float32/float64 X on the CPU."""
    return (numba is not None and link in ("sigmoid", "identity") and outputs == 1
            and X.layout == torch.strided and X.device.type == "cpu"
            and X.dtype in (torch.float32, torch.float64) and X.is_contiguous())


if numba is not None:

    @njit(parallel=True, fastmath=_FLAGS, cache=True)
    def _scaled_rows(X, w, b, v, weighted, sigmoid, inv_n, out, n_chunks):
        """``out[n] = s_n X[n]`` for the rows of the block X; per chunk ``[sum_n s_n X[n] (D), sum_n s_n]``
        in float64."""
        N, D = X.shape
        sums = np.zeros((n_chunks, D + 1), dtype=np.float64)
        per = (N + n_chunks - 1) // n_chunks
        for c in prange(n_chunks):
            acc = np.zeros(D, dtype=np.float64)
            zero = np.zeros(1, dtype=X.dtype)[0]  # a typed 0: the logit is summed in X's dtype
            cast = np.empty(1, dtype=X.dtype)  # s_n rounded to X's dtype, as the torch path scales
            total = 0.0
            for n in range(c * per, min(N, (c + 1) * per)):
                x = X[n]
                z = zero
                for d in range(D):
                    z += x[d] * w[d]
                if sigmoid:
                    e = math.exp(-abs(np.float64(z) + b))
                    q = 1.0 + e
                    s = e / (q * q)
                else:
                    s = 1.0
                s = (s * v[n] if weighted else s) * inv_n
                total += s
                cast[0] = s
                sx = cast[0]
                row = out[n]
                for d in range(D):
                    value = x[d] * sx
                    row[d] = value
                    acc[d] += value
            sums[c, :D] = acc
            sums[c, D] = total
        return sums


class RowScaler:
    """``hessian(theta)``: the ``(1, A, A)`` Hessian block at ``theta`` ``(1, A)`` (``[b, w]`` with a
    bias), as :func:`~torch_logreg.functional.block_diagonal_hessian` of
    :func:`~torch_logreg.functional.diagonal_curvature` forms it: in the blocks of rows of
    :func:`~torch_logreg.functional.row_blocks`, each scaled by the kernel into a small buffer and
    its product added by torch while both are in the caches."""

    def __init__(self, X: Tensor, link: str, bias: bool, sample_weight: Tensor | None) -> None:
        self.X, self.bias = X, bias
        self._x = X.numpy()
        self._sigmoid = link == "sigmoid"
        n, d = X.shape
        self._v = (np.zeros(1) if sample_weight is None
                   else np.ascontiguousarray(sample_weight.detach().to(torch.float64).numpy()))
        self._weighted = sample_weight is not None
        self._inv_n = 1.0 / n
        self._blocks = F.row_blocks(X)
        self._buffer = F.row_block_buffer(X, self._blocks)
        self._chunks = [max(1, -(-(stop - start) * d // CHUNK_ENTRIES)) for start, stop in self._blocks]

    @property
    def blocks(self) -> list[tuple[int, int]]:
        """The ``(start, stop)`` rows of each block, as :func:`~torch_logreg.functional.row_blocks` made them."""
        return list(self._blocks)

    @torch.no_grad()
    def hessian(self, theta: Tensor) -> Tensor:
        row = theta[0]
        w = (row[1:] if self.bias else row).detach().to(self.X.dtype).contiguous().numpy()
        b = float(row[0]) if self.bias else 0.0
        d = self.X.shape[1]
        sums = np.zeros(d + 1)
        inner: Tensor | None = None
        buffer = self._buffer.numpy()
        for (start, stop), chunks in zip(self._blocks, self._chunks):
            v = self._v[start:stop] if self._weighted else self._v
            sums += _scaled_rows(self._x[start:stop], w, b, v, self._weighted, self._sigmoid, self._inv_n,
                                 buffer[: stop - start], chunks).sum(axis=0)
            xb, scaled = self.X[start:stop], self._buffer[: stop - start]
            inner = xb.T @ scaled if inner is None else inner.addmm_(xb.T, scaled)
        assert inner is not None  # row_blocks gives at least one block
        if not self.bias:
            return inner[None]
        return F.bordered(inner, float(sums[d]), torch.from_numpy(sums[:d]).to(inner.dtype))[None]
