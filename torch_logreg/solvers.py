"""Solvers that reach the exact optimum: Newton (IRLS), proximal Newton and L-BFGS.

All of them minimise, for ``N`` samples with weights ``w_n`` (1 by default),

    F(theta) = (1/N) sum_n w_n loss(z_n, t_n) + (l2 / 2) ||W||^2 + l1 ||W||_1

over the weights ``W`` and the bias ``b`` of a model's linear layer; the bias is never
penalised. ``loss`` is the model's negative log-likelihood (sigmoid, softmax or squared error).
In scikit-learn's terms (``C sum_n w_n loss_n + penalty``) this is ``l2 = (1 - l1_ratio) / (C N)``
and ``l1 = l1_ratio / (C N)``.

Every derivative used by an update is analytic: the gradient is the model's manual backward
(:meth:`~torch_logreg.models.StackedModel.objective_and_grad`) and the Hessian is the closed
form of :mod:`torch_logreg.functional` (``X~^T S X~ / N + l2 I`` on the augmented input
``X~ = [1, X]``). Autograd is never called.

Solvers
-------
``newton``
    Newton / IRLS on ``theta = [b, W]`` of shape ``(K, A)`` (``A = D + 1`` with a bias).
    Sigmoid and identity outputs have a block-diagonal Hessian (one ``(A, A)`` block per
    output); softmax has the full ``(KA, KA)`` Hessian ``sum_n w_n (diag p_n - p_n p_n^T) (x)
    x~_n x~_n^T / N``. Softmax is invariant to adding the same vector to every class row, so on
    unpenalised columns the Hessian is singular; the Newton system is solved on the complement
    of that null space (whose directions the gradient never has) and the result is centred over
    the classes. The step is halved until the objective decreases (Armijo, ``c = 1e-4``; a
    change below rounding error of the objective counts as no increase).

    With ``l1 > 0`` it becomes *proximal Newton*: each step minimises the quadratic model
    ``g^T d + d^T H d / 2 + l1 ||W + d_W||_1`` by accelerated proximal gradient (FISTA with
    restarts, on the small ``(KA, KA)`` Hessian only), whose soft-thresholding gives exact zeros;
    the step is then halved until the composite objective decreases.

``lbfgs``
    Limited-memory BFGS (two-loop recursion, ``history_size`` pairs) with a backtracking Armijo
    line search, on all parameters of any :class:`~torch_logreg.models.StackedModel`; smooth
    objectives only (``l1 = 0``).

Convergence is declared when the optimality measure, the largest absolute entry of the
gradient (with ``l1 > 0``: of the minimum-norm subgradient), falls to ``tol`` or below, the
criterion scipy's L-BFGS-B applies as ``pgtol`` and hence scikit-learn's ``tol`` for ``lbfgs``.
Reaching ``max_iter`` first emits a :class:`ConvergenceWarning` naming the iteration count.

Host synchronisation: one read of the optimality measure per outer iteration and one per
line-search trial; the proximal Newton inner solver reads its stopping measure every 10 inner
iterations. All tensors stay on the model's device and dtype.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import torch
from sklearn.exceptions import ConvergenceWarning as _SklearnConvergenceWarning
from torch import Tensor

from . import fastpath, validation
from . import functional as F
from .devices import resolve_device, resolve_dtype
from .layers import Linear

SOLVERS = ("newton", "lbfgs")

#: solvers that can minimise an objective with an L1 term
L1_SOLVERS = ("newton",)

_ARMIJO = 1e-4
_MAX_HALVINGS = 40


class ConvergenceWarning(_SklearnConvergenceWarning):
    """The solver stopped at ``max_iter`` (or its line search stalled) before reaching ``tol``.

    A subclass of scikit-learn's ``ConvergenceWarning``, so the usual filters apply."""


@dataclass
class SolverResult:
    """What a call of :func:`fit_exact` did.

    ``grad_norm`` is the final optimality measure (max absolute gradient entry, or of the
    minimum-norm subgradient when ``l1 > 0``); ``losses`` and ``grad_norms`` hold one entry
    per iterate, the starting point first. ``stop_reason`` is ``"converged"``, ``"max_iter"``,
    ``"line_search_failed"`` or ``"callback"``. ``separation`` is set (a
    :class:`~torch_logreg.inference.Separation`) when an unpenalised classification fit found
    the classes (quasi-)completely separated.
    """

    solver: str
    converged: bool
    n_iter: int
    loss: float
    grad_norm: float
    stop_reason: str
    l2: float = 0.0
    l1: float = 0.0
    tol: float = 0.0
    weighted: bool = False
    losses: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    line_search_steps: list[float] = field(default_factory=list)
    wall_time: float = 0.0
    separation: object | None = None

    @property
    def penalized(self) -> bool:
        return self.l2 > 0 or self.l1 > 0


# --- parameters of a single linear layer as one (K, A) matrix ---------------------------------


def single_linear(model) -> Linear:
    """The model's only layer, which must be a :class:`Linear` (Newton needs its Hessian)."""
    children = list(model.children())
    if len(children) != 1 or not isinstance(children[0], Linear):
        raise TypeError(
            f"solver='newton' needs a model with a single Linear layer (LogisticRegression, "
            f"SoftmaxRegression, LinearRegression); got {type(model).__name__}. Use solver='lbfgs'."
        )
    return children[0]


def augment(X: Tensor, bias: bool) -> Tensor:
    """``X~ = [1, X]`` ``(N, D + 1)`` when the model has a bias, else ``X`` itself."""
    if not bias:
        return X
    return torch.cat([torch.ones(X.shape[0], 1, dtype=X.dtype, device=X.device), X], dim=1)


def get_theta(layer: Linear) -> Tensor:
    """``theta = [b, W]`` ``(K, A)``: the bias as column 0 (when present), then the weights."""
    if layer.bias is None:
        return layer.weight.detach().clone()
    return torch.cat([layer.bias.detach()[:, None], layer.weight.detach()], dim=1)


def set_theta(layer: Linear, theta: Tensor) -> None:
    with torch.no_grad():
        if layer.bias is None:
            layer.weight.copy_(theta)
        else:
            layer.bias.copy_(theta[:, 0])
            layer.weight.copy_(theta[:, 1:])


def theta_grad(layer_prefix: str, grads: dict[str, Tensor], bias: bool) -> Tensor:
    gw = grads[f"{layer_prefix}.weight"]
    if not bias:
        return gw
    return torch.cat([grads[f"{layer_prefix}.bias"][:, None], gw], dim=1)


def penalty_mask(theta: Tensor, bias: bool) -> Tensor:
    """1 on the penalised entries of ``theta`` (the weights), 0 on the bias column."""
    mask = torch.ones_like(theta)
    if bias:
        mask[:, 0] = 0
    return mask


def soft_threshold(x: Tensor, threshold: Tensor) -> Tensor:
    """``sign(x) max(|x| - threshold, 0)``: the proximal map of ``threshold * |x|`` (elementwise)."""
    return torch.sign(x) * torch.clamp(x.abs() - threshold, min=0)


def l1_optimality(theta: Tensor, grad: Tensor, l1_mask: Tensor) -> Tensor:
    """Minimum-norm subgradient of ``f + sum(l1_mask * |theta|)`` (``l1_mask`` holds ``l1`` on
    penalised entries, 0 elsewhere): ``g + l1 sign(theta)`` off zero, ``soft(g, l1)`` at zero."""
    at_zero = soft_threshold(grad, l1_mask)
    off_zero = grad + l1_mask * torch.sign(theta)
    return torch.where(theta == 0, at_zero, off_zero)


# --- the Hessian of the smooth objective --------------------------------------------------------


class _Hessian:
    """The Hessian at one point: block diagonal ``(K, A, A)`` or full ``(K, A, K, A)``.

    ``solve(g)`` returns ``H^+ g`` for ``g`` of shape ``(K, A)`` (on the complement of the
    softmax null space), ``matvec(v)`` returns ``H v`` and ``max_eigenvalue()`` bounds it.
    """

    def __init__(self, link: str, Xa: Tensor, z: Tensor, sample_weight: Tensor | None, l2_diag: Tensor, null_cols: Tensor | None):
        self.link = link
        k, a = l2_diag.shape
        self.shape = (k, a)
        if link == "softmax":
            p = torch.softmax(z, dim=1)
            h = F.softmax_hessian(Xa, p, sample_weight).view(k * a, k * a)
            h.diagonal().add_(l2_diag.reshape(-1))
            self.full = h
            self.blocks = None
            self.null_cols = null_cols
        else:
            s = F.diagonal_curvature(link, z, sample_weight)
            blocks = F.block_diagonal_hessian(Xa, s)
            blocks.diagonal(dim1=1, dim2=2).add_(l2_diag)
            self.blocks = blocks
            self.full = None
            self.null_cols = None

    def matvec(self, v: Tensor) -> Tensor:
        if self.blocks is not None:
            return torch.einsum("kab,kb->ka", self.blocks, v)
        return (self.full @ v.reshape(-1)).view(self.shape)

    def _projector(self) -> Tensor | None:
        """``U U^T`` with ``U`` the orthonormal null directions ``1_K (x) e_a / sqrt(K)``."""
        if self.null_cols is None or not bool(self.null_cols.any()):
            return None
        k, a = self.shape
        ones = torch.full((k, 1), 1.0 / k, dtype=self.full.dtype, device=self.full.device)
        col = torch.diag(self.null_cols.to(self.full.dtype))  # (A, A)
        return torch.kron(ones @ torch.ones(1, k, dtype=ones.dtype, device=ones.device), col)

    def solve(self, g: Tensor) -> Tensor:
        if self.blocks is not None:
            return _spd_solve(self.blocks, g[:, :, None])[:, :, 0]
        h = self.full
        proj = self._projector()
        if proj is not None:
            scale = h.diagonal().abs().max().clamp(min=torch.finfo(h.dtype).tiny)
            h = h + scale * proj
        return _spd_solve(h, g.reshape(-1, 1)).view(self.shape)

    def max_eigenvalue(self) -> Tensor:
        if self.blocks is not None:
            return torch.linalg.eigvalsh(self.blocks).max()
        return torch.linalg.eigvalsh(self.full)[-1]


def _spd_solve(h: Tensor, b: Tensor) -> Tensor:
    """Solve ``h x = b`` for symmetric positive (semi-)definite ``h`` (batched): Cholesky, and
    where that fails a least-squares solve (a singular design, e.g. collinear columns)."""
    chol, info = torch.linalg.cholesky_ex(h)
    if not bool((info == 0).all()):
        return torch.linalg.lstsq(h, b, driver="gelsd" if h.device.type == "cpu" else None).solution
    return torch.cholesky_solve(b, chol)


# --- entry point ------------------------------------------------------------------------------


def fit_exact(
    model,
    X,
    y,
    *,
    solver: str = "newton",
    l2: float = 0.0,
    l1: float = 0.0,
    sample_weight=None,
    max_iter: int = 100,
    tol: float = 1e-8,
    history_size: int = 10,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    check_separation: bool = True,
    warn: bool = True,
    callback=None,
) -> SolverResult:
    """Minimise ``(1/N) sum_n w_n loss_n + (l2/2)||W||^2 + l1 ||W||_1`` exactly; model trained in place.

    ``X`` ``(N, D)``, ``y`` as the model's ``targets`` accepts (labels ``(N,)`` or a target
    matrix ``(N, K)``), ``sample_weight`` ``(N,)`` non-negative (optional). ``solver`` is
    ``"newton"`` (Newton/IRLS; proximal Newton when ``l1 > 0``; single-``Linear`` models) or
    ``"lbfgs"`` (``l1 = 0`` only; any model). The run starts from the model's current
    parameters and stops when the max-abs gradient (minimum-norm subgradient with L1) is
    ``<= tol`` or after ``max_iter`` iterations (with a :class:`ConvergenceWarning`).
    ``device`` / ``dtype`` move the model first; otherwise the model's placement is used.
    ``callback(n_iter, objective)``, if given, is called at every iterate (the start included)
    with the objective as a float; returning True stops the run (``stop_reason="callback"``,
    no warning), e.g. to stop once a target objective is reached.

    After an unpenalised classification fit (``l1 = l2 = 0``) with ``check_separation``, samples
    predicted with probability within ``1e-7`` of certainty trigger a linear-programming check
    for (quasi-)complete separation; when found, a
    :class:`~torch_logreg.inference.SeparationWarning` describes it and ``result.separation``
    holds the details.
    """
    _check_choice("solver", solver, SOLVERS)
    l2 = _check_number("l2", l2, 0.0)
    l1 = _check_number("l1", l1, 0.0)
    tol = _check_number("tol", tol, 0.0)
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    if isinstance(history_size, bool) or not isinstance(history_size, int) or history_size < 1:
        raise ValueError(f"history_size must be a positive integer, got {history_size!r}")
    if l1 > 0 and solver not in L1_SOLVERS:
        raise ValueError(
            f"solver={solver!r} cannot minimise an L1 penalty (l1={l1:g}); solvers that can: "
            f"{list(L1_SOLVERS)} (proximal Newton)"
        )
    if device is not None or dtype is not None:
        dev = resolve_device(device) if device is not None else model.device
        model.to(device=dev, dtype=resolve_dtype(dtype, default=model.dtype))
    X, T, w = prepare(model, X, y, sample_weight)

    start = time.perf_counter()
    result = SolverResult(solver, False, 0, math.nan, math.nan, "", l2=l2, l1=l1, tol=tol, weighted=w is not None)
    if solver == "newton":
        _newton(model, X, T, w, l2, l1, max_iter, tol, result, callback)
    else:
        _lbfgs(model, X, T, w, l2, max_iter, tol, history_size, result, callback)
    result.wall_time = time.perf_counter() - start

    if warn and result.stop_reason not in ("converged", "callback"):
        if result.stop_reason == "max_iter":
            why = f"did not converge in {result.n_iter} iterations (max_iter={max_iter})"
        else:
            why = f"stopped after {result.n_iter} iterations: the line search could not decrease the objective"
        warnings.warn(
            f"{solver}: {why}; the optimality measure max|gradient| is {result.grad_norm:.3e} > tol={tol:g}. "
            "Increase max_iter, loosen tol, standardise the features or add a penalty.",
            ConvergenceWarning,
            stacklevel=2,
        )
    children = list(model.children())
    single = len(children) == 1 and isinstance(children[0], Linear)
    if check_separation and single and not result.penalized and model.link in ("sigmoid", "softmax"):
        from .inference import SeparationWarning, find_separation

        sep = find_separation(model, X, T, w, screen=True)
        if sep is not None:
            result.separation = sep
            if warn:
                warnings.warn(sep.message, SeparationWarning, stacklevel=2)
    return result


def prepare(model, X, y, sample_weight=None) -> tuple[Tensor, Tensor, Tensor | None]:
    """Validate once and return ``X`` ``(N, D)``, targets ``T`` ``(N, K)`` and weights ``(N,)``
    (or None), all on the model's device and dtype."""
    X = validation.as_tensor(X, "X", dtype=model.dtype, device=model.device)
    validation.check_features(X, model.n_features)
    y = validation.as_tensor(y, "y", device=model.device)
    T = model.targets(y, X.shape[0])
    return X, T, check_sample_weight(sample_weight, X.shape[0], model.dtype, model.device)


def check_sample_weight(sample_weight, n: int, dtype: torch.dtype, device) -> Tensor | None:
    """``(N,)`` finite, non-negative weights with a positive sum, as a tensor; None passes."""
    if sample_weight is None:
        return None
    w = validation.as_tensor(sample_weight, "sample_weight", dtype=dtype, device=device)
    if w.dim() == 0:
        w = w.expand(n).clone()
    if w.dim() != 1 or w.shape[0] != n:
        raise ValueError(f"sample_weight must have shape ({n},), got {tuple(w.shape)}")
    where = validation.first_nonfinite(w)
    if where is not None:
        raise ValueError(f"sample_weight contains a non-finite value at sample {where[0]}")
    if bool((w < 0).any()):
        i = int((w < 0).nonzero()[0, 0])
        raise ValueError(f"sample_weight must be non-negative, got {w[i].item()!r} at sample {i}")
    if not bool((w > 0).any()):
        raise ValueError("sample_weight sums to zero: at least one sample needs a positive weight")
    return w


# --- Newton and proximal Newton ---------------------------------------------------------------


def _record_iterate(result: SolverResult, it: int, objective: float, optimality: float, tol: float,
                    max_iter: int, callback) -> bool:
    """Record iterate ``it`` in ``result``; True (with ``result.stop_reason`` set) when the run
    must stop: converged, stopped by the callback, or out of iterations."""
    result.losses.append(objective)
    result.grad_norms.append(optimality)
    if not math.isfinite(objective) or not math.isfinite(optimality):
        raise FloatingPointError(f"{result.solver}: the objective became {objective} at iteration {it}")
    if optimality <= tol:
        result.stop_reason = "converged"
    elif callback is not None and callback(it, objective):
        result.stop_reason = "callback"
    elif it >= max_iter:
        result.stop_reason = "max_iter"
    return bool(result.stop_reason)


def _newton(model, X, T, w, l2, l1, max_iter, tol, result: SolverResult, callback=None) -> None:
    layer = single_linear(model)
    prefix = next(name for name, _ in model.named_children())
    bias = layer.bias is not None
    link = model.link
    Xa = augment(X, bias)
    theta = get_theta(layer)
    mask = penalty_mask(theta, bias)
    l2_diag = l2 * mask
    l1_mask = l1 * mask
    null_cols = None
    if link == "softmax":
        null_cols = (mask[0] == 0) if l2 > 0 or l1 > 0 else torch.ones_like(mask[0], dtype=torch.bool)
        theta = _center(theta, null_cols)
    eps = torch.finfo(theta.dtype).eps

    def smooth(th: Tensor, with_grad: bool = True):
        set_theta(layer, th)
        if not with_grad:
            return model.objective(X, T, l2, w), None
        f, grads = model.objective_and_grad(X, T, l2, w)
        return f, theta_grad(prefix, grads, bias)

    def composite(th: Tensor, f_smooth: Tensor) -> Tensor:
        return f_smooth + (l1_mask * th.abs()).sum() if l1 > 0 else f_smooth

    f, g = smooth(theta)
    F_val = composite(theta, f)
    it = 0
    while True:
        opt_t = (l1_optimality(theta, g, l1_mask) if l1 > 0 else g).abs().max()
        F_now, opt = F_val.item(), opt_t.item()
        if _record_iterate(result, it, F_now, opt, tol, max_iter, callback):
            break
        z = Xa @ theta.T
        hess = _Hessian(link, Xa, z, w, l2_diag, null_cols)
        if l1 > 0:
            inner_tol = max(min(0.1, opt) * opt, 0.1 * tol)
            u = _prox_quadratic(theta, g, hess, l1_mask, inner_tol)
            d = u - theta
            decrease = (g * d).sum() + (l1_mask * (u.abs() - theta.abs())).sum()
        else:
            d = -hess.solve(g)
            if null_cols is not None:
                d = _center(d, null_cols)
            decrease = (g * d).sum()
        # step halving (Armijo); changes below rounding error of F count as no increase
        t = 1.0
        slack = 8 * eps * abs(F_now)
        dec = decrease.item()
        accepted = False
        for _ in range(_MAX_HALVINGS):
            trial = theta + t * d
            f_trial, _ = smooth(trial, with_grad=False)
            F_trial = composite(trial, f_trial)
            if F_trial.item() <= F_now + _ARMIJO * t * min(dec, 0.0) + slack:
                accepted = True
                break
            t *= 0.5
        if not accepted:
            set_theta(layer, theta)
            result.stop_reason = "line_search_failed"
            break
        theta = trial
        it += 1
        result.line_search_steps.append(t)
        f, g = smooth(theta)
        F_val = composite(theta, f)
    if null_cols is not None:
        theta = _center(theta, null_cols)
    set_theta(layer, theta)
    result.n_iter = it
    result.loss = result.losses[-1]
    result.grad_norm = result.grad_norms[-1]
    result.converged = result.stop_reason == "converged"


def _center(theta: Tensor, cols: Tensor) -> Tensor:
    """Subtract the class mean from the columns ``cols`` (softmax's invariant directions)."""
    mean = theta.mean(dim=0, keepdim=True) * cols.to(theta.dtype)
    return theta - mean


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


# --- L-BFGS -----------------------------------------------------------------------------------


def _lbfgs(model, X, T, w, l2, max_iter, tol, history_size, result: SolverResult, callback=None) -> None:
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

    # unweighted single-Linear models: the loop's full-batch fast path (one fused pass on CPU for
    # one output, class-major logits for K classes); its results equal objective_and_grad's
    fast = fastpath.make_step(model, X, T) if w is None and fastpath.supports(model) else None

    def fg(x: Tensor) -> tuple[Tensor, Tensor]:
        assign(x)
        f, grads = fast.step(l2) if fast is not None else model.objective_and_grad(X, T, l2, w)
        return f, torch.cat([grads[n].reshape(-1) for n in names])

    x = flat_params()
    f, g = fg(x)
    eps = torch.finfo(x.dtype).eps
    s_hist: list[Tensor] = []
    y_hist: list[Tensor] = []
    rho_hist: list[Tensor] = []
    it = 0
    while True:
        f_now = f.item()
        if _record_iterate(result, it, f_now, g.abs().max().item(), tol, max_iter, callback):
            break
        # two-loop recursion: d = -H_k g
        q = g.clone()
        alphas = []
        for s, yv, rho in zip(reversed(s_hist), reversed(y_hist), reversed(rho_hist)):
            a = rho * (s @ q)
            q.sub_(a * yv)
            alphas.append(a)
        if s_hist:
            gamma = (s_hist[-1] @ y_hist[-1]) / (y_hist[-1] @ y_hist[-1])
            q.mul_(gamma)
        for (s, yv, rho), a in zip(zip(s_hist, y_hist, rho_hist), reversed(alphas)):
            b = rho * (yv @ q)
            q.add_((a - b) * s)
        d = -q
        gtd = (g @ d).item()
        if gtd >= 0:  # not a descent direction: drop the memory and follow the gradient
            s_hist.clear(), y_hist.clear(), rho_hist.clear()
            d = -g
            gtd = -(g @ g).item()
        t = 1.0 if s_hist else min(1.0, 1.0 / max(g.abs().sum().item(), eps))
        slack = 8 * eps * abs(f_now)
        accepted = False
        for _ in range(_MAX_HALVINGS):
            x_new = x + t * d
            f_new, g_new = fg(x_new)
            if f_new.item() <= f_now + _ARMIJO * t * gtd + slack:
                accepted = True
                break
            t *= 0.5
        if not accepted:
            assign(x)
            result.stop_reason = "line_search_failed"
            break
        s, yv = x_new - x, g_new - g
        sy = s @ yv
        if sy.item() > eps * (yv @ yv).item():
            s_hist.append(s), y_hist.append(yv), rho_hist.append(1.0 / sy)
            if len(s_hist) > history_size:
                s_hist.pop(0), y_hist.pop(0), rho_hist.pop(0)
        x, f, g = x_new, f_new, g_new
        it += 1
        result.line_search_steps.append(t)
    assign(x)
    children = list(model.children())
    if model.link == "softmax" and len(children) == 1 and isinstance(children[0], Linear):
        # centre the columns the objective cannot see (bias; every column when l2 = 0)
        layer = children[0]
        theta = get_theta(layer)
        cols = penalty_mask(theta, layer.bias is not None)[0] == 0
        set_theta(layer, _center(theta, torch.ones_like(cols) if l2 == 0 else cols))
    result.n_iter = it
    result.loss = result.losses[-1]
    result.grad_norm = result.grad_norms[-1]
    result.converged = result.stop_reason == "converged"


# --- argument checks --------------------------------------------------------------------------


def _check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


def _check_number(name: str, value, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
        raise ValueError(f"{name} must be a finite number >= {minimum:g}, got {value!r}")
    return float(value)
