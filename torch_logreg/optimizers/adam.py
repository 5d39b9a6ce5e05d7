"""Adam and AdamW, as ``torch.optim.Adam`` and ``torch.optim.AdamW`` (``amsgrad = False``). At
step ``t`` (from 1):

    m <- b1 m + (1 - b1) g;    v <- b2 v + (1 - b2) g^2
    p <- p - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)

AdamW first shrinks the weights, ``p <- p (1 - lr weight_decay)`` (decoupled weight decay, on
every parameter as torch.optim does); Adam's L2 is the model's ``l2``, already in the gradient.
"""

from __future__ import annotations

import math

from torch import Tensor

from .. import arguments
from ..errors import UsageError
from .base import Optimizer


class Adam(Optimizer):
    defaults = {"betas": (0.9, 0.999), "eps": 1e-8}
    buffers = ("exp_avg", "exp_avg_sq")
    capturable = False  # the bias corrections change with the step count
    def check(self, hyper: dict) -> None:
        betas = hyper["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise UsageError(f"betas must be two numbers (beta1, beta2), got {betas!r}")
        hyper["betas"] = tuple(arguments.number(f"betas[{i}]", b, low=0, high=1, high_open=True)
                               for i, b in enumerate(betas))
        for k in set(hyper) - {"betas"}:
            arguments.number(k, hyper[k], low=0, low_open=k == "eps")  # eps > 0: see Optimizer.check

    def key(self) -> tuple:
        return (self.name, *self.hyper["betas"], *(v for k, v in self.hyper.items() if k != "betas"))

    def update(self, params: dict[str, Tensor], grads: dict[str, Tensor], lr: float) -> None:
        (b1, b2), eps, t = self.hyper["betas"], self.hyper["eps"], self.steps
        step_size = lr / (1 - b1**t)
        bias_correction2_sqrt = math.sqrt(1 - b2**t)
        decay = self.hyper.get("weight_decay", 0.0)
        for name, p in params.items():
            g, m, v = grads[name], self.state["exp_avg"][name], self.state["exp_avg_sq"][name]
            if decay:
                p.mul_(1 - lr * decay)
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            p.addcdiv_(m, v.sqrt().div_(bias_correction2_sqrt).add_(eps), value=-step_size)


class AdamW(Adam):
    defaults = {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01}
