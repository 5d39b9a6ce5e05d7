"""The one interface of a step, which the loop (``train.py``) relies on and nothing more.

A step computes one batch's objective and manual gradient, ``step(X, T, l2) -> (objective,
grads)``: ``X`` ``(B, D)``, targets ``T`` ``(B, K)``, the objective a 0-dim tensor (mean loss
plus ``l2 / 2 ||W||^2``) and ``grads`` one tensor per parameter name, shaped like it. Every
other member is an optional capability, declared here with the value that means "not offered",
so the loop reads it directly instead of probing the step for it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING

from torch import Tensor

if TYPE_CHECKING:
    import numpy as np

    from ..loss_scaling import LossScaler
    from .selection import Selection


class Step(ABC):
    """Base class of every step; subclasses set ``name``, write :meth:`step` and override the
    capabilities they offer."""

    #: the step's name (``registry.STEPS`` names what a run may ask for; wrappers add theirs)
    name: str = "step"
    #: the gradient buffers :meth:`step` returns every call (overwritten by the next), by
    #: parameter name, or None where each step returns new tensors
    grads: dict[str, Tensor] | None = None
    #: those buffers as one flat tensor they are views of, in the model's parameter order, so an
    #: epoch's gradient is accumulated in one operation; None where they are not one tensor
    flat_grad: Tensor | None = None
    #: whether :meth:`step` applies the update too (a captured CUDA graph), so the loop must not
    includes_update: bool = False
    #: ``(B,)`` weights of the rows of the next batch, for a step that weights its batches: the
    #: loop sets it before each weighted mini-batch; None weights every row alike
    sample_weight: Tensor | None = None
    #: how the step was chosen (``select.py`` sets it)
    selection: Selection | None = None
    #: float16: the loss scale of the gradients the step returns (``loss_scaling.LossScaler``),
    #: which the loop reads to skip a step with a non-finite gradient and to update; None without
    scaler: LossScaler | None = None

    @abstractmethod
    def step(self, X: Tensor, T: Tensor, l2: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
        """``(loss, grads)`` of the objective on the batch ``X``, ``T`` with an L2 term ``l2``."""

    def rows_step(self, X: Tensor, T: Tensor) -> Callable[[np.ndarray, float], tuple[Tensor, dict[str, Tensor]]] | None:
        """``step_rows(rows, l2)``, the step on the batch ``X[rows]``, ``T[rows]`` read in place
        (``rows`` a 1-D int64 NumPy array; no gather), or None where the step cannot do that."""
        return None
