"""Fast paths of the loop for single-``Linear`` models: the reference maths in faster layouts.

The reference step (:meth:`StackedModel.objective_and_grad`) computes ``z = X W^T + b`` with X
as ``(N, D)`` rows. For a full batch on CPU, the two products run faster with X stored once as
``X^T`` ``(D, N)`` contiguous, and the softmax over K classes is far faster along the leading
dimension of class-major ``(K, N)`` logits than along the short rows of ``(N, K)``. So
:class:`FeatureMajorStep` does, for the whole run:

    z^T  = W X^T + b 1^T                       (K, N)
    loss, G^T from z^T and T^T                 the link along dim 0; G^T = (h(z^T) - T^T) / N
    dW   = G^T X,   db = G^T 1                 (K, D), (K,)

The maths is the reference's in another memory layout and summation order; tests pin the two
together (float64, 1e-12 relative). The cost is one copy of X, made once; each product uses
whichever of X and X^T is faster for it. :class:`BatchStep` does the same for mini-batches in
the row layout. Both write into buffers made once (only the 0-dim loss, and the l2 terms when
l2 > 0, are new tensors each step).

:func:`make_step` picks, for one sigmoid or identity output on a large X, the single-pass fused
kernel instead: ``fused_cpu.py`` (numba) on CPU, ``fused_triton.py`` (Triton) on CUDA. It reads
X once per step and needs no copy.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from .layers import Linear


def supports(model) -> bool:
    """True for models that are a single :class:`Linear` layer followed by a link."""
    children = list(model.children())
    return len(children) == 1 and isinstance(children[0], Linear)


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
        supports(model)
        and model.n_outputs == 1
        and model.link in ("sigmoid", "identity")
        and X.dtype in (torch.float32, torch.float64)
        and X.dim() == 2
        and X.is_contiguous()
    )


def step_from_sums(layer, prefix: str, means: Tensor, l2: float) -> tuple[Tensor, dict[str, Tensor]]:
    """``(loss, grads)`` of a single-pass kernel from its float64 row means
    ``[X^T r / N (D), sum(r) / N, loss]``, in the layer's dtype, with the l2 term added."""
    W, b = layer.weight, layer.bias
    d = W.shape[1]
    loss = means[d + 1].to(W.dtype)
    grad_weight = means[:d].to(W.dtype)[None, :]
    if l2:
        loss = loss + 0.5 * l2 * (W * W).sum()
        grad_weight = grad_weight + l2 * W
    grads = {f"{prefix}.weight": grad_weight}
    if b is not None:
        grads[f"{prefix}.bias"] = means[d : d + 1].to(W.dtype)
    return loss, grads


def make_step(model, X: Tensor, T: Tensor):
    """The fastest full-batch step that applies. For one sigmoid or identity output on a large
    X: the single-pass fused kernel, compiled with numba on CPU (``fused_cpu.py``) or with
    Triton on CUDA (``fused_triton.py``, compiled here by a first step; if that fails, a
    warning says why and the torch path below is used). Otherwise the feature-major torch step."""
    from . import fused_cpu

    if X.numel() >= fused_cpu.MIN_ENTRIES:
        if X.device.type == "cpu" and X.shape[1] >= fused_cpu.MIN_FEATURES and fused_cpu.supports(model, X):
            return fused_cpu.FusedStep(model, X, T)
        if X.device.type == "cuda":
            try:
                from . import fused_triton  # imports Triton, so only for CUDA data

                if fused_triton.supports(model, X):
                    step = fused_triton.TritonStep(model, X, T)
                    step.step(0.0)
                    torch.cuda.synchronize(X.device)  # a kernel fault surfaces here, not mid-run
                    return step
            except Exception as exc:  # a broken Triton install or a driver mismatch must not stop training
                warnings.warn(f"the fused Triton kernel could not run ({type(exc).__name__}: {exc}); "
                              "using the torch fast path", RuntimeWarning, stacklevel=2)
    return FeatureMajorStep(model, X, T)


def _sigmoid_in_place(z: Tensor, t: Tensor, buf: Tensor, zero: Tensor, class_dim: int = 0) -> Tensor:
    """Summed binary cross-entropy of logits ``z``; ``z`` becomes the residual ``sigmoid(z) - t``."""
    torch.logaddexp(z, zero, out=buf).addcmul_(t, z, value=-1)  # softplus(z) - t z, as in functional.py
    loss = buf.sum()
    torch.sigmoid(z, out=z).sub_(t)
    return loss


def _softmax_in_place(z: Tensor, t: Tensor, buf: Tensor, zero: Tensor, class_dim: int = 0) -> Tensor:
    """Summed categorical cross-entropy of logits with the classes along ``class_dim`` (0 for
    the class-major layout); ``z`` becomes ``softmax(z) - t``."""
    torch.log_softmax(z, dim=class_dim, out=buf)
    loss = -torch.vdot(t.reshape(-1), buf.reshape(-1))
    torch.exp(buf, out=z).sub_(t)
    return loss


def _identity_in_place(z: Tensor, t: Tensor, buf: Tensor, zero: Tensor, class_dim: int = 0) -> Tensor:
    """Summed half squared error; ``z`` becomes the residual ``z - t``."""
    r = z.sub_(t).reshape(-1)
    return torch.vdot(r, r).mul_(0.5)


_IN_PLACE = {"sigmoid": _sigmoid_in_place, "softmax": _softmax_in_place, "identity": _identity_in_place}


class FeatureMajorStep:
    """``step(l2) -> (loss, grads)`` on fixed full-batch data, like ``objective_and_grad``.

    The intermediates live in buffers allocated here, once: the logits, overwritten by the
    residual, a per-element loss buffer, and the gradients. The returned gradient tensors are
    those buffers, so the next ``step`` overwrites them; copy them to keep them.
    """

    def __init__(self, model, X: Tensor, T: Tensor) -> None:
        if not supports(model):
            raise TypeError("the feature-major fast path needs a model with a single Linear layer")
        (self.prefix, self.layer), = model.named_children()
        self.X = X  # (N, D), the caller's rows (no copy)
        self.TT = T.T.contiguous()  # (K, N)
        self._in_place = _IN_PLACE[model.link]
        W, b = self.layer.weight, self.layer.bias
        k, n = self.TT.shape
        d = X.shape[1]
        # one output with a bias: X^T gets a row of ones, so one product X_1^T r gives the weight
        # and the bias gradient together, in one flat buffer the two gradients are views of
        self._augmented = k == 1 and b is not None
        self.XT = transpose(X, extra_rows=1 if self._augmented else 0)  # the one copy this path costs
        #: the gradients as one flat tensor the returned ones are views of, where they are (else None)
        self.flat_grad = None
        if self._augmented:
            self.XT[d].fill_(1)
            self._XT1, self.XT = self.XT, self.XT[:d]
            self.flat_grad = self._flat_grad = X.new_empty(d + 1)
            self._grad_weight, self._grad_bias = self._flat_grad[:d].view(1, d), self._flat_grad[d:]
        else:
            self._grad_weight = torch.empty_like(W)
            self._grad_bias = None if b is None else torch.empty_like(b)
        #: the gradient buffers, by parameter name: what ``step`` returns
        self.grads = self._grads = {f"{self.prefix}.weight": self._grad_weight}
        if b is not None:
            self._grads[f"{self.prefix}.bias"] = self._grad_bias
        self._inv_n, self._inv_n_tensor = 1.0 / n, X.new_full((), 1.0 / n)
        self._z = X.new_empty(k, n)
        self._buf = X.new_empty(k, n)
        self._zero = X.new_zeros(())
        with torch.no_grad():
            self._bias_column = None if b is None else b[:, None]  # a view: follows in-place updates
        self._z0 = self._z[0]

    @torch.no_grad()
    def step(self, l2: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
        W, z, inv_n = self.layer.weight, self._z, self._inv_n
        if self._bias_column is None:
            torch.mm(W, self.XT, out=z)
        else:
            torch.addmm(self._bias_column, W, self.XT, out=z)
        loss = self._in_place(z, self.TT, self._buf, self._zero).mul_(self._inv_n_tensor)  # z: h(z) - t
        # measured on CPU: with one output the matrix-vector product is faster over X^T; with
        # several, G^T X over the row-major X is (e.g. 11 ms against 15 ms at 60,000 x 784 x 10)
        if self._augmented:
            torch.addmv(self._flat_grad, self._XT1, self._z0, beta=0, alpha=inv_n, out=self._flat_grad)
        elif z.shape[0] == 1:
            grad = self._grad_weight[0]
            torch.addmv(grad, self.XT, self._z0, beta=0, alpha=inv_n, out=grad)
        else:
            torch.addmm(self._grad_weight, z, self.X, beta=0, alpha=inv_n, out=self._grad_weight)
        if self._grad_bias is not None and not self._augmented:
            torch.sum(z, dim=1, out=self._grad_bias).mul_(self._inv_n_tensor)
        if l2:
            loss = loss + 0.5 * l2 * torch.vdot(W.reshape(-1), W.reshape(-1))
            self._grad_weight.add_(W, alpha=l2)
        return loss, self._grads


class BatchStep:
    """``step(Xb, Tb, l2) -> (loss, grads)`` for the mini-batches of a single-``Linear`` model,
    like ``objective_and_grad(Xb, Tb, l2)``, in buffers allocated once for the largest batch.

    Rows stay row-major here (a batch is gathered row by row), so the logits are ``(B, K)``.
    The weight and bias gradients are views of one flat tensor, :attr:`flat_grad`, in the
    model's parameter order, so the loop can accumulate an epoch's gradient in one operation.
    The returned tensors are those buffers: the next ``step`` overwrites them.
    """

    def __init__(self, model, batch_size: int, dtype: torch.dtype, device) -> None:
        if not supports(model):
            raise TypeError("the mini-batch fast path needs a model with a single Linear layer")
        (self.prefix, self.layer), = model.named_children()
        self._in_place = _IN_PLACE[model.link]
        W, b = self.layer.weight, self.layer.bias
        k, d = W.shape
        self._z = torch.empty(batch_size, k, dtype=dtype, device=device)
        self._buf = torch.empty_like(self._z)
        self._zero = torch.zeros((), dtype=dtype, device=device)
        self.flat_grad = torch.empty(k * d + (0 if b is None else k), dtype=dtype, device=device)
        self._grad_weight = self.flat_grad[: k * d].view(k, d)
        self.grads = {f"{self.prefix}.weight": self._grad_weight}
        self._grad_bias = None
        if b is not None:
            self._grad_bias = self.flat_grad[k * d :]
            self.grads[f"{self.prefix}.bias"] = self._grad_bias

    @torch.no_grad()
    def step(self, Xb: Tensor, Tb: Tensor, l2: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
        W, b = self.layer.weight, self.layer.bias
        nb = Xb.shape[0]
        # an empty batch (a padding step of a data-parallel run) has a NaN mean loss and zero
        # gradients (sums over no rows), as in the reference
        inv_n = 1.0 / nb if nb else math.nan
        grad_scale = 1.0 / nb if nb else 0.0
        z = self._z[:nb]
        if b is None:
            torch.mm(Xb, W.T, out=z)
        else:
            torch.addmm(b, Xb, W.T, out=z)
        loss = self._in_place(z, Tb, self._buf[:nb], self._zero, 1).mul_(inv_n)  # z now holds h(z) - t
        if z.shape[1] == 1:
            grad = self._grad_weight[0]
            torch.addmv(grad, Xb.T, z[:, 0], beta=0, alpha=grad_scale, out=grad)
        else:
            torch.addmm(self._grad_weight, z.T, Xb, beta=0, alpha=grad_scale, out=self._grad_weight)
        if self._grad_bias is not None:
            torch.sum(z, dim=0, out=self._grad_bias).mul_(grad_scale)
        if l2:
            loss = loss + 0.5 * l2 * torch.vdot(W.reshape(-1), W.reshape(-1))
            self._grad_weight.add_(W, alpha=l2)
        return loss, self.grads
