"""The full-batch step in the row layout: :class:`~.batch.BatchStep` bound to the whole of X.

The same maths as the reference step on ``(N, D)`` rows and ``(N, K)`` logits, in buffers made
once and without the copy of X the feature-major step makes. Which of the two layouts is faster
depends on the CPU and its BLAS, so the selector (``select.py``) measures both.
"""

from __future__ import annotations

from torch import Tensor

from .batch import BatchStep


class RowMajorStep(BatchStep):
    """``step(X, T, l2) -> (loss, grads)`` on the full batch ``X (N, D)``, like
    ``objective_and_grad``; the returned gradients are buffers the next step overwrites."""

    name = "row_major"

    def __init__(self, model, X: Tensor, T: Tensor) -> None:
        super().__init__(model, X.shape[0], X.dtype, X.device)
