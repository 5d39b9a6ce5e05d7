"""The loop's update rules, each written out by hand in the loop's style (in place, under
``torch.no_grad()``), each equal step for step to its ``torch.optim`` namesake:

    gd, momentum, nesterov   sgd.py       torch.optim.SGD (momentum 0, or momentum with nesterov)
    adagrad                  adagrad.py   torch.optim.Adagrad
    rmsprop                  rmsprop.py   torch.optim.RMSprop
    adam, adamw              adam.py      torch.optim.Adam, torch.optim.AdamW

``make(name, params, **hyper)`` builds one from the name the config uses (the registry's line
``OPTIMIZERS`` says which class each name is). An optimizer's state (moments, step count) is in
its ``state_dict``, so a resumed run continues bit for bit.

:func:`~.clip.clip_grad_norm` scales the gradients to a global norm bound before a step, as
``torch.nn.utils.clip_grad_norm_``.
"""

from __future__ import annotations

import importlib

from ..registry import OPTIMIZERS
from .base import DEFAULTS, Optimizer
from .clip import clip_grad_norm

__all__ = ["DEFAULTS", "Optimizer", "clip_grad_norm", "make", "optimizer_class"]


def optimizer_class(name: str) -> type[Optimizer]:
    """The class the registry names ``name``."""
    module, cls = OPTIMIZERS[name].rsplit(".", 1)
    return getattr(importlib.import_module(f".{module}", __name__), cls)


def make(name: str, params: dict, **hyper) -> Optimizer:
    """The optimizer the registry names ``name``, for ``params`` (name -> tensor); ``hyper`` holds
    the hyper-parameters given (None = the optimizer's default); one it does not take is a
    ValueError."""
    return optimizer_class(name)(name, params, **hyper)
