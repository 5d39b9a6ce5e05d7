"""What the fast steps share: the data checks of the single-pass kernels, the cache-friendly
transpose, the in-place links, and the loss and gradients from a kernel's row sums."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import penalty
from ..models import single_linear


def transpose(X: Tensor, rows: int = 4096, extra_rows: int = 0) -> Tensor:
    """``X.T.contiguous()`` in blocks of rows: each block's transpose stays in cache, which on
    CPU makes the copy about 1.5x faster than one strided pass over a large matrix.
    ``extra_rows``: rows left uninitialised below the result, in the same allocation."""
    n, d = X.shape
    out = torch.empty(d + extra_rows, n, dtype=X.dtype, device=X.device)
    if X.device.type != "cpu":
        out[:d].copy_(X.T)
        return out
    for start in range(0, n, rows):
        out[:d, start : start + rows].copy_(X[start : start + rows].T)
    return out


def fusable(model, X: Tensor) -> bool:
    """What both single-pass kernels need of the model and the data: one ``Linear`` layer with
    one sigmoid or identity output, and a contiguous 2-D float32/float64 X."""
    return (
        single_linear(model) is not None
        and model.n_outputs == 1
        and model.link in ("sigmoid", "identity")
        and X.dtype in (torch.float32, torch.float64)
        and X.dim() == 2
        and X.is_contiguous()
    )


def bind_single_pass(model, X: Tensor, T: Tensor) -> tuple[str, object, Tensor, Tensor]:
    """What a single-pass kernel keeps of its full batch: the layer's name and the layer, X
    (detached, no copy) and the targets as one contiguous column in X's dtype."""
    (prefix, layer), = model.named_children()
    return prefix, layer, X.detach(), T.detach().reshape(-1).to(X.dtype).contiguous()


def step_from_sums(layer, prefix: str, means: Tensor, l2: float) -> tuple[Tensor, dict[str, Tensor]]:
    """``(loss, grads)`` of a single-pass kernel from its float64 row means
    ``[X^T r / N (D), sum(r) / N, loss]``, in the layer's dtype, with the l2 term added."""
    W, b = layer.weight, layer.bias
    d = W.shape[1]
    loss = means[d + 1].to(W.dtype)
    grad_weight = means[:d].to(W.dtype)[None, :]  # the caller's fresh means: safe to add into
    loss = penalty.add_in_place(loss, grad_weight, W, l2)
    grads = {f"{prefix}.weight": grad_weight}
    if b is not None:
        grads[f"{prefix}.bias"] = means[d : d + 1].to(W.dtype)
    return loss, grads


def sigmoid_in_place(z: Tensor, t: Tensor, buf: Tensor, zero: Tensor, class_dim: int = 0) -> Tensor:
    """Summed binary cross-entropy of logits ``z``; ``z`` becomes the residual ``sigmoid(z) - t``."""
    torch.logaddexp(z, zero, out=buf).addcmul_(t, z, value=-1)  # softplus(z) - t z, as in functional.py
    loss = buf.sum()
    torch.sigmoid(z, out=z).sub_(t)
    return loss


def softmax_in_place(z: Tensor, t: Tensor, buf: Tensor, zero: Tensor, class_dim: int = 0) -> Tensor:
    """Summed categorical cross-entropy of logits with the classes along ``class_dim`` (0 for
    the class-major layout); ``z`` becomes ``softmax(z) - t``."""
    torch.log_softmax(z, dim=class_dim, out=buf)
    loss = -torch.vdot(t.reshape(-1), buf.reshape(-1))
    torch.exp(buf, out=z).sub_(t)
    return loss


def identity_in_place(z: Tensor, t: Tensor, buf: Tensor, zero: Tensor, class_dim: int = 0) -> Tensor:
    """Summed half squared error; ``z`` becomes the residual ``z - t``."""
    r = z.sub_(t).reshape(-1)
    return torch.vdot(r, r).mul_(0.5)


#: the link's summed loss, leaving the residual h(z) - t in z, by link name
IN_PLACE = {"sigmoid": sigmoid_in_place, "softmax": softmax_in_place, "identity": identity_in_place}
