"""A regularization path: a decreasing sequence of penalties, fitted with warm starts and scored by k-fold
cross-validation, as glmnet's ``cv.glmnet`` and scikit-learn's ``LogisticRegressionCV`` give it.

For a penalty ``lambda`` and the L1 share ``alpha`` (``l1_ratio``) every fit minimises
:func:`torch_logreg.solvers.fit_exact`'s objective

    F(theta) = (1/n) sum_n w_n loss(z_n, t_n) + lambda (1 - alpha) ||W||^2 / 2 + lambda alpha ||W||_1

over ``W`` ``(K, D)`` and the unpenalised bias ``b`` ``(K,)``, i.e. ``l2 = lambda (1 - alpha)`` and
``l1 = lambda alpha``. The fits along the path are warm-started: each starts from the solution at the
penalty before it, so the whole path costs little more than its hardest fit.

The largest penalty (glmnet's ``lambda_max``)
    At ``W = 0`` with the intercept-only bias ``b0`` (the log-odds of the weighted mean of each target,
    the log of the weighted class shares, the weighted mean), ``W = 0`` is optimal exactly when
    ``|g_kj| <= lambda alpha`` for every entry of ``g = dF_smooth/dW`` there (the L2 term has no gradient
    at ``W = 0``). So ``lambda_max = max |g| / alpha`` is the smallest penalty whose fit has all ``W``
    zero; the path starts at ``lambda_max (1 + 1e-9)``, the margin keeping rounding from leaving an
    entry at ``1e-17``. For ``alpha < 1e-3`` (pure or nearly pure L2, where no finite penalty gives
    ``W = 0``) ``alpha`` is replaced by ``1e-3`` in that formula, as glmnet does for ``alpha = 0``: the
    first fit is then shrunk hard towards zero without being zero. The path runs down to
    ``penalty_min_ratio lambda_max`` in ``n_penalties`` log-spaced steps.

Cross-validation
    ``cv`` stratified folds (seeded; :func:`torch_logreg.folds.kfold`, plain k-fold for multilabel and linear
    targets) or the ``(train, test)`` index pairs given. On each fold the whole path is fitted on the training
    rows (from that fold's own intercept-only start) and scored on the held-out rows: ``"log_loss"`` (mean negative
    log-likelihood, lower is better), ``"accuracy"`` (higher is better; multilabel: all outputs right) or, for
    ``kind="linear"``, ``"mse"`` (mean squared error over rows and outputs, lower is better); with sample weights
    the held-out means are weighted. Each penalty gets the mean over the folds and its standard error
    ``sd / sqrt(k)`` (``sd`` with ``k - 1`` degrees of freedom, as glmnet's ``cvsd``).
    ``penalty_scaling="mean"`` applies the same ``lambda`` to every fit (glmnet);
    ``"sum"`` keeps the penalty fixed relative to the *summed* loss, as scikit-learn's ``C`` does: a fit
    on ``n`` of the ``N`` rows uses ``lambda N / n``, so ``lambda = 1 / (C N)`` is the same ``C`` on
    every fold (scikit-learn's ``C sum_n w_n loss_n + penalty`` divided by ``C n``).

The choice
    ``best_index`` minimises the mean score (maximises it for accuracy; ties go to the larger
    penalty); ``one_se_index`` is the largest penalty whose mean score is within one standard error
    of the best one (glmnet's ``lambda.1se``; :func:`one_standard_error_index`). The refit on all
    rows at the chosen penalty is the full-data path's fit there (warm-started along the path).

Shapes: ``N`` rows, ``D`` features, ``K`` outputs (1 for binary and single-output linear models,
the number of classes for softmax), ``P`` penalties, ``k`` folds. ``X`` dense or sparse (scipy.sparse
or a torch sparse tensor; it is used as a CSR tensor and stays sparse, folds included).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import arguments, validation
from . import folds as folds_lib
from . import functional as F
from .devices import resolve_device, resolve_dtype
from .errors import UsageError
from .folds import stratified_folds  # kept importable from here, where it was first defined
from .models import LinearRegression, LogisticRegression, SoftmaxRegression
from .solvers import ConvergenceWarning, check_sample_weight, fit_exact, glm
from .solvers.dispatch import resolve as resolve_solver

__all__ = [
    "KINDS",
    "RegularizationPath",
    "best_index",
    "choose_path_solver",
    "lambda_max",
    "one_standard_error_index",
    "regularization_path",
    "stratified_folds",
]

#: model kinds: binary (one sigmoid), multilabel (K sigmoids), softmax (K classes), linear (identity)
KINDS = ("binary", "multilabel", "softmax", "linear")
#: scoring -> greater is better; which kinds each applies to
SCORINGS = {"log_loss": False, "accuracy": True, "mse": False}
SCORINGS_OF_KIND = {"binary": ("log_loss", "accuracy"), "multilabel": ("log_loss", "accuracy"),
                    "softmax": ("log_loss", "accuracy"), "linear": ("mse",)}
CHOICES = ("best", "1se")
PENALTY_SCALINGS = ("mean", "sum")
#: the smallest L1 share used to place lambda_max (glmnet's rule for alpha = 0)
MIN_ALPHA_FOR_LAMBDA_MAX = 1e-3
#: lambda_max is raised by this relative margin, so the first fit's W is exactly zero despite rounding
LAMBDA_MAX_MARGIN = 1e-9


def choose_path_solver(solver: str, l1_ratio: float, n_params: int, sparse: bool = False) -> str:
    """The exact solver for the fits of a path: ``solver`` itself when given (checked against the L1 term), else
    :func:`torch_logreg.solvers.choose_solver`'s rule for ``n_params`` parameters on dense or ``sparse`` X
    (:func:`torch_logreg.solvers.dispatch.resolve`, the rule the estimator and the command line use too)."""
    return resolve_solver(solver, n_params, l1=l1_ratio, sparse=sparse, term=f"l1_ratio={l1_ratio:g}")


# --- the choice --------------------------------------------------------------------------------


def best_index(mean_scores, greater_is_better: bool = False) -> int:
    """The index of the best mean score (the first of equal ones: the largest penalty on a decreasing path)."""
    m = np.asarray(mean_scores, dtype=np.float64)
    if m.size == 0 or np.all(np.isnan(m)):
        raise UsageError("no finite mean score to choose a penalty from")
    return int(np.nanargmax(m) if greater_is_better else np.nanargmin(m))


def one_standard_error_index(mean_scores, std_errors, greater_is_better: bool = False) -> int:
    """The one-standard-error rule on a path of *decreasing* penalties: the smallest index (the largest penalty)
    whose mean score is within one standard error of the best, i.e. ``mean_i <= mean_b + se_b`` for a loss
    (``mean_i >= mean_b - se_b`` for a score where greater is better), ``b`` = :func:`best_index`."""
    m = np.asarray(mean_scores, dtype=np.float64)
    se = np.asarray(std_errors, dtype=np.float64)
    if m.shape != se.shape:
        raise UsageError(f"mean_scores and std_errors must have the same shape, got {m.shape} and {se.shape}")
    b = best_index(m, greater_is_better)
    if greater_is_better:
        within = m >= m[b] - se[b]
    else:
        within = m <= m[b] + se[b]
    return int(np.flatnonzero(within)[0])


# --- the model and its intercept-only start ------------------------------------------------------


def _make_model(kind: str, n_features: int, n_outputs: int, bias: bool):
    if kind == "softmax":
        return SoftmaxRegression(n_features, n_outputs, bias=bias)
    if kind == "linear":
        return LinearRegression(n_features, n_outputs, bias=bias)
    return LogisticRegression(n_features, n_outputs, bias=bias)


def _intercept_only(model, T: Tensor, w: Tensor | None, where: str, offset: Tensor | None = None) -> None:
    """Set ``W = 0`` and the bias to the intercept-only optimum (closed form): the log-odds of the weighted mean
    of each target (sigmoid), the centred log of the weighted class shares (softmax), the weighted mean
    (identity). Without a bias only ``W = 0``. With an ``offset`` ``(N,)`` (one sigmoid output) the bias solves
    ``sum_n w_n (sigmoid(b + o_n) - t_n) = 0`` by Newton's method from the closed form."""
    layer = model.linear
    with torch.no_grad():
        layer.weight.zero_()
        if layer.bias is None:
            return
        mean = (T * w[:, None]).sum(0) / w.sum() if w is not None else T.mean(0)
        if model.link == "identity":
            layer.bias.copy_(mean)
            return
        if bool(((mean <= 0) | (mean >= 1)).any()) and model.link == "sigmoid":
            k = int(((mean <= 0) | (mean >= 1)).nonzero()[0, 0])
            raise UsageError(f"the training rows of {where} hold a single value of target {k} (after sample weights): "
                             "each output needs both 0s and 1s")
        if model.link == "softmax" and bool((mean <= 0).any()):
            k = int((mean <= 0).nonzero()[0, 0])
            raise UsageError(f"the training rows of {where} hold no sample of class {k} (after sample weights): "
                             "every class needs a positive weight in every training fold")
        if model.link == "sigmoid":
            layer.bias.copy_(torch.log(mean) - torch.log1p(-mean))
            if offset is not None:
                _offset_intercept(layer.bias, T[:, 0], w, offset)
        else:
            logs = torch.log(mean)
            layer.bias.copy_(logs - logs.mean())


def _offset_intercept(bias: Tensor, t: Tensor, w: Tensor | None, offset: Tensor) -> None:
    """Newton's method on the one intercept ``b`` of a logit with an offset, from ``bias``; in place. The
    objective is convex in ``b`` with a positive second derivative, so the steps converge quadratically."""
    w = torch.ones_like(t) if w is None else w
    b = bias[0]
    for _ in range(100):
        p = torch.sigmoid(b + offset)
        g = (w * (p - t)).sum() / w.sum()
        b = b - g / ((w * p * (1 - p)).sum() / w.sum())
        if abs(float(g)) <= 1e-15:
            break
    bias.fill_(b)


def lambda_max(model, X: Tensor, T: Tensor, w: Tensor | None, l1_ratio: float, factor: Tensor | None = None,
               lower: Tensor | None = None, upper: Tensor | None = None, offset: Tensor | None = None) -> float:
    """``max |dF_smooth/dW| / max(l1_ratio, 1e-3)`` at the intercept-only fit (module docstring): the smallest
    penalty whose fit has ``W = 0`` (for ``l1_ratio >= 1e-3``). Leaves the model at that fit.

    With penalty factors ``f`` ``(D,)`` the entry of feature ``j`` counts as ``|g_j| / f_j`` (an unpenalised one,
    ``f_j = 0``, not at all: no penalty zeroes it); with bounds ``(D,)``, an entry whose descent direction leaves
    the box at 0 (``g_j > 0`` with ``lower_j >= 0``, ``g_j < 0`` with ``upper_j <= 0``) not at all either."""
    _intercept_only(model, T, w, "the data", offset)
    _, grads = model.objective_and_grad(X, T, 0.0, w, None if offset is None else offset[:, None])
    g = grads["linear.weight"]
    if lower is not None:
        g = torch.where((g > 0) & (lower >= 0), torch.zeros_like(g), g)
    if upper is not None:
        g = torch.where((g < 0) & (upper <= 0), torch.zeros_like(g), g)
    g = g.abs() if factor is None else torch.where(factor > 0, g.abs() / factor, torch.zeros_like(g))
    g = g.max().item()
    if not g > 0:
        raise UsageError("the gradient of the loss with respect to W is zero at the intercept-only fit (no feature "
                         "varies with the targets), so no penalty sequence can be derived; pass penalties=[...]")
    return g / max(l1_ratio, MIN_ALPHA_FOR_LAMBDA_MAX)


# --- scores on held-out rows ---------------------------------------------------------------------


def _row_scores(link: str, scoring: str, z: Tensor, T: Tensor) -> Tensor:
    """``(M,)`` per-row score of held-out logits ``z`` ``(M, K)`` against targets ``T`` ``(M, K)``."""
    if scoring == "mse":
        return ((z - T) ** 2).mean(1)
    if scoring == "log_loss":
        if link == "softmax":
            return -(T * torch.log_softmax(z, dim=1)).sum(1)
        return -(T * F.log_sigmoid(z) + (1 - T) * F.log_sigmoid(-z)).sum(1)
    if link == "softmax":
        return (z.argmax(1) == T.argmax(1)).to(z.dtype)
    return ((z > 0).to(z.dtype) == T).all(1).to(z.dtype)


def _score(link: str, scoring: str, z: Tensor, T: Tensor, w: Tensor | None) -> Tensor:
    s = _row_scores(link, scoring, z, T)
    return s.mean() if w is None else (s * w).sum() / w.sum()


# --- the result --------------------------------------------------------------------------------------


@dataclass
class RegularizationPath:
    """What :func:`regularization_path` computed (shapes in the module docstring).

    ``penalties`` ``(P,)`` decreasing; ``coef_path`` ``(P, K, D)`` and ``intercept_path`` ``(P, K)`` the full-data
    fits (tensors on the fit's device; zeros for the intercept without one); ``scores`` ``(k, P)`` held-out scores
    per fold, ``mean_scores`` / ``std_errors`` ``(P,)``; ``n_nonzero`` ``(P,)`` features with a non-zero weight in
    any output (glmnet's ``nzero``); ``n_iter`` / ``converged`` ``(P,)`` of the full-data fits; ``folds`` the
    ``(train, test)`` index pairs; ``best_index``, ``one_se_index`` and ``index`` (the one ``choice`` names);
    ``model`` the refit on all rows at ``penalty`` = ``penalties[index]``. ``fold_coef_path`` ``(k, P, K, D)`` and
    ``fold_intercept_path`` ``(k, P, K)`` when asked for (``keep_fold_coefs=True``), else None.
    """

    kind: str
    l1_ratio: float
    scoring: str
    greater_is_better: bool
    penalty_scaling: str
    solver: str
    penalties: np.ndarray
    coef_path: Tensor = field(repr=False)
    intercept_path: Tensor = field(repr=False)
    scores: np.ndarray = field(repr=False)
    mean_scores: np.ndarray = field(repr=False)
    std_errors: np.ndarray = field(repr=False)
    n_nonzero: np.ndarray = field(repr=False)
    n_iter: np.ndarray = field(repr=False)
    converged: np.ndarray = field(repr=False)
    folds: list = field(repr=False)
    best_index: int = 0
    one_se_index: int = 0
    choice: str = "best"
    model: Any = field(default=None, repr=False)
    fold_coef_path: Tensor | None = field(default=None, repr=False)
    fold_intercept_path: Tensor | None = field(default=None, repr=False)
    n_not_converged: int = 0
    rows: list[dict] = field(default_factory=list, repr=False)

    @property
    def index(self) -> int:
        """The chosen index: ``best_index`` for ``choice="best"``, ``one_se_index`` for ``"1se"``."""
        return self.best_index if self.choice == "best" else self.one_se_index

    @property
    def penalty(self) -> float:
        """The chosen penalty ``penalties[index]``."""
        return float(self.penalties[self.index])

    def model_at(self, index: int):
        """A copy of the refit model with the full-data path's parameters at ``penalties[index]``."""
        import copy

        model = copy.deepcopy(self.model)
        with torch.no_grad():
            model.linear.weight.copy_(self.coef_path[index])
            if model.linear.bias is not None:
                model.linear.bias.copy_(self.intercept_path[index])
        return model

    def table(self) -> list[dict]:
        """One dict per penalty: ``penalty``, ``mean_{scoring}``, ``se_{scoring}``, ``n_nonzero``, ``n_iter``,
        ``split{i}_{scoring}`` for each fold, ``choice`` (``"best"``, ``"1se"``, ``"best,1se"`` or ``""``)."""
        return [dict(row) for row in self.rows]

    def format(self, splits: bool = False) -> str:
        """The table as fixed-width text (the per-fold columns with ``splits=True``)."""
        s = self.scoring
        columns = ["penalty", f"mean_{s}", f"se_{s}", "n_nonzero", "n_iter"]
        if splits:
            columns += [f"split{i}_{s}" for i in range(len(self.folds))]
        columns.append("choice")
        cells = [[_cell(row[c]) for c in columns] for row in self.rows]
        widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
        lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
        lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
        return "\n".join(lines)


def _cell(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# --- the path --------------------------------------------------------------------------------------


def _rows(X: Tensor, index: Tensor) -> Tensor:
    """Rows ``index`` of a dense or CSR ``X`` (a CSR result for a CSR ``X``)."""
    return X.index_select(0, index) if X.layout == torch.strided else F.csr_rows(X, index)


def _check_penalties(penalties) -> np.ndarray:
    p = np.asarray(penalties, dtype=np.float64).reshape(-1) if not isinstance(penalties, Tensor) else \
        penalties.detach().to("cpu", torch.float64).numpy().reshape(-1)
    if p.size == 0:
        raise UsageError("penalties must hold at least one value, got an empty list")
    bad = ~np.isfinite(p) | (p <= 0)
    if bad.any():
        raise UsageError(f"penalties must be finite numbers > 0, got {p[bad][0]!r}")
    p = np.sort(p)[::-1].copy()
    if np.any(p[1:] == p[:-1]):
        raise UsageError(f"penalties must be distinct, got {p[np.flatnonzero(p[1:] == p[:-1])[0]]!r} twice")
    return p


def _targets(kind: str, y, n: int, n_classes: int | None, device, dtype) -> tuple[int, Tensor]:
    """The number of outputs K and the target matrix ``T`` ``(N, K)``."""
    y = validation.as_tensor(y, "y", device=device)
    if kind == "softmax":
        if n_classes is None:
            if y.dim() == 2 and y.shape[1] > 1:
                n_classes = int(y.shape[1])
            else:
                if y.is_floating_point() and not bool(torch.isfinite(y).all()):
                    raise UsageError("y contains a non-finite value")
                n_classes = int(y.max().item()) + 1 if y.numel() else 0
        if n_classes < 2:
            raise UsageError(f"kind='softmax' needs class indices 0..K-1 with K >= 2, got K = {n_classes}")
        k = n_classes
    elif y.dim() == 2:
        k = int(y.shape[1])
    else:
        k = 1
    T = _make_model(kind, 1, k, True).to(device=device, dtype=dtype).targets(y, n)
    return k, T


def regularization_path(
    X,
    y,
    *,
    kind: str = "binary",
    l1_ratio: float = 1.0,
    n_penalties: int = 100,
    penalties=None,
    penalty_min_ratio: float = 1e-4,
    cv=5,
    scoring: str | None = None,
    choice: str = "best",
    penalty_scaling: str = "mean",
    sample_weight=None,
    solver: str = "auto",
    tol: float = 1e-6,
    max_iter: int = 100,
    fit_intercept: bool = True,
    n_classes: int | None = None,
    seed: int = 0,
    keep_fold_coefs: bool = False,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float64",
    progress=None,
    penalty_factor=None,
    lower_bounds=None,
    upper_bounds=None,
    offset=None,
) -> RegularizationPath:
    """Fit a warm-started path of decreasing penalties, cross-validate it and refit at the chosen penalty.

    ``X`` ``(N, D)`` dense or sparse; ``y``: 0/1 labels ``(N,)`` (``kind="binary"``), a 0/1 matrix ``(N, K)``
    (``"multilabel"``), class indices ``(N,)`` in ``[0, K)`` or one-hot rows (``"softmax"``; ``n_classes`` fixes
    K) or real targets ``(N,)`` / ``(N, K)`` (``"linear"``). The objective, the penalty sequence (``n_penalties``
    log-spaced from ``lambda_max`` down to ``penalty_min_ratio lambda_max``, or the given ``penalties``, sorted
    decreasing), the folds and the choice are in the module docstring. ``cv``: the number of folds (stratified by
    class for binary and softmax, plain otherwise; seeded by ``seed``) or a sequence of ``(train, test)`` index
    pairs. ``scoring``: ``"log_loss"`` (default for classification), ``"accuracy"`` or ``"mse"`` (default and
    only score for ``kind="linear"``). ``choice``: ``"best"`` or ``"1se"``, the penalty of ``result.model``.
    ``sample_weight`` ``(N,)`` weighs the fits and the held-out scores. ``solver``: ``"auto"``
    (:func:`choose_path_solver`) or one of :data:`~torch_logreg.registry.EXACT_SOLVERS` (``"lbfgs"``: no L1);
    ``tol`` and ``max_iter`` are :func:`~torch_logreg.solvers.fit_exact`'s, per fit. Fits that stop short of ``tol`` are counted
    (``n_not_converged``) and reported in one :class:`~torch_logreg.solvers.ConvergenceWarning`.
    ``keep_fold_coefs`` keeps every fold's path (``fold_coef_path``). ``progress``, if given, is called after each fit
    as ``progress(stage, j, penalty)``: ``stage`` is ``"all"`` (the whole data) or ``"fold f"``, ``j`` the penalty's index.
    ``penalty_factor``, ``lower_bounds``, ``upper_bounds`` ``(D,)``: :func:`~torch_logreg.solvers.fit_exact`'s, the
    same at every penalty of the path (``kind="binary"``, dense X, ``solver`` ``"newton"`` or ``"cd"``; ``"auto"``
    takes newton); the penalty of coefficient ``j`` is then ``lambda f_j``, and ``lambda_max`` counts the
    features a penalty can zero (:func:`lambda_max`). ``offset`` ``(N,)``: a known term added to each row's logit
    (statsmodels' and glmnet's ``offset``), in every fit and every held-out score, under the same conditions.
    """
    arguments.choice("kind", kind, KINDS)
    l1_ratio = arguments.number("l1_ratio", l1_ratio, low=0, high=1)
    arguments.choice("choice", choice, CHOICES)
    arguments.choice("penalty_scaling", penalty_scaling, PENALTY_SCALINGS)
    scoring = SCORINGS_OF_KIND[kind][0] if scoring is None else scoring
    if scoring not in SCORINGS_OF_KIND[kind]:
        raise UsageError(f"scoring must be one of {list(SCORINGS_OF_KIND[kind])} for kind={kind!r}, got {scoring!r}")
    tol = arguments.number("tol", tol, low=0)
    max_iter = arguments.number("max_iter", max_iter, low=1, integer=True)
    if not isinstance(fit_intercept, (bool, np.bool_)):
        raise UsageError(f"fit_intercept must be True or False, got {fit_intercept!r}")
    if penalties is None:
        n_penalties = arguments.number("n_penalties", n_penalties, low=1, integer=True)
        if n_penalties < 2:  # the one penalty would be the largest, which zeroes every weight
            raise UsageError("n_penalties = 1 fits only the largest penalty, which zeroes every weight (an "
                             "intercept-only model); give 2 or more (or the penalties themselves)")
        penalty_min_ratio = arguments.number("penalty_min_ratio", penalty_min_ratio, low=0, high=1, low_open=True,
                                             high_open=True)
    else:
        penalties = _check_penalties(penalties)
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, default=torch.float64)

    X, y, sample_weight = (_writable(a) for a in (X, y, sample_weight))
    Xt = validation.as_tensor(X, "X")
    validation.check_square_range(Xt, dtype)
    Xt = Xt.to(device=device, dtype=dtype)
    validation.check_features(Xt)
    n, d = Xt.shape
    k, T = _targets(kind, y, n, n_classes, device, dtype)
    w = check_sample_weight(sample_weight, n, dtype, device)
    bias = bool(fit_intercept)
    terms = {name: v for name, v in (("penalty_factor", penalty_factor), ("lower_bounds", lower_bounds),
                                     ("upper_bounds", upper_bounds)) if v is not None}
    # what only the binary newton and cd fits take: these terms, the same in every fit, and the offset
    glm_only = [*terms, *(["offset"] if offset is not None else [])]
    if glm_only:
        if kind != "binary":
            raise UsageError(f"{glm_only[0]} applies to kind='binary' (one sigmoid output), not kind={kind!r}")
        if solver == "auto":  # the solvers that take per-coefficient terms
            solver = "newton"
        if solver not in ("newton", "cd"):
            raise UsageError(f"{glm_only[0]} is honoured by solver='newton' or 'cd', not {solver!r}")
    solver = choose_path_solver(solver, l1_ratio, (d + int(bias)) * k, sparse=Xt.layout != torch.strided)
    factor, lower, upper = (None if v is None else glm.vector(v, name, d, dtype, device, low=0 if name == "penalty_factor"
                                                              else -math.inf, infinite=name != "penalty_factor")
                            for name, v in (("penalty_factor", penalty_factor), ("lower_bounds", lower_bounds),
                                            ("upper_bounds", upper_bounds)))
    o = None if offset is None else glm.vector(offset, "offset", n, dtype, device)

    if isinstance(cv, (int, np.integer)) and not isinstance(cv, bool):
        stratify = kind in ("binary", "softmax")  # multilabel and linear targets: plain k-fold
        labels = (T.argmax(1) if kind == "softmax" else T[:, 0]).cpu().numpy()
        folds = folds_lib.kfold(labels, int(cv), seed=seed, stratify=stratify)
    else:
        folds = _check_folds(cv, n)

    model = _make_model(kind, d, k, bias).to(device=device, dtype=dtype)
    if penalties is None:
        top = lambda_max(model, Xt, T, w, l1_ratio, factor, lower, upper, o) * (1 + LAMBDA_MAX_MARGIN)
        penalties = top * np.geomspace(1.0, penalty_min_ratio, n_penalties) if n_penalties > 1 else np.array([top])
    else:
        _intercept_only(model, T, w, "the data", o)
    n_pen = penalties.shape[0]

    def fit_path(model, X, T, w, o, n_rows, on_fit, stage):
        """Fit every penalty in turn from the model's current parameters (warm starts)."""
        scale = n / n_rows if penalty_scaling == "sum" else 1.0
        stats = []
        for j, lam in enumerate(penalties):
            lam = float(lam) * scale
            result = fit_exact(model, X, T, solver=solver, l2=lam * (1 - l1_ratio), l1=lam * l1_ratio, sample_weight=w,
                               max_iter=max_iter, tol=tol, warn=False, check_separation=False, **terms,
                               **({} if o is None else {"offset": o}))
            stats.append(result)
            on_fit(j, model)
            if progress is not None:
                progress(stage, j, lam)
        return stats

    # the full-data path
    coef_path = torch.empty(n_pen, k, d, dtype=dtype, device=device)
    intercept_path = torch.zeros(n_pen, k, dtype=dtype, device=device)

    def keep_full(j, m):
        coef_path[j] = m.linear.weight.detach()
        if bias:
            intercept_path[j] = m.linear.bias.detach()

    full_stats = fit_path(model, Xt, T, w, o, n, keep_full, "all")

    # the folds
    scores = torch.empty(len(folds), n_pen, dtype=dtype, device=device)
    fold_coefs = torch.empty(len(folds), n_pen, k, d, dtype=dtype, device=device) if keep_fold_coefs else None
    fold_intercepts = torch.zeros(len(folds), n_pen, k, dtype=dtype, device=device) if keep_fold_coefs else None
    fold_stats = []
    for f, (train, test) in enumerate(folds):
        tr = torch.as_tensor(train, dtype=torch.int64, device=device)
        te = torch.as_tensor(test, dtype=torch.int64, device=device)
        X_tr, X_te, T_tr, T_te = _rows(Xt, tr), _rows(Xt, te), T[tr], T[te]
        w_tr = None if w is None else w[tr]
        w_te = None if w is None else w[te]
        o_tr, o_te = (None, None) if o is None else (o[tr], o[te])
        if w_te is not None and not bool(w_te.sum() > 0):
            raise UsageError(f"the held-out rows of fold {f} all have weight zero: they cannot be scored")
        fold_model = _make_model(kind, d, k, bias).to(device=device, dtype=dtype)
        _intercept_only(fold_model, T_tr, w_tr, f"fold {f}", o_tr)

        def score_fit(j, m, f=f, X_te=X_te, T_te=T_te, w_te=w_te, o_te=o_te):
            with torch.no_grad():
                z = m.logits(X_te)
                scores[f, j] = _score(m.link, scoring, z if o_te is None else z + o_te[:, None], T_te, w_te)
            if fold_coefs is not None:
                fold_coefs[f, j] = m.linear.weight.detach()
                if bias:
                    fold_intercepts[f, j] = m.linear.bias.detach()

        fold_stats += fit_path(fold_model, X_tr, T_tr, w_tr, o_tr, len(train), score_fit, f"fold {f + 1}")

    scores_np = scores.to("cpu", torch.float64).numpy()
    mean = scores_np.mean(0)
    se = scores_np.std(0, ddof=1) / math.sqrt(len(folds))
    greater = SCORINGS[scoring]
    best = best_index(mean, greater)
    one_se = one_standard_error_index(mean, se, greater)
    n_nonzero = (coef_path != 0).any(1).sum(1).cpu().numpy()
    n_iter = np.array([r.n_iter for r in full_stats])
    converged = np.array([r.stop_reason == "converged" for r in full_stats])
    short = [r for r in full_stats + fold_stats if r.stop_reason != "converged"]
    if short:
        worst = max(r.grad_norm for r in short)
        warnings.warn(f"regularization_path: {len(short)} of {len(full_stats) + len(fold_stats)} fits stopped before "
                      f"tol={tol:g} (largest optimality measure {worst:.3e}; solver {solver!r}, max_iter={max_iter}); "
                      "increase max_iter, loosen tol or standardise the features", ConvergenceWarning, stacklevel=2)

    rows = []
    for j in range(n_pen):
        row: dict[str, Any] = {"penalty": float(penalties[j]), f"mean_{scoring}": float(mean[j]), f"se_{scoring}": float(se[j]),
               "n_nonzero": int(n_nonzero[j]), "n_iter": int(n_iter[j])}
        row.update({f"split{i}_{scoring}": float(scores_np[i, j]) for i in range(len(folds))})
        row["choice"] = ",".join(name for name, idx in (("best", best), ("1se", one_se)) if idx == j)
        rows.append(row)

    result = RegularizationPath(
        kind=kind, l1_ratio=l1_ratio, scoring=scoring, greater_is_better=greater, penalty_scaling=penalty_scaling,
        solver=solver, penalties=penalties, coef_path=coef_path, intercept_path=intercept_path, scores=scores_np,
        mean_scores=mean, std_errors=se, n_nonzero=n_nonzero, n_iter=n_iter, converged=converged, folds=folds,
        best_index=best, one_se_index=one_se, choice=choice, model=model, fold_coef_path=fold_coefs,
        fold_intercept_path=fold_intercepts, n_not_converged=len(short), rows=rows,
    )
    result.model = result.model_at(result.index)
    return result


def _writable(a):
    """A read-only NumPy array copied (torch cannot view one safely); anything else as it is."""
    return np.array(a) if isinstance(a, np.ndarray) and not a.flags.writeable else a


def _check_folds(cv, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``cv`` as a list of at least 2 ``(train, test)`` pairs of int64 row indices within ``[0, N)``."""
    if isinstance(cv, (str, bytes)) or not isinstance(cv, Sequence) and not hasattr(cv, "__iter__"):
        raise UsageError(f"cv must be an integer >= 2 or a sequence of (train, test) index pairs, got {cv!r}")
    folds = []
    for f, pair in enumerate(cv):
        try:
            train, test = pair
        except (TypeError, ValueError):
            raise UsageError(f"cv[{f}] must be a (train, test) pair of index arrays") from None
        train, test = (np.asarray(a.cpu() if isinstance(a, Tensor) else a).reshape(-1) for a in (train, test))
        for name, a in (("train", train), ("test", test)):
            if a.size == 0 or a.dtype.kind not in "iu" or a.min() < 0 or a.max() >= n:
                raise UsageError(f"cv[{f}] {name} rows must be a non-empty array of integers in [0, {n}), got {a!r}")
        folds.append((train.astype(np.int64), test.astype(np.int64)))
    if len(folds) < 2:
        raise UsageError(f"cv must give at least 2 (train, test) pairs, got {len(folds)}")
    return folds
