"""Full-batch fast path for single-``Linear`` models: the data stored feature-major.

The reference step (:meth:`StackedModel.objective_and_grad`) computes ``z = X W^T + b`` with X
as ``(N, D)`` rows. On CPU, the two products of a full-batch step run faster with X stored
once as ``X^T`` ``(D, N)`` contiguous, and the softmax over K classes is far faster along the
leading dimension of class-major ``(K, N)`` logits than along the short rows of ``(N, K)``.
So, for the whole run:

    z^T  = W X^T + b 1^T                       (K, N)
    loss, G^T = loss_on_logits(z^T, T^T)       class_dim = 0, G^T = (h(z^T) - T^T) / N
    dW   = G^T X,   db = G^T 1                 (K, D), (K,)

The maths is the reference's, operation for operation, in another memory layout; a test pins
the two together (float64, 1e-12 relative). The cost is one copy of X, made once; each product
uses whichever of X and X^T is faster for it.

:func:`make_step` picks, for one sigmoid or identity output on a large CPU X, the single-pass
kernel of ``fused_cpu.py`` instead: it reads X once per step and needs no copy.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import functional as F
from .layers import Linear


def supports(model) -> bool:
    """True for models that are a single :class:`Linear` layer followed by a link."""
    children = list(model.children())
    return len(children) == 1 and isinstance(children[0], Linear)


def transpose(X: Tensor, rows: int = 4096) -> Tensor:
    """``X.T.contiguous()`` in blocks of rows: each block's transpose stays in cache, which on
    CPU makes the copy about 1.5x faster than one strided pass over a large matrix."""
    if X.device.type != "cpu":
        return X.T.contiguous()
    out = torch.empty(X.shape[1], X.shape[0], dtype=X.dtype, device=X.device)
    for start in range(0, X.shape[0], rows):
        out[:, start : start + rows].copy_(X[start : start + rows].T)
    return out


def make_step(model, X: Tensor, T: Tensor):
    """The fastest full-batch step that applies: the single-pass fused CPU kernel
    (``fused_cpu.py``) for one sigmoid or identity output on a large CPU X, else the
    feature-major torch step below."""
    from . import fused_cpu

    if X.numel() >= fused_cpu.MIN_ENTRIES and fused_cpu.supports(model, X):
        return fused_cpu.FusedStep(model, X, T)
    return FeatureMajorStep(model, X, T)


class FeatureMajorStep:
    """``step(l2) -> (loss, grads)`` on fixed full-batch data, like ``objective_and_grad``."""

    def __init__(self, model, X: Tensor, T: Tensor) -> None:
        if not supports(model):
            raise TypeError("the feature-major fast path needs a model with a single Linear layer")
        (self.prefix, self.layer), = model.named_children()
        self.X = X  # (N, D), the caller's rows (no copy)
        self.XT = transpose(X)  # (D, N): the one copy this path costs
        self.TT = T.T.contiguous()  # (K, N)
        self._loss_fn = F.LINKS[model.link][1]

    @torch.no_grad()
    def step(self, l2: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
        W, b = self.layer.weight, self.layer.bias
        zT = W @ self.XT if b is None else torch.addmm(b[:, None], W, self.XT)
        loss, gT = self._loss_fn(zT, self.TT, class_dim=0)
        # measured on CPU: with one output the matrix-vector product is faster over X^T; with
        # several, G^T X over the row-major X is (e.g. 11 ms against 15 ms at 60,000 x 784 x 10)
        if gT.shape[0] == 1:
            grad_weight = torch.mv(self.XT, gT[0])[None, :]
        else:
            grad_weight = gT @ self.X
        if l2:
            loss = loss + 0.5 * l2 * (W * W).sum()
            grad_weight = grad_weight + l2 * W
        grads = {f"{self.prefix}.weight": grad_weight}
        if b is not None:
            grads[f"{self.prefix}.bias"] = gT.sum(dim=1)
        return loss, grads
