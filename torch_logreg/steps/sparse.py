"""The step of a single-``Linear`` model on sparse X (a torch sparse CSR tensor): the reference
maths with X never densified.

    Z  = X W^T + 1 b^T                          (N, K)   sparse x dense
    loss, G from Z and T                        G = dL/dZ = w (h(Z) - T) / N, the fused head and loss
    dW = G^T X = (X^T G)^T,  db = G^T 1         (K, D), (K,)   X^T a CSR made once for bound data
    objective = loss + (l2 / 2) ||W||^2,  dW += l2 W

``loss`` is the model's own (``model.loss_fn``: binary cross-entropy on logits, categorical
cross-entropy or half squared error, each the mean over the rows, optionally sample-weighted), so
sigmoid, softmax and identity outputs are all covered; the penalty is :mod:`~torch_logreg.penalty`'s.
Tests pin it to the reference step, autograd and finite differences (float64).

Mini-batches of sparse X are rows of the CSR tensor, gathered by
:func:`~torch_logreg.functional.csr_rows` (torch has no ``index_select`` for CSR).

With one sigmoid or identity output, X on the CPU in the weights' dtype (float32/float64) and
numba importable, the step runs the fused kernels of :mod:`~torch_logreg.steps.sparse_fused`
instead (one pass over X, no transpose; the bound full batch regrouped by column block once when
D is large): the same loss and gradients, to rounding. Otherwise the torch products above.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .. import functional as F
from .. import penalty
from ..errors import UsageError
from ..models import single_linear
from .base import Step

if TYPE_CHECKING:
    from .sparse_fused import BlockedFused, SparseFused


def check_model(model) -> None:
    """Sparse X needs a single ``Linear`` model: a :class:`UsageError` says so for any other."""
    if single_linear(model) is None:
        raise UsageError(f"sparse X needs a model that is one Linear layer (logistic, softmax or linear regression), "
                         f"not {type(model).__name__}; pass X densified (X.toarray() or X.to_dense()) for this model")


class SparseStep(Step):
    """``step(X, T, l2) -> (loss, grads)`` for a sparse CSR ``X``, like ``objective_and_grad``.

    Built with the full batch ``X`` (and its ``sample_weight``), it keeps ``X^T`` as a CSR
    tensor, made once; any other batch (a mini-batch of rows) is transposed at its step and
    unweighted (the sample weights belong to the bound batch). Built without a batch, it weights
    each batch by ``sample_weight`` as it is when the step runs (the loop sets it to the batch's
    rows). The gradients are new tensors each step.

    Where :mod:`~.sparse_fused` applies (see the module docstring) no transpose is made: the
    bound batch is regrouped by column block instead when :func:`~.sparse_fused.use_blocks`
    says so, and every other batch runs the row pass. ``fused=False`` keeps the torch products
    (for comparisons).
    """

    name = "sparse"

    def __init__(self, model, X: Tensor | None = None, T: Tensor | None = None,
                 sample_weight: Tensor | None = None, *, fused: bool = True) -> None:
        check_model(model)
        (self.prefix, self.layer), = model.named_children()
        self._loss_fn = model.loss_fn
        self.sample_weight = sample_weight
        self.X = X
        self._fused: SparseFused | None = None
        self._blocked: BlockedFused | None = None
        bound_fused = False
        if fused:  # here, not above: it imports numba, which a run on the torch products never needs
            from . import sparse_fused

            self._supports_data = sparse_fused.supports_data
            self._fused = sparse_fused.SparseFused(model.link) if sparse_fused.supports_model(model) else None
            bound_fused = X is not None and self._fused is not None and sparse_fused.supports_data(X, self.layer.weight)
            self._blocked = (sparse_fused.BlockedFused(model.link, X)
                             if X is not None and bound_fused and sparse_fused.use_blocks(X) else None)
        self.XT = None if X is None or bound_fused else F.csr_transpose(X)

    @property
    def kernel_name(self) -> str | None:
        """The numba kernel of :mod:`.sparse_fused` the step runs where it reads the batch:
        ``"sparse_fused_blocked"`` (the bound batch regrouped by column block; other batches take
        the row pass), ``"sparse_fused"`` (the row pass), or None (torch's products only)."""
        if self._blocked is not None:
            return "sparse_fused_blocked"
        return None if self._fused is None else "sparse_fused"

    @torch.no_grad()
    def step(self, X: Tensor, T: Tensor, l2: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
        W, b = self.layer.weight, self.layer.bias
        if self._fused is not None and self._supports_data(X, W):
            return self._fused_step(X, T, l2)
        one = W.shape[0] == 1  # one output: sparse matrix-vector products, faster than (N, 1) matrix products
        if one:
            z = torch.mv(X, W[0]).unsqueeze(1)
            if b is not None:
                z = z + b
        else:
            z = F.linear(X, W, b)
        loss, grad_logits = self._loss_fn(z, T, self.sample_weight if X is self.X or self.X is None else None)
        XT = self.XT if X is self.X and self.XT is not None else F.csr_transpose(X)
        if one:
            grads = {f"{self.prefix}.weight": torch.mv(XT, grad_logits[:, 0]).unsqueeze(0)}
        else:
            grads = {f"{self.prefix}.weight": torch.mm(XT, grad_logits).T.contiguous()}
        if b is not None:
            grads[f"{self.prefix}.bias"] = grad_logits.sum(dim=0)
        # the gradient is a new tensor each step: the penalty goes into it in place
        loss = penalty.add_in_place(loss, grads[f"{self.prefix}.weight"], W, l2)
        return loss, grads

    def _kernel_inputs(self, X: Tensor, T: Tensor) -> tuple[Tensor, Tensor | None]:
        """The targets and sample weights (None: unweighted) as the kernels read them, with the
        torch path's weighting rule."""
        weights = self.sample_weight if X is self.X or self.X is None else None
        if weights is not None:
            weights = weights.detach().reshape(-1).to(X.dtype).contiguous()
        return T.detach().reshape(-1).to(X.dtype).contiguous(), weights

    def margin_parts(self, T: Tensor):
        """The pass over the bound, regrouped X in three parts, for a line search in margin space
        (:mod:`~torch_logreg.solvers.lbfgs`): ``margins(w, b) -> z = X w + b``, ``terms(z) -> (r,
        [sum r / N, sum loss])`` with ``T`` and the sample weights bound, and ``gradient(r, dtype)
        -> X^T r``; None where the bound X is not regrouped."""
        if self._blocked is None or self.X is None:
            return None
        blocked = self._blocked
        y, weights = self._kernel_inputs(self.X, T)
        return blocked.margins, lambda z: blocked.terms(z, y, weights), blocked.gradient

    def _fused_step(self, X: Tensor, T: Tensor, l2: float) -> tuple[Tensor, dict[str, Tensor]]:
        """The step through :mod:`~.sparse_fused`, with the torch path's weighting rule."""
        W, b = self.layer.weight, self.layer.bias
        y, weights = self._kernel_inputs(X, T)
        w = W.detach()[0].contiguous()
        bias = 0.0 if b is None else float(b.detach()[0])
        if self._blocked is not None and X is self.X:
            grad, sums = self._blocked(y, weights, w, bias)
        else:
            assert self._fused is not None  # the step takes this path only with its kernel
            grad, sums = self._fused(X, y, weights, w, bias)
        n = X.shape[0]
        loss = torch.tensor(sums[1] / n if n else float("nan"), dtype=W.dtype)
        grads = {f"{self.prefix}.weight": grad.unsqueeze(0)}
        if b is not None:
            grads[f"{self.prefix}.bias"] = torch.tensor([sums[0]], dtype=W.dtype)
        loss = penalty.add_in_place(loss, grads[f"{self.prefix}.weight"], W, l2)
        return loss, grads
