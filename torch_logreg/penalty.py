"""The penalties, in one place: which parameters they cover and what they add.

    penalty(theta) = (l2 / 2) * sum over weight matrices W of ||W||^2   (gradient l2 * W)
                   + l1 * sum over weight matrices W of ||W||_1          (exact solvers only)

Every weight matrix is penalised and no bias is. The models, the fast steps, the exact solvers,
the loop's reports and the references all take the rule from here, and the exact solvers take the
L1 term's proximal map (:func:`soft_threshold`) and optimality measure (:func:`l1_optimality`).
"""

from __future__ import annotations

import torch
from torch import Tensor


def penalised(name: str) -> bool:
    """True for the parameters the penalty covers: weight matrices (``"weight"``,
    ``"linear.weight"``, ``"fc0.weight"``), never a bias."""
    return name.rsplit(".", 1)[-1] == "weight"


def l2_value(W: Tensor, l2: float) -> Tensor:
    """``(l2 / 2) ||W||^2`` as a 0-dim tensor (one weight matrix)."""
    flat = W.reshape(-1)
    return 0.5 * l2 * torch.vdot(flat, flat)


def value(params: dict[str, Tensor], l2: float) -> Tensor | float:
    """The penalty of a model's named parameters (0.0 when ``l2`` is 0)."""
    total: Tensor | float = 0.0
    if l2:
        for name, p in params.items():
            if penalised(name):
                total = total + l2_value(p.detach(), l2)
    return total


def l1_value(params: dict[str, Tensor], l1: float) -> Tensor | float:
    """``l1 * sum ||W||_1`` over the penalised parameters (0.0 when ``l1`` is 0)."""
    total: Tensor | float = 0.0
    if l1:
        for name, p in params.items():
            if penalised(name):
                total = total + l1 * p.detach().abs().sum()
    return total


def add(loss: Tensor, grads: dict[str, Tensor], params: dict[str, Tensor], l2: float) -> Tensor:
    """``loss`` plus the penalty; each penalised gradient in ``grads`` gets ``l2 * W`` added
    (a new tensor: the caller's gradient buffers are left as they are)."""
    if not l2:
        return loss
    for name, p in params.items():
        if penalised(name):
            loss = loss + l2_value(p, l2)
            grads[name] = grads[name] + l2 * p
    return loss


def add_in_place(loss: Tensor, grad_weight: Tensor, W: Tensor, l2: float) -> Tensor:
    """For a step that owns its gradient buffer: ``loss`` plus the penalty of ``W``, and
    ``l2 * W`` added into ``grad_weight`` in place."""
    if not l2:
        return loss
    grad_weight.add_(W, alpha=l2)
    return loss + l2_value(W, l2)


def theta_mask(theta: Tensor, bias: bool) -> Tensor:
    """The same rule on ``theta = [b, W]`` ``(K, A)``: 1 on the weights, 0 on the bias column."""
    mask = torch.ones_like(theta)
    if bias:
        mask[:, 0] = 0
    return mask


def soft_threshold(x: Tensor, threshold: Tensor | float) -> Tensor:
    """``sign(x) max(|x| - threshold, 0)``: the proximal map of ``threshold * |x|`` (elementwise,
    broadcast); entries within ``threshold`` of zero become exact zeros."""
    return torch.sign(x) * torch.clamp(x.abs() - threshold, min=0)


def l1_optimality(theta: Tensor, grad: Tensor, l1_mask: Tensor | float) -> Tensor:
    """Minimum-norm subgradient of ``f + sum(l1_mask * |theta|)`` at ``theta`` (all of one shape; ``grad``
    is the gradient of the smooth ``f``, ``l1_mask`` holds ``l1`` on penalised entries, 0 elsewhere):
    ``g + l1 sign(theta)`` off zero, ``soft_threshold(g, l1)`` at zero. Its largest absolute entry
    is the exact solvers' optimality measure with an L1 term: 0 exactly at the optimum."""
    at_zero = soft_threshold(grad, l1_mask)
    off_zero = grad + l1_mask * torch.sign(theta)
    return torch.where(theta == 0, at_zero, off_zero)
