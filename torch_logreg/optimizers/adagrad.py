"""Adagrad, as ``torch.optim.Adagrad`` (``lr_decay = 0``, ``initial_accumulator_value = 0``):

    s <- s + g^2;    p <- p - lr g / (sqrt(s) + eps)
"""

from __future__ import annotations

from torch import Tensor

from .base import Optimizer


class Adagrad(Optimizer):
    defaults = {"eps": 1e-10}
    buffers = ("sum",)

    def update(self, params: dict[str, Tensor], grads: dict[str, Tensor], lr: float) -> None:
        eps = self.hyper["eps"]
        for name, p in params.items():
            g, s = grads[name], self.state["sum"][name]
            s.addcmul_(g, g, value=1.0)
            p.addcdiv_(g, s.sqrt().add_(eps), value=-lr)
