"""Clipping the global gradient norm, as ``torch.nn.utils.clip_grad_norm_``.

With ``g`` the gradients of all parameters taken as one vector and ``p`` the ``norm_type``:

    total = ||g||_p = || (||g_1||_p, ..., ||g_k||_p) ||_p        (p = inf: the largest |entry|)
    g <- g min(1, max_norm / (total + 1e-6))

The 1e-6 keeps the quotient finite at a zero gradient, and makes a clipped norm come out just
below ``max_norm``. Every gradient is multiplied, by exactly 1 when the norm is within the bound,
so the step reads nothing back from the device.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import arguments


def clip_grad_norm(grads: dict[str, Tensor], max_norm: float, norm_type: float = 2.0) -> Tensor:
    """Scale ``grads`` (name -> tensor) in place so that their global ``norm_type``-norm is at
    most ``max_norm``; returns that norm before clipping, a 0-dim tensor (0 for no gradients)."""
    max_norm = arguments.number("max_norm", max_norm, low=0, low_open=True)
    if norm_type != math.inf:  # the infinity norm (the largest |entry|) is one too
        norm_type = arguments.number("norm_type", norm_type, low=0, low_open=True)
    tensors = list(grads.values())
    if not tensors:
        return torch.zeros(())
    norms = torch.stack([torch.linalg.vector_norm(g, norm_type) for g in tensors])
    total = torch.linalg.vector_norm(norms, norm_type)
    coefficient = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in tensors:
        g.mul_(coefficient)
    return total
