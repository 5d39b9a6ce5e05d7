"""Limited-memory BFGS on all parameters of any model, from the manual gradient (see the package
docstring)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import penalty
from ..models import single_linear
from ..steps import select
from . import wolfe
from .params import center, get_theta, set_theta, softmax_null_cols
from .result import NON_FINITE_HINT, NonFiniteError, SolverResult, record_iterate


def lbfgs(model, X, T, w, l2, max_iter, tol, history_size, result: SolverResult, callback=None) -> None:
    params = dict(model.named_parameters())
    names = list(params)
    shapes = [params[n].shape for n in names]
    sizes = [params[n].numel() for n in names]

    def flat_params() -> Tensor:
        return torch.cat([params[n].detach().reshape(-1) for n in names])

    def assign(x: Tensor) -> None:
        with torch.no_grad():
            for n, chunk, shape in zip(names, torch.split(x, sizes), shapes):
                params[n].copy_(chunk.view(shape))

    # the loop's full-batch step (one fused pass on CPU for one output, class-major logits for K
    # classes; the reference with sample weights or hidden layers): results equal objective_and_grad's.
    # About an evaluation an iteration: where numba is not loaded, a short solve keeps to the torch path
    stepper = select.full_batch(model, X, T, sample_weight=w, steps=max_iter)
    step = stepper.step

    def fg(x: Tensor) -> tuple[float, Tensor]:
        assign(x)
        f, grads = step(X, T, l2)  # the step's buffers: read (and copied by cat) before the next call
        return f.item(), torch.cat([grads[n].reshape(-1) for n in names])

    x = flat_params()
    # one Linear output on regrouped sparse X (the step offers its pass in parts), float64: the line
    # search in margin space
    parts = getattr(stepper, "margin_parts", None)
    parts = parts(T) if parts is not None and x.dtype == torch.float64 else None
    layer = single_linear(model)
    line = (_Margins(parts, x.shape[0], layer is not None and layer.bias is not None, l2) if parts is not None
            else _Points(fg))
    f, g, state = line.start(x)
    eps = torch.finfo(x.dtype).eps
    s_hist: list[Tensor] = []
    y_hist: list[Tensor] = []
    rho_hist: list[Tensor] = []
    it = 0
    while True:
        f_now = f
        if record_iterate(result, it, f_now, g.abs().max().item(), tol, max_iter, callback):
            break
        # two-loop recursion: d = -H_k g (in place: with many parameters each temporary vector
        # would cost as much as the product itself)
        q = g.clone()
        alphas = []
        for s, yv, rho in zip(reversed(s_hist), reversed(y_hist), reversed(rho_hist)):
            a = rho * (s @ q)
            q.addcmul_(yv, a, value=-1)
            alphas.append(a)
        if s_hist:
            gamma = (s_hist[-1] @ y_hist[-1]) / (y_hist[-1] @ y_hist[-1])
            q.mul_(gamma)
        for (s, yv, rho), a in zip(zip(s_hist, y_hist, rho_hist), reversed(alphas)):
            b = rho * (yv @ q)
            q.addcmul_(s, a - b)
        d = q.neg_()
        gtd = (g @ d).item()
        if not (gtd < 0 and math.isfinite(gtd)):  # not a (finite) descent direction: drop the memory, follow -g
            for hist in (s_hist, y_hist, rho_hist):
                hist.clear()
            d = -g
            gtd = -(g @ g).item()
            if not math.isfinite(gtd):
                raise NonFiniteError(f"lbfgs: the squared norm of the gradient overflows at iteration {it}; {NON_FINITE_HINT}")
        # the first step of a direction d = -g: unit length (the search lengthens or shortens it)
        t = 1.0 if s_hist else 1.0 / max(g.norm().item(), eps)

        found = wolfe.search(line.along(x, state, d), f_now, gtd, t, slack=8 * eps * abs(f_now))
        if found is None:
            assign(x)
            result.stop_reason = "line_search_failed"
            break
        t, f_new, payload = found
        x_new, g_new, state = line.accept(payload)
        s, yv = x_new - x, g_new - g
        sy = s @ yv
        if sy.item() > eps * (yv @ yv).item():
            s_hist.append(s)
            y_hist.append(yv)
            rho_hist.append(1.0 / sy)
            if len(s_hist) > history_size:
                s_hist.pop(0), y_hist.pop(0), rho_hist.pop(0)
        x, f, g = x_new, f_new, g_new
        it += 1
        result.line_search_steps.append(t)
    assign(x)
    if model.link == "softmax" and layer is not None:
        # centre the columns the objective cannot see (bias; every column when l2 = 0)
        theta = get_theta(layer)
        cols = softmax_null_cols(penalty.theta_mask(theta, layer.bias is not None), l2 > 0)
        set_theta(layer, center(theta, cols))
    result.finish(it)


class _Points:
    """The objective along a direction through the step at each trial point ``x + t d``: any model."""

    def __init__(self, fg) -> None:
        self.fg = fg

    def start(self, x: Tensor) -> tuple[float, Tensor, None]:
        return (*self.fg(x), None)

    def along(self, x: Tensor, state, d: Tensor):
        def phi(t: float):
            x_t = torch.add(x, d, alpha=t)  # one pass, no temporary t d
            f_t, g_t = self.fg(x_t)
            return f_t, (g_t @ d).item(), (x_t, g_t)
        return phi

    def accept(self, payload) -> tuple[Tensor, Tensor, None]:
        return (*payload, None)


class _Margins:
    """The objective along a direction in margin space, for one output on a step that gives its pass
    in parts (``margin_parts``: the sparse step on regrouped X), float64 only.

    With ``z = X w + b`` kept from the last iterate and ``u = X d_w + d_b`` formed once a direction,
    a trial's margins are ``z + t u``: its objective and slope (``r . u + l2 w_t . d_w``) take a
    pass over the rows and none over X, and only the accepted trial's gradient takes the pass
    ``X^T r``. An iteration whose first trial passes costs one pass each way, as a fused evaluation
    does; each further trial costs a pass over the rows instead of one over X (benchmarks/README.md).
    ``x`` is ``[w, b]`` (``bias``) or ``w``."""

    def __init__(self, parts, size: int, bias: bool, l2: float) -> None:
        self.margins, self.terms, self.gradient = parts
        self.d, self.bias, self.l2 = size - 1 if bias else size, bias, l2

    def _margins(self, x: Tensor) -> Tensor:
        return torch.from_numpy(self.margins(x[: self.d], float(x[self.d]) if self.bias else 0.0))

    def _at(self, x: Tensor, z: Tensor) -> tuple[float, tuple]:
        """The objective at ``x`` from its margins ``z``, and what its gradient needs."""
        r, sums = self.terms(z.numpy())
        f = float(sums[1]) / z.shape[0]
        if self.l2:
            f += penalty.l2_value(x[: self.d], self.l2).item()
        return f, (x, z, torch.from_numpy(r), sums)

    def accept(self, payload) -> tuple[Tensor, Tensor, Tensor]:
        x, z, r, sums = payload
        grad = self.gradient(r.numpy(), x.dtype)
        if self.l2:
            grad.add_(x[: self.d], alpha=self.l2)
        g = torch.cat([grad, grad.new_tensor([sums[0]])]) if self.bias else grad
        return x, g, z

    def start(self, x: Tensor) -> tuple[float, Tensor, Tensor]:
        f, payload = self._at(x, self._margins(x))
        x, g, z = self.accept(payload)
        return f, g, z

    def along(self, x: Tensor, z: Tensor | None, d: Tensor):
        assert z is not None  # the margins of x, from start or accept
        # torch's operations, not NumPy's: NumPy's BLAS threads, left spinning, halved the kernels' speed
        u, d_w = self._margins(d), d[: self.d]

        def phi(t: float):
            x_t = torch.add(x, d, alpha=t)
            f_t, payload = self._at(x_t, torch.add(z, u, alpha=t))
            slope = (payload[2] @ u).item()
            if self.l2:
                slope += self.l2 * (x_t[: self.d] @ d_w).item()
            return f_t, slope, payload
        return phi
