"""What every optimizer shares: its hyper-parameters and its state (tensors shaped like the
parameters, and a step count), saved and restored for an exact resume."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor

from .. import arguments
from ..errors import UsageError

#: each hyper-parameter's default where several optimizers take it (torch.optim's); ``eps``
#: differs (Adagrad 1e-10, the others 1e-8): None means the optimizer's own
DEFAULTS: dict[str, Any] = {"momentum": 0.9, "betas": (0.9, 0.999), "eps": None, "alpha": 0.99, "weight_decay": 0.01}
#: the value that switches a hyper-parameter off: a rule without it accepts that value too (adam with
#: weight_decay = 0 is adam)
OFF: dict[str, Any] = {"momentum": 0.0, "weight_decay": 0.0}


class Optimizer(ABC):
    """``step(params, grads, lr)`` updates ``params`` in place from ``grads`` (both dicts keyed by
    parameter name). Subclasses declare ``defaults`` (hyper-parameter -> torch.optim's default)
    and ``buffers`` (the per-parameter state, zero at the start), and write ``update``."""

    defaults: dict = {}
    buffers: tuple[str, ...] = ()
    #: whether a CUDA graph may capture the update (no Python number that changes from step to step)
    capturable = True

    def __init__(self, name: str, params: dict[str, Tensor], **given) -> None:
        self.name = name
        unknown = [k for k, v in given.items()
                   if k not in self.defaults and v is not None and _differs(v, DEFAULTS.get(k))
                   and not (k in OFF and v == OFF[k])]
        if unknown:
            raise UsageError(f"solver={name!r} takes no {unknown[0]} (its hyper-parameters: "
                             f"{', '.join(self.defaults) or 'none but lr'})")
        self.hyper = {k: (given[k] if given.get(k) is not None else v) for k, v in self.defaults.items()}
        self.check(self.hyper)
        self.state = {b: {k: torch.zeros_like(p) for k, p in params.items()} for b in self.buffers}
        self.steps = 0

    def check(self, hyper: dict) -> None:
        """Validate the hyper-parameters (ValueError); by default each is a finite number >= 0, and
        ``eps`` > 0 (it keeps ``g / (sqrt(v) + eps)`` finite where a coordinate's gradient is 0)."""
        for k, v in hyper.items():
            arguments.number(k, v, low=0, low_open=k == "eps")

    def step(self, params: dict[str, Tensor], grads: dict[str, Tensor], lr: float) -> None:
        # the loop runs under no_grad already; entering it again costs microseconds a step
        if torch.is_grad_enabled():
            with torch.no_grad():
                return self.step(params, grads, lr)
        self.steps += 1
        self.update(params, grads, lr)

    @abstractmethod
    def update(self, params: dict[str, Tensor], grads: dict[str, Tensor], lr: float) -> None:
        """One step of the rule on every parameter, in place (``self.steps`` already counts it)."""

    def key(self) -> tuple:
        """What a captured CUDA graph depends on besides the learning rate."""
        return (self.name, *self.hyper.values())

    def tensors(self) -> list[Tensor]:
        return [t for buf in self.state.values() for t in buf.values()]

    def state_dict(self) -> dict:
        return {"name": self.name, "steps": self.steps,
                "state": {b: {k: t.detach().cpu().clone() for k, t in buf.items()} for b, buf in self.state.items()}}

    def load_state_dict(self, d: dict) -> None:
        if d.get("name", self.name) != self.name:
            raise UsageError(f"the saved optimizer state is {d['name']!r}'s, not {self.name!r}'s")
        self.steps = int(d["steps"])
        for b, buf in d["state"].items():
            for k, t in buf.items():
                self.state[b][k].copy_(t)


def _differs(value, default) -> bool:
    if isinstance(value, (tuple, list)) and isinstance(default, tuple):
        return tuple(value) != default
    return value != default
