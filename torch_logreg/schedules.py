"""Learning-rate schedules: the learning rate of each epoch, equal to ``torch.optim.lr_scheduler``'s.

With base rate ``lr`` and ``e`` the epoch (from 0):

* ``constant``:     ``lr``
* ``step``:         ``lr gamma^floor(e / step_size)``                         (StepLR)
* ``exponential``:  ``lr gamma^e``                                            (ExponentialLR)
* ``cosine``:       ``lr (1 + cos(pi e / T)) / 2``, ``T`` the epochs after any warm-up  (CosineAnnealingLR)

``warmup_epochs = W > 0`` first ramps linearly, ``lr (s + (1 - s) e / W)`` for ``e < W`` with
``s = warmup_start_factor`` (LinearLR), then runs the schedule from its own epoch 0 (SequentialLR).
A schedule is a function of the epoch alone, so a resumed run follows it without saved state.
``warmup_epochs`` may not exceed ``epochs``, and a growing schedule (``gamma > 1``) may not raise
``lr`` past float32's largest number within the run (:meth:`Schedule.check_rate`, which the loop's
callers apply before training; :meth:`Schedule.factor` says so in words where it overflows).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

from . import arguments

SCHEDULES = ("constant", "step", "exponential", "cosine")
#: the largest float32: no epoch's rate may exceed it (Schedule.check_rate)
FLOAT32_MAX = 3.4028234663852886e38


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
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs = {self.warmup_epochs} is more than epochs = {self.epochs}: the warm-up would "
                             "never reach the base rate; lower warmup_epochs")

    def peak_factor(self) -> float:
        """The largest :meth:`factor` over the run's epochs (1 unless ``gamma > 1`` grows the rate;
        ``inf`` where it passes the largest float)."""
        if self.name not in ("step", "exponential") or self.gamma <= 1:
            return 1.0
        last = max(self.epochs - 1 - self.warmup_epochs, 0)
        exponent = last // self.step_size if self.name == "step" else last
        log_peak = exponent * math.log(self.gamma)
        return math.exp(log_peak) if log_peak < math.log(sys.float_info.max) else math.inf

    def check_rate(self, lr: float, largest: float = FLOAT32_MAX) -> None:
        """A ValueError when the rate ``lr * factor(e)`` of some epoch exceeds ``largest`` (float32's
        largest number by default: the update multiplies the weights' dtype by it)."""
        peak = self.peak_factor()
        if lr * peak > largest:
            raise ValueError(f"gamma = {self.gamma:g} with schedule = {self.name!r} raises the learning rate past "
                             f"{largest:.3g} within {self.epochs} epochs; use gamma <= 1 (a decaying rate) or fewer epochs")

    def factor(self, epoch: int) -> float:
        """The learning rate of ``epoch`` (from 0) over the base rate."""
        w = self.warmup_epochs
        if epoch < w:
            s = self.warmup_start_factor
            return s + (1.0 - s) * epoch / w
        e = epoch - w
        if self.name == "step":
            try:
                return self.gamma ** (e // self.step_size)
            except OverflowError:
                raise ValueError(f"gamma = {self.gamma:g} with schedule = 'step' overflows the learning rate at epoch "
                                 f"{epoch}; use gamma <= 1") from None
        if self.name == "exponential":
            try:
                return self.gamma**e
            except OverflowError:  # gamma > 1 past float64: said in words (check_rate refuses it up front)
                raise ValueError(f"gamma = {self.gamma:g} with schedule = 'exponential' overflows the learning rate "
                                 f"at epoch {epoch}; use gamma <= 1") from None
        if self.name == "cosine":
            span = max(1, self.epochs - w)
            return (1.0 + math.cos(math.pi * min(e, span) / span)) / 2.0
        return 1.0
