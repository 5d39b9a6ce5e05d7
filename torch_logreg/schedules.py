"""Learning-rate schedules: the learning rate of each epoch, equal to ``torch.optim.lr_scheduler``'s.

With base rate ``lr`` and ``e`` the epoch (from 0):

* ``constant``:     ``lr``
* ``step``:         ``lr gamma^floor(e / step_size)``                         (StepLR)
* ``exponential``:  ``lr gamma^e``                                            (ExponentialLR)
* ``cosine``:       ``lr (1 + cos(pi e / T)) / 2``, ``T`` the epochs after any warm-up  (CosineAnnealingLR)

``warmup_epochs = W > 0`` first ramps linearly, ``lr (s + (1 - s) e / W)`` for ``e < W`` with
``s = warmup_start_factor`` (LinearLR), then runs the schedule from its own epoch 0 (SequentialLR).
A schedule is a function of the epoch alone, so a resumed run follows it without saved state.

:class:`Plateau` is the exception: a rate that reacts to a metric (``ReduceLROnPlateau``), so it
keeps a state, saved by ``state_dict``.
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


class Plateau:
    """The learning rate cut when a metric stops improving, as
    ``torch.optim.lr_scheduler.ReduceLROnPlateau`` (one rate, the same names and defaults).

    ``step(metric)`` after each epoch takes the epoch's metric ``m`` (a validation loss with
    ``mode = "min"``, a score with ``"max"``) and returns the rate of the next epoch:

    * ``m`` improves on the best so far when ``m < best (1 - threshold)`` (min, ``"rel"``),
      ``m < best - threshold`` (min, ``"abs"``), ``m > best (1 + threshold)`` (max, ``"rel"``)
      or ``m > best + threshold`` (max, ``"abs"``); then ``best = m`` and the count of bad epochs
      restarts at 0, else it grows by 1 (a NaN never improves). ``best`` starts at the worst
      value (``+inf`` for min);
    * during a cool-down (``cooldown`` epochs after a cut) bad epochs are not counted;
    * when more than ``patience`` epochs in a row were bad, ``lr <- max(lr factor, min_lr)``,
      unless that changes the rate by ``eps`` or less; the cool-down starts and the count restarts.
    """

    def __init__(self, lr: float, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0, min_lr: float = 0.0,
                 eps: float = 1e-8) -> None:
        self.lr = arguments.number("lr", lr, low=0, low_open=True)
        self.mode = arguments.choice("mode", mode, ("min", "max"))
        self.factor = arguments.number("factor", factor, low=0, high=1, high_open=True)
        self.patience = arguments.number("patience", patience, low=0, integer=True)
        self.threshold = arguments.number("threshold", threshold, low=0)
        self.threshold_mode = arguments.choice("threshold_mode", threshold_mode, ("rel", "abs"))
        self.cooldown = arguments.number("cooldown", cooldown, low=0, integer=True)
        self.min_lr = arguments.number("min_lr", min_lr, low=0)
        self.eps = arguments.number("eps", eps, low=0)
        self.best = math.inf if mode == "min" else -math.inf
        self.bad_epochs = 0
        self.cooldown_left = 0

    def improves(self, metric: float) -> bool:
        """Whether ``metric`` counts as better than the best so far."""
        t, best = self.threshold, self.best
        if self.mode == "min":
            return metric < (best * (1.0 - t) if self.threshold_mode == "rel" else best - t)
        return metric > (best * (1.0 + t) if self.threshold_mode == "rel" else best + t)

    def step(self, metric: float) -> float:
        """Take one epoch's ``metric``; returns the learning rate from now on."""
        metric = float(metric)
        if self.improves(metric):
            self.best, self.bad_epochs = metric, 0
        else:
            self.bad_epochs += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.bad_epochs = 0
        if self.bad_epochs > self.patience:
            cut = max(self.lr * self.factor, self.min_lr)
            if self.lr - cut > self.eps:
                self.lr = cut
            self.cooldown_left, self.bad_epochs = self.cooldown, 0
        return self.lr

    def state_dict(self) -> dict:
        """What a resumed run needs to go on exactly: the rate, the best metric and the counters."""
        return {"lr": self.lr, "best": self.best, "bad_epochs": self.bad_epochs, "cooldown_left": self.cooldown_left}

    def load_state_dict(self, state: dict) -> None:
        self.lr, self.best = float(state["lr"]), float(state["best"])
        self.bad_epochs, self.cooldown_left = int(state["bad_epochs"]), int(state["cooldown_left"])
