"""Models: stacks of hand-differentiated layers ending in a link (sigmoid, softmax, identity).

The objective every model minimises, for ``N`` samples, is

    L(theta) = (1/N) sum_n loss(z_n, t_n) + (l2 / 2) * sum_W ||W||^2

where ``z_n`` are the logits of sample ``n``, ``loss`` is the per-sample negative
log-likelihood (binary cross-entropy summed over the outputs for K sigmoids, categorical
cross-entropy for softmax, half squared error summed over outputs for regression) and the
penalty covers every weight matrix but no bias.

Relation to scikit-learn: ``LogisticRegression(C=C)`` minimises ``C * sum_n loss + ||w||^2/2``.
Dividing by ``C * N`` gives the objective above with ``l2 = 1 / (C * N)``.
"""

from __future__ import annotations

import contextlib
from typing import cast

import torch
from torch import Tensor, nn

from . import functional as F
from . import penalty, validation
from .errors import UsageError
from .layers import ACTIVATIONS, BatchNorm1d, Dropout, Layer, Linear


def single_linear(model) -> Linear | None:
    """The model's only layer when it is one :class:`Linear` followed by the link (logistic,
    softmax and linear regression), else None: the models the exact solvers and the fast steps
    take."""
    children = list(model.children())
    if len(children) == 1 and isinstance(children[0], Linear):
        return children[0]
    return None


class StackedModel(nn.Module):
    """Layers applied in registration order, then a link: the base of every model here.

    ``logits(X)`` runs the layers, ``forward(X)`` applies the link, ``backward(grad_logits)``
    runs the layers' manual backward in reverse, and ``loss_and_grad`` returns the objective and
    its gradient as a dict keyed like ``named_parameters()``.

    The layers cache their inputs only for a forward a manual backward follows
    (``logits(X, cache=True)``, as :meth:`objective_and_grad` does), and :meth:`backward` drops
    the caches once it has read them: ``model(X)`` keeps no reference to ``X``. ``forward`` and
    ``logits`` compile with ``torch.jit.script``.

    With dropout or batch normalization among the layers (``mode_dependent``), ``forward``,
    ``logits`` and the objectives follow the module's mode as torch's layers do: training mode
    (the default of a new module) draws masks and normalizes by the batch, evaluation mode
    (``model.eval()``) does neither. :meth:`predict` always predicts in evaluation mode.
    """

    # properties torch.jit.script must not compile (Python-side helpers, ``next()`` on a generator)
    __jit_unused_properties__ = ["_reference_param", "device", "dtype", "n_classes"]

    def __init__(self, layers: dict[str, Layer], link: str, n_outputs: int) -> None:
        super().__init__()
        if link not in F.LINKS:
            raise UsageError(f"link must be one of {sorted(F.LINKS)}, got {link!r}")
        for name, layer in layers.items():
            self.add_module(name, layer)
        self.link = link
        self.n_outputs = n_outputs
        self._init_args: dict = {}
        self._link_fn, self.loss_fn = F.LINKS[link]
        first = cast(Linear, next(iter(layers.values())))  # a model's first layer is its Linear input
        self.n_features: int = first.in_features
        #: whether a layer computes otherwise in training than in evaluation mode
        self.mode_dependent = any(isinstance(layer, (Dropout, BatchNorm1d)) for layer in layers.values())

    # -- shapes and placement --
    @property
    def _reference_param(self) -> Tensor:
        return next(self.parameters())

    @property
    def device(self) -> torch.device:
        return self._reference_param.device

    @property
    def dtype(self) -> torch.dtype:
        return self._reference_param.dtype

    def constructor_args(self) -> dict:
        """Keyword arguments that rebuild this model (saved with checkpoints)."""
        return dict(self._init_args)

    @contextlib.contextmanager
    def evaluating(self):
        """Evaluation mode within the block, the mode before it after (a no-op for a model whose
        layers compute alike in both)."""
        switch = self.mode_dependent and self.training
        if switch:
            self.eval()
        try:
            yield self
        finally:
            if switch:
                self.train()

    def seed_dropout(self, seed: int) -> None:
        """Draw each dropout layer's masks from a generator of its own, the ``i``-th layer's (in
        order, from 0) seeded with ``seed + i``."""
        for i, layer in enumerate(m for m in self.children() if isinstance(m, Dropout)):
            layer.manual_seed(seed + i)

    # -- forward --
    def logits(self, X: Tensor, cache: bool = False) -> Tensor:
        """``(N, D) -> (N, K)`` logits (or predictions, for regression). With ``cache=True`` the
        layers keep what :meth:`backward` needs (the input ``X`` among it); by default nothing."""
        h = X
        for layer in self.children():
            h = layer(h, cache)
        return h

    def forward(self, X: Tensor, offset: Tensor | None = None) -> Tensor:
        """Probabilities ``(N, K)`` (sigmoid or softmax), or predictions for regression; ``offset``
        ``(N, 1)`` or ``(N, K)``, where given, is added to the logits first (as in
        :meth:`objective_and_grad`)."""
        z = self.logits(X)
        return self._link_fn(z if offset is None else z + offset)

    def backward(self, grad_logits: Tensor) -> None:
        """Manual backward from ``dL/dlogits`` after ``logits(X, cache=True)``; fills each
        layer's ``grads`` and drops the layers' caches (a second backward needs a new forward)."""
        layers = cast(list[Layer], list(self.children()))
        g = grad_logits
        for i in range(len(layers) - 1, -1, -1):
            # None only from the first layer, the last one called
            g = cast(Tensor, layers[i].backward(g, need_input_grad=i > 0))
            layers[i].clear_cache()

    # -- targets --
    def targets(self, y, n_samples: int) -> Tensor:
        """Validate ``y`` and return the ``(N, K)`` target matrix ``T`` the loss uses."""
        y = validation.as_tensor(y, "y", device=self.device)
        if self.link == "softmax":
            return validation.class_targets(y, n_samples, self.n_outputs, self.dtype)
        if self.link == "sigmoid":
            return validation.binary_targets(y, n_samples, self.n_outputs, self.dtype)
        return validation.real_targets(y, n_samples, self.n_outputs, self.dtype)

    def check_input(self, X) -> Tensor:
        """Validate features against this model (shape, finiteness, device, dtype)."""
        if not isinstance(X, Tensor):
            X = validation.as_tensor(X, "X", dtype=self.dtype, device=self.device)
        validation.check_features(X, self.n_features)
        validation.check_same_placement(self._reference_param, X=X)
        return X

    # -- objective --
    def loss_and_grad(self, X, y, l2: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
        """The objective (0-dim tensor) and its manual gradient, keyed like named_parameters().

        Validates its inputs; the training loop validates once and calls
        :meth:`objective_and_grad` on prepared targets instead.
        """
        X = self.check_input(X)
        if isinstance(y, Tensor):
            validation.check_same_placement(self._reference_param, y=y)
        T = self.targets(y, X.shape[0])
        return self.objective_and_grad(X, T, l2)

    def objective_and_grad(
        self, X: Tensor, T: Tensor, l2: float = 0.0, sample_weight: Tensor | None = None,
        offset: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Unchecked fast path: ``X (N, D)`` and prepared targets ``T (N, K)``; no host sync.

        ``sample_weight`` ``(N,)`` (optional) weighs each sample's loss:
        ``(1/N) sum_n w_n loss_n + (l2/2) sum_W ||W||^2``. ``offset`` ``(N, 1)`` or ``(N, K)``
        (optional) is added to the logits (the gradient through it is the same ``dL/dlogits``).
        """
        with torch.no_grad():
            z = self.logits(X, cache=True)
            if offset is not None:
                z = z + offset
            loss, grad_logits = self.loss_fn(z, T, sample_weight)
            self.backward(grad_logits)
            layers = cast(dict[str, Layer], self._modules).items()  # = named_children(), without its overhead
            grads = {f"{prefix}.{pname}": g for prefix, layer in layers for pname, g in layer.grads.items()}
            if l2:
                params = {f"{prefix}.{pname}": getattr(layer, pname) for prefix, layer in layers for pname in layer.grads}
                loss = penalty.add(loss, grads, params, l2)
        return loss, grads

    def objective(self, X: Tensor, T: Tensor, l2: float = 0.0, sample_weight: Tensor | None = None,
                  offset: Tensor | None = None) -> Tensor:
        """The objective alone (no backward), from prepared targets (optionally sample-weighted, with
        ``offset`` added to the logits as in :meth:`objective_and_grad`)."""
        with torch.no_grad():
            z = self.logits(X)
            loss, _ = self.loss_fn(z if offset is None else z + offset, T, sample_weight)
            return loss + penalty.value(dict(self.named_parameters()), l2)

    # -- predictions --
    def predict(self, X) -> Tensor:
        """Class labels ``(N,)`` (binary: p >= 0.5; softmax: argmax), 0/1 matrix ``(N, K)`` for
        K sigmoids, or predictions for regression (``(N,)`` when there is one output); in
        evaluation mode, whatever the model's mode."""
        X = self.check_input(X)
        with torch.no_grad(), self.evaluating():
            z = self.logits(X)
            if self.link == "softmax":
                return z.argmax(dim=1)
            if self.link == "sigmoid":
                labels = (z >= 0).to(torch.int64)  # sigmoid(z) >= 0.5 exactly when z >= 0
                return labels[:, 0] if self.n_outputs == 1 else labels
            return z[:, 0] if self.n_outputs == 1 else z


class LogisticRegression(StackedModel):
    """``p = sigmoid(X W^T + b)``, read as P(y = 1 | x).

    ``n_outputs > 1`` gives K independent sigmoids (multi-label), each with its own row of W.
    Parameters start at zero: the objective is convex and zero is its canonical start.
    """

    def __init__(self, n_features: int, n_outputs: int = 1, bias: bool = True) -> None:
        super().__init__({"linear": Linear(n_features, n_outputs, bias=bias, init="zeros")}, "sigmoid", n_outputs)
        self._init_args = {"n_features": n_features, "n_outputs": n_outputs, "bias": bias}


class SoftmaxRegression(StackedModel):
    """``p = softmax(X W^T + b)`` over ``n_classes`` classes (multinomial logistic regression).

    The parametrisation is over-complete (adding a vector to every row of W leaves p unchanged);
    with ``l2 > 0`` the minimiser is unique, as in scikit-learn's multinomial model.
    """

    def __init__(self, n_features: int, n_classes: int, bias: bool = True) -> None:
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
            raise UsageError(f"SoftmaxRegression needs n_classes >= 2, got {n_classes!r}")
        super().__init__({"linear": Linear(n_features, n_classes, bias=bias, init="zeros")}, "softmax", n_classes)
        self._init_args = {"n_features": n_features, "n_classes": n_classes, "bias": bias}

    @property
    def n_classes(self) -> int:
        return self.n_outputs


class LinearRegression(StackedModel):
    """``y_hat = X W^T + b`` with the half squared error: the no-sigmoid variant."""

    def __init__(self, n_features: int, n_outputs: int = 1, bias: bool = True) -> None:
        super().__init__({"linear": Linear(n_features, n_outputs, bias=bias, init="zeros")}, "identity", n_outputs)
        self._init_args = {"n_features": n_features, "n_outputs": n_outputs, "bias": bias}


class MLP(StackedModel):
    """``Linear -> activation -> ... -> Linear -> link``: the same layers, stacked deeper.

    ``hidden`` lists the hidden widths; ``link`` is ``"sigmoid"`` (binary / multi-label),
    ``"softmax"`` (K classes) or ``"identity"`` (regression). Weights start small and random.

    Each hidden layer ``i`` is ``fc{i} -> [bn{i}] -> act{i} -> [drop{i}]``: ``batch_norm`` puts a
    :class:`~torch_logreg.layers.BatchNorm1d` before the activation, ``dropout = p > 0`` a
    :class:`~torch_logreg.layers.Dropout` after it (:meth:`seed_dropout` seeds their masks). The
    L2 penalty takes its rule from :mod:`~torch_logreg.penalty` (parameters named ``weight``), so
    it covers the batch-norm scales ``bn{i}.weight`` too.
    """

    def __init__(
        self,
        n_features: int,
        hidden: list[int] | tuple[int, ...],
        n_outputs: int = 1,
        activation: str = "tanh",
        link: str = "sigmoid",
        bias: bool = True,
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        if activation not in ACTIVATIONS:
            raise UsageError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        widths = [n_features, *hidden]
        layers: dict[str, Layer] = {}
        for i in range(len(hidden)):
            layers[f"fc{i}"] = Linear(widths[i], widths[i + 1], bias=bias)
            if batch_norm:
                layers[f"bn{i}"] = BatchNorm1d(widths[i + 1])
            layers[f"act{i}"] = ACTIVATIONS[activation]()
            if dropout:
                layers[f"drop{i}"] = Dropout(dropout)
        layers["out"] = Linear(widths[-1], n_outputs, bias=bias)
        super().__init__(layers, link, n_outputs)
        self._init_args = {
            "n_features": n_features,
            "hidden": list(hidden),
            "n_outputs": n_outputs,
            "activation": activation,
            "link": link,
            "bias": bias,
            "dropout": float(dropout),
            "batch_norm": bool(batch_norm),
        }


MODELS = {
    "LogisticRegression": LogisticRegression,
    "SoftmaxRegression": SoftmaxRegression,
    "LinearRegression": LinearRegression,
    "MLP": MLP,
}
