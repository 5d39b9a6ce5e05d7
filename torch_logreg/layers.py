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

import math

import torch
from torch import Tensor, nn

from . import functional as F
from .errors import UsageError


class Layer(nn.Module):
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

    def backward(self, grad_output: Tensor, need_input_grad: bool = True) -> Tensor | None:
        """``dL/d input`` from ``dL/d output`` (None where ``need_input_grad`` is false), the
        layer's own parameter gradients put in :attr:`grads`."""
        raise NotImplementedError

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
