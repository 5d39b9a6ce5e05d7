"""The parameters of a single linear layer as one ``(K, A)`` matrix ``theta = [b, W]``, the
parametrisation the exact solvers and the inference work in."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import functional as F
from .. import models
from ..layers import Linear


def linear_layer(model, solver: str = "newton") -> Linear:
    """The model's only layer, which must be a :class:`Linear` (Newton needs its Hessian, the
    proximal gradient its ``theta``); ``solver`` names the caller in the error."""
    layer = models.single_linear(model)
    if layer is None:
        raise TypeError(
            f"solver={solver!r} needs a model with a single Linear layer (LogisticRegression, "
            f"SoftmaxRegression, LinearRegression); got {type(model).__name__}. Use solver='lbfgs'."
        )
    return layer


def augment(X: Tensor, bias: bool) -> Tensor:
    """``X~ = [1, X]`` ``(N, D + 1)`` when the model has a bias, else ``X`` itself (sparse CSR stays sparse)."""
    if not bias:
        return X
    if X.layout != torch.strided:
        return F.csr_prepend_ones(X)
    return torch.cat([torch.ones(X.shape[0], 1, dtype=X.dtype, device=X.device), X], dim=1)


def get_theta(layer: Linear) -> Tensor:
    """``theta = [b, W]`` ``(K, A)``: the bias as column 0 (when present), then the weights."""
    if layer.bias is None:
        return layer.weight.detach().clone()
    return torch.cat([layer.bias.detach()[:, None], layer.weight.detach()], dim=1)


def set_theta(layer: Linear, theta: Tensor) -> None:
    with torch.no_grad():
        if layer.bias is None:
            layer.weight.copy_(theta)
        else:
            layer.bias.copy_(theta[:, 0])
            layer.weight.copy_(theta[:, 1:])


def theta_grad(layer_prefix: str, grads: dict[str, Tensor], bias: bool) -> Tensor:
    gw = grads[f"{layer_prefix}.weight"]
    if not bias:
        return gw
    return torch.cat([grads[f"{layer_prefix}.bias"][:, None], gw], dim=1)


def softmax_null_cols(mask: Tensor, penalised: bool) -> Tensor:
    """The columns of ``theta`` ``(K, A)`` along which a softmax objective is flat, as ``(A,)`` bools:
    adding one value to a column's every class leaves the probabilities unchanged, so only a
    penalty pins such a column. Under a penalty those are the unpenalised columns (the bias; ``mask``
    is :func:`~torch_logreg.penalty.theta_mask`'s), without one every column."""
    if not penalised:
        return torch.ones_like(mask[0], dtype=torch.bool)
    return mask[0] == 0


def center(theta: Tensor, cols: Tensor) -> Tensor:
    """Subtract the class mean from the columns ``cols`` (softmax's invariant directions)."""
    mean = theta.mean(dim=0, keepdim=True) * cols.to(theta.dtype)
    return theta - mean
