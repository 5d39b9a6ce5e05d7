"""A scikit-learn classifier that chooses ``C`` by cross-validation along a warm-started regularization path.

:class:`LogisticRegressionCVClassifier` is :class:`~torch_logreg.estimators.estimator.LogisticRegressionClassifier`
with ``C`` chosen by k-fold cross-validation, as scikit-learn's ``LogisticRegressionCV`` is to ``LogisticRegression``.
For each ``C`` the fits minimise the same objective

    C sum_n w_n loss_n + (1 - l1_ratio) ||W||^2 / 2 + l1_ratio ||W||_1

which, divided by ``C n`` on ``n`` training rows, is :func:`torch_logreg.solvers.fit_exact`'s objective with the
penalty ``lambda = 1 / (C n)`` (``l2 = (1 - l1_ratio) lambda``, ``l1 = l1_ratio lambda``). The whole grid of ``C``
is fitted, fold by fold, as one path from the smallest ``C`` (largest penalty) up, each fit warm-started from the
one before, by :func:`torch_logreg.path.regularization_path` with ``penalty_scaling="sum"``: the same ``C`` on every
fold, as scikit-learn has it.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import torch

from .. import arguments, validation
from .. import folds as folds_lib
from ..devices import resolve_dtype
from ..errors import UsageError
from ..path import CHOICES, SCORINGS_OF_KIND, regularization_path
from ..registry import EXACT_SOLVERS
from ..solvers import ConvergenceWarning as SolverConvergenceWarning
from .estimator import PENALISED_TOL, ConvergenceWarning, InferenceUnavailable, LogisticRegressionClassifier

#: the solvers a path can use (the first-order loops of the single-C estimator cannot warm-start a path)
SOLVERS = ("auto", *EXACT_SOLVERS)
#: ``Cs`` given as a count: the penalties run from lambda_max down to this fraction of it (glmnet's lambda.min.ratio)
PENALTY_MIN_RATIO = 1e-4


class LogisticRegressionCVClassifier(LogisticRegressionClassifier):
    """Logistic (binary) and multinomial regression with ``C`` chosen by k-fold cross-validation, scikit-learn API.

    Parameters
    ----------
    Cs : int >= 1 or list of float > 0, default 10
        The candidate ``C``. A list is used as given (sorted). An int ``m`` gives ``m`` values from the data, as
        glmnet chooses its penalties: ``C = 1 / (lambda N)`` for ``lambda`` log-spaced from ``lambda_max`` (the
        smallest penalty whose fit has all weights zero; :mod:`torch_logreg.path`) down to ``1e-4 lambda_max``
        (scikit-learn instead takes ``logspace(-4, 4, m)``).
    l1_ratio : float in [0, 1] or None, default None
        The L1 share of an elastic-net penalty; ``penalty="elasticnet"`` needs it or ``l1_ratios``.
    l1_ratios : list of float in [0, 1] or None, default None
        Candidate L1 shares (``penalty="elasticnet"``), chosen with ``C`` on the same folds, as scikit-learn's
        ``LogisticRegressionCV(l1_ratios=...)``: one path per share; the share whose best mean score is the
        best (ties: the first listed), then ``C`` by ``choice`` along its path.
    penalty : {"l2", "l1", "elasticnet"}, default "l2"
        The penalty on the weights (never on the intercept).
    cv : int >= 2, a scikit-learn splitter or a list of (train, test) index pairs, default 5
        An int gives stratified folds, shuffled with ``random_state``
        (:func:`torch_logreg.folds.kfold`); every class needs at least ``cv`` rows.
    scoring : {"log_loss", "accuracy"}, default "log_loss"
        The held-out score: mean negative log-likelihood (lower is better) or accuracy (higher is better);
        both weighted by the sample and class weights of the held-out rows (scikit-learn weighs only its
        default accuracy score).
    choice : {"best", "1se"}, default "best"
        ``"best"``: the ``C`` of the best mean score (ties: the smaller ``C``); ``"1se"``: the smallest ``C`` (the
        largest penalty) whose mean score is within one standard error of the best (glmnet's ``lambda.1se``).
    refit : bool, default True
        True: the coefficients are the fit on all rows at ``C_``. False: the mean, over the folds, of the fold
        fits at ``C_`` (scikit-learn averages each fold's own best fit instead).
    solver : {"auto", "newton", "lbfgs", "proximal", "cd"}, default "auto"
        As in :class:`LogisticRegressionClassifier` (its ``"auto"`` rule; the first-order loops cannot warm-start
        a path): Newton (proximal Newton with an L1 term), L-BFGS (no L1), the proximal gradient or proximal
        Newton with coordinate descent.
    tol : float >= 0 or None, default None
        Each fit stops when the largest entry of the gradient of the objective divided by ``C n`` (of the
        minimum-norm subgradient with L1) is at most ``tol``; ``None``: ``1e-4``, scikit-learn's default.
    max_iter : int >= 1, default 100
        Iterations of each fit.
    fit_intercept : bool, default True
    class_weight : dict, "balanced" or None, default None
        Multiplies the sample weights per class (computed once, on all rows, as scikit-learn does).
    random_state : int or None, default None
        Seeds the shuffle of ``cv``'s folds when ``cv`` is an int (None: 0, so refits are repeatable).
    device : str, default "cpu"
    dtype : {"float64", "float32"}, default "float64"

    Attributes
    ----------
    classes_ : (K,); coef_ : (1, D) binary or (K, D); intercept_ : (1,) or (K,);
    Cs_ : (P,) the candidate C, increasing; C_ : float, the chosen C; l1_ratio_ : float, the L1 share used;
    scores_ : (n_folds, P) the held-out scores (in the scoring's own sense: lower log-loss is better);
    n_iter_ : (P,) iterations of the fits on all rows; path_ : the
    :class:`~torch_logreg.path.RegularizationPath` (table, ``format()``, the coefficient path, the folds);
    with ``l1_ratios`` (R of them): ``l1_ratios_`` (R,), ``scores_`` (n_folds, R, P) (scikit-learn's layout),
    ``paths_`` the R paths (``path_``, ``n_iter_`` those of the chosen share), and ``Cs_`` (R, P) when ``Cs`` is a
    count (each share's grid starts at its own ``lambda_max``);
    model_ : the torch model behind the predictions; n_features_in_, feature_names_in_ (when X has column names).
    ``inference_`` is never available: every fit here is penalised.
    """

    def __init__(
        self,
        Cs=10,
        l1_ratio=None,
        penalty="l2",
        l1_ratios=None,
        cv=5,
        scoring="log_loss",
        choice="best",
        refit=True,
        solver="auto",
        tol=None,
        max_iter=100,
        fit_intercept=True,
        class_weight=None,
        random_state=None,
        device="cpu",
        dtype="float64",
    ):
        self.Cs = Cs
        self.l1_ratio = l1_ratio
        self.penalty = penalty
        self.l1_ratios = l1_ratios
        self.cv = cv
        self.scoring = scoring
        self.choice = choice
        self.refit = refit
        self.solver = solver
        self.tol = tol
        self.max_iter = max_iter
        self.fit_intercept = fit_intercept
        self.class_weight = class_weight
        self.random_state = random_state
        self.device = device
        self.dtype = dtype

    def _check_params(self, n_params: int, sparse: bool) -> tuple[str, float]:
        """Validate the hyper-parameters; return the solver and the L1 share (the single-C estimator's rules)."""
        if self.penalty in (None, "firth"):
            raise UsageError(f"penalty={self.penalty!r} leaves no C to choose; use penalty in ['l2', 'l1', 'elasticnet']")
        arguments.choice("solver", self.solver, SOLVERS)
        arguments.choice("scoring", self.scoring, SCORINGS_OF_KIND["softmax"])
        arguments.choice("choice", self.choice, CHOICES)
        if not isinstance(self.refit, (bool, np.bool_)):
            raise UsageError(f"refit must be True or False, got {self.refit!r}")
        if self.random_state is not None:
            arguments.number("random_state", self.random_state, low=0, integer=True)
        ratios = self._check_l1_ratios()
        l1_ratio = self.l1_ratio if ratios is None else float(ratios.max())  # the largest share: the L1 rules
        single = LogisticRegressionClassifier(
            penalty=self.penalty, l1_ratio=l1_ratio, solver=self.solver, max_iter=self.max_iter, tol=self.tol,
            fit_intercept=self.fit_intercept, class_weight=self.class_weight, device=self.device, dtype=self.dtype,
        )
        return single.resolve_params(n_params, sparse=sparse)

    def _check_l1_ratios(self) -> np.ndarray | None:
        """``l1_ratios`` as a float64 array of distinct shares in [0, 1], or None."""
        if self.l1_ratios is None:
            return None
        if self.penalty != "elasticnet" or self.l1_ratio is not None:
            raise UsageError("l1_ratios is the grid of penalty='elasticnet' and takes the place of l1_ratio: set "
                             f"penalty='elasticnet' and l1_ratio=None (got penalty={self.penalty!r}, "
                             f"l1_ratio={self.l1_ratio!r})")
        try:
            ratios = np.asarray(self.l1_ratios, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise UsageError(f"l1_ratios must be a list of numbers in [0, 1], got {self.l1_ratios!r}") from None
        if ratios.size == 0 or not np.all((ratios >= 0) & (ratios <= 1)) or np.unique(ratios).size != ratios.size:
            raise UsageError(f"l1_ratios must be a non-empty list of distinct numbers in [0, 1], got {self.l1_ratios!r}")
        return ratios

    def _check_Cs(self):
        """``Cs`` as an int count or a float64 array of positive values."""
        if isinstance(self.Cs, numbers.Integral) and not isinstance(self.Cs, bool):
            return arguments.number("Cs", self.Cs, low=1, integer=True)
        try:
            Cs = np.asarray(self.Cs, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise UsageError(f"Cs must be an integer >= 1 or a list of numbers > 0, got {self.Cs!r}") from None
        if Cs.size == 0 or not np.all(np.isfinite(Cs) & (Cs > 0)):
            raise UsageError(f"Cs must be an integer >= 1 or a non-empty list of finite numbers > 0, got {self.Cs!r}")
        if np.unique(Cs).size != Cs.size:
            raise UsageError(f"Cs must hold distinct values, got {self.Cs!r}")
        return Cs

    def _folds(self, X, y, y_index):
        """``cv`` as (train, test) pairs: stratified and seeded for an int, a splitter's splits, or the pairs given."""
        if isinstance(self.cv, numbers.Integral) and not isinstance(self.cv, bool):
            seed = 0 if self.random_state is None else int(self.random_state)
            return folds_lib.kfold(y_index, self.cv, seed=seed, class_names=self.classes_)
        if hasattr(self.cv, "split"):
            return list(self.cv.split(X, y))
        return self.cv

    def fit(self, X, y, sample_weight=None):
        """Fit on ``X`` (N, D) dense or ``scipy.sparse`` and labels ``y`` (N,); ``sample_weight`` (N,) optional."""
        if sample_weight is not None and not isinstance(sample_weight, (numbers.Number, torch.Tensor)):
            sample_weight = np.array(sample_weight, dtype=np.float64)  # a writable copy (pandas gives read-only views)
        X, y, y_index, sw, weighted = self._labelled_rows(X, y, sample_weight)
        k = len(self.classes_)
        n, d = X.shape
        n_params = (d + int(bool(self.fit_intercept))) * (1 if k == 2 else k)
        solver, l1_share = self._check_params(n_params, sparse=validation.is_sparse(X))
        Cs = self._check_Cs()
        folds = self._folds(X, y, y_index)
        if isinstance(Cs, int):
            grid = {"n_penalties": Cs, "penalty_min_ratio": PENALTY_MIN_RATIO}
        else:
            grid = {"penalties": 1.0 / (Cs * n)}  # lambda = 1 / (C N), the penalty of the fit on all N rows
        tol = PENALISED_TOL if self.tol is None else self.tol

        ratios = self._check_l1_ratios()
        shares = [l1_share] if ratios is None else [float(r) for r in ratios]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SolverConvergenceWarning)
            paths = [regularization_path(
                X, y_index, kind="binary" if k == 2 else "softmax", l1_ratio=share, **grid, cv=folds,
                scoring=self.scoring, choice=self.choice, penalty_scaling="sum", sample_weight=sw if weighted else None,
                solver=solver if ratios is None else self._path_solver(share, n_params, X),
                tol=tol, max_iter=self.max_iter, fit_intercept=bool(self.fit_intercept), n_classes=k,
                keep_fold_coefs=not self.refit, device=self.device, dtype=resolve_dtype(self.dtype),
            ) for share in shares]
        for w in caught:  # the path's ConvergenceWarning as the class scikit-learn's filters know too
            category = ConvergenceWarning if issubclass(w.category, SolverConvergenceWarning) else w.category
            warnings.warn(w.message if category is w.category else str(w.message), category, stacklevel=2)

        # the share whose best mean score is the best (argmax / argmin: the first listed of equals)
        best = [p.mean_scores[p.best_index] for p in paths]
        chosen = int(np.argmax(best) if paths[0].greater_is_better else np.argmin(best))
        path = paths[chosen]
        l1_share = shares[chosen]
        index = path.index
        model = path.model
        if not self.refit:
            with torch.no_grad():
                model.linear.weight.copy_(path.fold_coef_path[:, index].mean(0))
                if model.linear.bias is not None:
                    model.linear.bias.copy_(path.fold_intercept_path[:, index].mean(0))
        self.path_ = path
        self.model_ = model
        self.Cs_ = 1.0 / (path.penalties * n)
        self.C_ = float(self.Cs_[index])
        self.l1_ratio_ = float(l1_share)
        self.scores_ = path.scores.copy()
        if ratios is not None:
            self.paths_ = paths
            self.l1_ratios_ = ratios
            self.scores_ = np.stack([p.scores for p in paths], axis=1)
            if isinstance(Cs, int):
                self.Cs_ = np.stack([1.0 / (p.penalties * n) for p in paths])
        self.n_iter_ = path.n_iter.astype(np.int32)
        self.tol_ = float(tol)
        self.coef_ = model.linear.weight.detach().to("cpu", torch.float64).numpy().copy()
        if model.linear.bias is not None:
            self.intercept_ = model.linear.bias.detach().to("cpu", torch.float64).numpy().copy()
        else:
            self.intercept_ = np.zeros(self.coef_.shape[0])
        return self

    def _path_solver(self, share: float, n_params: int, X) -> str:
        """The solver of the path of L1 share ``share`` (``"auto"`` and the L1 rules decide per share)."""
        single = LogisticRegressionClassifier(penalty="elasticnet", l1_ratio=share, solver=self.solver, max_iter=self.max_iter,
                                              tol=self.tol, fit_intercept=self.fit_intercept, device=self.device,
                                              dtype=self.dtype)
        return single.resolve_params(n_params, sparse=validation.is_sparse(X))[0]

    @property
    def inference_(self):
        """Never available: every fit along the path is penalised, so standard errors would be wrong."""
        raise InferenceUnavailable(
            "inference_ needs an unpenalised fit, but LogisticRegressionCVClassifier always penalises; fit "
            "LogisticRegressionClassifier(penalty=None) for standard errors"
        )
