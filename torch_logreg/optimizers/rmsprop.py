"""RMSprop, as ``torch.optim.RMSprop`` (``momentum = 0``, ``centered = False``):

    a <- alpha a + (1 - alpha) g^2;    p <- p - lr g / (sqrt(a) + eps)
"""

from __future__ import annotations

from torch import Tensor

from .. import arguments
from .base import Optimizer


class RMSprop(Optimizer):
    defaults = {"alpha": 0.99, "eps": 1e-8}
    buffers = ("square_avg",)

    def check(self, hyper: dict) -> None:
        # alpha = 1 never moves the average from 0, so every step would divide by eps alone
        arguments.number("alpha", hyper["alpha"], low=0, high=1, high_open=True)
        arguments.number("eps", hyper["eps"], low=0, low_open=True)

    def update(self, params: dict[str, Tensor], grads: dict[str, Tensor], lr: float) -> None:
        alpha, eps = self.hyper["alpha"], self.hyper["eps"]
        for name, p in params.items():
            g, a = grads[name], self.state["square_avg"][name]
            a.mul_(alpha).addcmul_(g, g, value=1 - alpha)
            p.addcdiv_(g, a.sqrt().add_(eps), value=-lr)
