"""Gradient descent, with momentum or Nesterov momentum, as ``torch.optim.SGD``
(``dampening = 0``; the weight decay is the model's ``l2``, already in the gradient):

* ``gd``:        ``p <- p - lr g``
* ``momentum``:  ``v <- mu v + g``;  ``p <- p - lr v``
* ``nesterov``:  ``v <- mu v + g``;  ``p <- p - lr (g + mu v)``
"""

from __future__ import annotations

from torch import Tensor

from .. import arguments
from .base import Optimizer


class GD(Optimizer):
    def update(self, params: dict[str, Tensor], grads: dict[str, Tensor], lr: float) -> None:
        for name, p in params.items():
            p.sub_(grads[name], alpha=lr)


class Momentum(Optimizer):
    defaults = {"momentum": 0.9}
    buffers = ("velocity",)

    def check(self, hyper: dict) -> None:
        arguments.number("momentum", hyper["momentum"], low=0, high=1, high_open=True)

    def update(self, params: dict[str, Tensor], grads: dict[str, Tensor], lr: float) -> None:
        mu, velocity = self.hyper["momentum"], self.state["velocity"]
        nesterov = self.name == "nesterov"
        for name, p in params.items():
            g, v = grads[name], velocity[name]
            v.mul_(mu).add_(g)
            if nesterov:
                p.sub_(g, alpha=lr).sub_(v, alpha=lr * mu)
            else:
                p.sub_(v, alpha=lr)
