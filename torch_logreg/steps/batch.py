"""The mini-batch step of a single-``Linear`` model in buffers made once, in the row layout."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from .. import penalty
from ..models import single_linear
from .base import Step
from .common import IN_PLACE

if TYPE_CHECKING:
    from .batch_fused import RowsKernel


class BatchStep(Step):
    """``step(Xb, Tb, l2) -> (loss, grads)`` for the mini-batches of a single-``Linear`` model,
    like ``objective_and_grad(Xb, Tb, l2)``, in buffers allocated once for the largest batch.

    Rows stay row-major here (a batch is gathered row by row), so the logits are ``(B, K)``.
    The weight and bias gradients are views of one flat tensor, :attr:`flat_grad`, in the
    model's parameter order, so the loop can accumulate an epoch's gradient in one operation.
    The returned tensors (the loss too) are those buffers: the next ``step`` overwrites them.

    On the CPU, with numba, the step is one call of a kernel in :mod:`.batch_fused` (on a
    contiguous float batch in the model's dtype; for one output, batches up to
    ``batch_fused.MAX_WORK``; larger batches of several outputs run in chunks on all threads); and
    :meth:`rows_step` binds it to the whole in-memory data set, so that a batch is given as its
    row numbers and never gathered. Elsewhere the step is about a dozen torch operations.
    """

    grads: dict[str, Tensor]  # the buffers every step returns

    name = "batch"

    def __init__(self, model, batch_size: int, dtype: torch.dtype, device) -> None:
        if single_linear(model) is None:
            raise TypeError("the mini-batch fast path needs a model with a single Linear layer")
        (self.prefix, self.layer), = model.named_children()
        self._in_place = IN_PLACE[model.link]
        W, b = self.layer.weight, self.layer.bias
        k, d = W.shape
        self._z = torch.empty(batch_size, k, dtype=dtype, device=device)
        self._buf = torch.empty_like(self._z)
        self._zero = torch.zeros((), dtype=dtype, device=device)
        self.flat_grad = torch.empty(k * d + (0 if b is None else k), dtype=dtype, device=device)
        self._grad_weight = self.flat_grad[: k * d].view(k, d)
        self.grads = {f"{self.prefix}.weight": self._grad_weight}
        self._grad_bias = None
        if b is not None:
            self._grad_bias = self.flat_grad[k * d :]
            self.grads[f"{self.prefix}.bias"] = self._grad_bias
        self.dtype = dtype
        #: the kernel (None where it does not apply), writing into flat_grad and this 1-entry loss
        self._kernel: RowsKernel | None = None
        if torch.device(device).type == "cpu":
            from . import batch_fused  # here, not above: it imports numba, which a CUDA run never needs

            if batch_fused.applies(model, dtype, torch.device(device), batch_size):
                self._loss_buf = torch.empty(1, dtype=dtype)
                self._loss = self._loss_buf.view(())
                self._kernel = batch_fused.RowsKernel(model, self.flat_grad, self._loss_buf)
                self._all_rows = np.arange(batch_size, dtype=np.int64)
                self._d, self._k = d, k  # the features and outputs the kernel was made for

    @property
    def kernel_name(self) -> str | None:
        """``"batch_fused"`` where the numba kernel of :mod:`.batch_fused` computes the batches it
        can read (contiguous, in the step's dtype); None where every batch takes torch operations."""
        return None if self._kernel is None else "batch_fused"

    def step(self, Xb: Tensor, Tb: Tensor, l2: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
        # the loop already runs under no_grad; entering it again costs a good part of a small step
        if torch.is_grad_enabled():
            with torch.no_grad():
                return self.step(Xb, Tb, l2)
        # the kernel reads without bounds checks: shapes it was not made for take the torch path,
        # which raises on them
        kernel = self._kernel
        if (kernel is not None and self._kernel_reads(Xb, Tb) and Tb.dtype == self.dtype and Tb.is_contiguous()
                and Xb.shape[0] <= self._all_rows.shape[0]):
            x, y = Xb.detach().numpy(), Tb.detach().numpy()
            kernel(x, y, self._all_rows[: x.shape[0]])
            return self._add_penalty(l2)
        return self._torch_step(Xb, Tb, l2)

    def rows_step(self, X: Tensor, T: Tensor) -> Callable[[np.ndarray, float], tuple[Tensor, dict[str, Tensor]]] | None:
        """``step_rows(rows, l2) -> (loss, grads)``: the step on the batch ``X[rows]``, ``T[rows]``
        (``rows`` a 1-D int64 NumPy array of row numbers), with the kernel reading the rows in
        place; None where the kernel does not apply to ``X``. Call it under ``torch.no_grad()``."""
        kernel = self._kernel
        if kernel is None or not self._kernel_reads(X, T):
            return None
        (x, y), add_penalty = kernel.data(X, T), self._add_penalty

        def step_rows(rows: np.ndarray, l2: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
            kernel(x, y, rows)
            return add_penalty(l2)

        return step_rows

    def _kernel_reads(self, X: Tensor, T: Tensor) -> bool:
        """Whether the kernel can read the rows of ``X`` and ``T`` (``T`` in any dtype): a contiguous
        2-D CPU ``X`` in the step's dtype, of the width and outputs the kernel was made for."""
        return (self._kernel is not None and X.dtype == self.dtype and X.device.type == "cpu" and X.dim() == 2
                and X.is_contiguous() and X.shape[1] == self._d and T.shape == (X.shape[0], self._k))

    def _add_penalty(self, l2: float) -> tuple[Tensor, dict[str, Tensor]]:
        if not l2:
            return self._loss, self.grads
        return penalty.add_in_place(self._loss, self._grad_weight, self.layer.weight, l2), self.grads

    def _torch_step(self, Xb: Tensor, Tb: Tensor, l2: float) -> tuple[Tensor, dict[str, Tensor]]:
        W, b = self.layer.weight, self.layer.bias
        nb = Xb.shape[0]
        # an empty batch (a padding step of a data-parallel run) has a NaN mean loss and zero
        # gradients (sums over no rows), as in the reference
        inv_n = 1.0 / nb if nb else math.nan
        grad_scale = 1.0 / nb if nb else 0.0
        z = self._z[:nb]
        if b is None:
            torch.mm(Xb, W.T, out=z)
        else:
            torch.addmm(b, Xb, W.T, out=z)
        loss = self._in_place(z, Tb, self._buf[:nb], self._zero, 1).mul_(inv_n)  # z now holds h(z) - t
        if z.shape[1] == 1:
            grad = self._grad_weight[0]
            torch.addmv(grad, Xb.T, z[:, 0], beta=0, alpha=grad_scale, out=grad)
        else:
            torch.addmm(self._grad_weight, z.T, Xb, beta=0, alpha=grad_scale, out=self._grad_weight)
        if self._grad_bias is not None:
            torch.sum(z, dim=0, out=self._grad_bias).mul_(grad_scale)
        return penalty.add_in_place(loss, self._grad_weight, W, l2), self.grads
