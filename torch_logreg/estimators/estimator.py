"""A scikit-learn classifier on top of the models and solvers of this package.

:class:`LogisticRegressionClassifier` minimises scikit-learn's ``LogisticRegression`` objective

    C sum_n w_n loss_n + (1 - l1_ratio) ||W||^2 / 2 + l1_ratio ||W||_1

(intercept unpenalised; ``w_n`` = sample weight x class weight; binary: the logistic loss of
``classes_[1]`` against ``classes_[0]``; three or more classes: the multinomial loss), which,
divided by ``C N``, is :func:`torch_logreg.solvers.fit_exact`'s objective with
``l2 = (1 - l1_ratio) / (C N)`` and ``l1 = l1_ratio / (C N)``. ``penalty="l2"`` is
``l1_ratio = 0``, ``"l1"`` is ``l1_ratio = 1`` and ``None`` drops the penalty.

After an unpenalised fit, ``inference_`` holds standard errors, tests and likelihood statistics
(:class:`torch_logreg.inference.InferenceResult`, statsmodels' names).
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .. import arguments, validation
from .. import functional as F
from ..devices import resolve_device, resolve_dtype
from ..errors import UsageError
from ..inference import infer
from ..models import LogisticRegression, SoftmaxRegression
from ..registry import EXACT_SOLVERS, LOOP_SOLVERS
from ..solvers import ConvergenceWarning, fit_exact

PENALTIES = ("l2", "l1", "elasticnet", None)
SOLVERS = ("auto", *EXACT_SOLVERS, *LOOP_SOLVERS)

#: ``solver="auto"`` uses Newton while the Hessian has at most this many rows, else L-BFGS
AUTO_NEWTON_MAX_PARAMS = 400


class InferenceUnavailable(AttributeError, ValueError):
    """``inference_`` was read after a fit that cannot support it (penalised, separated, ...)."""


class LogisticRegressionClassifier(ClassifierMixin, BaseEstimator):
    """Logistic (binary) and multinomial regression, scikit-learn API, fitted in PyTorch.

    Parameters
    ----------
    penalty : {"l2", "l1", "elasticnet", None}, default "l2"
        The penalty on the weights (never on the intercept).
    C : float > 0, default 1.0
        Inverse regularisation strength: it multiplies the summed loss.
    l1_ratio : float in [0, 1] or None, default None
        The L1 share of an elastic-net penalty; required with ``penalty="elasticnet"``.
    solver : {"auto", "newton", "lbfgs", "gd", "momentum", "nesterov"}, default "auto"
        ``"newton"``: Newton/IRLS (proximal Newton with an L1 term). ``"lbfgs"``: L-BFGS (no L1).
        ``"auto"``: Newton when L1 is present or the Hessian has at most
        ``AUTO_NEWTON_MAX_PARAMS`` rows, L-BFGS otherwise. The first-order loops
        ``"gd" | "momentum" | "nesterov"`` (:func:`torch_logreg.fit`, full batch) take
        ``learning_rate``; they support the L2 penalty or none, and no sample or class weights.
    max_iter : int >= 1, default 100
        Iterations of the solver (epochs for the first-order loops).
    tol : float >= 0, default 1e-4
        Stop when the largest absolute entry of the gradient of the objective divided by
        ``C N`` (of the minimum-norm subgradient with L1) is at most ``tol``; the first-order
        loops use the Euclidean norm.
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

    Attributes
    ----------
    classes_ : (K,) array; coef_ : (1, D) binary or (K, D); intercept_ : (1,) or (K,);
    n_iter_ : (1,) int array; n_features_in_, feature_names_in_ (when X has column names);
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
        tol=1e-4,
        fit_intercept=True,
        class_weight=None,
        device="cpu",
        dtype="float64",
        learning_rate=0.1,
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

    # -- parameter checks --
    def resolve_params(self, n_params: int) -> tuple[str, float]:
        """Validate the hyper-parameters; return the solver to use and the L1 share."""
        arguments.choice("penalty", self.penalty, PENALTIES)
        arguments.number("C", self.C, low=0, low_open=True)
        if self.l1_ratio is not None:
            arguments.number("l1_ratio", self.l1_ratio, low=0, high=1)
        if self.penalty == "elasticnet" and self.l1_ratio is None:
            raise UsageError("penalty='elasticnet' needs l1_ratio, a finite number >= 0 and <= 1 (0: pure L2, 1: pure L1)")
        arguments.choice("solver", self.solver, SOLVERS)
        arguments.number("max_iter", self.max_iter, low=1, integer=True)
        arguments.number("tol", self.tol, low=0)
        if not isinstance(self.fit_intercept, (bool, np.bool_)):
            raise UsageError(f"fit_intercept must be True or False, got {self.fit_intercept!r}")
        if not (self.class_weight is None or self.class_weight == "balanced" or isinstance(self.class_weight, dict)):
            raise UsageError(f"class_weight must be None, 'balanced' or a dict {{class: weight}}, got {self.class_weight!r}")
        arguments.number("learning_rate", self.learning_rate, low=0, low_open=True)
        l1_share = {"l2": 0.0, "l1": 1.0, None: 0.0}.get(self.penalty, self.l1_ratio)
        solver = self.solver
        if l1_share > 0 and solver not in ("auto", "newton"):
            raise UsageError(
                f"penalty={self.penalty!r} (an L1 term) needs a solver that handles it: solver in "
                f"['auto', 'newton'], got solver={solver!r}"
            )
        if solver == "auto":
            solver = "newton" if l1_share > 0 or n_params <= AUTO_NEWTON_MAX_PARAMS else "lbfgs"
        return solver, float(l1_share)

    # -- fitting --
    def fit(self, X, y, sample_weight=None):
        """Fit on ``X`` (N, D) and labels ``y`` (N,); ``sample_weight`` (N,) optional."""
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], ensure_min_samples=1)
        check_classification_targets(y)
        self.classes_, y_index = np.unique(y, return_inverse=True)
        k = len(self.classes_)
        if k < 2:
            raise UsageError(
                f"y contains only one class ({self.classes_[0]}); LogisticRegressionClassifier needs "
                "samples of at least 2 classes"
            )
        n, d = X.shape
        n_params = (d + int(bool(self.fit_intercept))) * (1 if k == 2 else k)
        solver, l1_share = self.resolve_params(n_params)
        device = resolve_device(self.device)
        dtype = resolve_dtype(self.dtype)

        weighted = sample_weight is not None or self.class_weight is not None
        sw = _sample_weight(sample_weight, n)
        if self.class_weight is not None:
            sw = sw * compute_class_weight(self.class_weight, classes=self.classes_, y=y, sample_weight=sw)[y_index]
        per_class = np.bincount(y_index, weights=sw, minlength=k)
        if (per_class > 0).sum() < 2:
            raise UsageError(
                "after sample_weight and class_weight only one class has a positive total weight "
                f"(classes {list(self.classes_)}, weights {per_class.tolist()}); at least 2 classes are needed"
            )

        if self.penalty is None:
            l2 = l1 = 0.0
        else:
            l2, l1 = (1.0 - l1_share) / (self.C * n), l1_share / (self.C * n)

        bias = bool(self.fit_intercept)
        model = LogisticRegression(d, bias=bias) if k == 2 else SoftmaxRegression(d, k, bias=bias)
        model = model.to(device=device, dtype=dtype)
        # the exact solvers and inference_ form X~^T S X~: refuse columns whose squares overflow
        # dtype here, on X as passed, before a conversion could turn large values into infinities
        Xt = _to_tensor(X, None, torch.device("cpu"))
        validation.check_square_range(Xt, dtype)
        Xt = Xt.to(device=device, dtype=dtype)
        yt = torch.as_tensor(y_index, device=device)
        wt = _to_tensor(sw, dtype, device) if weighted else None

        self._inference_error = None
        self._inference = None
        if solver in EXACT_SOLVERS:
            result = fit_exact(model, Xt, yt, solver=solver, l2=l2, l1=l1, sample_weight=wt, max_iter=int(self.max_iter),
                               tol=float(self.tol), warn=False, check_separation=self.penalty is None)
            n_iter = result.n_iter
            if result.stop_reason != "converged":
                warnings.warn(
                    f"{solver} did not converge in {result.n_iter} iterations (max_iter={self.max_iter}); "
                    f"max|gradient| = {result.grad_norm:.3e} > tol={self.tol:g}. Increase max_iter, "
                    "scale the features, or loosen tol.",
                    ConvergenceWarning,
                    stacklevel=2,
                )
            if result.separation is not None:
                from ..solvers.separation import SeparationWarning

                warnings.warn(result.separation.message, SeparationWarning, stacklevel=2)
        else:
            if weighted:
                raise UsageError(
                    f"solver={solver!r} (first-order loop) does not support sample_weight or class_weight; "
                    "use solver in ['auto', 'newton', 'lbfgs']"
                )
            from ..train import fit as first_order_fit

            result = first_order_fit(
                model, Xt, yt, solver=solver, lr=float(self.learning_rate), epochs=int(self.max_iter),
                l2=l2, tol=float(self.tol), device=device, dtype=dtype,
            )
            n_iter = result.n_epochs
            if result.stop_reason != "converged":
                warnings.warn(
                    f"{solver} did not converge in {n_iter} epochs (max_iter={self.max_iter}); stop reason "
                    f"{result.stop_reason!r}. Increase max_iter or learning_rate.",
                    ConvergenceWarning,
                    stacklevel=2,
                )

        self.model_ = model
        self.result_ = result
        self.n_iter_ = np.array([n_iter], dtype=np.int32)
        W = model.linear.weight.detach().to("cpu", torch.float64).numpy()
        self.coef_ = W.copy()
        if bias:
            self.intercept_ = model.linear.bias.detach().to("cpu", torch.float64).numpy().copy()
        else:
            self.intercept_ = np.zeros(W.shape[0])

        if self.penalty is None:
            names = [str(c) for c in getattr(self, "feature_names_in_", [])] or None
            try:
                self._inference = infer(
                    model, Xt, yt, wt, result=result if solver in EXACT_SOLVERS else None,
                    grad_tol=max(10 * float(self.tol), 1e-4), feature_names=names,
                    class_names=[str(c) for c in self.classes_],
                )
            except ValueError as exc:
                self._inference_error = str(exc)
        return self

    @property
    def inference_(self):
        """Standard errors, z-values, p-values, confidence intervals and likelihood statistics
        of an unpenalised fit (:class:`~torch_logreg.inference.InferenceResult`)."""
        check_is_fitted(self, "coef_")
        if self.penalty is not None:
            raise InferenceUnavailable(
                f"inference_ needs an unpenalised fit (penalty=None), but this estimator was fit with "
                f"penalty={self.penalty!r}: penalised coefficients are shrunk and their standard errors "
                "would be wrong. Set penalty=None and refit."
            )
        if self._inference is None:
            raise InferenceUnavailable(f"inference_ is not available for this fit: {self._inference_error}")
        return self._inference

    # -- predictions --
    def _logits(self, X) -> torch.Tensor:
        check_is_fitted(self, "coef_")
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        layer = self.model_.linear
        Xt = _to_tensor(X, layer.weight.dtype, layer.weight.device)
        with torch.no_grad():
            return F.linear(Xt, layer.weight, layer.bias)

    def decision_function(self, X):
        """Logits: ``(N,)`` for two classes (positive: ``classes_[1]``), else ``(N, K)``."""
        z = self._logits(X).to("cpu", torch.float64).numpy()
        return z[:, 0] if z.shape[1] == 1 else z

    def predict_proba(self, X):
        """``(N, K)`` class probabilities, columns in the order of ``classes_``."""
        z = self._logits(X)
        if z.shape[1] == 1:
            p = torch.sigmoid(z)
            proba = torch.cat([torch.sigmoid(-z), p], dim=1)
        else:
            proba = torch.softmax(z, dim=1)
        return proba.to("cpu", torch.float64).numpy()

    def predict_log_proba(self, X):
        """``(N, K)`` log-probabilities, computed stably from the logits."""
        z = self._logits(X)
        if z.shape[1] == 1:
            logp = torch.cat([F.log_sigmoid(-z), F.log_sigmoid(z)], dim=1)
        else:
            logp = torch.log_softmax(z, dim=1)
        return logp.to("cpu", torch.float64).numpy()

    def predict(self, X):
        """Labels from ``classes_``: the positive class where the logit is > 0, else the argmax."""
        z = self._logits(X)
        idx = (z[:, 0] > 0).to(torch.int64) if z.shape[1] == 1 else z.argmax(dim=1)
        return self.classes_[idx.cpu().numpy()]


def _sample_weight(sample_weight, n: int) -> np.ndarray:
    """``(N,)`` float64 weights (ones when None); finite, non-negative, not all zero."""
    if sample_weight is None:
        return np.ones(n)
    if isinstance(sample_weight, numbers.Number):
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


def _to_tensor(a: np.ndarray, dtype: torch.dtype | None, device: torch.device) -> torch.Tensor:
    """A C-contiguous, writable view of ``a`` as a tensor (copied only when needed), then moved to
    ``device`` and ``dtype`` (``None``: ``a``'s own)."""
    a = np.asarray(a)
    if not a.flags.writeable or not a.flags.c_contiguous:
        a = np.array(a, order="C", copy=True)
    return torch.from_numpy(a).to(device=device, dtype=dtype)
