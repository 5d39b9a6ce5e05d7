"""Proximal Newton with cyclic coordinate descent on the quadratic model (``solver="cd"``): the L1 and
elastic-net solver of glmnet and of liblinear's newGLMNET, for a single ``Linear`` layer: one sigmoid
(binary), several sigmoids (multi-label), identity (linear regression) or softmax.

The problem is the package's composite objective. With independent outputs (sigmoid, identity) it splits
over the outputs ``k``, and each output's ``theta_k = [b_k, w_k]`` (``w_k`` of shape ``(D,)``) is solved on
its own::

    F_k(w, b) = (1/N) sum_n v_n loss(z_n, t_n) + (l2 / 2) ||w||^2 + l1 ||w||_1,     z = X w + b

with ``v_n`` the sample weights (1 by default); ``loss`` is ``log(1 + e^z) - t z`` (sigmoid) or
``(z - t)^2 / 2`` (identity).

Softmax couples the classes through ``p_nk = e^{z_nk} / sum_j e^{z_nj}``; as glmnet's multinomial fit, each
outer iteration cycles over the classes and takes one proximal Newton step in class ``k``'s parameters
with the others fixed (block coordinate descent), whose exact Hessian in ``z_k`` is diagonal:
``r_n = v_n (s_n p_nk - t_nk) / N``, ``h_n = v_n s_n p_nk (1 - p_nk) / N`` (``s_n = sum_j t_nj``, 1 for
labels), with the line search on the whole objective. Before each class's step its derivatives are
recomputed at the logits the earlier classes left. The directions no penalty pins (adding one value to a
column's every class: the bias, or every column without a penalty) are left to the iterations and the
result is centred over the classes there, as the other solvers do.

Outer iteration (proximal Newton) at ``(w, b)``: the per-row derivatives of the loss in ``z``,
``r_n = v_n (p_n - t_n) / N`` and the curvature ``h_n = v_n p_n (1 - p_n) / N`` (identity: ``p = z``,
``h_n = v_n / N``), the gradient ``g = X^T r + l2 w`` ``(D,)`` and ``g_b = sum_n r_n``, and the
quadratic model of the smooth part in the step ``(d, d_b)``::

    q(d, d_b) = g^T d + g_b d_b + (1/2) sum_n h_n (x_n^T d + d_b)^2 + (l2 / 2) ||d||^2 + l1 ||w + d||_1

Inner loop: cyclic coordinate descent on ``q`` over the working set (below), each coordinate minimised
exactly. With ``u = w + d`` and ``dz = X d + d_b`` maintained, coordinate ``j``'s model is a one-dimensional
quadratic plus ``l1 |u_j|``, minimised by soft-thresholding::

    G_j = g_j + sum_n h_n x_nj dz_n + l2 (u_j - w_j)           (the model's gradient in u_j)
    H_j = sum_n h_n x_nj^2 + l2 + nu                          (its curvature; nu = 1e-12 as newGLMNET)
    u_j <- sign(H_j u_j - G_j) max(|H_j u_j - G_j| - l1, 0) / H_j,   dz <- dz + (change in u_j) x_j

so one coordinate costs ``O(nnz(column j))``: X is held by columns (CSC), built once per solve. The bias
is a coordinate without penalty, ``d_b <- d_b - (g_b + sum_n h_n dz_n) / sum_n h_n``, in ``O(1)``: the
feature part of ``dz`` and the running ``sum_n h_n dz_n`` are kept apart from ``d_b``. A pass over the
working set is followed by passes over its nonzero coordinates only until they settle, then another full
pass (glmnet's scheme), until the largest ``H_j |change|`` of a full pass is at most the inner tolerance
``max(min(0.1, m) m, 0.1 tol)`` (``m`` the output's optimality measure: a forcing sequence, loose far from
the optimum and tight near it) or 1000 passes.

Line search: on the composite objective along ``(d, d_b)``, halving ``t`` from 1 until
``F_k(w + t d, b + t d_b) <= F_k(w, b) + 1e-4 t Delta`` (Armijo; ``Delta = g^T d + g_b d_b + l1 (||u||_1 -
||w||_1)``, the newGLMNET decrease; a change below rounding error of ``F_k`` counts as no increase). Each
trial costs ``O(N)``: ``z + t dz`` is formed from the kept ``dz``.

Active set (newGLMNET's shrinking): the gradient is computed for every feature at each outer iteration
(one pass over X), and the working set is the nonzero weights plus the zero weights whose ``|g_j|`` is
above ``l1 - M``, ``M`` the largest violation ``max(|g_j| - l1, 0)`` among zero weights at the previous
iteration (0 at the first): a zero with ``|g_j|`` well inside ``l1`` stays out of the inner loops. Since
that full gradient also gives the optimality measure over all coordinates, any feature the shrinking left
out that becomes a violator rejoins at the next iteration, and the run can only stop where every
coordinate satisfies the optimality conditions.

Stopping: the package's measure, the largest absolute entry of the minimum-norm subgradient over all
outputs and coordinates (bias included), at most ``tol``; or ``max_iter`` outer iterations; or the callback;
or a line search that cannot decrease any output's objective. Outputs already at ``tol`` take no step.

Shapes and placement: ``X`` ``(N, D)`` dense or CSR, targets ``(N, K)``, weights ``(N,)``. The solve runs on
the CPU in float64 (NumPy arrays and numba kernels, one thread): a float32 model's parameters are read in
float64 and the result is cast back; a CUDA model's data are copied to the CPU for the solve and the result
copied back to its device. numba is required (a :class:`~torch_logreg.errors.UsageError` says so when it
cannot be imported).

When it beats the proximal gradient: when the optimum has few nonzeros among many features. Each outer
iteration costs one gradient pass over X plus inner passes over the working set's columns only, and
proximal Newton needs a few tens of outer iterations where FISTA needs hundreds of full gradients;
with a dense optimum (small ``l1``) or few features the inner passes cost as much as full gradients and
the advantage shrinks.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import UsageError
from .params import get_theta, linear_layer, set_theta
from .result import ARMIJO, MAX_HALVINGS, SolverResult, record_iterate

#: the most passes over the working set per outer iteration
MAX_INNER_PASSES = 1000


def _columns(X: torch.Tensor, kern) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """X ``(N, D)`` (dense or CSR, any device) as CSC arrays ``(indptr, indices, data)`` on the CPU, data in
    float64; a dense X keeps only its nonzero entries."""
    X = X.detach().to("cpu")
    if X.layout == torch.strided:
        X = X.to(torch.float64)
        nonzero = X.t() != 0  # column by column
        indptr = np.zeros(X.shape[1] + 1, dtype=np.int64)
        np.cumsum(nonzero.sum(dim=1).numpy(), out=indptr[1:])
        cols, rows = nonzero.nonzero(as_tuple=True)
        return indptr, rows.numpy().astype(np.int64), np.ascontiguousarray(X.t()[cols, rows].numpy())
    crow = np.ascontiguousarray(X.crow_indices().numpy(), dtype=np.int64)
    col = np.ascontiguousarray(X.col_indices().numpy(), dtype=np.int64)
    values = np.ascontiguousarray(X.values().numpy(), dtype=np.float64)
    return kern.csr_to_csc(crow, col, values, X.shape[1])


class _Output:
    """One output's parameters and the quantities of its current point."""

    def __init__(self, k: int, w: np.ndarray, b: float, t: np.ndarray, z: np.ndarray):
        self.k, self.w, self.b, self.t, self.z = k, w, b, t, z  # z: the output's row of the logits (a view)
        n = z.shape[0]
        self.r = np.empty(n)
        self.h = np.empty(n)
        self.g = np.empty_like(w)
        self.gb = 0.0
        self.loss = math.nan
        self.F = math.nan
        self.opt = math.nan
        self.margin = 0.0  # the largest violation among zero weights at the previous point (shrinking)
        self.next_margin = 0.0  # ... and at the current one


def coordinate(model, X, T, w, l2, l1, max_iter, tol, result: SolverResult, callback=None) -> None:
    """Run proximal Newton with coordinate descent from the model's parameters and leave the result in the
    model (see the module docstring); ``X`` ``(N, D)`` dense or CSR, ``T`` ``(N, K)``, ``w`` ``(N,)`` or None,
    all prepared."""
    layer = linear_layer(model, "cd")
    from . import coordinate_kernels as kern

    if not kern.available():
        raise UsageError("solver='cd' needs numba, which cannot be imported here; install numba or use "
                         "solver='proximal'")
    bias = layer.bias is not None
    link = model.link
    sigmoid = link == "sigmoid"
    softmax = link == "softmax"
    start = get_theta(layer)
    device, dtype = start.device, start.dtype
    theta = start.to("cpu", torch.float64).numpy()
    indptr, indices, data = _columns(X, kern)
    n = X.shape[0]
    targets = np.ascontiguousarray(T.detach().to("cpu", torch.float64).numpy().T)  # (K, N)
    Z = np.empty_like(targets)  # the logits, one row per output
    v = np.full(n, 1.0 / n) if w is None else w.detach().to("cpu", torch.float64).numpy() / n
    eps = np.finfo(np.float64).eps

    outputs = []
    for k in range(theta.shape[0]):
        wk = np.ascontiguousarray(theta[k, 1:] if bias else theta[k])
        outputs.append(_Output(k, wk, float(theta[k, 0]) if bias else 0.0, targets[k], Z[k]))

    def penalty_value(wk: np.ndarray) -> float:
        return 0.5 * l2 * float(wk @ wk) + l1 * float(np.abs(wk).sum())

    def refresh(o: _Output) -> None:
        """The objective, derivatives, gradient and optimality measure of ``o`` at the current logits ``Z``.
        ``o.F`` is the part of the objective that ``o``'s parameters move: its own loss and penalty, or with
        softmax the whole objective."""
        if softmax:
            o.loss = kern.softmax_derivatives(Z, targets, v, o.k, o.r, o.h)
            o.F = o.loss + sum(penalty_value(other.w) for other in outputs)
        else:
            o.loss = kern.derivatives(o.z, o.t, v, sigmoid, o.r, o.h)
            o.F = o.loss + penalty_value(o.w)
        kern.gradient(indptr, indices, data, o.r, o.g)
        if l2:
            o.g += l2 * o.w
        o.gb = float(o.r.sum()) if bias else 0.0
        zero = o.w == 0
        at_zero = np.maximum(np.abs(o.g) - l1, 0.0)
        measure = np.where(zero, at_zero, np.abs(o.g + l1 * np.sign(o.w)))
        o.opt = max(float(measure.max()) if measure.size else 0.0, abs(o.gb))
        o.next_margin = float(at_zero[zero].max()) if zero.any() else 0.0

    def step(o: _Output) -> float | None:
        """One proximal Newton step of ``o``; the accepted step length, or None if the line search failed."""
        work = np.flatnonzero((o.w != 0) | (np.abs(o.g) > l1 - o.margin)).astype(np.int64)
        o.margin = o.next_margin
        hd = np.zeros_like(o.w)
        hx = np.zeros_like(o.w)
        kern.curvatures(indptr, indices, data, o.h, work, l2, hd, hx)
        hb = float(o.h.sum()) + kern.NU
        u = o.w.copy()
        dz = np.zeros(n)
        state = np.zeros(2)
        inner_tol = max(min(0.1, o.opt) * o.opt, 0.1 * tol)
        kern.coordinate_descent(work, indptr, indices, data, o.h, o.g, hd, hx, o.w, u, dz, state, l1, l2, o.gb, hb, bias,
                                inner_tol, MAX_INNER_PASSES)
        db = float(state[0])
        d = u[work] - o.w[work]
        decrease = float(o.g[work] @ d) + o.gb * db + l1 * float(np.abs(u[work]).sum() - np.abs(o.w[work]).sum())
        slack = 8 * eps * abs(o.F)
        fixed = o.F - o.loss - penalty_value(o.w)  # softmax: the other outputs' penalties; else 0
        t = 1.0
        for _ in range(MAX_HALVINGS):
            trial = o.w.copy()
            trial[work] += t * d
            if softmax:
                loss = kern.softmax_trial_loss(Z, o.k, dz, db, t, targets, v)
            else:
                loss = kern.trial_loss(o.z, dz, db, t, o.t, v, sigmoid)
            if loss + fixed + penalty_value(trial) <= o.F + ARMIJO * t * min(decrease, 0.0) + slack:
                o.w = trial
                o.b += t * db
                kern.logits(indptr, indices, data, o.w, o.b, o.z)
                return t
            t *= 0.5
        return None

    def evaluate() -> tuple[float, float]:
        """Every output at the current point: the objective and the optimality measure."""
        for o in outputs:
            kern.logits(indptr, indices, data, o.w, o.b, o.z)
        for o in outputs:
            refresh(o)
        return (outputs[0].F if softmax else sum(o.F for o in outputs)), max(o.opt for o in outputs)

    def data_loss() -> float:
        """The loss without the penalties at the current point (the model holds the start until the end)."""
        return outputs[0].loss if softmax else sum(o.loss for o in outputs)

    it = 0
    F_total, opt = evaluate()
    if not record_iterate(result, it, F_total, opt, tol, max_iter, callback, data_loss()):
        while True:
            steps: list[float] = []
            for o in outputs:
                if softmax and steps:  # an earlier class moved: this class's derivatives changed
                    refresh(o)
                if o.opt > tol:
                    t = step(o)
                    if t is not None:
                        steps.append(t)
            if not steps:
                result.stop_reason = "line_search_failed"
                break
            it += 1
            result.line_search_steps.append(min(steps))
            F_total, opt = evaluate()
            if record_iterate(result, it, F_total, opt, tol, max_iter, callback, data_loss()):
                break

    out = np.stack([np.concatenate([[o.b], o.w]) if bias else o.w for o in outputs])
    if softmax:  # the directions no penalty pins (the bias; every column without a penalty) hold the class mean
        cols = slice(None) if not (l1 > 0 or l2 > 0) else (slice(0, 1) if bias else slice(0, 0))
        out[:, cols] -= out[:, cols].mean(axis=0, keepdims=True)
    set_theta(layer, torch.from_numpy(out).to(device=device, dtype=dtype))
    result.finish(it)
