"""Dynamic loss scaling for float16 steps, by the rule of ``torch.amp.GradScaler``.

A float16 product flushes a gradient smaller than about ``6e-8`` to zero. The step therefore
multiplies the gradient it starts its backward from (``dL/dlogits``: what scaling the loss does to
an autograd backward) by the scale ``S``, and the gradients it returns are ``S`` times the true
ones. Before the update:

1. :meth:`LossScaler.unscale_`: every gradient is multiplied by ``1/S`` (in float32, ``1/S``
   taken in float64 and rounded to float32, as GradScaler does); ``found_inf`` is set when any
   scaled gradient holds an inf or a NaN (a product that overflowed float16).
2. :meth:`LossScaler.finite`: whether the step may be applied; a step with a non-finite gradient
   is skipped (the weights and the update rule's state left as they were).
3. :meth:`LossScaler.update`: after a skipped step ``S <- S * backoff_factor`` and the count of
   good steps restarts; after ``growth_interval`` good steps in a row ``S <- S * growth_factor``
   (kept only if finite) and the count restarts.

Defaults as GradScaler's: ``init_scale = 2**16``, ``growth_factor = 2``, ``backoff_factor = 0.5``,
``growth_interval = 2000``. Nothing here depends on the device or on float16 itself: the scale,
the flag and the count are 0-dim tensors on the run's device, updated without reading them back,
except :meth:`finite`, the one read a step (GradScaler's ``step`` reads the same flag: the update
rules count their steps on the host).
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import arguments


class LossScaler:
    """The scale, its count of good steps and the non-finite flag of the last unscale (see the
    module docstring); ``skipped``: the steps skipped so far."""

    def __init__(self, device: torch.device | str = "cpu", init_scale: float = 2.0**16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000) -> None:
        arguments.number("init_scale", init_scale, low=0, low_open=True)
        arguments.number("growth_factor", growth_factor, low=1, low_open=True)
        arguments.number("backoff_factor", backoff_factor, low=0, high=1, low_open=True, high_open=True)
        arguments.number("growth_interval", growth_interval, low=1, integer=True)
        self.growth_factor, self.backoff_factor = float(growth_factor), float(backoff_factor)
        self.growth_interval = int(growth_interval)
        self.scale = torch.full((), init_scale, dtype=torch.float32, device=device)
        self.growth_tracker = torch.zeros((), dtype=torch.int32, device=device)
        self.found_inf = torch.zeros((), dtype=torch.float32, device=device)
        self.skipped = 0

    def _find_inf(self, grads: dict[str, Tensor]) -> None:
        for g in grads.values():
            self.found_inf.copy_(torch.maximum(self.found_inf, (~torch.isfinite(g).all()).float()))

    def unscale_(self, grads: dict[str, Tensor]) -> None:
        """``grads`` (float32, ``S`` times the gradient) divided by ``S`` in place; ``found_inf``
        set where one held an inf or a NaN before."""
        inv_scale = self.scale.double().reciprocal().float()
        self._find_inf(grads)
        for g in grads.values():
            g.mul_(inv_scale)

    def finite(self, grads: dict[str, Tensor] | None = None) -> bool:
        """Whether the last unscaled gradient was finite, so its step is applied (a host read);
        counts a skipped step. ``grads``: the gradient as the update takes it, checked too: after
        a reduce across processes a non-finite value of any one reaches every one, so all skip
        alike (and their scales stay equal)."""
        if grads is not None:
            self._find_inf(grads)
        ok = not bool(self.found_inf)
        self.skipped += not ok
        return ok

    def update(self) -> None:
        """The scale after a step (see the module docstring); clears ``found_inf``."""
        found = self.found_inf > 0
        good = torch.where(found, torch.zeros_like(self.growth_tracker), self.growth_tracker + 1)
        grow = good == self.growth_interval
        grown = self.scale * self.growth_factor
        self.scale.copy_(torch.where(found, self.scale * self.backoff_factor,
                                     torch.where(grow & torch.isfinite(grown), grown, self.scale)))
        self.growth_tracker.copy_(torch.where(grow, torch.zeros_like(good), good))
        self.found_inf.zero_()

    def state_dict(self) -> dict:
        """GradScaler's state (its names), and the steps skipped so far."""
        return {"scale": float(self.scale), "growth_factor": self.growth_factor, "backoff_factor": self.backoff_factor,
                "growth_interval": self.growth_interval, "_growth_tracker": int(self.growth_tracker),
                "skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        self.scale.fill_(float(state["scale"]))
        self.growth_tracker.fill_(int(state["_growth_tracker"]))
        self.growth_factor, self.backoff_factor = float(state["growth_factor"]), float(state["backoff_factor"])
        self.growth_interval = int(state["growth_interval"])
        self.skipped = int(state.get("skipped", 0))
        self.found_inf.zero_()
