"""Learning-rate schedules: the learning rate of each epoch, equal to ``torch.optim.lr_scheduler``'s.

With base rate ``lr`` and ``e`` the epoch (from 0):

* ``constant``:     ``lr``
* ``step``:         ``lr gamma^floor(e / step_size)``                         (StepLR)
* ``exponential``:  ``lr gamma^e``                                            (ExponentialLR)
* ``cosine``:       ``lr (1 + cos(pi e / T)) / 2``, ``T`` the epochs after any warm-up  (CosineAnnealingLR)

``warmup_epochs = W > 0`` first ramps linearly, ``lr (s + (1 - s) e / W)`` for ``e < W`` with
``s = warmup_start_factor`` (LinearLR), then runs the schedule from its own epoch 0 (SequentialLR).
A schedule is a function of the epoch alone, so a resumed run follows it without saved state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import arguments

SCHEDULES = ("constant", "step", "exponential", "cosine")


@dataclass(frozen=True)
class Schedule:
    name: str = "constant"
    epochs: int = 1  # the run's epoch budget (cosine reaches 0 at its end)
    step_size: int = 1
    gamma: float = 0.1
    warmup_epochs: int = 0
    warmup_start_factor: float = 1.0 / 3.0

    def __post_init__(self) -> None:
        arguments.choice("schedule", self.name, SCHEDULES)
        arguments.number("step_size", self.step_size, low=1, integer=True)
        arguments.number("gamma", self.gamma, low=0, low_open=True)
        arguments.number("warmup_epochs", self.warmup_epochs, low=0, integer=True)
        arguments.number("warmup_start_factor", self.warmup_start_factor, low=0, high=1, low_open=True)

    def factor(self, epoch: int) -> float:
        """The learning rate of ``epoch`` (from 0) over the base rate."""
        w = self.warmup_epochs
        if epoch < w:
            s = self.warmup_start_factor
            return s + (1.0 - s) * epoch / w
        e = epoch - w
        if self.name == "step":
            return self.gamma ** (e // self.step_size)
        if self.name == "exponential":
            return self.gamma**e
        if self.name == "cosine":
            span = max(1, self.epochs - w)
            return (1.0 + math.cos(math.pi * min(e, span) / span)) / 2.0
        return 1.0
