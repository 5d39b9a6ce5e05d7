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


class LossScaledStep(Step):
    """float16 with dynamic loss scaling (:mod:`torch_logreg.loss_scaling`), on float32 weights
    and data: the forward ``X W^T`` in float16; the loss and ``G = dL/dlogits`` from those logits
    in float32; the backward products (``G^T X``) in float16 from ``S G``, where the scale ``S``
    keeps small gradients from flushing to zero; the gradients back in float32, divided by ``S``,
    ``found_inf`` set where one overflowed; then the L2 term. The loop applies the step only where
    :meth:`LossScaler.finite`, then updates the scale. ``scaler``: the step's
    :class:`~torch_logreg.loss_scaling.LossScaler`."""

    name = "loss_scaled_float16"

    def __init__(self, model, device: torch.device) -> None:
        from ..loss_scaling import LossScaler

        self.model, self.device_type = model, device.type
        self.scaler = self._scaler = LossScaler(device)

    def step(self, X: Tensor, T: Tensor, l2: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
        from .. import penalty

        model = self.model
        with torch.no_grad():
            with torch.autocast(self.device_type, dtype=torch.float16):
                z = model.logits(X, cache=True)
            loss, grad_logits = model.loss_fn(z.float(), T, self.sample_weight)
            with torch.autocast(self.device_type, dtype=torch.float16):
                model.backward(grad_logits * self._scaler.scale)
            layers = model.named_children()
            grads = {f"{prefix}.{name}": g.float() for prefix, layer in layers for name, g in layer.grads.items()}
            self._scaler.unscale_(grads)
            if l2:
                loss = penalty.add(loss, grads, dict(model.named_parameters()), l2)
        return loss, grads
