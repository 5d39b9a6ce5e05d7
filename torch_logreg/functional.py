"""Pure tensor maths: links, losses on logits and their closed-form gradients.

Nothing here holds state or calls autograd. Every loss takes logits ``z`` of shape ``(N, K)``
and targets ``t`` of the same shape and returns ``(loss, grad)`` where

* ``loss`` is a 0-dim tensor: the mean over the N samples of the per-sample loss, the
  per-sample loss being summed over the K outputs;
* ``grad`` is ``d loss / d z``, shape ``(N, K)``.

For every link/loss pair the gradient has the same shape, ``(h(z) - t) / N`` with ``h`` the
link (sigmoid, softmax or identity). That shared form is what lets one ``Linear`` layer and one
update loop serve logistic, multi-label, softmax and linear regression.

Numerics: ``log(sigmoid(z))`` and ``log(1 - sigmoid(z))`` are never formed. The binary
cross-entropy is written as ``max(z, 0) - t*z + log1p(exp(-|z|))`` and the categorical one
through ``log_softmax``, so logits of +-1e4 give finite losses and exact gradients.
"""

from __future__ import annotations

import torch
from torch import Tensor

# --- links -----------------------------------------------------------------------------------


def sigmoid(z: Tensor) -> Tensor:
    """``1 / (1 + exp(-z))``, elementwise; saturates to exactly 0 or 1 without overflow."""
    return torch.sigmoid(z)


def softmax(z: Tensor) -> Tensor:
    """Softmax over the last dimension (the K classes) of ``z`` with shape ``(N, K)``."""
    return torch.softmax(z, dim=-1)


def identity(z: Tensor) -> Tensor:
    return z


def log_sigmoid(z: Tensor) -> Tensor:
    """``log(sigmoid(z)) = -softplus(-z) = min(z, 0) - log1p(exp(-|z|))``, stable for any z."""
    return torch.clamp(z, max=0) - torch.log1p(torch.exp(-torch.abs(z)))


# --- losses on logits ------------------------------------------------------------------------


def binary_cross_entropy(z: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Negative log-likelihood of independent Bernoulli outputs ``p = sigmoid(z)``.

    Per element: ``-t log p - (1 - t) log(1 - p) = max(z, 0) - t z + log1p(exp(-|z|))``.
    Gradient: ``(sigmoid(z) - t) / N``.
    """
    n = z.shape[0]
    per_element = torch.clamp(z, min=0) - t * z + torch.log1p(torch.exp(-torch.abs(z)))
    loss = per_element.sum() / n
    grad = (torch.sigmoid(z) - t) / n
    return loss, grad


def categorical_cross_entropy(z: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Negative log-likelihood of a categorical output ``p = softmax(z)``.

    ``t`` holds one-hot rows (or probability rows summing to one). Per sample:
    ``-sum_k t_k log p_k``. Gradient: ``(softmax(z) - t) / N``.
    """
    n = z.shape[0]
    log_p = torch.log_softmax(z, dim=-1)
    loss = -(t * log_p).sum() / n
    grad = (torch.exp(log_p) - t) / n
    return loss, grad


def half_squared_error(z: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Gaussian negative log-likelihood up to constants: ``0.5 * sum_k (z_k - t_k)^2``.

    Gradient: ``(z - t) / N``.
    """
    n = z.shape[0]
    residual = z - t
    loss = 0.5 * (residual * residual).sum() / n
    grad = residual / n
    return loss, grad


#: link name -> (link function, loss on logits)
LINKS = {
    "sigmoid": (sigmoid, binary_cross_entropy),
    "softmax": (softmax, categorical_cross_entropy),
    "identity": (identity, half_squared_error),
}


# --- layer maths (forward and backward side by side) -----------------------------------------


def linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``x W^T + b``: x ``(N, D)``, weight ``(K, D)``, bias ``(K,)`` -> ``(N, K)``."""
    if bias is None:
        return x @ weight.T
    return torch.addmm(bias, x, weight.T)


def linear_backward(
    grad_output: Tensor, x: Tensor, weight: Tensor, has_bias: bool, need_input_grad: bool = True
) -> tuple[Tensor | None, Tensor, Tensor | None]:
    """Gradients of ``linear`` given ``grad_output = dL/dy`` of shape ``(N, K)``.

    Returns ``(dL/dx = g W, dL/dW = g^T x, dL/db = sum_n g)``; ``dL/dx`` is skipped (None) when
    not needed, which for the first layer saves an (N, D) product.
    """
    grad_weight = grad_output.T @ x
    grad_bias = grad_output.sum(dim=0) if has_bias else None
    grad_input = grad_output @ weight if need_input_grad else None
    return grad_input, grad_weight, grad_bias


def sigmoid_backward(grad_output: Tensor, y: Tensor) -> Tensor:
    """``d sigmoid / dz = y (1 - y)`` written in terms of the output ``y = sigmoid(z)``."""
    return grad_output * y * (1 - y)


def tanh_backward(grad_output: Tensor, y: Tensor) -> Tensor:
    """``d tanh / dz = 1 - y^2`` written in terms of the output ``y = tanh(z)``."""
    return grad_output * (1 - y * y)


def relu_backward(grad_output: Tensor, y: Tensor) -> Tensor:
    """``d relu / dz = 1[z > 0]``; ``y > 0`` exactly where ``z > 0``."""
    return grad_output * (y > 0).to(grad_output.dtype)
