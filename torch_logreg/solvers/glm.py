"""Newton for the binary logit with an offset, per-coefficient penalty factors, box bounds or Firth's penalty.

On ``theta = [b, w]`` ``(A,)`` of a one-output sigmoid model, with linear predictor
``eta_n = x~_n^T theta + o_n`` (``o`` the offset, ``(N,)``, zero by default), it minimises

    F(theta) = (1/N) sum_n w_n loss(eta_n, y_n) + (l2 / 2) sum_j f_j theta_j^2 + l1 sum_j f_j |theta_j|
    subject to  lower_j <= theta_j <= upper_j

with ``f_j`` the penalty factor of coefficient j (``f = 0`` on the bias; 0 leaves a coefficient
unpenalised) and bounds that may be infinite (the bias is never bounded). With ``firth`` the
objective is instead Firth's bias-reduced (Jeffreys-prior penalised) likelihood

    F(theta) = (1/N) sum_n w_n loss(eta_n, y_n) - (1 / (2 N)) log det I(theta),
    I(theta) = X~^T diag(w p (1 - p)) X~,

whose gradient is ``-U*/N`` with the modified score ``U*_j = sum_n (w_n (y_n - p_n) + h_n (1/2 - p_n)) x~_nj``
and ``h_n = w_n p_n (1 - p_n) x~_n^T I^-1 x~_n`` the leverages (Firth 1993; Heinze & Schemper 2002).

Each iteration forms ``H = X~^T diag(w p (1 - p)) X~ / N + diag(l2 f)`` (Firth: ``I / N``, the
Fisher scoring step of R's logistf) and takes the step to the minimiser ``u`` of the model
``g^T (u - theta) + (u - theta)^T H (u - theta) / 2 + l1 sum_j f_j |u_j|`` over the box: the Newton
step ``-H^-1 g`` when there is neither an L1 term nor a finite bound, else cyclic coordinate
descent on that quadratic (each coordinate's minimiser soft-thresholded, then clipped to its
interval, which is exact for a convex function of one variable). The step is halved until the
objective decreases (Armijo); every trial point lies in the box, being a convex combination of two.

Optimality measure (``tol``): the largest absolute entry of the projected minimum-norm subgradient
(:func:`optimality`), zero exactly at a point satisfying the KKT conditions.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .. import functional as F
from ..errors import UsageError
from .newton import spd_solve
from .params import augment, get_theta, linear_layer, set_theta
from .result import ARMIJO, MAX_HALVINGS, NON_FINITE_HINT, NonFiniteError, SolverResult, record_iterate


def vector(v, name: str, n: int, dtype: torch.dtype, device, *, low: float = -math.inf, infinite: bool = False) -> Tensor:
    """``v`` as a ``(n,)`` tensor of ``dtype`` on ``device``: finite (``infinite``: or +-inf, never NaN) and
    ``>= low``; anything else is a :class:`UsageError` naming the first offending entry."""
    t = torch.as_tensor(np.asarray(v.detach().cpu() if isinstance(v, Tensor) else v, dtype=np.float64))
    if t.ndim != 1 or t.shape[0] != n:
        raise UsageError(f"{name} must have one entry per {'row of X' if name == 'offset' else 'feature'}, "
                         f"shape ({n},), got shape {tuple(t.shape)}")
    bad = torch.isnan(t) | (t < low) if infinite else ~torch.isfinite(t) | (t < low)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        need = "a number" if infinite else "a finite number"
        bound = f" >= {low:g}" if low > -math.inf else ""
        raise UsageError(f"{name}[{i}] is {float(t[i])!r}; each entry must be {need}{bound}")
    return t.to(device=device, dtype=dtype)


def optimality(theta: Tensor, g: Tensor, l1: Tensor, lower: Tensor, upper: Tensor) -> Tensor:
    """The projected minimum-norm subgradient ``(A,)`` of ``F`` at ``theta``, ``g`` the smooth part's gradient.

    ``m_j = g_j + l1_j sign(theta_j)`` where ``theta_j != 0``, ``sign(g_j) max(|g_j| - l1_j, 0)`` where
    ``theta_j = 0``; then ``m_j`` is set to 0 where ``theta_j`` sits at its lower bound and ``m_j > 0``, or at
    its upper bound and ``m_j < 0`` (the descent direction ``-m_j`` leaves the box there).
    """
    m = torch.where(theta != 0, g + l1 * torch.sign(theta), torch.sign(g) * torch.clamp(g.abs() - l1, min=0))
    m = torch.where((theta <= lower) & (m > 0), torch.zeros_like(m), m)
    return torch.where((theta >= upper) & (m < 0), torch.zeros_like(m), m)


def glm_newton(model, X: Tensor, T: Tensor, w: Tensor | None, offset: Tensor | None, l2: float, l1: float,
               factor: Tensor | None, lower: Tensor | None, upper: Tensor | None, firth: bool, max_iter: int,
               tol: float, result: SolverResult, callback=None) -> None:
    """Solve the problem of the module docstring in place on ``model`` (one sigmoid output, a single ``Linear``).

    ``X`` ``(N, D)`` dense, ``T`` ``(N, 1)``, ``w`` ``(N,)`` or None, ``offset`` ``(N,)`` or None; ``factor``,
    ``lower``, ``upper`` ``(D,)`` or None (factors 1, no bounds). The start is the model's parameters clipped to the box.
    """
    layer = linear_layer(model)
    bias = layer.bias is not None
    Xa = augment(X, bias)
    n, a = Xa.shape
    y = T[:, 0]
    wn = torch.ones(n, dtype=Xa.dtype, device=Xa.device) if w is None else w
    off = torch.zeros(n, dtype=Xa.dtype, device=Xa.device) if offset is None else offset

    def per_coef(v: Tensor | None, fill: float, bias_value: float) -> Tensor:
        out = torch.full((a,), fill, dtype=Xa.dtype, device=Xa.device)
        if v is not None:
            out[int(bias):] = v
        if bias:
            out[0] = bias_value
        return out

    f = per_coef(factor, 1.0, 0.0)
    l2d, l1d = l2 * f, l1 * f
    lo, hi = per_coef(lower, -math.inf, -math.inf), per_coef(upper, math.inf, math.inf)
    boxed = bool(torch.isfinite(lo).any() or torch.isfinite(hi).any())
    theta = torch.minimum(torch.maximum(get_theta(layer)[0], lo), hi)

    def evaluate(th: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(F, gradient of the smooth part (A,), H (A, A))`` at ``th``."""
        eta = Xa @ th + off
        p = torch.sigmoid(eta)
        loss = (wn * (-F.log_sigmoid(-eta) - y * eta)).sum() / n  # softplus(eta) - y eta, stably
        s = wn * p * (1 - p)
        info = Xa.T @ (s[:, None] * Xa)
        resid = wn * (p - y)
        if firth:
            chol, status = torch.linalg.cholesky_ex(info)
            if int(status) != 0:
                raise NonFiniteError(f"{result.solver}: the Fisher information X~^T diag(w p (1 - p)) X~ is singular "
                                     f"(collinear columns, or fitted probabilities of 0 or 1); {NON_FINITE_HINT}")
            h = s * (Xa * torch.cholesky_solve(Xa.T, chol).T).sum(1)
            resid = resid - h * (0.5 - p)
            loss = loss - torch.log(chol.diagonal()).sum() / n  # log det I = 2 sum log diag(chol)
        g = Xa.T @ resid / n + l2d * th
        obj = loss + 0.5 * (l2d * th * th).sum() + (l1d * th.abs()).sum()
        hess = info / n
        hess.diagonal().add_(l2d)
        return obj, g, hess

    F_val, g, hess = evaluate(theta)
    it = 0
    while True:
        opt = float(optimality(theta, g, l1d, lo, hi).abs().max())
        F_now = float(F_val)
        if record_iterate(result, it, F_now, opt, tol, max_iter, callback):
            break
        if not bool(torch.isfinite(hess).all()):
            raise NonFiniteError(f"{result.solver}: the Hessian has a non-finite entry at iteration {it}; {NON_FINITE_HINT}")
        if l1 > 0 or boxed:
            u = _box_quadratic(theta, g, hess, l1d, lo, hi, max(min(0.1, opt) * opt, 0.1 * tol))
            d = u - theta
            decrease = float((g * d).sum() + (l1d * (u.abs() - theta.abs())).sum())
        else:
            d = -spd_solve(hess, g[:, None])[:, 0]
            decrease = float((g * d).sum())
        if not math.isfinite(decrease):
            raise NonFiniteError(f"{result.solver}: the Newton step has a non-finite entry at iteration {it}; {NON_FINITE_HINT}")
        slack = 8 * torch.finfo(theta.dtype).eps * abs(F_now)
        t, accepted = 1.0, False
        for _ in range(MAX_HALVINGS):
            trial = theta + t * d
            F_trial, g_trial, hess_trial = evaluate(trial)
            if float(F_trial) <= F_now + ARMIJO * t * min(decrease, 0.0) + slack:
                accepted = True
                break
            t *= 0.5
        if not accepted:
            result.stop_reason = "line_search_failed"
            break
        theta, F_val, g, hess = trial, F_trial, g_trial, hess_trial
        it += 1
        result.line_search_steps.append(t)
    set_theta(layer, theta[None, :])
    result.finish(it)


def _box_quadratic(theta: Tensor, g: Tensor, hess: Tensor, l1: Tensor, lower: Tensor, upper: Tensor, tol: float,
                   max_sweeps: int = 10_000) -> Tensor:
    """``argmin_u g^T (u - theta) + (u - theta)^T H (u - theta) / 2 + sum_j l1_j |u_j|`` over ``lower <= u <= upper``.

    Cyclic coordinate descent (on the CPU in float64: ``A`` is small, each coordinate an ``O(A)`` update of
    the model's gradient ``r = g + H (u - theta)``) until a sweep moves no coordinate by more than
    ``tol / H_jj`` (a change of at most ``tol`` in its partial derivative).
    """
    H = hess.detach().to("cpu", torch.float64).numpy()
    u = theta.detach().to("cpu", torch.float64).numpy().copy()
    r = g.detach().to("cpu", torch.float64).numpy().copy()
    lam = l1.detach().to("cpu", torch.float64).numpy()
    lo = lower.detach().to("cpu", torch.float64).numpy()
    hi = upper.detach().to("cpu", torch.float64).numpy()
    diag = np.diag(H).copy()
    for _ in range(max_sweeps):
        moved = 0.0
        for j in range(u.shape[0]):
            if diag[j] <= 0:  # a column without curvature (all zeros): its coordinate stays
                continue
            v = u[j] - r[j] / diag[j]
            new = math.copysign(max(abs(v) - lam[j] / diag[j], 0.0), v)
            new = min(max(new, lo[j]), hi[j])
            delta = new - u[j]
            if delta != 0.0:
                u[j] = new
                r += delta * H[:, j]
                moved = max(moved, abs(delta) * diag[j])
        if moved <= tol:
            break
    return torch.as_tensor(u, dtype=theta.dtype, device=theta.device)
