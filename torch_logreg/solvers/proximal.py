"""Accelerated proximal gradient (FISTA) on ``theta = [b, W]`` of a single ``Linear`` layer: the L1 and
elastic-net solver that never forms a Hessian.

The problem is the package's composite objective, on ``theta`` of shape ``(K, A)`` (``A = D + 1``
with a bias, column 0 being the bias)::

    F(theta) = f(theta) + h(theta)
    f(theta) = (1/N) sum_n w_n loss(z_n, t_n) + (l2 / 2) ||W||^2          smooth, gradient g (K, A)
    h(theta) = l1 sum_{k, j} m_kj |theta_kj|                             m = 1 on W, 0 on the bias

``f`` and ``g`` come from the model's full-batch step (the step L-BFGS takes: the manual backward
of a dense ``X``, the sparse step of a CSR ``X``), ``O(N D K)`` or ``O(nnz(X) K)`` each; nothing of
size ``(KA)^2`` is ever made. The proximal map of ``h / L`` is soft-thresholding,
``prox(v)_kj = sign(v_kj) max(|v_kj| - l1 m_kj / L, 0)``, which gives exact zeros.

Iteration (FISTA, Beck & Teboulle 2009) from ``x_0 = y_0 = theta``, ``t_0 = 1``::

    x_{k+1} = prox(y_k - g(y_k) / L)                                     the proximal-gradient step
    t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2
    y_{k+1} = x_{k+1} + ((t_k - 1) / t_{k+1}) (x_{k+1} - x_k)             the momentum

Step rule: ``L`` estimates the Lipschitz constant of ``g``. A trial ``x_{k+1}`` is accepted when
the quadratic model at ``y_k`` bounds ``f`` from above there,
``f(x) <= f(y) + <g(y), x - y> + (L / 2) ||x - y||^2`` (a difference below rounding error of ``f``
counts as satisfied), and when the curvature along the step read from the gradients is at most
``L`` as well, ``<g(x) - g(y), x - y> <= L ||x - y||^2`` (up to the rounding of that product).
Both hold for any ``L`` at least the Lipschitz constant (each is an average of the curvature along
the step); the second is what holds ``L`` up near the optimum, where the first is lost in the
rounding of ``f`` and would let ``L`` drift down until the iterates oscillate. On failure ``L``
is doubled and the step retried from the same ``y_k`` (whose gradient is kept). Before each
iteration ``L`` is multiplied by ``0.9``, so it can fall again where the local curvature is lower
than where it was raised. The first ``L`` is the secant ``||g(x_0 + s) - g(x_0)|| / ||s||`` along
the minimum-norm subgradient.

Adaptive restart (O'Donoghue & Candes 2015): the momentum is dropped (``t = 1``, ``y = x``) when
it points against the proximal-gradient step, ``<y_k - x_{k+1}, x_{k+1} - x_k> > 0`` (the
gradient scheme), or when ``F`` went up (the function scheme). Where ``F`` is locally strongly
convex, as near an L1 optimum whose support is fixed, restarting gives linear convergence without
knowing the modulus; elsewhere it leaves FISTA's momentum alone (the schemes are heuristics: no
rate is proved for them in general).

Stopping: the optimality measure at each ``x_k`` is the largest absolute entry of the minimum-norm
subgradient of ``F`` (:func:`~torch_logreg.penalty.l1_optimality`; the gradient when ``l1 = 0``),
the measure proximal Newton uses, so each iterate costs the step at ``x_{k+1}`` and, when the
momentum is not zero, one more at ``y_{k+1}``. One host read per trial carries the objective,
that measure, the step test and the restart test together. ``result.line_search_steps`` holds
each iteration's step ``1 / L``.

Softmax is invariant to adding one value to every class of a column the penalty does not pin
(the bias); the gradient has no component along those directions, so the iterates keep the
class-centred start, and the result is centred once more against rounding.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import penalty
from ..penalty import l1_optimality, soft_threshold
from ..steps import select
from .params import center, get_theta, linear_layer, set_theta, softmax_null_cols, theta_grad
from .result import MAX_HALVINGS, SolverResult, record_iterate

#: ``L`` is multiplied by GROW when a trial step fails the quadratic upper bound ...
GROW = 2.0
#: ... and by SHRINK before each iteration, so it follows a falling local curvature
SHRINK = 0.9
#: the length of the secant step that makes the first ``L``, relative to ``max(1, ||theta||)``
SECANT_STEP = 1e-3


def proximal(model, X, T, w, l2, l1, max_iter, tol, result: SolverResult, callback=None) -> None:
    """Run FISTA from the model's parameters and leave the result in the model (see the module
    docstring); ``X`` ``(N, D)`` dense or CSR, ``T`` ``(N, K)``, ``w`` ``(N,)`` or None, all prepared."""
    layer = linear_layer(model, "proximal")
    prefix = next(name for name, _ in model.named_children())
    bias = layer.bias is not None
    theta = get_theta(layer)
    l1_mask = l1 * penalty.theta_mask(theta, bias)
    null_cols = None
    if model.link == "softmax":
        null_cols = softmax_null_cols(penalty.theta_mask(theta, bias), l2 > 0 or l1 > 0)
        theta = center(theta, null_cols)
    eps = torch.finfo(theta.dtype).eps
    # about an evaluation an iteration: where numba is not loaded, a short solve keeps to the torch path
    step = select.full_batch(model, X, T, sample_weight=w, steps=max_iter).step

    def smooth(th: Tensor) -> tuple[Tensor, Tensor]:
        """``f(th)`` (0-dim) and ``g(th)`` ``(K, A)``, copied out of the step's buffers."""
        set_theta(layer, th)
        f, grads = step(X, T, l2)
        g = theta_grad(prefix, grads, bias)
        return f.detach().clone(), (g if bias else g.clone())

    def optimality(th: Tensor, g: Tensor) -> Tensor:
        return (l1_optimality(th, g, l1_mask) if l1 > 0 else g).abs().max()

    def composite(th: Tensor, f: Tensor) -> Tensor:
        return f + (l1_mask * th.abs()).sum() if l1 > 0 else f

    x, (f_x, g_x) = theta, smooth(theta)
    F_x, opt = torch.stack([composite(x, f_x), optimality(x, g_x)]).tolist()
    it = 0
    if not record_iterate(result, it, F_x, opt, tol, max_iter, callback):
        lip = _secant_lipschitz(smooth, x, g_x, l1_optimality(x, g_x, l1_mask) if l1 > 0 else g_x)
        y, f_y, g_y, mom = x, f_x, g_x, 1.0
        while True:
            if it > 0:
                lip *= SHRINK
            accepted = False
            for _ in range(MAX_HALVINGS):  # each failure halves the step 1 / L
                u = soft_threshold(y - g_y / lip, l1_mask / lip)
                d = u - y
                f_u, g_u = smooth(u)
                dd = (d * d).sum()
                excess = f_u - f_y - (g_y * d).sum() - 0.5 * lip * dd
                # the same bound read from the gradients, <g(u) - g(y), d> <= L ||d||^2, less its rounding
                curvature = ((g_u - g_y) * d).sum() - lip * dd - 8 * eps * ((g_u.abs() + g_y.abs()) * d.abs()).sum()
                checks = torch.stack([excess, curvature, composite(u, f_u), optimality(u, g_u),
                                      ((y - u) * (u - x)).sum(), f_u, f_y])
                excess_v, curvature_v, F_u, opt_u, against, f_u_v, f_y_v = checks.tolist()
                # a non-finite trial fails both tests
                if excess_v <= 8 * eps * max(abs(f_y_v), abs(f_u_v)) and curvature_v <= 0:
                    accepted = True
                    break
                lip *= GROW
            if not accepted:
                result.stop_reason = "line_search_failed"
                break
            restart = against > 0 or F_u > F_x
            x_prev, x, f_x, g_x, F_x = x, u, f_u, g_u, F_u
            it += 1
            result.line_search_steps.append(1.0 / lip)
            if record_iterate(result, it, F_x, opt_u, tol, max_iter, callback):
                break
            if restart:
                mom = 1.0
                y, f_y, g_y = x, f_x, g_x
                continue
            mom_next = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * mom * mom))
            beta = (mom - 1.0) / mom_next
            mom = mom_next
            if beta == 0.0:
                y, f_y, g_y = x, f_x, g_x
            else:
                y = x + beta * (x - x_prev)
                f_y, g_y = smooth(y)
    if null_cols is not None:
        x = center(x, null_cols)
    set_theta(layer, x)
    result.finish(it)


def _secant_lipschitz(smooth, x: Tensor, g: Tensor, direction: Tensor) -> float:
    """``||g(x + s) - g(x)|| / ||s||`` for a short step ``s`` against ``direction`` ``(K, A)``: the
    curvature of ``f`` along it, at most the Lipschitz constant; the step rule raises it where it
    is too low. 1.0 where the direction is zero or the secant is not a positive finite number."""
    norm = direction.norm()
    scale = SECANT_STEP * max(1.0, x.norm().item()) / max(norm.item(), torch.finfo(x.dtype).tiny)
    s = -scale * direction
    _, g_s = smooth(x + s)
    ratio = ((g_s - g).norm() / s.norm()).item() if norm.item() > 0 else math.nan
    return ratio if math.isfinite(ratio) and ratio > 0 else 1.0
