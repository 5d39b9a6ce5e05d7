"""The mini-batch step of a single-``Linear`` model in buffers made once, in the row layout."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import penalty
from ..models import single_linear
from .common import IN_PLACE


class BatchStep:
    """``step(Xb, Tb, l2) -> (loss, grads)`` for the mini-batches of a single-``Linear`` model,
    like ``objective_and_grad(Xb, Tb, l2)``, in buffers allocated once for the largest batch.

    Rows stay row-major here (a batch is gathered row by row), so the logits are ``(B, K)``.
    The weight and bias gradients are views of one flat tensor, :attr:`flat_grad`, in the
    model's parameter order, so the loop can accumulate an epoch's gradient in one operation.
    The returned tensors are those buffers: the next ``step`` overwrites them.
    """

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

    @torch.no_grad()
    def step(self, Xb: Tensor, Tb: Tensor, l2: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
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
