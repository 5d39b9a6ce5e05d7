"""The full-batch step in the row layout: :class:`~.batch.BatchStep` bound to the whole of X.

The same maths as the reference step on ``(N, D)`` rows and ``(N, K)`` logits, in buffers made
once and without the copy of X the feature-major step makes. Which of the two layouts is faster
depends on the CPU and its BLAS, so the selector (``select.py``) measures both.
"""

from __future__ import annotations

from torch import Tensor

from .batch import BatchStep

#: the fixed rule gives the full batch to this step (on the CPU: one call of the batch kernel, one
#: thread) only while rows x outputs and rows x features x outputs are at most these: there a
#: torch step spends more in dispatching its dozen operations than the kernel in arithmetic;
#: beyond, the kernel's float64 link, one row at a time, costs more than torch's vectorised one
#: (figures: benchmarks/README.md)
RULE_MAX_ROWS_OUTPUTS = 1024
RULE_MAX_WORK = 1 << 17


def rule_takes(rows: int, features: int, outputs: int) -> bool:
    """Whether the fixed rule gives a full batch of this shape to the row-major step."""
    return rows * outputs <= RULE_MAX_ROWS_OUTPUTS and rows * features * outputs <= RULE_MAX_WORK


class RowMajorStep(BatchStep):
    """``step(X, T, l2) -> (loss, grads)`` on the full batch ``X (N, D)``, like
    ``objective_and_grad``; the returned gradients are buffers the next step overwrites."""

    name = "row_major"

    def __init__(self, model, X: Tensor, T: Tensor) -> None:
        super().__init__(model, X.shape[0], X.dtype, X.device)
