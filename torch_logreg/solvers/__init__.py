"""Solvers that reach the exact optimum: Newton (IRLS), proximal Newton, L-BFGS and the accelerated
proximal gradient.

All of them minimise, for ``N`` samples with weights ``w_n`` (1 by default),

    F(theta) = (1/N) sum_n w_n loss(z_n, t_n) + (l2 / 2) ||W||^2 + l1 ||W||_1

over the weights ``W`` and the bias ``b`` of a model's linear layer; the bias is never
penalised. ``loss`` is the model's negative log-likelihood (sigmoid, softmax or squared error).
In scikit-learn's terms (``C sum_n w_n loss_n + penalty``) this is ``l2 = (1 - l1_ratio) / (C N)``
and ``l1 = l1_ratio / (C N)``.

Every derivative used by an update is analytic: the gradient is the model's manual backward
(:meth:`~torch_logreg.models.StackedModel.objective_and_grad`) and the Hessian is the closed
form of :mod:`torch_logreg.functional` (``X~^T S X~ / N + l2 I`` on the augmented input
``X~ = [1, X]``). Autograd is never called. Sparse X (a CSR tensor) stays sparse: ``X~`` is a CSR
tensor too, each Hessian block the sparse product ``X~^T (S X~)`` densified only as its ``(A, A)``
result, and L-BFGS and the proximal gradient take the sparse step.

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
    Limited-memory BFGS (two-loop recursion, ``history_size`` pairs) with Moré and Thuente's
    strong Wolfe line search, as L-BFGS-B's (``wolfe.py``: it lengthens a step as well as
    shortening it), on all parameters of any :class:`~torch_logreg.models.StackedModel`; smooth
    objectives only (``l1 = 0``). For one output on large sparse X (float64), a trial along a
    direction costs a pass over the rows, not two over X: its margins are ``z + t X d``.

``proximal``
    Accelerated proximal gradient (FISTA) on ``theta = [b, W]`` with a backtracking estimate of
    the gradient's Lipschitz constant (raised on a failed step, lowered a little before each
    iteration) and adaptive restart of the momentum (O'Donoghue & Candes); soft-thresholding gives
    exact zeros. Each iteration costs one or two full-batch steps (``O(N D K)``, or ``O(nnz K)``
    for sparse X) and no Hessian, so it scales to L1 and elastic-net fits with many features
    (:mod:`~torch_logreg.solvers.proximal`); it needs more iterations than Newton.

``cd``
    Proximal Newton with cyclic coordinate descent on each quadratic model (glmnet, liblinear's
    newGLMNET), with an active set; softmax by cycling over the classes (glmnet's multinomial
    scheme). X is held by columns and each coordinate costs ``O(nnz(column))``, on the CPU in float64 with numba
    kernels (:mod:`~torch_logreg.solvers.coordinate`). Suited to L1 fits with few nonzeros among many
    (sparse) features.

:func:`choose_solver` is the rule that picks one of them from the problem's size (the
estimator's ``solver="auto"``); :func:`~.dispatch.resolve`, the one rule of which solver runs for a
name and a penalty, used by the estimator, the regularization path and the command line.

Each call returns a :class:`SolverResult`, whose ``history`` is the run's
:class:`~torch_logreg.train.History` (one entry per iterate, the start first), as the loop's.

Convergence is declared when the optimality measure, the largest absolute entry of the
gradient (with ``l1 > 0``: of the minimum-norm subgradient), falls to ``tol`` or below, the
criterion scipy's L-BFGS-B applies as ``pgtol`` and hence scikit-learn's ``tol`` for ``lbfgs``.
Reaching ``max_iter`` first emits a :class:`ConvergenceWarning` naming the iteration count.

A non-finite objective, gradient, Hessian or step raises :class:`NonFiniteError` (a
``ValueError``) naming the iteration, never reaching LAPACK; features whose squares overflow the
dtype are refused before the first iteration (:func:`prepare`).

Host synchronisation: one read of the optimality measure per outer iteration and one per
line-search trial, and for Newton one finiteness check of the Hessian per iteration; the
proximal Newton inner solver reads its stopping measure every 10 inner iterations; the proximal
gradient reads once per step trial. All tensors stay on the model's device and dtype.
"""

from __future__ import annotations

import math
import time
import warnings

import torch
from torch import Tensor

from .. import arguments, validation
from .. import penalty as penalty_terms
from ..devices import resolve_device, resolve_dtype
from ..errors import UsageError
from ..models import single_linear
from ..registry import EXACT_SOLVERS, L1_SOLVERS
from ..steps import select
from . import glm
from .coordinate import coordinate
from .dispatch import (
    NEWTON_MAX_PARAMS,
    NEWTON_MAX_PARAMS_UNPENALISED,
    PROXIMAL_NEWTON_MAX_PARAMS,
    choose_solver,
    is_exact,
    resolve,
)
from .lbfgs import lbfgs
from .newton import newton
from .params import augment, get_theta, linear_layer, set_theta
from .proximal import proximal
from .result import ConvergenceWarning, NonFiniteError, SolverResult
from .separation import SeparationWarning, find_separation

#: the exact solvers (the registry's names, kept here for callers of this package)
SOLVERS = EXACT_SOLVERS

__all__ = [
    "ConvergenceWarning",
    "L1_SOLVERS",
    "NonFiniteError",
    "SOLVERS",
    "SolverResult",
    "NEWTON_MAX_PARAMS",
    "NEWTON_MAX_PARAMS_UNPENALISED",
    "PROXIMAL_NEWTON_MAX_PARAMS",
    "augment",
    "check_sample_weight",
    "check_newton_fits",
    "choose_solver",
    "fit_exact",
    "get_theta",
    "is_exact",
    "linear_layer",
    "prepare",
    "resolve",
    "set_theta",
]


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
    step: str = "rule",
    offset=None,
    penalty_factor=None,
    lower_bounds=None,
    upper_bounds=None,
    penalty: str | None = None,
) -> SolverResult:
    """Minimise ``(1/N) sum_n w_n loss_n + (l2/2)||W||^2 + l1 ||W||_1`` exactly; model trained in place.

    ``X`` ``(N, D)`` dense or sparse (``scipy.sparse`` or a torch sparse tensor: a CSR tensor, never
    densified; single-``Linear`` models), ``y`` as the model's ``targets`` accepts (labels ``(N,)`` or a target
    matrix ``(N, K)``), ``sample_weight`` ``(N,)`` non-negative (optional). ``solver`` is
    ``"newton"`` (Newton/IRLS; proximal Newton when ``l1 > 0``; single-``Linear`` models),
    ``"lbfgs"`` (``l1 = 0`` only; any model), ``"proximal"`` (accelerated proximal gradient;
    single-``Linear`` models; no Hessian, for many features; :func:`choose_solver` says which
    fits a problem) or ``"cd"`` (proximal Newton with coordinate descent; single-``Linear``
    models; solved on the CPU). ``max_iter`` counts Newton, L-BFGS, FISTA or proximal Newton iterations. The run starts from
    the model's current parameters and stops when the max-abs gradient (minimum-norm subgradient with L1) is
    ``<= tol`` or after ``max_iter`` iterations (with a :class:`ConvergenceWarning`).
    ``device`` / ``dtype`` move the model first; otherwise the model's placement is used.
    ``callback(n_iter, objective)``, if given, is called at every iterate (the start included)
    with the objective as a float; returning True stops the run (``stop_reason="callback"``,
    no warning), e.g. to stop once a target objective is reached.
    ``step``: ``"rule"``, the only choice: the objective and gradient take the fixed rule's step
    (``steps/select.py``), so a solve gives the same bits from run to run. ``"auto"``, which had
    newton time the BLAS that forms its Hessian, is read as ``"rule"`` with a FutureWarning.

    The terms of the analysts' models, for a binary model (one sigmoid output, a single ``Linear``)
    on dense ``X`` with ``solver="newton"`` or ``"cd"`` (:mod:`~torch_logreg.solvers.glm`, which states
    the maths): ``offset`` ``(N,)``, a known term added to each row's logit (an exposure, a prior
    model's score), statsmodels' and glmnet's ``offset``; ``penalty_factor`` ``(D,)`` non-negative,
    the per-coefficient multiplier of both the L1 and the L2 term (0 leaves a coefficient
    unpenalised; glmnet's ``penalty.factor``, though glmnet rescales the factors to sum to ``D`` and
    this takes them as given, as glum's ``P1``/``P2``); ``lower_bounds`` / ``upper_bounds`` ``(D,)``,
    glum's names, ``-inf`` / ``inf`` allowed, bounds on the weights (never on the bias), the box in
    which coordinate descent solves each Newton model; ``penalty="firth"``, Firth's bias-reduced
    logit (the likelihood penalised by the Jeffreys prior ``(1/2) log det I``), finite under
    separation, with no other penalty or bound.

    The result's ``history`` is the solve as the loop records a run (a
    :class:`~torch_logreg.train.History`: per iterate, the objective, the loss without the
    penalties and the optimality measure).

    After an unpenalised classification fit (``l1 = l2 = 0``) with ``check_separation``, samples
    predicted with probability within ``1e-7`` of certainty trigger a linear-programming check
    for (quasi-)complete separation; when found, a
    :class:`~torch_logreg.solvers.separation.SeparationWarning` describes it and ``result.separation``
    holds the details.
    """
    arguments.choice("solver", solver, EXACT_SOLVERS)
    select.current(step, ("rule", "auto"))
    l2 = arguments.number("l2", l2, low=0)
    l1 = arguments.number("l1", l1, low=0)
    tol = arguments.number("tol", tol, low=0)
    arguments.number("max_iter", max_iter, low=1, integer=True)
    arguments.number("history_size", history_size, low=1, integer=True)
    resolve(solver, l1=l1, choices=EXACT_SOLVERS)
    if device is not None or dtype is not None:
        dev = resolve_device(device) if device is not None else model.device
        model.to(device=dev, dtype=resolve_dtype(dtype, default=model.dtype))
    if solver == "newton":  # its dense Hessian checked against the memory bound before anything is allocated
        check_newton_fits(model)
    extras = (offset, penalty_factor, lower_bounds, upper_bounds)
    if penalty is not None or any(v is not None for v in extras):
        return _fit_glm(model, X, y, solver, l2, l1, sample_weight, max_iter, tol, check_separation, warn, callback,
                        offset, penalty_factor, lower_bounds, upper_bounds, penalty)
    X, T, w = prepare(model, X, y, sample_weight)

    start = time.perf_counter()
    result = SolverResult(solver, False, 0, math.nan, math.nan, "", l2=l2, l1=l1, tol=tol, weighted=w is not None)
    if result.penalized:  # each iterate's loss without the penalties, at the model's parameters then
        params = dict(model.named_parameters())
        result.data_loss = lambda f: f - float(penalty_terms.value(params, l2)) - float(penalty_terms.l1_value(params, l1))
    if solver == "newton":
        newton(model, X, T, w, l2, l1, max_iter, tol, result, callback)
    elif solver == "proximal":
        proximal(model, X, T, w, l2, l1, max_iter, tol, result, callback)
    elif solver == "cd":
        coordinate(model, X, T, w, l2, l1, max_iter, tol, result, callback)
    else:
        lbfgs(model, X, T, w, l2, max_iter, tol, history_size, result, callback)
    result.wall_time = time.perf_counter() - start
    result.data_loss = None  # it holds the model: the result is kept (and pickled) without it

    _warn_stopped(result, solver, max_iter, tol, warn)
    single = single_linear(model) is not None
    if check_separation and single and not result.penalized and model.link in ("sigmoid", "softmax"):
        _check_separation(model, X, T, w, result, warn)
    return result


def _warn_stopped(result: SolverResult, solver: str, max_iter: int, tol: float, warn: bool, stacklevel: int = 3) -> None:
    """The :class:`ConvergenceWarning` of a solve that stopped before ``tol``."""
    if warn and result.stop_reason not in ("converged", "callback"):
        if result.stop_reason == "max_iter":
            why = f"did not converge in {result.n_iter} iterations (max_iter={max_iter})"
        else:
            why = f"stopped after {result.n_iter} iterations: the line search could not decrease the objective"
        warnings.warn(
            f"{solver}: {why}; the optimality measure max|gradient| is {result.grad_norm:.3e} > tol={tol:g}. "
            "Increase max_iter, loosen tol, standardise the features or add a penalty.",
            ConvergenceWarning,
            stacklevel=stacklevel,
        )


def _check_separation(model, X, T, w, result: SolverResult, warn: bool, stacklevel: int = 3) -> None:
    sep = find_separation(model, X, T, w, screen=True)
    if sep is not None:
        result.separation = sep
        if warn:
            warnings.warn(sep.message, SeparationWarning, stacklevel=stacklevel)


def _fit_glm(model, X, y, solver, l2, l1, sample_weight, max_iter, tol, check_separation, warn, callback,
             offset, penalty_factor, lower_bounds, upper_bounds, penalty_name) -> SolverResult:
    """:func:`fit_exact` with an offset, penalty factors, bounds or Firth's penalty (:mod:`.glm`)."""
    arguments.choice("penalty", penalty_name, (None, "firth"))
    firth = penalty_name == "firth"
    if single_linear(model) is None or model.link != "sigmoid" or model.n_outputs != 1:
        raise UsageError("offset, penalty_factor, lower_bounds, upper_bounds and penalty='firth' are for a binary "
                         "logistic model (one sigmoid output, a single Linear layer)")
    if solver not in ("newton", "cd"):
        raise UsageError(f"offset, penalty_factor, bounds and penalty='firth' are solved by solver='newton' or 'cd', "
                         f"not {solver!r}")
    if firth and (l1 > 0 or l2 > 0 or lower_bounds is not None or upper_bounds is not None or penalty_factor is not None):
        raise UsageError("penalty='firth' is the only penalty of its fit: leave l1, l2, penalty_factor and the bounds out")
    if validation.is_sparse(X) or (isinstance(X, Tensor) and X.layout != torch.strided):
        raise UsageError("offset, penalty_factor, bounds and penalty='firth' need dense X")
    X, T, w = prepare(model, X, y, sample_weight)
    n, d = X.shape
    dt, dev = model.dtype, model.device
    off = glm.vector(offset, "offset", n, dt, dev) if offset is not None else None
    factor = glm.vector(penalty_factor, "penalty_factor", d, dt, dev, low=0) if penalty_factor is not None else None
    lower = glm.vector(lower_bounds, "lower_bounds", d, dt, dev, infinite=True) if lower_bounds is not None else None
    upper = glm.vector(upper_bounds, "upper_bounds", d, dt, dev, infinite=True) if upper_bounds is not None else None
    if lower is not None and upper is not None and bool((lower > upper).any()):
        j = int((lower > upper).nonzero()[0, 0])
        raise UsageError(f"lower_bounds[{j}] = {float(lower[j]):g} exceeds upper_bounds[{j}] = {float(upper[j]):g}")
    penalised = l2 > 0 or l1 > 0
    result = SolverResult(solver, False, 0, math.nan, math.nan, "", l2=l2, l1=l1, tol=tol, weighted=w is not None)
    start = time.perf_counter()
    glm.glm_newton(model, X, T, w, off, l2, l1, factor, lower, upper, firth, max_iter, tol, result, callback)
    result.wall_time = time.perf_counter() - start
    _warn_stopped(result, solver, max_iter, tol, warn, stacklevel=4)  # at fit_exact's caller
    if check_separation and not penalised and not firth:
        _check_separation(model, X, T, w, result, warn, stacklevel=4)
    return result


def check_newton_fits(model, setting: str = "solver") -> None:
    """A :class:`~torch_logreg.memory.MemoryBoundError` when newton's dense Hessian for ``model``
    (a single linear layer) does not fit its device (:func:`.hessian.check_dense_hessian`), before
    anything of that size is allocated; a model newton does not take passes (its own check says so)."""
    from .hessian import check_dense_hessian

    layer = single_linear(model)
    if layer is None:
        return
    check_dense_hessian(layer.in_features, layer.out_features, layer.bias is not None, model.link == "softmax",
                        layer.weight.element_size(), layer.weight.device, setting)


def prepare(model, X, y, sample_weight=None) -> tuple[Tensor, Tensor, Tensor | None]:
    """Validate once and return ``X`` ``(N, D)``, targets ``T`` ``(N, K)`` and weights ``(N,)``
    (or None), all on the model's device and dtype.

    ``X`` must also have squares that are finite in the model's dtype
    (:func:`~torch_logreg.validation.check_square_range`): the Hessian and L-BFGS's curvature
    pairs sum products of two columns. This is checked on ``X`` as given, before the conversion.
    """
    X = validation.as_tensor(X, "X")
    if X.layout != torch.strided:
        from ..steps.sparse import check_model

        check_model(model)
    validation.check_square_range(X, model.dtype)
    X = X.to(device=model.device, dtype=model.dtype)
    validation.check_features(X, model.n_features)
    y = validation.as_tensor(y, "y", device=model.device)
    T = model.targets(y, X.shape[0])
    return X, T, check_sample_weight(sample_weight, X.shape[0], model.dtype, model.device)


def check_sample_weight(sample_weight, n: int, dtype: torch.dtype, device) -> Tensor | None:
    """``(N,)`` finite, non-negative weights with a positive sum, as a tensor; None passes
    (:func:`~torch_logreg.validation.sample_weights`, the one check the loop makes too)."""
    return validation.sample_weights(sample_weight, n, dtype, device)
