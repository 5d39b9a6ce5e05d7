"""Layers with an explicit backward pass.

Each layer is an ``nn.Module`` whose ``forward(x, cache=True)`` caches what its backward needs
and whose ``backward(grad_output)`` returns ``dL/d input`` and stores the gradients of its own
parameters in ``layer.grads`` (a dict keyed like ``named_parameters(recurse=False)``). No autograd
is used: the maths lives in :mod:`torch_logreg.functional`, next to the forward it differentiates.

The cache is kept only when a backward will read it: a layer called on its own caches (it is the
unit of the manual backward, e.g. ``gradients.ManualFunction``), while a model passes
``cache=False`` to its layers on every forward except the one its own manual backward follows
(``StackedModel.objective_and_grad``). So ``model(X)`` for predictions keeps no reference to
``X``. Under ``torch.jit.script`` the forwards never cache (a scripted module has no backward).
"""

from __future__ import annotations

import contextlib
import math
from abc import ABCMeta, abstractmethod
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from . import functional as F
from .errors import UsageError


class Layer(nn.Module, metaclass=ABCMeta):
    """Base of the hand-differentiated layers.

    Subclasses implement ``forward(x, cache=True)`` (caching what their backward needs when
    ``cache`` is true, through :meth:`_save`) and
    ``backward(grad_output, need_input_grad=True) -> grad_input``.
    """

    def __init__(self) -> None:
        super().__init__()
        # Plain dicts, filled in place: assigning attributes of an nn.Module goes through its
        # __setattr__, a visible cost per step on small problems.
        self.grads: dict[str, Tensor] = {}
        self._saved: dict[str, Tensor] = {}

    def _save(self, t: Tensor) -> None:
        self._saved["cache"] = t

    def _cached(self) -> Tensor:
        t = self._saved.get("cache")
        if t is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before a forward with cache=True")
        return t

    @abstractmethod
    def backward(self, grad_output: Tensor, need_input_grad: bool = True) -> Tensor | None:
        """``dL/d input`` from ``dL/d output`` (None where ``need_input_grad`` is false), the
        layer's own parameter gradients put in :attr:`grads`."""

    def clear_cache(self) -> None:
        """Drop the saved forward input/output (e.g. one that holds an autograd graph)."""
        self._saved.clear()


class Linear(Layer):
    """``y = x W^T + b`` with ``weight`` ``(out_features, in_features)`` and ``bias``
    ``(out_features,)``, laid out as in ``torch.nn.Linear``.

    ``init="uniform"`` draws U(-1/sqrt(in), 1/sqrt(in)) as ``nn.Linear`` does (what an MLP
    needs to break symmetry); ``init="zeros"`` is the canonical start of a convex model.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        init: str = "uniform",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"Linear: {name} must be a positive integer, got {value!r}")
        if init not in ("uniform", "zeros"):
            raise UsageError(f"Linear: init must be 'uniform' or 'zeros', got {init!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(out_features, device=device, dtype=dtype)) if bias else None
        self.reset_parameters(init)

    @torch.no_grad()
    def reset_parameters(self, init: str = "uniform") -> None:
        if init == "zeros":
            self.weight.zero_()
            if self.bias is not None:
                self.bias.zero_()
            return
        bound = 1.0 / math.sqrt(self.in_features)
        self.weight.uniform_(-bound, bound)
        if self.bias is not None:
            self.bias.uniform_(-bound, bound)

    def forward(self, x: Tensor, cache: bool = True) -> Tensor:
        if not torch.jit.is_scripting():  # a scripted module has no manual backward: nothing to keep
            if cache:
                self._save(x)
        return F.linear(x, self.weight, self.bias)

    def backward(self, grad_output: Tensor, need_input_grad: bool = True) -> Tensor | None:
        grad_input, grad_weight, grad_bias = F.linear_backward(
            grad_output, self._cached(), self.weight, self.bias is not None, need_input_grad
        )
        self.grads["weight"] = grad_weight
        if grad_bias is not None:
            self.grads["bias"] = grad_bias
        return grad_input

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class _Activation(Layer):
    """An elementwise activation whose derivative is written in terms of its output."""

    _fn = staticmethod(torch.sigmoid)
    _backward = staticmethod(F.sigmoid_backward)

    def forward(self, x: Tensor, cache: bool = True) -> Tensor:
        y = self._fn(x)
        if not torch.jit.is_scripting():
            if cache:
                self._save(y)
        return y

    def backward(self, grad_output: Tensor, need_input_grad: bool = True) -> Tensor | None:
        return self._backward(grad_output, self._cached())


class Sigmoid(_Activation):
    _fn = staticmethod(torch.sigmoid)
    _backward = staticmethod(F.sigmoid_backward)


class Tanh(_Activation):
    _fn = staticmethod(torch.tanh)
    _backward = staticmethod(F.tanh_backward)


class ReLU(_Activation):
    _fn = staticmethod(torch.relu)  # type: ignore[assignment]  # torch.relu has no out= argument
    _backward = staticmethod(F.relu_backward)


ACTIVATIONS = {"sigmoid": Sigmoid, "tanh": Tanh, "relu": ReLU}


class Dropout(Layer):
    """Inverted dropout, as ``torch.nn.Dropout``: in training mode ``y = x m`` with
    ``m = b / (1 - p)``, ``b ~ Bernoulli(1 - p)`` drawn per entry of ``x`` ``(N, C)`` at every
    forward, so ``E[y] = x``; in evaluation mode ``y = x``. The backward is ``dL/dx = m dL/dy``
    with the mask of the forward it follows.

    The mask comes from torch's global generator, or with ``seed`` from the layer's own
    ``generator`` (made on the first input's device, seeded with ``seed``; ``manual_seed`` reseeds
    it). :meth:`freeze_mask` keeps the next mask drawn (in the non-persistent buffer ``mask``) and
    reuses it until :meth:`unfreeze_mask`, which is what a gradient check needs (see
    :func:`repeatable`). A scripted module applies ``torch.nn.functional.dropout``.
    """

    def __init__(self, p: float = 0.5, seed: int | None = None) -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
            raise UsageError(f"Dropout: p must be a number >= 0 and < 1, got {p!r}")
        self.p = float(p)
        self.generator: torch.Generator | None = None
        self._seed = seed
        self.frozen = False
        self.mask: Tensor | None
        self.register_buffer("mask", None, persistent=False)

    def manual_seed(self, seed: int | None) -> None:
        """Draw the masks from a generator seeded with ``seed`` (None: torch's global one)."""
        self._seed = seed
        self.generator = None  # made afresh, on the next input's device

    def freeze_mask(self) -> None:
        """Keep the next mask drawn and reuse it at every training forward until :meth:`unfreeze_mask`."""
        self.frozen = True

    def unfreeze_mask(self) -> None:
        self.frozen = False
        self.mask = None

    def _draw(self, x: Tensor) -> Tensor:
        if self.frozen and self.mask is not None:
            if self.mask.shape != x.shape:
                raise UsageError(f"Dropout: the frozen mask has shape {tuple(self.mask.shape)} but the input has "
                                 f"{tuple(x.shape)}; unfreeze it for inputs of another shape")
            return self.mask
        if self._seed is not None and (self.generator is None or self.generator.device != x.device):
            self.generator = torch.Generator(device=x.device).manual_seed(self._seed)
        keep = 1.0 - self.p
        mask = torch.empty_like(x).bernoulli_(keep, generator=self.generator).div_(keep)
        if self.frozen:
            self.mask = mask
        return mask

    def forward(self, x: Tensor, cache: bool = True) -> Tensor:
        if torch.jit.is_scripting():
            return nn.functional.dropout(x, self.p, self.training)
        if self.training and self.p > 0.0:
            mask = self._draw(x)
            y = x * mask
        else:
            mask, y = x.new_ones(()), x
        if cache:
            self._save(mask)
        return y

    def backward(self, grad_output: Tensor, need_input_grad: bool = True) -> Tensor | None:
        return grad_output * self._cached()

    def extra_repr(self) -> str:
        return f"p={self.p}"


class BatchNorm1d(Layer):
    """Batch normalization of ``x`` ``(N, C)``, as ``torch.nn.BatchNorm1d``:
    ``y = weight (x - mean) / sqrt(var + eps) + bias`` per feature.

    Training mode normalizes by the batch's mean and biased variance (``N >= 2`` rows) and
    updates the buffers ``running_mean`` and ``running_var`` with the unbiased variance,
    ``r <- (1 - momentum) r + momentum s`` (``momentum = None``: the cumulative average,
    ``1 / num_batches_tracked`` as the factor). Evaluation mode normalizes by the running
    statistics. ``affine = False``: no ``weight`` (1) nor ``bias`` (0). The parameters and
    buffers are named as torch's, so state dicts load either way. The backward
    (:func:`~torch_logreg.functional.batch_norm_backward`) follows the mode of its forward;
    inside :func:`repeatable` the running statistics are left alone.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
            raise UsageError(f"BatchNorm1d: num_features must be a positive integer, got {num_features!r}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise UsageError(f"BatchNorm1d: eps must be a number > 0, got {eps!r}")
        if momentum is not None and (isinstance(momentum, bool) or not isinstance(momentum, (int, float))
                                     or not 0.0 <= momentum <= 1.0):
            raise UsageError(f"BatchNorm1d: momentum must be a number in [0, 1] or None, got {momentum!r}")
        self.num_features = self.in_features = num_features
        self.eps = float(eps)
        self.momentum = None if momentum is None else float(momentum)
        self.affine = bool(affine)
        if self.affine:
            self.weight = nn.Parameter(torch.ones(num_features, device=device, dtype=dtype))
            self.bias = nn.Parameter(torch.zeros(num_features, device=device, dtype=dtype))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("running_mean", torch.zeros(num_features, device=device, dtype=dtype))
        self.register_buffer("running_var", torch.ones(num_features, device=device, dtype=dtype))
        self.register_buffer("num_batches_tracked", torch.zeros((), dtype=torch.long, device=device))
        self.update_running_stats: bool = True

    if TYPE_CHECKING:  # buffers, for the type checker (TorchScript reads no annotation here)
        running_mean: Tensor
        running_var: Tensor
        num_batches_tracked: Tensor

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, var: Tensor, n: int) -> None:
        self.num_batches_tracked.add_(1)
        # a tensor factor for the cumulative average: no read of the count back to the host
        factor = self.momentum if self.momentum is not None else self.num_batches_tracked.to(mean.dtype).reciprocal()
        self.running_mean.mul_(1 - factor).add_(factor * mean)
        self.running_var.mul_(1 - factor).add_(factor * var * (n / (n - 1)))

    def forward(self, x: Tensor, cache: bool = True) -> Tensor:
        if self.training:
            if not torch.jit.is_scripting():
                if x.shape[0] < 2:
                    raise UsageError(f"BatchNorm1d: training needs a batch of at least 2 rows, got {x.shape[0]}")
            var, mean = torch.var_mean(x, dim=0, correction=0)
            if not torch.jit.is_scripting():
                if self.update_running_stats:
                    self._update_running_stats(mean.detach(), var.detach(), x.shape[0])
        else:
            mean, var = self.running_mean, self.running_var
        xhat, inv_std = F.batch_norm_forward(x, mean, var, self.eps)
        if not torch.jit.is_scripting():
            if cache:
                self._saved.clear()
                self._saved["xhat_batch" if self.training else "xhat"] = xhat
                self._saved["inv_std"] = inv_std
        weight, bias = self.weight, self.bias
        if weight is not None and bias is not None:
            return torch.addcmul(bias, xhat, weight)
        return xhat

    def backward(self, grad_output: Tensor, need_input_grad: bool = True) -> Tensor | None:
        saved = self._saved
        batch_stats = "xhat_batch" in saved
        xhat = saved.get("xhat_batch" if batch_stats else "xhat")
        if xhat is None:
            raise RuntimeError("BatchNorm1d.backward called before a forward with cache=True")
        grad_input, grad_weight, grad_bias = F.batch_norm_backward(
            grad_output, xhat, saved["inv_std"], self.weight, batch_stats
        )
        if self.affine:
            self.grads["weight"] = grad_weight
            self.grads["bias"] = grad_bias
        return grad_input

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"


@contextlib.contextmanager
def repeatable(model: nn.Module):
    """Within the block every forward of ``model`` is one fixed function of its input and
    parameters, and leaves the model as it was: each :class:`Dropout` draws one mask at its first
    training forward and reuses it, each :class:`BatchNorm1d` leaves its running statistics alone;
    on exit the masks are dropped and the dropout generators set back to their state before it.
    What a gradient check needs: the manual backward, autograd and finite differences then
    differentiate the same function, and checking changes nothing of the model nor of the masks
    its training draws later (but a dropout layer without a seed draws from torch's global
    generator, which the check does advance)."""
    dropouts = [m for m in model.modules() if isinstance(m, Dropout) and not m.frozen]
    norms: list[BatchNorm1d] = [m for m in model.modules() if isinstance(m, BatchNorm1d) and m.update_running_stats]
    generators = [(m, m.generator, None if m.generator is None else m.generator.get_state()) for m in dropouts]
    for d in dropouts:
        d.freeze_mask()
    for b in norms:
        b.update_running_stats = False
    try:
        yield model
    finally:
        for d, gen, state in generators:
            d.unfreeze_mask()
            d.generator = gen
            if gen is not None and state is not None:
                gen.set_state(state)
        for b in norms:
            b.update_running_stats = True
