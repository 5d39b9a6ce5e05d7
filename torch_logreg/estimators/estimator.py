"""A scikit-learn classifier on top of the models and solvers of this package.

:class:`LogisticRegressionClassifier` minimises scikit-learn's ``LogisticRegression`` objective

    C sum_n w_n loss_n + (1 - l1_ratio) ||W||^2 / 2 + l1_ratio ||W||_1

(intercept unpenalised; ``w_n`` = sample weight x class weight; binary: the logistic loss of
``classes_[1]`` against ``classes_[0]``; three or more classes: the multinomial loss), which,
divided by ``C N``, is :func:`torch_logreg.solvers.fit_exact`'s objective with
``l2 = (1 - l1_ratio) / (C N)`` and ``l1 = l1_ratio / (C N)``. ``penalty="l2"`` is
``l1_ratio = 0``, ``"l1"`` is ``l1_ratio = 1`` and ``None`` drops the penalty.

After an unpenalised fit, ``inference_`` holds standard errors, tests and likelihood statistics
(:class:`torch_logreg.inference.InferenceResult`, statsmodels' names), with the covariance type
``cov_type`` (clusters: ``fit(..., groups=...)``) and the reading of the weights ``weights_kind``.

An unpenalised fit is run to the maximum-likelihood estimate, not to scikit-learn's loose default.
With ``tol=None`` it stops when the largest gradient entry is at most
``max(1e-10 w, 100 eps s)``, and ``inference_`` is given only when it is at most
``max(1e-8 w, 1000 eps s)``, whatever ``tol`` and the solver were. Here ``w`` is the mean sample
weight (1 without weights), ``eps`` the machine epsilon of ``dtype`` and ``s = max_j (1/N) sum_n
w_n |x~_nj|`` over the columns of ``X~ = [1, X]``, the largest value a gradient entry can take:
rounding leaves the gradient at the optimum near ``eps s``, so columns in large units (values in
the thousands or millions) do not make the levels unreachable. Newton, the default solver of such
fits, converges quadratically and lands at the rounding floor, far below both levels.
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning as SklearnConvergenceWarning
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import Tensor

from .. import arguments, validation
from .. import functional as F
from ..devices import resolve_device, resolve_dtype
from ..errors import UsageError
from ..inference import COV_TYPES, WEIGHTS_KINDS, infer
from ..models import LogisticRegression, SoftmaxRegression
from ..registry import EXACT_SOLVERS, LOOP_SOLVERS
from ..solvers import ConvergenceWarning as SolverConvergenceWarning
from ..solvers import SolverResult, fit_exact, is_exact
from ..solvers.dispatch import resolve as resolve_solver
from ..solvers.glm import vector

PENALTIES = ("l2", "l1", "elasticnet", "firth", None)
#: the scipy.sparse formats ``fit`` and the predictions take as they are (others are converted to CSR)
SPARSE_FORMATS = ("csr", "csc")
SOLVERS = ("auto", *EXACT_SOLVERS, *LOOP_SOLVERS)

#: ``tol=None``: the gradient level of a penalised fit (scikit-learn's default), absolute
PENALISED_TOL = 1e-4
#: ``tol=None`` of an unpenalised fit, ``max(UNPENALISED_TOL w, UNPENALISED_ROUNDING eps s)`` (module docstring):
#: an absolute level and a multiple of the rounding floor of the gradient (measured on the test data: 1e-18 s to
#: 1e-15 s in float64, 1e-9 s to 1e-7 s in float32)
UNPENALISED_TOL, UNPENALISED_ROUNDING = 1e-10, 100
#: ``inference_`` needs the largest gradient entry at most ``max(INFERENCE_TOL w, INFERENCE_ROUNDING eps s)``
INFERENCE_TOL, INFERENCE_ROUNDING = 1e-8, 1000


class ConvergenceWarning(SolverConvergenceWarning, SklearnConvergenceWarning):
    """The fit stopped before its gradient reached ``tol``: both :class:`torch_logreg.solvers.ConvergenceWarning`
    and scikit-learn's ``ConvergenceWarning``, so either class filters or catches it."""


class InferenceUnavailable(AttributeError, ValueError):
    """``inference_`` was read after a fit that cannot support it (penalised, separated, ...)."""


class LogisticRegressionClassifier(ClassifierMixin, BaseEstimator):
    """Logistic (binary) and multinomial regression, scikit-learn API, fitted in PyTorch.

    Parameters
    ----------
    penalty : {"l2", "l1", "elasticnet", "firth", None}, default "l2"
        The penalty on the weights (never on the intercept). ``"firth"``: Firth's bias-reduced logit
        (the likelihood penalised by ``(1/2) log det I``, finite under separation; binary,
        ``solver="newton"``; ``C`` is not used); its ``inference_`` has the standard errors of the
        penalised information, as R's logistf.
    C : float > 0, default 1.0
        Inverse regularisation strength: it multiplies the summed loss.
    l1_ratio : float in [0, 1] or None, default None
        The L1 share of an elastic-net penalty; required with ``penalty="elasticnet"``.
    solver : {"auto", "newton", "lbfgs", "proximal", "cd", "gd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", \
"adamw"}, default "auto"
        ``"newton"``: Newton/IRLS (proximal Newton with an L1 term). ``"lbfgs"``: L-BFGS (no L1).
        ``"proximal"``: accelerated proximal gradient (L1 and elastic net without a Hessian, for
        many features). ``"cd"``: proximal Newton with coordinate descent (L1 and elastic net on
        many sparse features; solved on the CPU). ``"auto"``: :func:`torch_logreg.solvers.choose_solver`'s
        rule, by the
        Hessian's rows: with an L1 term proximal Newton on small problems and the proximal
        gradient on wide ones (sparse ``X`` counts as wide sooner); without one Newton on small
        problems (a larger bound when unpenalised) and L-BFGS beyond. The first-order loops
        ``"gd" | "momentum" | "nesterov" | "adagrad" | "rmsprop" | "adam" | "adamw"`` (:func:`torch_logreg.fit`, full
        batch) take ``learning_rate``; they support the L2 penalty or none, with sample and class weights (adamw
        without its decoupled weight decay: the penalty is the objective's, so it steps as adam).
    max_iter : int >= 1, default 100
        Iterations of the solver (epochs for the first-order loops).
    tol : float >= 0 or None, default None
        Stop when the largest absolute entry of the gradient of the objective divided by
        ``C N`` (of the minimum-norm subgradient with L1) is at most ``tol``; the first-order
        loops use the Euclidean norm. ``None``: ``1e-4`` for a penalised fit (scikit-learn's
        default); for ``penalty=None``, ``max(1e-10 w, 100 eps s)`` (module docstring: ``1e-10``
        unless the columns are in large units), the maximum-likelihood estimate to about rounding
        level. The value used is ``tol_``.
    fit_intercept : bool, default True
    class_weight : dict, "balanced" or None, default None
        Multiplies the sample weights per class; "balanced" is ``sum(w) / (K * sum of w in the
        class)``, as scikit-learn computes it.
    device : str, default "cpu"
        "cpu", "cuda", "cuda:N" or "auto" (a GPU when there is one).
    dtype : {"float64", "float32"}, default "float64"
        The precision of the fit. ``X`` must have columns whose squares are finite in it (the
        Hessian sums products of two columns): a larger column is refused with a ``ValueError``.
    learning_rate : float > 0, default 0.1
        Step size of the first-order loops; ignored by the exact solvers.
    cov_type : {"nonrobust", "HC0", "HC1", "HC2", "HC3", "cluster"}, default "nonrobust"
        The covariance of ``inference_`` (statsmodels' names; :mod:`torch_logreg.inference`).
        ``"cluster"`` needs ``fit(..., groups=...)``; ``"HC2"`` and ``"HC3"`` binary models only.
    weights_kind : {"freq_weights", "var_weights"}, default "freq_weights"
        How ``inference_`` reads the sample weights (times the class weights): as frequencies
        (``nobs = sum w``) or as variance weights (``nobs = N``), statsmodels' GLM names.
    penalty_factor : (D,) array of floats >= 0 or None, default None
        Per-feature multiplier of the L1 and L2 penalty (0: unpenalised), glmnet's ``penalty.factor``
        taken as given (glmnet rescales the factors to sum to D).
    lower_bounds, upper_bounds : (D,) arrays (``-inf`` / ``inf`` allowed) or None, default None
        Bounds on the coefficients (glum's names), e.g. ``lower_bounds=[0, -inf]`` for an effect that
        must not be negative. ``inference_`` is not given for a bounded fit.

    warm_start : bool, default False
        True: a refit starts from the previous fit's coefficients (scikit-learn's ``warm_start``) when they have
        the shape of the new problem (same features, classes and intercept), else from zeros. A refit on the same
        data then stops at once (Newton: within two steps).

    ``penalty_factor``, the bounds, ``penalty="firth"`` and ``fit(..., offset=)`` are for two classes, dense
    ``X`` and ``solver`` in ``"auto"``, ``"newton"``, ``"cd"`` (:mod:`torch_logreg.solvers.glm`).

    Non-convergence (the gradient above ``tol`` after ``max_iter`` iterations or a stalled line
    search) is a :class:`ConvergenceWarning` that states the gradient reached (with separated classes
    the :class:`~torch_logreg.solvers.separation.SeparationWarning` takes its place: the optimum does not exist).

    Attributes
    ----------
    classes_ : (K,) array; coef_ : (1, D) binary or (K, D); intercept_ : (1,) or (K,);
    n_iter_ : (1,) int array; n_features_in_, feature_names_in_ (when X has column names);
    tol_ : the stopping level used (``tol``, or what ``None`` resolved to);
    grad_norm_ : at the result, the largest absolute entry of the gradient of the objective divided by ``C N``
    (of the minimum-norm subgradient with L1), the measure the exact solvers' ``tol`` and ``inference_`` test;
    model_ : the fitted torch model; result_ : the solver's
    :class:`~torch_logreg.solvers.SolverResult` (exact solvers) or ``History`` (first-order);
    inference_ : :class:`~torch_logreg.inference.InferenceResult` after an unpenalised fit.
    """

    def __init__(
        self,
        penalty="l2",
        C=1.0,
        l1_ratio=None,
        solver="auto",
        max_iter=100,
        tol=None,
        fit_intercept=True,
        class_weight=None,
        device="cpu",
        dtype="float64",
        learning_rate=0.1,
        cov_type="nonrobust",
        weights_kind="freq_weights",
        penalty_factor=None,
        lower_bounds=None,
        upper_bounds=None,
        warm_start=False,
    ):
        self.penalty = penalty
        self.C = C
        self.l1_ratio = l1_ratio
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.fit_intercept = fit_intercept
        self.class_weight = class_weight
        self.device = device
        self.dtype = dtype
        self.learning_rate = learning_rate
        self.cov_type = cov_type
        self.weights_kind = weights_kind
        self.penalty_factor = penalty_factor
        self.lower_bounds = lower_bounds
        self.upper_bounds = upper_bounds
        self.warm_start = warm_start

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # scipy.sparse X is fitted and predicted on without densifying
        return tags

    # -- parameter checks --
    def resolve_params(self, n_params: int, sparse: bool = False) -> tuple[str, float]:
        """Validate the hyper-parameters; return the solver to use for ``n_params`` parameters (on
        ``sparse`` X or not) and the L1 share."""
        arguments.choice("penalty", self.penalty, PENALTIES)
        arguments.number("C", self.C, low=0, low_open=True)
        if self.l1_ratio is not None:
            arguments.number("l1_ratio", self.l1_ratio, low=0, high=1)
        if self.penalty == "elasticnet" and self.l1_ratio is None:
            raise UsageError("penalty='elasticnet' needs l1_ratio, a finite number >= 0 and <= 1 (0: pure L2, 1: pure L1)")
        arguments.number("max_iter", self.max_iter, low=1, integer=True)
        if self.tol is not None:
            arguments.number("tol", self.tol, low=0)
        if not isinstance(self.fit_intercept, (bool, np.bool_)):
            raise UsageError(f"fit_intercept must be True or False, got {self.fit_intercept!r}")
        if not isinstance(getattr(self, "warm_start", False), (bool, np.bool_)):
            raise UsageError(f"warm_start must be True or False, got {self.warm_start!r}")
        self._check_class_weight()
        arguments.number("learning_rate", self.learning_rate, low=0, low_open=True)
        if not isinstance(self.cov_type, str) or self.cov_type not in COV_TYPES:
            raise UsageError(f"cov_type must be one of {list(COV_TYPES)}, got {self.cov_type!r}")
        if not isinstance(self.weights_kind, str) or self.weights_kind not in WEIGHTS_KINDS:
            raise UsageError(f"weights_kind must be one of {list(WEIGHTS_KINDS)}, got {self.weights_kind!r}")
        l1_share = {"l2": 0.0, "l1": 1.0, "firth": 0.0, None: 0.0}.get(self.penalty, self.l1_ratio)
        # the loop's rules take no L1 term here (the exact solvers minimise it)
        solver = resolve_solver(self.solver, n_params, l1=l1_share, penalised=self.penalty not in (None, "firth"),
                                sparse=sparse, choices=SOLVERS, term=f"penalty={self.penalty!r}")
        if self._glm_terms():
            if self.solver not in ("auto", "newton", "cd"):
                raise UsageError(f"penalty_factor, lower_bounds, upper_bounds, penalty='firth' and offsets are fitted by "
                                 f"solver in ['auto', 'newton', 'cd'], not {self.solver!r}")
            solver = "cd" if self.solver == "cd" else "newton"
        return solver, float(l1_share)

    def _glm_terms(self, offset=None) -> bool:
        """Whether the fit has a term of :mod:`torch_logreg.solvers.glm` (offset, factors, bounds, Firth)."""
        extras = (offset, self.penalty_factor, self.lower_bounds, self.upper_bounds)
        return self.penalty == "firth" or any(v is not None for v in extras)

    def _check_groups(self, groups, n: int, n_classes: int) -> np.ndarray | None:
        """``groups`` against ``cov_type`` and ``X``: ``(N,)`` integer cluster codes, or None without clusters."""
        if self.cov_type in ("HC2", "HC3") and n_classes > 2:
            raise UsageError(
                f"cov_type={self.cov_type!r} (leverage-corrected) is available for binary models only, but y has "
                f"{n_classes} classes; use 'HC0', 'HC1' or 'cluster'"
            )
        if self.cov_type != "cluster":
            if groups is not None:
                raise UsageError(
                    f"groups are used by cov_type='cluster' only, but cov_type={self.cov_type!r}: set cov_type='cluster' "
                    "or leave groups out"
                )
            return None
        if groups is None:
            raise UsageError("cov_type='cluster' needs groups, the cluster label of each sample: fit(X, y, groups=labels)")
        labels = np.asarray(groups.detach().cpu() if isinstance(groups, torch.Tensor) else groups)
        if labels.ndim != 1 or labels.shape[0] != n:
            raise UsageError(f"groups must hold one label per row of X, shape ({n},), got shape {labels.shape}")
        if labels.dtype.kind in "fc":
            missing = ~np.isfinite(labels)
        elif labels.dtype.kind == "O":
            missing = np.array([v is None or (isinstance(v, numbers.Number) and v != v) for v in labels], dtype=bool)
        else:
            missing = np.zeros(n, dtype=bool)
        if missing.any():
            raise UsageError(f"groups has a missing or non-finite label at sample {int(np.flatnonzero(missing)[0])}")
        try:
            uniques, codes = np.unique(labels, return_inverse=True)
        except TypeError:
            raise UsageError("groups must hold labels of one comparable type (numbers or strings), not a mixture") from None
        if len(uniques) < 2:
            raise UsageError(f"cov_type='cluster' needs at least 2 groups, but groups holds the single label {uniques[0]!r}")
        return codes.reshape(-1)

    def _check_class_weight(self) -> None:
        if not (self.class_weight is None or self.class_weight == "balanced" or isinstance(self.class_weight, dict)):
            raise UsageError(f"class_weight must be None, 'balanced' or a dict {{class: weight}}, got {self.class_weight!r}")

    # -- fitting --
    def _labelled_rows(self, X, y, sample_weight):
        """``X`` and ``y`` validated (dense or ``scipy.sparse`` X), ``classes_`` set, and the rows'
        weights: ``(X, y, y_index, sw, weighted)``, ``sw`` ``(N,)`` the sample weights times the
        class weights (ones for neither), ``weighted`` whether either was given."""
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], ensure_min_samples=1, accept_sparse=SPARSE_FORMATS)
        check_classification_targets(y)
        self.classes_, y_index = np.unique(y, return_inverse=True)
        k = len(self.classes_)
        if k < 2:
            raise UsageError(
                f"y contains only one class ({self.classes_[0]}); {type(self).__name__} needs "
                "samples of at least 2 classes"
            )
        weighted = sample_weight is not None or self.class_weight is not None
        sw = _sample_weight(sample_weight, X.shape[0])
        self._check_class_weight()
        if self.class_weight is not None:
            sw = sw * compute_class_weight(self.class_weight, classes=self.classes_, y=y, sample_weight=sw)[y_index]
        validation.check_weighted_classes(y_index, sw, list(self.classes_))
        return X, y, y_index, sw, weighted

    def fit(self, X, y, sample_weight=None, groups=None, offset=None):
        """Fit on ``X`` (N, D) and labels ``y`` (N,); ``sample_weight`` (N,) optional; ``groups`` (N,), the
        cluster of each row of ``X``, for ``cov_type="cluster"`` only; ``offset`` (N,), a known term added to
        each row's logit (two classes; statsmodels' GLM ``offset``): pass it to the predictions too.

        ``X`` may be a ``scipy.sparse`` matrix or array: it is fitted as a sparse tensor, never densified;
        ``inference_`` then is not available (it reads dense rows).

        ``inference_`` names the parameters after ``X``'s columns (a DataFrame's) and the response after
        ``y`` (a named pandas Series; else ``"y"``).
        """
        name = None if isinstance(y, np.ndarray) else getattr(y, "name", None)
        dep_variable = str(name) if name is not None and str(name) else "y"
        X, y, y_index, sw, weighted = self._labelled_rows(X, y, sample_weight)
        k = len(self.classes_)
        n, d = X.shape
        n_params = (d + int(bool(self.fit_intercept))) * (1 if k == 2 else k)
        solver, l1_share = self.resolve_params(n_params, sparse=validation.is_sparse(X))
        glm_terms = self._glm_terms(offset)
        if glm_terms and (k != 2 or validation.is_sparse(X)):
            raise UsageError("offset, penalty_factor, lower_bounds, upper_bounds and penalty='firth' need two classes "
                             f"and dense X; this y has {k} classes" + (" and X is sparse" if validation.is_sparse(X) else ""))
        if glm_terms and solver not in ("newton", "cd"):  # "auto" chose another for this size
            solver = "newton"
        codes = self._check_groups(groups, n, k)
        device = resolve_device(self.device)
        dtype = resolve_dtype(self.dtype)

        if self.penalty in (None, "firth"):
            l2 = l1 = 0.0
        else:
            l2, l1 = (1.0 - l1_share) / (self.C * n), l1_share / (self.C * n)

        bias = bool(self.fit_intercept)
        model = LogisticRegression(d, bias=bias) if k == 2 else SoftmaxRegression(d, k, bias=bias)
        model = model.to(device=device, dtype=dtype)
        self._warm_start(model)
        # the exact solvers and inference_ form X~^T S X~: refuse columns whose squares overflow
        # dtype here, on X as passed, before a conversion could turn large values into infinities
        Xt = validation.as_tensor(X, "X") if validation.is_sparse(X) else _to_tensor(X, None, torch.device("cpu"))
        validation.check_square_range(Xt, dtype)
        Xt = Xt.to(device=device, dtype=dtype)
        yt = torch.as_tensor(y_index, device=device)
        wt = _to_tensor(sw, dtype, device) if weighted else None
        eps, mean_w, scale = torch.finfo(dtype).eps, float(sw.mean()), _gradient_scale(X, sw)
        ml_tol = max(UNPENALISED_TOL * mean_w, UNPENALISED_ROUNDING * eps * scale)
        if self.tol is not None:
            tol = float(self.tol)
        else:
            tol = PENALISED_TOL if self.penalty not in (None, "firth") else ml_tol

        self._inference_error = None
        self._inference = None
        separated = False
        if is_exact(solver):
            extras = {}
            if glm_terms:
                extras = dict(offset=offset, penalty_factor=self.penalty_factor, lower_bounds=self.lower_bounds,
                              upper_bounds=self.upper_bounds, penalty="firth" if self.penalty == "firth" else None)
            result = fit_exact(model, Xt, yt, solver=solver, l2=l2, l1=l1, sample_weight=wt, max_iter=int(self.max_iter),
                               tol=tol, warn=False, check_separation=self.penalty is None, **extras)
            n_iter, grad_norm, stop_reason = result.n_iter, result.grad_norm, result.stop_reason
            gradient = f"max|gradient| = {grad_norm:.3e}"
            summary_result = result
            if result.separation is not None:
                from ..solvers.separation import SeparationWarning

                warnings.warn(result.separation.message, SeparationWarning, stacklevel=2)
                separated = True
        else:
            from ..train import fit as first_order_fit

            # adamw's decoupled decay is off: the penalty is the objective's L2 term, in the gradient as for the others
            decay = {"weight_decay": 0.0} if solver == "adamw" else {}
            result = first_order_fit(
                model, Xt, yt, sample_weight=wt, solver=solver, lr=float(self.learning_rate), epochs=int(self.max_iter),
                l2=l2, tol=tol, device=device, dtype=dtype, **decay,
            )
            n_iter, stop_reason = result.n_epochs, result.stop_reason
            grad_norm, euclidean = _gradient_norms(model, Xt, yt, wt, l2)
            gradient = f"|gradient| = {euclidean:.3e} (Euclidean; max|gradient| = {grad_norm:.3e})"
            summary_result = SolverResult.from_history(solver, result, l2=l2, tol=tol)
        if stop_reason != "converged" and not separated:
            self._warn_not_converged(solver, n_iter, stop_reason, gradient, tol)

        self.model_ = model
        self.result_ = result
        self.n_iter_ = np.array([n_iter], dtype=np.int32)
        self.tol_ = tol
        self.grad_norm_ = float(grad_norm)
        W = model.linear.weight.detach().to("cpu", torch.float64).numpy()
        self.coef_ = W.copy()
        if bias:
            self.intercept_ = model.linear.bias.detach().to("cpu", torch.float64).numpy().copy()
        else:
            self.intercept_ = np.zeros(W.shape[0])

        bounded = self.lower_bounds is not None or self.upper_bounds is not None
        if bounded and self.penalty is None:
            self._inference_error = ("the coefficients were fitted within bounds, where the likelihood's curvature does "
                                     "not give their standard errors")
        elif self.penalty in (None, "firth"):
            names = [str(c) for c in getattr(self, "feature_names_in_", [])] or None
            # grad_tol=inf: the gradient is checked below, after infer's checks for separation and a singular
            # design, which explain a fit that cannot reach the optimum better than its gradient; infer's
            # warnings (collinearity) are passed on only with a result
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    self._inference = infer(
                        model, Xt, yt, wt, result=summary_result, grad_tol=math.inf, feature_names=names,
                        class_names=[str(c) for c in self.classes_], dep_variable=dep_variable, cov_type=self.cov_type,
                        groups=codes, weights_kind=self.weights_kind, offset=offset, penalty=self.penalty,
                    )
                except ValueError as exc:
                    self._inference_error = str(exc)
            needed = max(INFERENCE_TOL * mean_w, INFERENCE_ROUNDING * eps * scale)
            if self._inference is not None and not grad_norm <= needed:
                self._inference = None
                remedies = [f"a smaller tol (tol=None stops at {ml_tol:.3e})", "a larger max_iter"]
                remedies += ["solver='newton'"] if solver != "newton" else []
                self._inference_error = (
                    f"the fit stopped short of the maximum-likelihood estimate: the largest entry of the gradient of the "
                    f"objective is {grad_norm:.3e}, above the {needed:.3e} that standard errors need; refit with "
                    f"{_one_of(remedies)}"
                )
            for caught_warning in caught if self._inference is not None else []:
                warnings.warn(caught_warning.message, stacklevel=2)
        return self

    def _warm_start(self, model) -> None:
        """With ``warm_start``, copy the previous fit's parameters into ``model`` when their shapes agree."""
        previous = getattr(self, "model_", None) if getattr(self, "warm_start", False) else None
        if previous is None:
            return
        old, new = previous.linear, model.linear
        if old.weight.shape != new.weight.shape or (old.bias is None) != (new.bias is None):
            return
        with torch.no_grad():
            new.weight.copy_(old.weight)
            if new.bias is not None:
                new.bias.copy_(old.bias)

    def _warn_not_converged(self, solver: str, n_iter: int, stop_reason: str, gradient: str, tol: float) -> None:
        """The :class:`ConvergenceWarning` of a fit that stopped with ``gradient`` (its text) above ``tol``."""
        unit = "iterations" if solver in EXACT_SOLVERS else "epochs"
        if stop_reason in ("max_iter", "max_epochs"):
            why = f"did not converge in {n_iter} {unit} (max_iter={self.max_iter})"
        elif stop_reason == "line_search_failed":
            why = f"stopped after {n_iter} {unit}: the line search could not decrease the objective"
        else:
            why = f"stopped after {n_iter} {unit} ({stop_reason})"
        if solver in EXACT_SOLVERS:
            advice = ["increase max_iter", *(["use solver='newton'"] if solver != "newton" else []), "scale the features"]
            advice += ["loosen tol"] if self.penalty is not None else []
        else:
            advice = ["increase max_iter", "raise learning_rate", "use solver='newton'"]
        warnings.warn(
            f"{solver} {why}; {gradient} > tol={tol:.3g}: {_one_of(advice)}.",
            ConvergenceWarning,
            stacklevel=3,
        )

    @property
    def inference_(self):
        """Standard errors, z-values, p-values, confidence intervals and likelihood statistics
        of an unpenalised fit (:class:`~torch_logreg.inference.InferenceResult`)."""
        check_is_fitted(self, "coef_")
        if self.penalty not in (None, "firth"):
            raise InferenceUnavailable(
                f"inference_ needs an unpenalised fit (penalty=None), but this estimator was fit with "
                f"penalty={self.penalty!r}: penalised coefficients are shrunk and their standard errors "
                "would be wrong. Set penalty=None and refit."
            )
        if self._inference is None:
            raise InferenceUnavailable(f"inference_ is not available for this fit: {self._inference_error}")
        return self._inference

    # -- predictions --
    def _logits(self, X, offset=None) -> torch.Tensor:
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32], accept_sparse=SPARSE_FORMATS)
        layer = self.model_.linear
        if validation.is_sparse(X):
            Xt = validation.as_tensor(X, "X", dtype=layer.weight.dtype, device=layer.weight.device)
        else:
            Xt = _to_tensor(X, layer.weight.dtype, layer.weight.device)
        with torch.no_grad():
            z = F.linear(Xt, layer.weight, layer.bias)
        if offset is not None:
            if z.shape[1] != 1:
                raise UsageError("offset is supported for two classes only")
            z = z + vector(offset, "offset", z.shape[0], z.dtype, z.device)[:, None]
        return z

    def decision_function(self, X, offset=None):
        """Logits: ``(N,)`` for two classes (positive: ``classes_[1]``; plus ``offset`` ``(N,)``), else ``(N, K)``."""
        z = self._logits(X, offset).to("cpu", torch.float64).numpy()
        return z[:, 0] if z.shape[1] == 1 else z

    def predict_proba(self, X, offset=None):
        """``(N, K)`` class probabilities, columns in the order of ``classes_`` (two classes: ``offset`` ``(N,)``
        added to the logits, as in the fit)."""
        z = self._logits(X, offset)
        if z.shape[1] == 1:
            p = torch.sigmoid(z)
            proba = torch.cat([torch.sigmoid(-z), p], dim=1)
        else:
            proba = torch.softmax(z, dim=1)
        return proba.to("cpu", torch.float64).numpy()

    def predict_log_proba(self, X, offset=None):
        """``(N, K)`` log-probabilities, computed stably from the logits (plus ``offset``)."""
        z = self._logits(X, offset)
        if z.shape[1] == 1:
            logp = torch.cat([F.log_sigmoid(-z), F.log_sigmoid(z)], dim=1)
        else:
            logp = torch.log_softmax(z, dim=1)
        return logp.to("cpu", torch.float64).numpy()

    def predict(self, X, offset=None):
        """Labels from ``classes_``: the positive class where the logit (plus ``offset``) is > 0, else the argmax."""
        z = self._logits(X, offset)
        idx = (z[:, 0] > 0).to(torch.int64) if z.shape[1] == 1 else z.argmax(dim=1)
        return self.classes_[idx.cpu().numpy()]


def _sample_weight(sample_weight, n: int) -> np.ndarray:
    """``(N,)`` float64 weights (ones when None); finite, non-negative, not all zero."""
    if sample_weight is None:
        return np.ones(n)
    if isinstance(sample_weight, numbers.Real):
        return np.full(n, float(sample_weight))
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.ndim != 1 or w.shape[0] != n:
        raise UsageError(f"sample_weight must have shape ({n},), got {w.shape}")
    if not np.all(np.isfinite(w)):
        raise UsageError("sample_weight contains NaN or infinity")
    if np.any(w < 0):
        raise UsageError(f"sample_weight must be non-negative, got {w[w < 0][0]!r} at sample {int(np.argmax(w < 0))}")
    if not np.any(w > 0):
        raise UsageError("sample_weight sums to zero: at least one sample needs a positive weight")
    return w


def _one_of(items: list[str]) -> str:
    """``"a, b or c"``."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def _gradient_scale(X: np.ndarray, sw: np.ndarray) -> float:
    """``max_j (1/N) sum_n w_n |x~_nj|`` over the columns of ``[1, X]``: the largest value an entry of the gradient of
    ``(1/N) sum_n w_n loss_n`` can take (``|p - t| <= 1``), the scale of its rounding error."""
    n = X.shape[0]
    if validation.is_sparse(X):
        col_sums = np.asarray(abs(X).astype(np.float64).T @ sw).reshape(-1)
    else:
        col_sums = sw @ np.abs(X.astype(np.float64, copy=False))
    return float(max(sw.sum() / n, col_sums.max(initial=0.0) / n))


def _gradient_norms(model, X: Tensor, y: Tensor, w: Tensor | None, l2: float) -> tuple[float, float]:
    """The largest absolute entry and the Euclidean norm of the gradient of ``(1/N) sum_n w_n loss_n + (l2/2) ||W||^2``
    at the model's parameters."""
    _, grads = model.objective_and_grad(X, model.targets(y, X.shape[0]), l2, w)
    flat = torch.cat([g.reshape(-1) for g in grads.values()])
    return flat.abs().max().item(), torch.linalg.vector_norm(flat).item()


def _to_tensor(a: np.ndarray, dtype: torch.dtype | None, device: torch.device) -> torch.Tensor:
    """A C-contiguous, writable view of ``a`` as a tensor (copied only when needed), then moved to
    ``device`` and ``dtype`` (``None``: ``a``'s own)."""
    a = np.asarray(a)
    if not a.flags.writeable or not a.flags.c_contiguous:
        a = np.array(a, order="C", copy=True)
    return torch.from_numpy(a).to(device=device, dtype=dtype)
