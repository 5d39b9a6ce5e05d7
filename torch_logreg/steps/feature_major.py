"""The full-batch step of a single-``Linear`` model on feature-major data: the reference maths
in a faster layout.

The reference step (``reference.py``) computes ``z = X W^T + b`` with X as ``(N, D)`` rows.
For a full batch on CPU, the two products run faster with X stored once as ``X^T`` ``(D, N)``
contiguous, and the softmax over K classes is far faster along the leading
dimension of class-major ``(K, N)`` logits than along the short rows of ``(N, K)``. So
:class:`FeatureMajorStep` does, for the whole run:

    z^T  = W X^T + b 1^T                       (K, N)
    loss, G^T from z^T and T^T                 the link along dim 0; G^T = (h(z^T) - T^T) / N
    dW   = G^T X,   db = G^T 1                 (K, D), (K,)

The maths is the reference's in another memory layout and summation order; tests pin the two
together (float64, 1e-12 relative). The cost is one copy of X, made once; each product uses
whichever of X and X^T is faster for it. It writes into buffers made once (only the 0-dim loss, and the l2 terms when
l2 > 0, are new tensors each step).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import penalty
from ..models import single_linear
from .base import Step
from .common import IN_PLACE, transpose


class FeatureMajorStep(Step):
    """``step(X, T, l2) -> (loss, grads)`` on fixed full-batch data, like ``objective_and_grad``.

    The intermediates live in buffers allocated here, once: the logits, overwritten by the
    residual, a per-element loss buffer, and the gradients. The returned gradient tensors are
    those buffers, so the next ``step`` overwrites them; copy them to keep them.
    """

    name = "feature_major"

    def __init__(self, model, X: Tensor, T: Tensor) -> None:
        if single_linear(model) is None:
            raise TypeError("the feature-major fast path needs a model with a single Linear layer")
        (self.prefix, self.layer), = model.named_children()
        self.X = X  # (N, D), the caller's rows (no copy)
        self.TT = T.T.contiguous()  # (K, N)
        self._in_place = IN_PLACE[model.link]
        W, b = self.layer.weight, self.layer.bias
        k, n = self.TT.shape
        d = X.shape[1]
        # one output with a bias: X^T gets a row of ones, so one product X_1^T r gives the weight
        # and the bias gradient together, in one flat buffer the two gradients are views of
        self._augmented = k == 1 and b is not None
        self.XT = transpose(X, extra_rows=1 if self._augmented else 0)  # the one copy this path costs
        #: the gradients as one flat tensor the returned ones are views of, where they are (else None)
        self.flat_grad = None
        self._grad_bias: Tensor | None
        if self._augmented:
            self.XT[d].fill_(1)
            self._XT1, self.XT = self.XT, self.XT[:d]
            self.flat_grad = self._flat_grad = X.new_empty(d + 1)
            self._grad_weight, self._grad_bias = self._flat_grad[:d].view(1, d), self._flat_grad[d:]
        else:
            self._grad_weight = torch.empty_like(W)
            self._grad_bias = None if b is None else torch.empty_like(b)
        #: the gradient buffers, by parameter name: what ``step`` returns
        self.grads = self._grads = {f"{self.prefix}.weight": self._grad_weight}
        if self._grad_bias is not None:
            self._grads[f"{self.prefix}.bias"] = self._grad_bias
        self._inv_n, self._inv_n_tensor = 1.0 / n, X.new_full((), 1.0 / n)
        self._z = X.new_empty(k, n)
        self._buf = X.new_empty(k, n)
        self._zero = X.new_zeros(())
        with torch.no_grad():
            self._bias_column = None if b is None else b[:, None]  # a view: follows in-place updates
        self._z0 = self._z[0]

    @torch.no_grad()
    def step(self, X: Tensor, T: Tensor, l2: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
        """Bound to the data it was built for: ``X`` and ``T`` are that data (not read again)."""
        W, z, inv_n = self.layer.weight, self._z, self._inv_n
        if self._bias_column is None:
            torch.mm(W, self.XT, out=z)
        else:
            torch.addmm(self._bias_column, W, self.XT, out=z)
        loss = self._in_place(z, self.TT, self._buf, self._zero).mul_(self._inv_n_tensor)  # z: h(z) - t
        # on the CPU, with one output the matrix-vector product is faster over X^T; with several,
        # G^T X over the row-major X is (benchmarks/README.md)
        if self._augmented:
            torch.addmv(self._flat_grad, self._XT1, self._z0, beta=0, alpha=inv_n, out=self._flat_grad)
        elif z.shape[0] == 1:
            grad = self._grad_weight[0]
            torch.addmv(grad, self.XT, self._z0, beta=0, alpha=inv_n, out=grad)
        else:
            torch.addmm(self._grad_weight, z, self.X, beta=0, alpha=inv_n, out=self._grad_weight)
        if self._grad_bias is not None and not self._augmented:
            torch.sum(z, dim=1, out=self._grad_bias).mul_(self._inv_n_tensor)
        return penalty.add_in_place(loss, self._grad_weight, W, l2), self._grads
