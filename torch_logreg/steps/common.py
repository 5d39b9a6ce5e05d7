"""What the fast steps share: the data checks of the single-pass kernels, the transpose of X, the
in-place links (whole, or as per-entry terms and a total), and the loss and gradients from a
kernel's row sums."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import penalty
from ..layers import Linear
from ..models import single_linear


def transpose(X: Tensor, extra_rows: int = 0) -> Tensor:
    """``X.T.contiguous()``, with ``extra_rows`` rows left uninitialised below it in the same
    allocation. One ``copy_`` into the contiguous ``(D, N)`` block: torch transposes that in cache
    tiles itself. (Copying a block of rows at a time writes a strided destination that torch
    copies element by element, several times slower: benchmarks/README.md.)"""
    n, d = X.shape
    out = torch.empty(d + extra_rows, n, dtype=X.dtype, device=X.device)
    out[:d].copy_(X.T)
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


def bind_single_pass(model, X: Tensor, T: Tensor) -> tuple[str, Linear, Tensor, Tensor]:
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


# The links in two halves, so a step that runs over row blocks can take the per-entry half block
# by block and the sum once: ``terms`` leaves each entry's loss term in ``buf`` (where the sum
# needs one) and the residual ``h(z) - t`` in ``z``; ``total`` sums the terms of the whole batch.


def sigmoid_terms(z: Tensor, t: Tensor, buf: Tensor, zero: Tensor, class_dim: int = 0) -> None:
    """``buf = softplus(z) - t z`` (each entry's binary cross-entropy, as in functional.py, stable
    for any z); ``z`` becomes the residual ``sigmoid(z) - t``."""
    torch.logaddexp(z, zero, out=buf).addcmul_(t, z, value=-1)
    torch.sigmoid(z, out=z).sub_(t)


def sigmoid_total(t: Tensor, buf: Tensor, r: Tensor) -> Tensor:
    """Summed binary cross-entropy: the sum of :func:`sigmoid_terms`' ``buf``."""
    return buf.sum()


def softmax_terms(z: Tensor, t: Tensor, buf: Tensor, zero: Tensor, class_dim: int = 0) -> None:
    """``buf = log_softmax(z)`` with the classes along ``class_dim`` (0 for the class-major
    layout); ``z`` becomes the residual ``softmax(z) - t``."""
    torch.log_softmax(z, dim=class_dim, out=buf)
    torch.exp(buf, out=z).sub_(t)


def softmax_total(t: Tensor, buf: Tensor, r: Tensor) -> Tensor:
    """Summed categorical cross-entropy ``-sum t log_softmax(z)`` from :func:`softmax_terms`' ``buf``."""
    return -torch.vdot(t.reshape(-1), buf.reshape(-1))


def identity_terms(z: Tensor, t: Tensor, buf: Tensor, zero: Tensor, class_dim: int = 0) -> None:
    """``z`` becomes the residual ``z - t`` (``buf`` is not used: the loss is the residual's)."""
    z.sub_(t)


def identity_total(t: Tensor, buf: Tensor, r: Tensor) -> Tensor:
    """Summed half squared error ``0.5 sum r^2`` of the residual ``r``."""
    flat = r.reshape(-1)
    return torch.vdot(flat, flat).mul_(0.5)


#: each link's ``(terms, total)``, by link name
LINKS = {"sigmoid": (sigmoid_terms, sigmoid_total), "softmax": (softmax_terms, softmax_total),
         "identity": (identity_terms, identity_total)}


def _in_place(link: str):
    terms, total = LINKS[link]

    def in_place(z: Tensor, t: Tensor, buf: Tensor, zero: Tensor, class_dim: int = 0) -> Tensor:
        terms(z, t, buf, zero, class_dim)
        return total(t, buf, z)

    in_place.__name__ = f"{link}_in_place"
    in_place.__doc__ = f"The summed {link}-link loss of logits ``z``; ``z`` becomes the residual ``h(z) - t``."
    return in_place


#: the link's summed loss, leaving the residual h(z) - t in z, by link name
IN_PLACE = {link: _in_place(link) for link in LINKS}
