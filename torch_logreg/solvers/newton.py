"""Newton / IRLS and proximal Newton on ``theta = [b, W]`` of a single ``Linear`` layer, with the
closed-form Hessian of :mod:`torch_logreg.functional` (see the package docstring)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import functional as F
from .. import penalty
from ..penalty import l1_optimality, soft_threshold
from ..steps import select
from .params import augment, center, get_theta, linear_layer, set_theta, softmax_null_cols, theta_grad
from .result import ARMIJO, MAX_HALVINGS, NON_FINITE_HINT, NonFiniteError, SolverResult, record_iterate

#: the steps against which the selector weighs the kernels (``select.full_batch``'s ``steps``): a
#: solve takes 5-10 iterations from zero (``max_iter`` bounds them and is far more), and the
#: kernels (the evaluation, and the Hessian's rows) save about one evaluation's time in each: the
#: Hessian's product, most of an iteration, is BLAS either way (figures: benchmarks/README.md).
#: Fewer than ``select.FEATURE_MAJOR_MIN_STEPS``, so a short solve does not copy X for the
#: feature-major step
EVALUATIONS = 8


class _Hessian:
    """The Hessian at one point: block diagonal ``(K, A, A)`` or full ``(K, A, K, A)``.

    ``solve(g)`` returns ``H^+ g`` for ``g`` of shape ``(K, A)`` (on the complement of the
    softmax null space), ``matvec(v)`` returns ``H v`` and ``max_eigenvalue()`` bounds it.
    """

    def __init__(self, link: str, X: Tensor, bias: bool, Xa: Tensor | None, z: Tensor | None, sample_weight: Tensor | None,
                 l2_diag: Tensor, null_cols: Tensor | None, blocks: Tensor | None = None):
        self.link = link
        k, a = l2_diag.shape
        self.shape = (k, a)
        self.full: Tensor | None
        self.blocks: Tensor | None
        if link == "softmax":
            assert z is not None and Xa is not None  # the softmax Hessian is formed from the logits
            p = torch.softmax(z, dim=1)
            h = F.softmax_hessian(Xa, p, sample_weight).view(k * a, k * a)
            h.diagonal().add_(l2_diag.reshape(-1))
            self.full = h
            self.blocks = None
            self.null_cols = null_cols
        else:
            if blocks is None:  # else formed already (hessian_rows.RowScaler)
                assert z is not None  # the curvature is the logits'
                s = F.diagonal_curvature(link, z, sample_weight)
                blocks = F.block_diagonal_hessian(X, s, bias)
            blocks.diagonal(dim1=1, dim2=2).add_(l2_diag)
            self.blocks = blocks
            self.full = None
            self.null_cols = None

    def is_finite(self) -> bool:
        """Whether every entry is finite (one host read): LAPACK must never see inf or NaN."""
        h = self.blocks if self.blocks is not None else self.full
        assert h is not None  # one of the two forms is held
        return bool(torch.isfinite(h).all())

    def matvec(self, v: Tensor) -> Tensor:
        if self.blocks is not None:
            return torch.einsum("kab,kb->ka", self.blocks, v)
        assert self.full is not None  # the other form
        return (self.full @ v.reshape(-1)).view(self.shape)

    def _projector(self) -> Tensor | None:
        """``U U^T`` with ``U`` the orthonormal null directions ``1_K (x) e_a / sqrt(K)``."""
        if self.null_cols is None or not bool(self.null_cols.any()):
            return None
        k, a = self.shape
        assert self.full is not None  # null directions come with the full (softmax) form
        ones = torch.full((k, 1), 1.0 / k, dtype=self.full.dtype, device=self.full.device)
        col = torch.diag(self.null_cols.to(self.full.dtype))  # (A, A)
        return torch.kron(ones @ torch.ones(1, k, dtype=ones.dtype, device=ones.device), col)

    def solve(self, g: Tensor) -> Tensor:
        if self.blocks is not None:
            return _spd_solve(self.blocks, g[:, :, None])[:, :, 0]
        h = self.full
        assert h is not None  # the other form
        proj = self._projector()
        if proj is not None:
            scale = h.diagonal().abs().max().clamp(min=torch.finfo(h.dtype).tiny)
            h = h + scale * proj
        return _spd_solve(h, g.reshape(-1, 1)).view(self.shape)

    def max_eigenvalue(self) -> Tensor:
        if self.blocks is not None:
            return torch.linalg.eigvalsh(self.blocks).max()
        assert self.full is not None  # the other form
        return torch.linalg.eigvalsh(self.full)[-1]


def _spd_solve(h: Tensor, b: Tensor) -> Tensor:
    """Solve ``h x = b`` for symmetric positive (semi-)definite ``h`` (batched): Cholesky, and
    where that fails a least-squares solve (a singular design, e.g. collinear columns).

    A non-finite ``h`` or ``b`` (Cholesky fails on it too) raises :class:`NonFiniteError`: LAPACK's
    least squares rejects such input with an internal assertion instead of an error message.
    """
    chol, info = torch.linalg.cholesky_ex(h)
    if not bool((info == 0).all()):
        if not bool(torch.isfinite(h).all() & torch.isfinite(b).all()):
            raise NonFiniteError(f"newton: the Newton system has a non-finite entry; {NON_FINITE_HINT}")
        return torch.linalg.lstsq(h, b, driver="gelsd" if h.device.type == "cpu" else None).solution
    return torch.cholesky_solve(b, chol)


#: the public name of the solve, for the other Newton solvers of the package (glm.py)
spd_solve = _spd_solve


def newton(model, X, T, w, l2, l1, max_iter, tol, result: SolverResult, callback=None) -> None:
    layer = linear_layer(model)
    prefix = next(name for name, _ in model.named_children())
    bias = layer.bias is not None
    link = model.link
    # the softmax Hessian's rank-one part is formed from [1, X]; the others never copy X
    Xa = augment(X, bias) if link == "softmax" else None
    theta = get_theta(layer)
    mask = penalty.theta_mask(theta, bias)
    l2_diag = l2 * mask
    l1_mask = l1 * mask
    null_cols = None
    if link == "softmax":
        null_cols = softmax_null_cols(mask, l2 > 0 or l1 > 0)
        theta = center(theta, null_cols)
    eps = torch.finfo(theta.dtype).eps

    # the loop's full-batch step (one fused pass on CPU for one output); results equal
    # objective_and_grad's. It returns its own buffers, so the values kept are copied. About an
    # evaluation an iteration: a solve too short for the kernels keeps to the torch path
    evaluations = min(max_iter, EVALUATIONS)
    step = select.full_batch(model, X, T, sample_weight=w, steps=evaluations).step
    # one read of X for the logits, the curvature, diag(s) X and the product where the rule takes
    # the kernels (decided from the call alone, as the step is)
    rows = None
    if X.device.type == "cpu" and X.layout == torch.strided and select.dense_kernels_pay(model, X, evaluations):
        from . import hessian_rows  # imports numba

        if Xa is None and hessian_rows.applies(X, link, theta.shape[0]):
            rows = hessian_rows.RowScaler(X, link, bias, w)

    def smooth(th: Tensor) -> tuple[Tensor, Tensor]:
        set_theta(layer, th)
        f, grads = step(X, T, l2)
        return f.clone(), theta_grad(prefix, grads, bias).clone()

    def logits(th: Tensor) -> Tensor:
        return X @ th[:, 1:].T + th[:, 0] if bias else X @ th.T

    def composite(th: Tensor, f_smooth: Tensor) -> Tensor:
        return f_smooth + (l1_mask * th.abs()).sum() if l1 > 0 else f_smooth

    f, g = smooth(theta)
    F_val = composite(theta, f)
    it = 0
    while True:
        opt_t = (l1_optimality(theta, g, l1_mask) if l1 > 0 else g).abs().max()
        F_now, opt = F_val.item(), opt_t.item()
        if record_iterate(result, it, F_now, opt, tol, max_iter, callback):
            break
        if rows is not None:
            hess = _Hessian(link, X, bias, Xa, None, w, l2_diag, null_cols, blocks=rows.hessian(theta))
        else:
            hess = _Hessian(link, X, bias, Xa, logits(theta), w, l2_diag, null_cols)
        if not hess.is_finite():
            raise NonFiniteError(f"newton: the Hessian (sums of w_n x_ni x_nj / N over the rows) has a non-finite entry at "
                                 f"iteration {it}; {NON_FINITE_HINT}")
        if l1 > 0:
            inner_tol = max(min(0.1, opt) * opt, 0.1 * tol)
            u = _prox_quadratic(theta, g, hess, l1_mask, inner_tol)
            d = u - theta
            decrease = (g * d).sum() + (l1_mask * (u.abs() - theta.abs())).sum()
        else:
            d = -hess.solve(g)
            if null_cols is not None:
                d = center(d, null_cols)
            decrease = (g * d).sum()
        # step halving (Armijo); changes below rounding error of F count as no increase
        t = 1.0
        slack = 8 * eps * abs(F_now)
        dec = decrease.item()
        if not math.isfinite(dec):  # the step itself overflowed (or the solve returned NaN)
            raise NonFiniteError(f"newton: the Newton step has a non-finite entry at iteration {it}; {NON_FINITE_HINT}")
        accepted = False
        for _ in range(MAX_HALVINGS):
            trial = theta + t * d
            # the gradient comes with the objective at no extra read of X; kept if accepted
            f_trial, g_trial = smooth(trial)
            F_trial = composite(trial, f_trial)
            if F_trial.item() <= F_now + ARMIJO * t * min(dec, 0.0) + slack:
                accepted = True
                break
            t *= 0.5
        if not accepted:
            set_theta(layer, theta)
            result.stop_reason = "line_search_failed"
            break
        theta, f, g, F_val = trial, f_trial, g_trial, F_trial
        it += 1
        result.line_search_steps.append(t)
    if null_cols is not None:
        theta = center(theta, null_cols)
    set_theta(layer, theta)
    result.finish(it)


def _prox_quadratic(theta: Tensor, g: Tensor, hess: _Hessian, l1_mask: Tensor, tol: float, max_iter: int = 5000) -> Tensor:
    """``argmin_u g^T (u - theta) + (u - theta)^T H (u - theta) / 2 + sum(l1_mask |u|)``.

    FISTA with the step ``1 / lambda_max(H)`` and function-free adaptive restart (momentum is
    reset when it points against the last step); stops when the gradient mapping's max-abs entry
    ``L |u - prox(u - grad q(u) / L)|`` is ``<= tol`` (checked every 10 iterations).
    """
    lip = hess.max_eigenvalue().clamp(min=torch.finfo(theta.dtype).tiny)
    step = 1.0 / lip
    thresh = l1_mask * step

    def prox_grad(v: Tensor) -> Tensor:
        return soft_threshold(v - step * (g + hess.matvec(v - theta)), thresh)

    u = soft_threshold(theta - step * g, thresh)  # one proximal-gradient step from theta
    v, mom = u.clone(), 1.0
    for i in range(max_iter):
        u_new = prox_grad(v)
        if ((v - u_new) * (u_new - u)).sum() > 0:  # restart: momentum went the wrong way
            mom, v_next = 1.0, u_new
        else:
            mom_next = 0.5 * (1 + math.sqrt(1 + 4 * mom * mom))
            v_next = u_new + ((mom - 1) / mom_next) * (u_new - u)
            mom = mom_next
        u, v = u_new, v_next
        if i % 10 == 9:
            gm = ((u - prox_grad(u)) * lip).abs().max()
            if gm.item() <= tol:
                break
    return u
