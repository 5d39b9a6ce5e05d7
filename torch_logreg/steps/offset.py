"""The loop's rule for a run with an offset: the one step that takes it.

An offset ``o`` is a known term added to each row's logits, ``z = X W^T + b + o`` (``o`` ``(N, 1)``,
broadcast over the outputs, or ``(N, K)``), as statsmodels' and glmnet's ``offset``. The gradient
keeps its shape, ``dz = (p - t) / N`` with ``p`` the link of the shifted logits, so the reference
step computes it once the forward pass adds ``o``. The faster steps (fused kernels, feature-major
copies, CUDA graphs) compute ``X W^T + b`` inside their kernels and do not take it: with an offset
every run takes the reference step, here and nowhere else.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..errors import UsageError
from .reference import ReferenceStep


class OffsetStep(ReferenceStep):
    """The reference step with ``offset`` ``(B, 1)`` or ``(B, K)`` added to the batch's logits; the
    loop sets :attr:`offset` (and :attr:`sample_weight`) to each mini-batch's rows before its step."""

    name = "reference"

    def __init__(self, model, offset: Tensor, sample_weight: Tensor | None = None) -> None:
        super().__init__(model, sample_weight)
        self.offset = offset

    def step(self, X: Tensor, T: Tensor, l2: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
        return self._objective_and_grad(X, T, l2, self.sample_weight, self.offset)


def offset_step(model, offset: Tensor, sample_weight: Tensor | None, *, sparse: bool, cuda_graph: bool,
                autocast: torch.dtype | None, device: torch.device) -> tuple[OffsetStep, Any]:
    """``(inner, step)``: the :class:`OffsetStep` (whose ``offset`` the loop sets per batch) and the
    step the loop runs (the same, or it under bfloat16 autocast); a UsageError for what no step
    with an offset does."""
    if sparse:
        raise UsageError("an offset in the loop needs dense X (the reference step); for sparse X leave the offset "
                         "out")
    if cuda_graph:
        raise UsageError("cuda_graph captures the fast step, which takes no offset; turn cuda_graph off")
    if autocast is not None and sample_weight is not None:
        raise UsageError("sample weights in the loop do not combine with bfloat16; leave the weights out or use "
                         "float32")
    inner = OffsetStep(model, offset, sample_weight)
    if autocast is None:
        return inner, inner
    from .mixed import AutocastStep

    return inner, AutocastStep(inner, autocast, device)


def check_offset(offset, n: int, n_outputs: int, dtype: torch.dtype, device, name: str = "offset") -> Tensor:
    """``offset`` ``(N,)`` or ``(N, K)`` as a ``(N, 1)`` or ``(N, K)`` tensor of finite numbers in ``dtype`` on
    ``device``; anything else is a UsageError naming it."""
    import numpy as np

    o = torch.as_tensor(np.asarray(offset.detach().cpu() if isinstance(offset, Tensor) else offset, dtype=np.float64))
    if o.ndim == 1:
        o = o[:, None]
    if o.ndim != 2 or o.shape[0] != n or o.shape[1] not in (1, n_outputs):
        raise UsageError(f"{name} must have one entry per row, shape ({n},) or ({n}, {n_outputs}), got shape "
                         f"{tuple(torch.as_tensor(np.asarray(offset)).shape)}")
    bad = ~torch.isfinite(o)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise UsageError(f"{name}[{i}] is {float(o[bad][0])!r}; each entry must be a finite number")
    return o.to(device=device, dtype=dtype)
