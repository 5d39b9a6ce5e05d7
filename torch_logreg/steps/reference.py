"""The reference step: the model's own manual backward, for any model and any batch."""

from __future__ import annotations

from torch import Tensor

from .base import Step


class ReferenceStep(Step):
    """``step(X, T, l2) -> (loss, grads)``: :meth:`StackedModel.objective_and_grad` on the batch
    it is given (optionally sample-weighted). Every other step is pinned to this one by tests."""

    name = "reference"

    def __init__(self, model, sample_weight: Tensor | None = None) -> None:
        self.model = model
        self.sample_weight = sample_weight
        self._objective_and_grad = model.objective_and_grad

    def step(self, X: Tensor, T: Tensor, l2: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
        return self._objective_and_grad(X, T, l2, self.sample_weight)
