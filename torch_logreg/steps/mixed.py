"""Mixed precision: a step computed under ``torch.autocast`` (bfloat16) on float32 weights and data.

The products (the forward ``X W^T`` and the backward ``G^T X``, ``G W``) run in bfloat16 with
float32 accumulation inside the kernels; the objective and gradient come back as float32, so the
update, the moments of an adaptive rule and the weights stay float32 ("master weights").
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Step


class AutocastStep(Step):
    name = "autocast"

    def __init__(self, inner, dtype: torch.dtype, device: torch.device) -> None:
        self.inner, self.dtype, self.device_type = inner, dtype, device.type
        self.name = f"autocast_{str(dtype).replace('torch.', '')}({inner.name})"

    def step(self, X: Tensor, T: Tensor, l2: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
        with torch.autocast(self.device_type, dtype=self.dtype):
            loss, grads = self.inner.step(X, T, l2)
        return loss.float(), {k: g.float() for k, g in grads.items()}
