"""Gradient references: closed form, ``torch.autograd`` and central finite differences.

The training loop uses only the manual backward of the layers. This module checks that
gradient against three independent references and reports the worst errors:

* ``closed_form``: ``dW = (P - T)^T X / N + l2 W``, ``db = sum_n (P - T) / N``, written
  straight from the formula (models with a single ``Linear`` layer only);
* ``autograd``: ``torch.autograd.grad`` of the same objective, the loss taken from
  ``torch.nn.functional`` (``binary_cross_entropy_with_logits``, ``cross_entropy``, ``mse_loss``)
  rather than from this package;
* ``finite_difference``: central differences of the objective in float64.

Errors are scale-relative: ``max|g - r| / max(max|g|, max|r|, floor)``, so exact zeros and
saturated outputs do not produce meaningless ratios (see :data:`TOLERANCES` for the floors).
Against the closed form and autograd, an entry's difference is also allowed the rounding error
of the sums it is made of (:func:`rounding_scale`): near an optimum a gradient entry is a tiny
result of cancelling terms of size ~1, and two summation orders legitimately differ there by
far more than a relative tolerance of the result. Nothing here is used by the update itself.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as torchF
from torch import Tensor

from . import functional as F
from . import penalty
from .layers import BatchNorm1d, Dropout, Layer, Linear, repeatable

REFERENCES = ("closed_form", "autograd", "finite_difference")

#: relative tolerance per reference, and the floor of the scale errors are measured against
#: (error / max(|g|, |r|, floor) <= tolerance; below the floor this is an absolute test).
#: Central differences carry rounding and truncation errors of order 1e-11..1e-10 in float64
#: whatever the size of the gradient entry, so they get a floor of "fd_floor" * max(1, |L|):
#: entries smaller than that are held to tolerance * floor absolutely (1e-9 in float64).
#: The closed form and autograd compute the same sums as the manual backward in another order
#: and with other roundings of their terms, so an entry may also differ by "rounding" * eps times
#: the summed magnitude of its terms (:func:`rounding_scale`), whatever the size of the result.
#: Each side rounds every term (the link, the residual, the product: a few eps of the magnitude)
#: and sums them pairwise or in blocks (a few eps more); 64 eps covers both sides with a margin
#: and stays far below a real error (a term wrong by 1e-6 of its size is ~4e9 eps in float64).
TOLERANCES = {
    torch.float64: {"closed_form": 1e-10, "autograd": 1e-10, "finite_difference": 1e-6, "floor": 1e-12,
                    "fd_floor": 1e-3, "rounding": 64},
    torch.float32: {"closed_form": 1e-4, "autograd": 1e-4, "finite_difference": 1e-3, "floor": 1e-6,
                    "fd_floor": 1e-2, "rounding": 64},
}


@dataclass
class Comparison:
    reference: str
    parameter: str
    max_abs_error: float
    max_rel_error: float
    tolerance: float
    checked: int  # number of gradient entries compared
    total: int

    @property
    def passed(self) -> bool:
        return self.max_rel_error <= self.tolerance


@dataclass
class GradientReport:
    """Per parameter and per reference: max absolute and relative error, and the verdict."""

    comparisons: list[Comparison] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # reference -> why it was not run

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.comparisons)

    @property
    def max_rel_error(self) -> float:
        return max((c.max_rel_error for c in self.comparisons), default=0.0)

    def worst(self) -> Comparison | None:
        return max(self.comparisons, key=lambda c: c.max_rel_error / c.tolerance, default=None)

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "max_rel_error": self.max_rel_error,
            "comparisons": [dict(vars(c), passed=c.passed) for c in self.comparisons],
            "skipped": dict(self.skipped),
        }

    def __str__(self) -> str:
        head = (f"{'reference':<18} {'parameter':<16} {'max abs err':>12} {'max rel err':>12} "
                f"{'tolerance':>10} {'checked':>11}  ok")
        lines = [head, "-" * len(head)]
        for c in self.comparisons:
            lines.append(
                f"{c.reference:<18} {c.parameter:<16} {c.max_abs_error:>12.3e} {c.max_rel_error:>12.3e} "
                f"{c.tolerance:>10.0e} {f'{c.checked}/{c.total}':>11}  {'yes' if c.passed else 'NO'}"
            )
        for ref, why in self.skipped.items():
            lines.append(f"{ref:<18} skipped: {why}")
        lines.append(f"overall: {'PASS' if self.passed else 'FAIL'} (max rel err {self.max_rel_error:.3e})")
        return "\n".join(lines)


# --- the references ---------------------------------------------------------------------------


def closed_form_gradient(model, X: Tensor, T: Tensor, l2: float = 0.0) -> dict[str, Tensor]:
    """``X^T (P - T) / N + l2 W`` for a single-``Linear`` model; raises for deeper stacks."""
    children = list(model.named_children())
    if len(children) != 1 or not isinstance(children[0][1], Linear):
        raise TypeError("the closed-form gradient exists only for a single Linear layer")
    prefix, layer = children[0]
    with torch.no_grad():
        z = X @ layer.weight.T
        if layer.bias is not None:
            z = z + layer.bias
        residual = (F.LINKS[model.link][0](z) - T) / X.shape[0]
        grads = {f"{prefix}.weight": (X.T @ residual).T + l2 * layer.weight}
        if layer.bias is not None:
            grads[f"{prefix}.bias"] = residual.sum(dim=0)
    return grads


def autograd_objective(model, X: Tensor, T: Tensor, l2: float = 0.0) -> Tensor:
    """The objective built from ``torch.nn.functional`` losses, differentiable by autograd."""
    z = model.logits(X)
    n = X.shape[0]
    if model.link == "sigmoid":
        loss = torchF.binary_cross_entropy_with_logits(z, T, reduction="sum") / n
    elif model.link == "softmax":
        loss = torchF.cross_entropy(z, T, reduction="sum") / n
    else:
        loss = 0.5 * torchF.mse_loss(z, T, reduction="sum") / n
    for name, p in model.named_parameters():
        if l2 and penalty.penalised(name):  # the rule from its home; the arithmetic written anew here
            loss = loss + 0.5 * l2 * (p * p).sum()
    return loss


def autograd_gradient(model, X: Tensor, T: Tensor, l2: float = 0.0) -> dict[str, Tensor]:
    """``torch.autograd.grad`` of :func:`autograd_objective` with respect to every parameter."""
    params = dict(model.named_parameters())
    frozen = [name for name, p in params.items() if not p.requires_grad]
    if frozen:
        raise ValueError(f"autograd reference needs requires_grad=True on {frozen}")
    with torch.enable_grad():
        loss = autograd_objective(model, X, T, l2)
        grads = torch.autograd.grad(loss, list(params.values()))
    for layer in model.children():  # drop cached activations that hold the graph
        layer.clear_cache()
    return dict(zip(params.keys(), grads))


def finite_difference_gradient(
    model,
    X: Tensor,
    T: Tensor,
    l2: float = 0.0,
    eps: float = 1e-6,
    max_coords: int | None = None,
    seed: int = 0,
) -> dict[str, tuple[Tensor, Tensor]]:
    """Central differences ``(f(p + h) - f(p - h)) / 2h`` of the objective, in float64.

    Works on a float64 copy, so the model is untouched. With ``max_coords`` only that many
    entries per parameter (chosen at random from ``seed``) are differenced.
    Returns ``name -> (flat indices, gradient values at those indices)``.
    """
    probe = copy.deepcopy(model).to(torch.float64)
    X64, T64 = X.to(torch.float64), T.to(torch.float64)
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, tuple[Tensor, Tensor]] = {}
    with torch.no_grad():
        for name, p in probe.named_parameters():
            flat = p.view(-1)
            n = flat.numel()
            if max_coords is not None and n > max_coords:
                idx = torch.randperm(n, generator=gen)[:max_coords].sort().values
            else:
                idx = torch.arange(n)
            values = torch.empty(len(idx), dtype=torch.float64)
            for j, i in enumerate(idx.tolist()):
                orig = flat[i].item()
                h = eps * max(1.0, abs(orig))
                flat[i] = orig + h
                f_plus = probe.objective(X64, T64, l2).item()
                flat[i] = orig - h
                f_minus = probe.objective(X64, T64, l2).item()
                flat[i] = orig
                values[j] = (f_plus - f_minus) / (2 * h)
            out[name] = (idx, values)
    return out


# --- comparison -------------------------------------------------------------------------------


def rounding_scale(model, X: Tensor, T: Tensor, l2: float = 0.0) -> dict[str, Tensor]:
    """Per gradient entry, the summed magnitude of the terms it is computed from.

    A gradient entry is a sum over the rows of products of the backpropagated signal and a
    layer's input; rounding errs by a few eps of the *terms*, not of the (possibly cancelled)
    sum. This runs the backward on magnitudes: the signal at the logits is
    ``(|link(z)| + |T| + max_k Z_nk) / N`` (the residual ``link(z) - T`` is a difference of the
    first two; ``Z`` bounds the logits with their rounding, by the forward on magnitudes
    ``H <- H |W|^T + |b|`` through a ``Linear``, ``H <- H + |act(a)|`` through an
    activation, whose slopes are at most 1, ``H <- H m`` through dropout's mask ``m >= 0``), a
    ``Linear`` gets ``G^T H_in`` (weight) and ``sum_n G`` (bias), and the signal goes on as
    ``G |W|`` times ``|act'|`` (or ``m``). Through batch normalization, with ``s = |weight| inv_std``
    and ``Xh = (H + c) inv_std`` bounding ``xhat``'s terms (``c = mean_n H`` for batch statistics,
    ``|running_mean|`` for fixed ones): ``H <- Xh |weight| + |bias|``, the weight gets
    ``sum_n G Xh``, the bias ``sum_n G``, and the signal goes on as ``s G``, for batch statistics
    ``s (G + (sum_n G + Xh sum_n G Xh) / N)``. The L2 term adds ``l2 |W|`` on penalised
    parameters. Keys as ``named_parameters()``; no host sync.
    """
    layers = list(model.named_children())
    n = X.shape[0]
    with torch.no_grad():
        a, h = X, X.abs()  # each layer's input, and a bound on its magnitude (rounding included)
        inputs = []
        for _, layer in layers:
            inputs.append((a, h))
            out = layer(a, cache=False)
            if isinstance(layer, Linear):
                h = h @ layer.weight.abs().T
                if layer.bias is not None:
                    h = h + layer.bias.abs()
            elif isinstance(layer, Dropout):
                h = layer(h, cache=False)
            elif isinstance(layer, BatchNorm1d):
                _, xhat = _norm_magnitudes(layer, a, h)
                h = xhat if layer.weight is None else xhat * layer.weight.abs() + layer.bias.abs()
            else:
                h = h + out.abs()
            a = out
        p = F.LINKS[model.link][0](a)
        g = (p.abs() + T.abs() + h.amax(dim=1, keepdim=True)) / n
        scale: dict[str, Tensor] = {}
        for (prefix, layer), (a_in, h_in) in zip(reversed(layers), reversed(inputs)):
            if isinstance(layer, Linear):
                scale[f"{prefix}.weight"] = g.T @ h_in
                if layer.bias is not None:
                    scale[f"{prefix}.bias"] = g.sum(dim=0)
                g = g @ layer.weight.abs()
            elif isinstance(layer, BatchNorm1d):
                slope, xhat = _norm_magnitudes(layer, a_in, h_in)
                if layer.weight is not None:
                    scale[f"{prefix}.weight"] = (g * xhat).sum(dim=0)
                    scale[f"{prefix}.bias"] = g.sum(dim=0)
                if layer.training:
                    g = g + (g.sum(dim=0) + xhat * (g * xhat).sum(dim=0)) / n
                g = g * slope
            else:  # |g| times |act'| (or dropout's mask) at the forward point, from the layer's own backward
                layer(a_in, cache=True)
                g = layer.backward(g).abs()
                layer.clear_cache()
        if l2:
            for name, param in model.named_parameters():
                if penalty.penalised(name):
                    scale[name] = scale[name] + l2 * param.abs()
    return scale


def _norm_magnitudes(layer: BatchNorm1d, a: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    """``(|weight| inv_std, Xh)`` of a batch normalization at input ``a`` whose entries' magnitudes
    are bounded by ``h`` (see :func:`rounding_scale`)."""
    if layer.training:
        var, centre = torch.var(a, dim=0, correction=0), h.mean(dim=0)
    else:
        var, centre = layer.running_var, layer.running_mean.abs()
    inv_std = 1.0 / torch.sqrt(var + layer.eps)
    slope = inv_std if layer.weight is None else layer.weight.abs() * inv_std
    return slope, (h + centre) * inv_std


def _compare(
    reference: str,
    name: str,
    manual: Tensor,
    ref: Tensor,
    tol: float,
    floor: float,
    total: int,
    allowance: Tensor | None = None,
) -> Comparison:
    """``max_i |g_i - r_i| / max(max|g|, max|r|, floor, allowance_i / tol)``: ``allowance`` is an
    absolute error each entry may carry whatever the size of the gradient (its rounding)."""
    manual = manual.detach().to(torch.float64).reshape(-1).cpu()
    ref = ref.detach().to(torch.float64).reshape(-1).cpu()
    if not manual.numel():
        return Comparison(reference, name, 0.0, 0.0, tol, 0, total)
    err = (manual - ref).abs()
    scale = max(manual.abs().max().item(), ref.abs().max().item(), floor)
    denominator = torch.full_like(err, scale)
    if allowance is not None:
        allowance = allowance.detach().to(torch.float64).reshape(-1).cpu()
        # a non-finite allowance (magnitudes that overflow) allows nothing rather than everything
        allowance = torch.where(torch.isfinite(allowance), allowance, torch.zeros_like(allowance))
        denominator = torch.maximum(denominator, allowance / tol)
    return Comparison(reference, name, err.max().item(), (err / denominator).max().item(), tol, manual.numel(), total)


def compare_gradients(
    model,
    X: Tensor,
    T: Tensor,
    l2: float = 0.0,
    references: tuple[str, ...] = REFERENCES,
    fd_max_coords: int | None = 256,
    seed: int = 0,
) -> GradientReport:
    """Compare the manual gradient on prepared targets ``T (N, K)`` with the references.

    The model is checked in the mode it is in (training or evaluation), inside
    :func:`~torch_logreg.layers.repeatable`: dropout keeps one mask for every forward of the
    check and batch normalization's running statistics are left as they were.
    """
    unknown = set(references) - set(REFERENCES)
    if unknown:
        raise ValueError(f"unknown gradient reference(s) {sorted(unknown)}; choose from {REFERENCES}")
    with repeatable(model):
        return _compare_gradients(model, X, T, l2, references, fd_max_coords, seed)


def _compare_gradients(model, X: Tensor, T: Tensor, l2: float, references: tuple[str, ...],
                       fd_max_coords: int | None, seed: int) -> GradientReport:
    tols = TOLERANCES[model.dtype]
    loss, manual = model.objective_and_grad(X, T, l2)
    manual = {k: v.clone() for k, v in manual.items()}
    allowance = None
    if {"closed_form", "autograd"} & set(references):
        eps = torch.finfo(model.dtype).eps
        allowance = {k: tols["rounding"] * eps * v for k, v in rounding_scale(model, X, T, l2).items()}
    report = GradientReport()
    for reference in references:
        if reference == "closed_form":
            try:
                ref = closed_form_gradient(model, X, T, l2)
            except TypeError as exc:
                report.skipped[reference] = str(exc)
                continue
            pairs = {k: (manual[k], ref[k]) for k in manual}
        elif reference == "autograd":
            ref = autograd_gradient(model, X, T, l2)
            pairs = {k: (manual[k], ref[k]) for k in manual}
        else:
            fd = finite_difference_gradient(model, X, T, l2, max_coords=fd_max_coords, seed=seed)
            pairs = {k: (manual[k].reshape(-1)[idx.to(manual[k].device)], vals) for k, (idx, vals) in fd.items()}
        floor = tols["floor"]
        if reference == "finite_difference":
            floor = max(floor, tols["fd_floor"] * max(1.0, abs(loss.item())))
        for name, (g, r) in pairs.items():
            allowed = allowance.get(name) if allowance is not None and reference != "finite_difference" else None
            report.comparisons.append(
                _compare(reference, name, g, r, tols[reference], floor, manual[name].numel(), allowed)
            )
    return report


def check_gradients(model, X, y, l2: float = 0.0, **kwargs) -> GradientReport:
    """Validate ``X``, ``y`` and compare the model's manual gradient with all three references.

    Keyword arguments go to :func:`compare_gradients` (``references``, ``fd_max_coords``,
    ``seed``). Returns a :class:`GradientReport`; ``report.passed`` says whether every
    comparison is within its tolerance and ``print(report)`` shows the table.
    """
    X = model.check_input(X)
    T = model.targets(y, X.shape[0])
    return compare_gradients(model, X, T, l2, **kwargs)


# --- autograd.Function over the manual backward (for torch.autograd.gradcheck) ----------------


class ManualFunction(torch.autograd.Function):
    """Runs a :class:`Layer`'s forward and answers autograd with the layer's manual backward.

    ``ManualFunction.apply(layer, x, *layer_parameters)``: the parameters must be the layer's
    own (in ``named_parameters(recurse=False)`` order) so ``gradcheck`` can perturb them.
    """

    @staticmethod
    def forward(ctx, layer: Layer, x: Tensor, *params: Tensor) -> Tensor:
        own = list(layer.parameters(recurse=False))
        if len(own) != len(params) or any(a is not b for a, b in zip(own, params)):
            raise ValueError("ManualFunction needs the layer's own parameters, in order")
        ctx.layer = layer
        ctx.names = [n for n, _ in layer.named_parameters(recurse=False)]
        ctx.save_for_backward(x)
        with torch.no_grad():
            return layer(x)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        (x,) = ctx.saved_tensors
        layer = ctx.layer
        with torch.no_grad():
            layer(x)  # refresh the cache: autograd may have run other forwards since
            grad_input = layer.backward(grad_output, need_input_grad=True)
        return (None, grad_input, *[layer.grads[n] for n in ctx.names])
