"""Statistical inference for unpenalised logistic and multinomial fits, in statsmodels' terms.

At the maximum-likelihood estimate ``theta^`` the observed Fisher information is the Hessian of
the summed negative log-likelihood, ``I = X~^T S X~`` (``X~ = [1, X]``; binary:
``S = diag(w p (1 - p))``; K classes: ``sum_n w_n (diag p_n - p_n p_n^T) (x) x~_n x~_n^T``),
and ``Cov(theta^) = I^{-1}``. Everything below is computed on the model's device from that
closed-form Hessian (:mod:`torch_logreg.functional`), then returned as NumPy values:

* ``params``, ``bse = sqrt(diag Cov)``, ``zvalues = params / bse``,
  ``pvalues = 2 Phi(-|z|) = erfc(|z| / sqrt 2)``, ``conf_int(alpha) = params -+ z_{1-alpha/2} bse``;
* ``llf = -sum_n w_n loss_n``; ``llnull``, the log-likelihood of the intercept-only model
  (the weighted class frequencies); ``prsquared = 1 - llf / llnull`` (McFadden);
  ``llr = 2 (llf - llnull)`` and ``llr_pvalue = P(chi2_{df_model} > llr)``;
* ``aic = -2 llf + 2 k`` and ``bic = -2 llf + k log(nobs)`` with ``k`` the number of free
  parameters.

K classes are reported as statsmodels' ``MNLogit`` does: the contrasts
``theta_k - theta_0`` (k = 1..K-1) against class 0, shape ``(K - 1, A)``, whose information
matrix is the ``(K-1)A x (K-1)A`` block of the full softmax Hessian for classes 1..K-1.
Parameters are ordered intercept first (``A = 1 + D``), as in a statsmodels design with a
leading constant column.

Sample weights, named as statsmodels' ``GLM`` names them (``weights_kind``):

* ``"freq_weights"`` (the default): sample n stands for ``w_n`` identical observations. Every
  result equals that of the data with row n repeated ``w_n`` times: ``nobs = sum w`` (GLM's
  ``wnobs``; GLM's ``nobs`` counts rows), ``df_resid = sum w - k``, ``bic`` with ``log(sum w)``.
* ``"var_weights"``: ``w_n`` scales sample n's log-likelihood (a precision or importance weight).
  ``params``, ``bse`` (nonrobust), ``llf`` and ``llnull`` are the same as with frequency weights,
  but ``nobs = N`` (the rows), ``df_resid = N - k`` and ``bic`` uses ``log N``, as in
  ``GLM(y, X, family=Binomial(), var_weights=w)``.

Robust covariance (``cov_type``). With ``H = I`` the information above and the per-observation
scores ``s_n = w_n r_n (x) x~_n`` (binary: ``r_n = y_n - p_n``; K classes: the contrast block
``r_n = (t_n - p_n)_{1..K-1}``, statsmodels' ``MNLogit.score_obs``), the sandwich is
``Cov = H^-1 M H^-1`` with

* ``HC0``: ``M = sum_n s_n s_n^T / v_n`` with ``v_n = w_n`` for frequency weights (``w_n`` copies
  of ``s_n / w_n``, as statsmodels' GLM divides the scores of ``freq_weights``) and ``v_n = 1``
  for variance weights. This is statsmodels' ``HC0`` for ``Logit``, ``MNLogit`` and ``GLM``.
* ``HC1``: ``HC0 * nobs / (nobs - k)`` (MacKinnon & White 1985).
* ``HC2``, ``HC3`` (binary only): ``M = sum_n s_n s_n^T / (v_n (1 - h_n)^a)`` with ``a = 1``,
  resp. 2, and the leverage ``h_n = c_n x~_n^T H^-1 x~_n``, ``c_n = p_n (1 - p_n)`` (times
  ``w_n`` for variance weights): the diagonal of ``W^1/2 X~ (X~^T W X~)^-1 X~^T W^1/2``, the hat
  matrix of the iteratively reweighted least-squares fit (MacKinnon & White 1985; Long & Ervin
  2000; for GLMs as R's ``sandwich::vcovHC``, Zeileis 2006). statsmodels accepts ``HC1``-``HC3``
  for ``Logit``, ``MNLogit`` and ``GLM`` but returns ``HC0`` for all three.
* ``cluster``: ``M = sum_g (sum_{n in g} s_n)(sum_{n in g} s_n)^T``, times statsmodels' default
  small-sample correction (``use_correction=True``, CRV1) ``G / (G - 1) * (nobs - 1) / (nobs - k)``
  with ``G`` the number of groups (Cameron & Miller 2015). With frequency weights ``nobs = sum w``
  (the repeated rows); statsmodels' GLM puts the number of rows there.

``k`` is the number of parameters. ``bse``, ``zvalues``, ``pvalues``, ``conf_int``,
``cov_params()``, :meth:`InferenceResult.wald_test` and the marginal effects use the chosen
covariance; ``summary()`` names it as statsmodels does (``Covariance Type: HC0``).

Tests and effects: :meth:`~InferenceResult.wald_test` (``R theta = q``, a matrix or a string such
as ``"GPA = TUCE = 0"``), :meth:`~InferenceResult.lr_test` (against a nested fit),
:meth:`~InferenceResult.odds_ratios` and :meth:`~InferenceResult.get_margeff` (average marginal
effects with delta-method standard errors, statsmodels' ``get_margeff()``). Tables come as a
:class:`Table` (values, row and column labels) rather than a pandas DataFrame: the library does not
depend on pandas.

References: MacKinnon, J. G. & White, H. (1985), Some heteroskedasticity-consistent covariance
matrix estimators with improved finite sample properties, J. Econometrics 29, 305-325. Long, J. S.
& Ervin, L. H. (2000), Using heteroscedasticity consistent standard errors in the linear regression
model, The American Statistician 54, 217-224. Zeileis, A. (2006), Object-oriented computation of
sandwich estimators, J. Statistical Software 16(9). Cameron, A. C. & Miller, D. L. (2015), A
practitioner's guide to cluster-robust inference, J. Human Resources 50, 317-372.

Separation. When a linear combination of the features classifies some samples perfectly, the
MLE does not exist: the likelihood keeps increasing as the coefficients grow. This is checked
exactly, following Albert & Anderson's characterisation, with a linear program: separation
exists iff some ``beta != 0`` gives every sample a non-negative margin
(binary: ``(2y_n - 1) x~_n^T beta >= 0``; K classes: ``x~_n^T (beta_{y_n} - beta_k) >= 0`` for
all k) and a positive margin to at least one sample. :func:`find_separation` solves it (scipy's
HiGHS, on the CPU) and :func:`infer` refuses to report standard errors for such data.

Collinearity. Before inverting, the information matrix is scaled to unit diagonal
(``D^-1/2 I D^-1/2``, which removes the units of the columns, so a column in micrometres is as
good as one in metres) and its reciprocal condition number ``rcond = min |lambda| / max |lambda|``
is taken from its eigenvalues (float64). The information is computed in the model's dtype, whose
rounding leaves an exactly singular design with ``rcond`` of a few ``eps`` (about 1e-16 in
float64, 1e-7 in float32), while the inverse loses about ``eps / rcond`` in relative accuracy.
A design with ``rcond < eps ** 0.625`` (1.6e-10 in float64, 4.7e-5 in float32: several hundred
thousand, resp. several hundred, times that rounding floor) is refused as singular with a
``ValueError`` naming the columns that load on the near-null eigenvectors; one with
``rcond < eps ** 0.5`` (1.5e-8, resp. 3.5e-4: fewer than half the working digits survive the
inversion) still gets its results, with a :class:`CollinearityWarning` naming the columns.
A column with zero (or non-finite) information is refused by name before that.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np
import torch
from torch import Tensor

from . import functional as F
from .errors import UsageError
from .solvers import prepare
from .solvers.params import augment, get_theta, linear_layer
from .solvers.separation import (  # noqa: F401  (re-exported: the public home of these names)
    CERTAINTY,
    LP_MAX_ROWS,
    PerfectSeparationError,
    Separation,
    SeparationWarning,
    find_separation,
)

#: the unit-diagonal information matrix counts as singular below ``eps ** SINGULAR_RCOND_POWER`` of the dtype
#: it is computed in (float64: 1.6e-10, float32: 4.7e-5). Rounding alone leaves a singular matrix at a few eps,
#: so the bound sits eps ** -0.375 (7e5 in float64, 400 in float32) above it, while a design just above the
#: bound still gets standard errors with relative error eps / rcond <= eps ** 0.375 (1e-6, resp. 3e-3).
SINGULAR_RCOND_POWER = 0.625
#: below ``eps ** COLLINEAR_RCOND_POWER`` (float64: 1.5e-8, float32: 3.5e-4) the inversion keeps fewer than
#: half the working digits: the results are returned with a :class:`CollinearityWarning`
COLLINEAR_RCOND_POWER = 0.5
#: a column is named as responsible when its loading on the near-null eigenvectors (the norm of its rows
#: of their orthonormal basis, largest over the class contrasts) exceeds this
LOADING = 0.1

#: the covariance types :func:`infer` computes (``cov_type``), statsmodels' names
COV_TYPES = ("nonrobust", "HC0", "HC1", "HC2", "HC3", "cluster")
#: how :func:`infer` reads ``sample_weight`` (``weights_kind``), statsmodels' GLM names
WEIGHTS_KINDS = ("freq_weights", "var_weights")

_SINGULAR = (
    "the information matrix (Hessian of the log-likelihood) is singular: some features are "
    "collinear or constant (the design matrix is rank deficient), so standard errors do not exist. "
    "Drop the redundant columns."
)


class CollinearityWarning(UserWarning):
    """The design is nearly singular: some columns are nearly collinear and their standard errors are unreliable."""


def rcond_bounds(dtype: torch.dtype) -> tuple[float, float]:
    """``(singular, collinear)``: the reciprocal condition numbers below which an information matrix
    computed in ``dtype`` is refused, resp. warned about."""
    eps = torch.finfo(dtype).eps
    return eps**SINGULAR_RCOND_POWER, eps**COLLINEAR_RCOND_POWER


@dataclass
class Summary:
    """A statsmodels-style text table; ``str(summary)`` or ``summary.as_text()`` prints it."""

    text: str
    tables: list[list[dict]] = field(default_factory=list)

    def as_text(self) -> str:
        return self.text

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text


@dataclass
class InferenceResult:
    """Inference for an unpenalised fit, with statsmodels' names.

    Binary: ``params``, ``bse``, ``zvalues``, ``pvalues`` have shape ``(A,)``; K classes:
    ``(K - 1, A)`` (row k-1 is class k against class 0). ``A = 1 + D`` with the intercept first
    (``D`` without an intercept). ``cov_params()`` is ``(A, A)`` or ``((K-1)A, (K-1)A)``, of the type
    ``cov_type`` (``n_groups`` clusters for ``"cluster"``), which also gives ``bse``, ``zvalues``,
    ``pvalues`` and ``conf_int``. ``weights_kind`` says how the sample weights were read.
    """

    params: np.ndarray
    bse: np.ndarray
    zvalues: np.ndarray
    pvalues: np.ndarray
    llf: float
    llnull: float
    nobs: float
    df_model: float
    df_resid: float
    llr_pvalue: float
    k_params: int
    has_intercept: bool
    param_names: list[str]
    class_names: list[str]
    cov: np.ndarray
    model_name: str = "Logit"
    solver: str = ""
    converged: bool | None = None
    n_iter: int | None = None
    dep_variable: str = "y"
    cov_type: str = "nonrobust"
    weights_kind: str = "freq_weights"
    n_groups: int | None = None
    #: ``{"overall" | "mean": (effects (K, A), Jacobian (K A, C A))}`` and ``"keep"`` (the non-constant
    #: columns), from :func:`_margeff_summaries`; read by :meth:`get_margeff`
    margeff_terms: dict | None = field(default=None, repr=False, compare=False)

    @property
    def tvalues(self) -> np.ndarray:
        """Alias of ``zvalues`` (statsmodels' discrete models call them ``tvalues``)."""
        return self.zvalues

    @property
    def llr(self) -> float:
        return 2.0 * (self.llf - self.llnull)

    @property
    def prsquared(self) -> float:
        return 1.0 - self.llf / self.llnull if self.llnull != 0 else math.nan

    @property
    def aic(self) -> float:
        return -2.0 * self.llf + 2.0 * self.k_params

    @property
    def bic(self) -> float:
        return -2.0 * self.llf + math.log(self.nobs) * self.k_params

    def cov_params(self) -> np.ndarray:
        return self.cov

    def conf_int(self, alpha: float = 0.05) -> np.ndarray:
        """``params -+ z_{1 - alpha/2} bse``: shape ``params.shape + (2,)`` (lower, upper)."""
        q = _normal_quantile(alpha)
        return np.stack([self.params - q * self.bse, self.params + q * self.bse], axis=-1)

    @property
    def flat_param_names(self) -> list[str]:
        """The names of the flattened ``params`` (the order of ``cov_params()``): ``param_names`` for a
        binary model; ``"<class>:<name>"`` (class k = 1..K-1 against class 0, class-major) for K classes."""
        if self.params.ndim == 1:
            return list(self.param_names)
        return [f"{c}:{name}" for c in self.class_names[1:] for name in self.param_names]

    def wald_test(self, R, q=None) -> ChiSquareTest:
        """Wald test of the ``r`` linear restrictions ``R theta = q`` on the flattened ``params``.

        ``W = (R theta - q)^T (R Cov R^T)^+ (R theta - q)`` with the result's covariance (``cov_type``),
        ``df = r`` and ``pvalue = P(chi2_r > W)``: statsmodels' ``wald_test(R, scalar=True, use_f=False)``.
        ``R`` is an ``(r, n_params)`` matrix (a vector for one restriction) over the flattened
        parameters (:attr:`flat_param_names`), with ``q`` (default 0), or a string of restrictions
        separated by commas, each a chain of linear expressions in the parameter names and constants,
        e.g. ``"GPA = TUCE = 0"`` (two restrictions), ``"(GPA = 0), (TUCE = 0)"``,
        ``"GPA - 2 * TUCE = 1"``; an expression without ``=`` is set to 0. Names are read before
        numbers, so a parameter named ``1`` is the parameter.
        """
        names = self.flat_param_names
        n = len(names)
        if isinstance(R, str):
            if q is not None:
                raise UsageError("wald_test takes q only with a matrix R: a string states its constants itself")
            R, q = _parse_constraints(R, names)
        else:
            R = np.atleast_2d(np.asarray(R, dtype=np.float64))
            if R.ndim != 2 or R.shape[1] != n:
                raise UsageError(f"wald_test needs R with {n} columns (one per parameter), got shape {R.shape}")
            q = np.zeros(R.shape[0]) if q is None else np.broadcast_to(np.asarray(q, dtype=np.float64), (R.shape[0],))
            if not (np.isfinite(R).all() and np.isfinite(q).all()):
                raise UsageError("wald_test needs finite R and q")
        r = R.shape[0]
        if r == 0 or not np.any(R, axis=1).all():
            raise UsageError("every restriction of wald_test must involve at least one parameter")
        if np.linalg.matrix_rank(R) < r:
            raise UsageError(f"the {r} restrictions of wald_test are linearly dependent: drop the redundant ones")
        d = R @ self.params.reshape(-1) - q
        stat = float(d @ np.linalg.pinv(R @ self.cov @ R.T) @ d)
        return ChiSquareTest("Wald", stat, r, _chi2_sf(stat, r), R, np.asarray(q, dtype=np.float64))

    def lr_test(self, restricted: InferenceResult) -> ChiSquareTest:
        """Likelihood-ratio test of this fit against ``restricted``, a fit of a nested model to the same data.

        ``LR = 2 (llf - llf_r)``, ``df = k - k_r`` (the difference in the number of parameters) and
        ``pvalue = P(chi2_df > LR)``. Refused when the fits have different ``nobs`` or model types,
        when ``restricted`` does not have fewer parameters, or when its log-likelihood is higher than
        this one's by more than rounding (``1e-6 max(1, |llf|)``; a smaller excess gives ``LR = 0``).
        """
        if not isinstance(restricted, InferenceResult):
            raise UsageError(f"lr_test needs the InferenceResult of the restricted fit, got {type(restricted).__name__}")
        if restricted.model_name != self.model_name or len(restricted.class_names) != len(self.class_names):
            raise UsageError(
                f"lr_test compares fits of the same kind of model, but this is a {len(self.class_names)}-class "
                f"{self.model_name} and the restricted fit a {len(restricted.class_names)}-class {restricted.model_name}"
            )
        if not math.isclose(restricted.nobs, self.nobs, rel_tol=1e-12):
            raise UsageError(
                f"lr_test needs both fits on the same data, but they have nobs {self.nobs:g} and {restricted.nobs:g}"
            )
        df = self.k_params - restricted.k_params
        if df <= 0:
            raise UsageError(
                f"the restricted model must have fewer parameters than this one, but it has {restricted.k_params} "
                f"against {self.k_params}"
            )
        stat = 2.0 * (self.llf - restricted.llf)
        if stat < -2e-6 * max(1.0, abs(self.llf)):
            raise UsageError(
                f"the restricted fit has the higher log-likelihood ({restricted.llf:.10g} > {self.llf:.10g}), so it is "
                "not nested in this one or one of the two fits has not converged"
            )
        stat = max(stat, 0.0)
        return ChiSquareTest("LR", stat, df, _chi2_sf(stat, df))

    def odds_ratios(self, alpha: float = 0.05) -> Table:
        """``exp(params)`` with ``exp(conf_int(alpha))``: the odds ratios (K classes: the relative-risk
        ratios against class 0) with their confidence limits.

        A :class:`Table` with columns ``odds_ratio``, ``lower``, ``upper`` and one row per
        :attr:`flat_param_names` (``pandas.DataFrame(t.values, index=t.index, columns=t.columns)``).
        """
        ci = self.conf_int(alpha).reshape(-1, 2)
        values = np.column_stack([np.exp(self.params.reshape(-1)), np.exp(ci)])
        return Table(values, self.flat_param_names, ["odds_ratio", "lower", "upper"])

    def get_margeff(self, at: str = "overall", method: str = "dydx") -> MarginalEffects:
        """Marginal effects ``d P(y = k | x) / d x_j`` with delta-method standard errors, statsmodels' ``get_margeff()``.

        ``at="overall"``: the average over the samples (weighted by ``w_n / sum w``) of the effects at
        each sample, ``p_n (1 - p_n) beta_j`` (binary), ``p_nk (beta_kj - sum_l p_nl beta_lj)``
        (K classes, all K classes including the reference); ``at="mean"``: the effects at the
        (weighted) mean of the rows. Only ``method="dydx"``. Constant columns (the intercept) have no
        effect and are left out. ``Cov(effects) = J Cov(theta) J^T`` with the exact Jacobian ``J`` of
        the effects with respect to the parameters (statsmodels differentiates numerically with a
        complex step) and this result's covariance.
        """
        if method != "dydx":
            raise UsageError(f"get_margeff supports method='dydx' only, got {method!r}")
        if at not in ("overall", "mean"):
            raise UsageError(f"get_margeff supports at='overall' or at='mean', got {at!r}")
        if self.margeff_terms is None:
            raise UsageError("this InferenceResult was built without the data needed for marginal effects")
        effects, jac = self.margeff_terms[at]
        keep = self.margeff_terms["keep"]
        k, a = effects.shape
        rows = [1] if self.params.ndim == 1 else list(range(k))
        cols = np.flatnonzero(keep)
        index = [r * a + j for r in rows for j in cols]
        jac = jac[index]
        cov = jac @ self.cov @ jac.T
        shape = (len(rows), len(cols))
        me = effects[np.ix_(rows, cols)]  # type: ignore[arg-type]  # numpy's stub takes no list of ints
        se = np.sqrt(np.clip(np.diag(cov), 0, None)).reshape(shape)
        if self.params.ndim == 1:
            me, se = me[0], se[0]
        return MarginalEffects(
            margeff=me,
            margeff_se=se,
            margeff_cov=cov,
            at=at,
            method=method,
            names=[self.param_names[j] for j in cols],
            endog_names=None if self.params.ndim == 1 else [f"{self.dep_variable}={c}" for c in self.class_names],
            model_name=self.model_name,
            dep_variable=self.dep_variable,
        )

    def summary(self, alpha: float = 0.05) -> Summary:
        """A table of the fit and the coefficients in the manner of statsmodels' ``summary()``."""
        width = 78
        left = [
            ("Dep. Variable:", self.dep_variable),
            ("Model:", self.model_name),
            ("Method:", "MLE"),
            ("Solver:", self.solver or "-"),
            ("Converged:", "-" if self.converged is None else str(bool(self.converged))),
            ("Iterations:", "-" if self.n_iter is None else str(self.n_iter)),
            ("Covariance Type:", self.cov_type),
        ]
        right = [
            ("No. Observations:", f"{self.nobs:g}"),
            ("Df Residuals:", f"{self.df_resid:g}"),
            ("Df Model:", f"{self.df_model:g}"),
            ("Pseudo R-squ.:", f"{self.prsquared:.4f}"),
            ("Log-Likelihood:", f"{self.llf:.5g}"),
            ("LL-Null:", f"{self.llnull:.5g}"),
            ("LLR p-value:", f"{self.llr_pvalue:.4g}"),
            ("AIC:", f"{self.aic:.5g}"),
            ("BIC:", f"{self.bic:.5g}"),
        ]
        title = f"{self.model_name} Regression Results"
        lines = [title.center(width), "=" * width]
        for i in range(max(len(left), len(right))):
            lk, lv = left[i] if i < len(left) else ("", "")
            rk, rv = right[i] if i < len(right) else ("", "")
            lines.append(f"{lk:<17}{lv:>21}   {rk:<18}{rv:>19}")
        ci = self.conf_int(alpha)
        lo, hi = f"[{alpha / 2:.3f}", f"{1 - alpha / 2:.3f}]"
        header = f"{'':<16}{'coef':>10}{'std err':>11}{'z':>10}{'P>|z|':>10}{lo:>11}{hi:>10}"
        blocks: list[tuple[str | None, Any, Any, Any, Any, Any]] = [
            (None, self.params, self.bse, self.zvalues, self.pvalues, ci)]
        if self.params.ndim == 2:
            blocks = [
                (f"{self.dep_variable}={self.class_names[k + 1]}", self.params[k], self.bse[k], self.zvalues[k],
                 self.pvalues[k], ci[k])
                for k in range(self.params.shape[0])
            ]
        tables = []
        for label, par, se, zv, pv, c in blocks:
            lines.append("=" * width)
            if label is not None:
                lines.append(f"{label:<16}{'coef':>10}{'std err':>11}{'z':>10}{'P>|z|':>10}{lo:>11}{hi:>10}")
            else:
                lines.append(header)
            lines.append("-" * width)
            tables.append(_coef_rows(lines, self.param_names, par, se, zv, pv, c, "coef"))
        lines.append("=" * width)
        return Summary("\n".join(lines), tables)


@dataclass
class Table:
    """A small labelled table: ``values`` ``(rows, columns)``, the row labels ``index`` (strings, or tuples
    named by ``index_names``) and the column labels ``columns``, the names pandas uses, so that
    ``pandas.DataFrame(t.values, index=t.index, columns=t.columns)`` is the same table. ``t["name"]`` is
    a column, ``t[["a", "b"]]`` several; ``str(t)`` prints it."""

    values: np.ndarray
    index: list
    columns: list[str]
    index_names: list[str] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape

    def __getitem__(self, key) -> np.ndarray:
        keys = [key] if isinstance(key, str) else list(key)
        missing = [k for k in keys if k not in self.columns]
        if missing:
            raise KeyError(f"no column {missing[0]!r}; the columns are {', '.join(self.columns)}")
        picked = self.values[:, [self.columns.index(k) for k in keys]]
        return picked[:, 0] if isinstance(key, str) else picked

    def to_dict(self) -> dict[str, np.ndarray]:
        """``{column: values}``."""
        return {c: self.values[:, j] for j, c in enumerate(self.columns)}

    def __str__(self) -> str:
        labels = [" ".join(map(str, r)) if isinstance(r, tuple) else str(r) for r in self.index]
        width = max([len(x) for x in labels] + [1])
        cells = [[f"{v:.6g}" for v in row] for row in self.values]
        widths = [max([len(c)] + [len(row[j]) for row in cells]) for j, c in enumerate(self.columns)]
        lines = [" " * width + "".join(f"  {c:>{w}}" for c, w in zip(self.columns, widths, strict=True))]
        for label, row in zip(labels, cells, strict=True):
            lines.append(f"{label:<{width}}" + "".join(f"  {v:>{w}}" for v, w in zip(row, widths, strict=True)))
        return "\n".join(lines)


@dataclass
class ChiSquareTest:
    """A chi-square test: ``statistic``, degrees of freedom ``df`` and ``pvalue = P(chi2_df > statistic)``.

    A Wald test also keeps its restrictions ``R theta = q`` (``r_matrix``, ``q``).
    """

    test: str
    statistic: float
    df: int
    pvalue: float
    r_matrix: np.ndarray | None = field(default=None, repr=False)
    q: np.ndarray | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return f"<{self.test} test (chi2): statistic={self.statistic!r}, p-value={self.pvalue!r}, df={self.df}>"


@dataclass
class MarginalEffects:
    """Marginal effects with delta-method standard errors (:meth:`InferenceResult.get_margeff`).

    Binary: ``margeff``, ``margeff_se`` have shape ``(D,)`` (the non-constant columns ``names``);
    K classes: ``(K, D)``, row k the effects on ``P(y = k)`` (statsmodels lays them out ``(D, K)``).
    ``margeff_cov`` is their covariance, flattened in the same order.
    """

    margeff: np.ndarray
    margeff_se: np.ndarray
    margeff_cov: np.ndarray
    at: str
    method: str
    names: list[str]
    endog_names: list[str] | None = None
    model_name: str = "Logit"
    dep_variable: str = "y"

    @property
    def zvalues(self) -> np.ndarray:
        return self.margeff / self.margeff_se

    @property
    def tvalues(self) -> np.ndarray:
        """Alias of ``zvalues`` (statsmodels' name)."""
        return self.zvalues

    @property
    def pvalues(self) -> np.ndarray:
        """``2 Phi(-|z|) = erfc(|z| / sqrt 2)``."""
        return torch.special.erfc(torch.from_numpy(np.abs(self.zvalues)) / math.sqrt(2.0)).numpy()

    def conf_int(self, alpha: float = 0.05) -> np.ndarray:
        """``margeff -+ z_{1 - alpha/2} margeff_se``: shape ``margeff.shape + (2,)`` (lower, upper)."""
        q = _normal_quantile(alpha)
        return np.stack([self.margeff - q * self.margeff_se, self.margeff + q * self.margeff_se], axis=-1)

    def summary_frame(self, alpha: float = 0.05) -> Table:
        """The table of statsmodels' ``summary_frame()``, as a :class:`Table` with its columns (``dy/dx``,
        ``Std. Err.``, ``z``, ``Pr(>|z|)``, ``Conf. Int. Low``, ``Cont. Int. Hi.``, statsmodels' spelling) and
        rows: the column names, or for K classes the pairs ``(endog, exog)`` with ``endog``
        ``"<dep_variable>=<class>"``, class-major (a pandas MultiIndex from ``t.index``)."""
        ci = self.conf_int(alpha)
        columns = ["dy/dx", "Std. Err.", "z", "Pr(>|z|)", "Conf. Int. Low", "Cont. Int. Hi."]
        values = [self.margeff, self.margeff_se, self.zvalues, self.pvalues, ci[..., 0], ci[..., 1]]
        table = np.column_stack([v.reshape(-1) for v in values])
        if self.endog_names is None:
            return Table(table, list(self.names), columns)
        pairs = [(e, x) for e in self.endog_names for x in self.names]
        return Table(table, pairs, columns, index_names=["endog", "exog"])

    def summary(self, alpha: float = 0.05) -> Summary:
        """statsmodels' marginal-effects table."""
        width = 78
        lines = [f"{self.model_name} Marginal Effects".center(37), "=" * 37]
        for key, value in (("Dep. Variable:", self.dep_variable), ("Method:", self.method), ("At:", self.at)):
            lines.append(f"{key:<16}{value:>21}")
        lo, hi = f"[{alpha / 2:.3f}", f"{1 - alpha / 2:.3f}]"
        ci = self.conf_int(alpha)
        blocks: list[tuple[str | None, Any, Any, Any, Any, Any]] = [
            (None, self.margeff, self.margeff_se, self.zvalues, self.pvalues, ci)]
        if self.endog_names is not None:
            blocks = [(e, self.margeff[k], self.margeff_se[k], self.zvalues[k], self.pvalues[k], ci[k])
                      for k, e in enumerate(self.endog_names)]
        tables = []
        for label, me, se, zv, pv, c in blocks:
            lines.append("=" * width)
            lines.append(f"{label or '':<16}{'dy/dx':>10}{'std err':>11}{'z':>10}{'P>|z|':>10}{lo:>11}{hi:>10}")
            lines.append("-" * width)
            tables.append(_coef_rows(lines, self.names, me, se, zv, pv, c, "dy/dx"))
        lines.append("=" * width)
        return Summary("\n".join(lines), tables)


def _coef_rows(lines: list[str], names: list[str], par, se, zv, pv, ci, what: str) -> list[dict]:
    """Append one formatted row per name to ``lines``; return the rows as dicts."""
    rows = []
    for j, name in enumerate(names):
        rows.append({"name": name, what: par[j], "std err": se[j], "z": zv[j], "P>|z|": pv[j],
                     "lower": ci[j, 0], "upper": ci[j, 1]})
        lines.append(
            f"{name[:15]:<16}{_fmt(par[j]):>10}{_fmt(se[j]):>11}{zv[j]:>10.3f}{pv[j]:>10.3f}"
            f"{_fmt(ci[j, 0]):>11}{_fmt(ci[j, 1]):>10}"
        )
    return rows


def _normal_quantile(alpha: float) -> float:
    """``z_{1 - alpha/2} = sqrt 2 erfinv(1 - alpha)``."""
    if not 0 < alpha < 1:
        raise UsageError(f"alpha must be in (0, 1), got {alpha!r}")
    return math.sqrt(2.0) * float(torch.special.erfinv(torch.tensor(1.0 - alpha, dtype=torch.float64)))


def _chi2_sf(x: float, df: float) -> float:
    """``P(chi2_df > x)``, the regularised upper incomplete gamma ``Q(df / 2, x / 2)`` (float64)."""
    if df <= 0:
        return math.nan
    half = torch.tensor([df / 2, max(x, 0.0) / 2], dtype=torch.float64)
    return float(torch.special.gammaincc(half[0], half[1]))


def _fmt(v: float) -> str:
    return f"{v:.4g}" if abs(v) >= 1e4 or (v != 0 and abs(v) < 1e-3) else f"{v:.4f}"


# --- inference --------------------------------------------------------------------------------


#: sparse X is densified for inference up to this many entries (N x D; 400 MB in float64)
SPARSE_DENSE_MAX_ENTRIES = 50_000_000


def infer(
    model,
    X,
    y,
    sample_weight=None,
    *,
    result=None,
    grad_tol: float = 1e-4,
    feature_names: list[str] | None = None,
    class_names: list[str] | None = None,
    dep_variable: str = "y",
    cov_type: str = "nonrobust",
    groups=None,
    weights_kind: str = "freq_weights",
) -> InferenceResult:
    """Standard errors, tests and likelihood statistics of an unpenalised fit of ``model``.

    ``model`` is a binary :class:`~torch_logreg.models.LogisticRegression` (one output) or a
    :class:`~torch_logreg.models.SoftmaxRegression`, already fitted to ``X`` ``(N, D)``, ``y``
    (and ``sample_weight``) by an unpenalised fit. ``result`` (the
    :class:`~torch_logreg.solvers.SolverResult` of that fit, optional) lets a penalised fit be
    refused by name; in any case the gradient of the mean log-likelihood must be below
    ``grad_tol`` (max-abs), i.e. the model must sit at the maximum-likelihood estimate.

    ``cov_type`` is one of :data:`COV_TYPES` (the module docstring gives each formula: ``"HC0"``,
    ``"cluster"`` as statsmodels; ``"HC1"`` ``= HC0 nobs / (nobs - k)``; ``"HC2"``, ``"HC3"`` with the
    GLM leverage, binary models only); ``groups`` ``(N,)``, the cluster label of each sample, is
    required by ``"cluster"`` and refused otherwise. ``weights_kind`` (:data:`WEIGHTS_KINDS`) says
    whether ``sample_weight`` holds frequency weights (``nobs = sum w``) or variance weights
    (``nobs = N``), as statsmodels' GLM. ``dep_variable`` names the response in the summaries.

    Raises :class:`PerfectSeparationError` when the classes are (quasi-)completely separated
    and ``ValueError`` for a penalised fit or a singular information matrix (collinear or
    constant features, named: :func:`check_conditioning`); a nearly singular one is reported
    with a :class:`CollinearityWarning`. Names default to ``const, x1, ..., xD`` and the class
    indices.
    """
    if result is not None and getattr(result, "penalized", False):
        raise UsageError(
            f"inference needs an unpenalised fit, but this model was fit with l2={result.l2:g}, "
            f"l1={result.l1:g}: penalised coefficients are biased and their standard errors are not "
            "valid. Refit with l2=0 and l1=0 (estimator: penalty=None)."
        )
    layer = linear_layer(model)
    if model.link == "sigmoid" and model.n_outputs != 1:
        raise UsageError(f"inference supports one binary output or a softmax; this model has {model.n_outputs} sigmoid outputs")
    if model.link not in ("sigmoid", "softmax"):
        raise UsageError(f"inference is for logistic models (link 'sigmoid' or 'softmax'), not {model.link!r}")
    cov_type = _check_cov_type(cov_type, groups, model.link)
    if weights_kind not in WEIGHTS_KINDS:
        raise UsageError(f"weights_kind must be one of {', '.join(map(repr, WEIGHTS_KINDS))}, got {weights_kind!r}")
    X, T, w = prepare(model, X, y, sample_weight)
    if X.layout != torch.strided:  # leverages, sandwiches and marginal effects read the rows densely
        if X.shape[0] * X.shape[1] > SPARSE_DENSE_MAX_ENTRIES:
            raise UsageError(f"inference reads sparse X as dense rows, and this X has {X.shape[0]:,} x {X.shape[1]:,} "
                             f"entries, more than {SPARSE_DENSE_MAX_ENTRIES:,}; standard errors of this many "
                             "coefficients are rarely what is wanted: select columns first")
        X = X.to_dense()
    bias = layer.bias is not None
    d = X.shape[1]
    names = list(feature_names) if feature_names is not None else [f"x{j + 1}" for j in range(d)]
    if len(names) != d:
        raise UsageError(f"feature_names has {len(names)} entries but X has {d} features")
    if bias:
        names = ["const", *names]
    codes, n_groups = _group_codes(groups, X.shape[0], X.device) if cov_type == "cluster" else (None, None)
    sep = find_separation(model, X, T, w, screen=X.shape[0] * max(1, model.n_outputs - 1) > LP_MAX_ROWS)
    if sep is not None:
        raise PerfectSeparationError(sep)

    with torch.no_grad():
        Xa = augment(X, bias)
        theta = get_theta(layer)  # (K, A)
        k, a = theta.shape
        n = X.shape[0]
        wn = torch.ones(n, dtype=X.dtype, device=X.device) if w is None else w
        wsum = wn.sum()
        nobs = float(wsum) if weights_kind == "freq_weights" else float(n)
        z = Xa @ theta.T
        nll, grad_z = model.loss_fn(z, T, w)
        llf = -nll * n
        # gradient of the per-observation log-likelihood, sum_n w_n (p_n - t_n) x~_n / sum_n w_n
        # (grad_z is already divided by N): it must vanish at the MLE
        grad = (grad_z.T @ Xa).abs().max() * n
        if model.link == "sigmoid":
            info = F.block_diagonal_hessian(Xa, F.diagonal_curvature("sigmoid", z, w) * n)[0]
            params = theta[0]
            tbar = (wn[:, None] * T).sum(0) / wsum
            llnull = wsum * _xlogy(tbar, tbar).sum() + wsum * _xlogy(1 - tbar, 1 - tbar).sum()
            n_contrasts = 1
            prob = torch.sigmoid(z[:, 0])
            resid = T - prob[:, None]  # (N, 1)
            curvature = prob * (1 - prob)
        else:
            p = torch.softmax(z, dim=1)
            full = F.softmax_hessian(Xa, p, w).view(k * a, k * a) * n
            info = full[a:, a:]  # classes 1..K-1 against the reference class 0
            params = theta[1:] - theta[0:1]
            props = (wn[:, None] * T).sum(0) / wsum
            llnull = wsum * _xlogy(props, props).sum()
            n_contrasts = k - 1
            resid = (T - p)[:, 1:]
            curvature = None
        collinearity = check_conditioning(info, names, n_contrasts)
        chol, status = torch.linalg.cholesky_ex(info)
        if int(status) != 0:
            raise UsageError(_SINGULAR)
        cov = torch.cholesky_inverse(chol)
        k_params = n_contrasts * a
        if cov_type != "nonrobust":
            cov = _sandwich(cov, Xa, resid, w, cov_type, weights_kind, codes, n_groups, nobs, k_params, curvature)
        bse = torch.sqrt(cov.diagonal()).view(params.shape)
        zval = params / bse
        pval = torch.special.erfc(zval.abs() / math.sqrt(2.0))
        df_model = n_contrasts * (a - 1 if bias else a)
        llr = 2 * (llf - llnull)
        llr_p = (
            torch.special.gammaincc(torch.as_tensor(df_model / 2, dtype=X.dtype, device=X.device), llr.clamp(min=0) / 2)
            if df_model > 0
            else torch.full((), math.nan, dtype=X.dtype, device=X.device)
        )
        grad_v = grad.item() / float(wsum)
        contrasts = torch.cat([torch.zeros_like(theta[:1]), params.view(n_contrasts, a)])  # (K, A), class 0 at zero
        margeff_terms = _margeff_summaries(Xa, contrasts, wn / wsum)
    if grad_v > grad_tol:
        raise UsageError(
            f"the model is not at the maximum-likelihood estimate: the gradient of the mean "
            f"log-likelihood has max |entry| {grad_v:.3e} > grad_tol={grad_tol:g}. Inference needs an "
            "unpenalised fit run to convergence (fit_exact(..., l2=0, l1=0) or penalty=None)."
        )
    if collinearity is not None:
        warnings.warn(collinearity, CollinearityWarning, stacklevel=2)
    classes = list(class_names) if class_names is not None else [str(c) for c in range(k if model.link == "softmax" else 2)]

    return InferenceResult(
        params=_np64(params),
        bse=_np64(bse),
        zvalues=_np64(zval),
        pvalues=_np64(pval),
        llf=float(llf),
        llnull=float(llnull),
        nobs=nobs,
        df_model=float(df_model),
        df_resid=nobs - k_params,
        llr_pvalue=float(llr_p),
        k_params=k_params,
        has_intercept=bias,
        param_names=names,
        class_names=classes,
        cov=_np64(cov),
        model_name="Logit" if model.link == "sigmoid" else "MNLogit",
        solver=getattr(result, "solver", "") if result is not None else "",
        converged=getattr(result, "converged", None) if result is not None else None,
        n_iter=getattr(result, "n_iter", None) if result is not None else None,
        dep_variable=dep_variable,
        cov_type=cov_type,
        weights_kind=weights_kind,
        n_groups=n_groups,
        margeff_terms=margeff_terms,
    )


def _np64(t: Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


def _check_cov_type(cov_type: str, groups, link: str) -> str:
    """The canonical name of ``cov_type`` (``"hc0"`` -> ``"HC0"``), refusing unknown types and misplaced ``groups``."""
    canonical = {c.lower(): c for c in COV_TYPES}.get(str(cov_type).lower()) if isinstance(cov_type, str) else None
    if canonical is None:
        raise UsageError(f"cov_type must be one of {', '.join(map(repr, COV_TYPES))}, got {cov_type!r}")
    if canonical == "cluster" and groups is None:
        raise UsageError("cov_type='cluster' needs groups, the cluster label of each sample")
    if canonical != "cluster" and groups is not None:
        raise UsageError(f"groups are used by cov_type='cluster' only, but cov_type is {canonical!r}")
    if canonical in ("HC2", "HC3") and link == "softmax":
        raise UsageError(
            f"cov_type={canonical!r} (leverage-corrected) is available for binary models only; use 'HC0', 'HC1' "
            "or 'cluster' for a softmax model"
        )
    return canonical


def _group_codes(groups, n: int, device) -> tuple[Tensor, int]:
    """``(codes (N,), G)``: each sample's cluster as an index ``0..G-1`` into the ``G`` distinct labels of ``groups``."""
    if isinstance(groups, Tensor):
        groups = groups.detach().cpu().numpy()
    labels = np.asarray(groups)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise UsageError(f"groups must be one label per sample, shape ({n},), got shape {labels.shape}")
    if labels.dtype.kind == "f" and not np.isfinite(labels).all():
        raise UsageError(f"groups has a missing or non-finite label at sample {int(np.flatnonzero(~np.isfinite(labels))[0])}")
    try:
        uniques, codes = np.unique(labels, return_inverse=True)
    except TypeError as exc:
        raise UsageError(f"groups must hold labels of one comparable type (numbers or strings): {exc}") from None
    if len(uniques) < 2:
        raise UsageError("cov_type='cluster' needs at least 2 groups, but groups holds a single label")
    return torch.as_tensor(codes.reshape(-1), dtype=torch.long, device=device), len(uniques)


def _sandwich(
    bread: Tensor,
    Xa: Tensor,
    resid: Tensor,
    w: Tensor | None,
    cov_type: str,
    weights_kind: str,
    codes: Tensor | None,
    n_groups: int | None,
    nobs: float,
    k_params: int,
    curvature: Tensor | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """The robust covariance ``H^-1 M H^-1`` of ``cov_type`` (module docstring), ``bread = H^-1`` ``(C A, C A)``.

    The scores are ``s_n = f_n r_n (x) x~_n`` with ``resid`` ``r`` ``(N, C)`` and the factor ``f_n``:
    ``w_n`` for clusters and variance weights, ``sqrt w_n`` for the HC types with frequency weights
    (so that ``s_n s_n^T = w_n r_n^2 x~_n x~_n^T``, the sum over ``w_n`` copies), divided by
    ``sqrt(1 - h_n)`` (HC2) or ``1 - h_n`` (HC3), ``h_n`` from ``curvature`` ``p_n (1 - p_n)`` ``(N,)``
    (binary models). The meat is accumulated ``chunk_size`` rows at a time.
    """
    n, a = Xa.shape
    c = resid.shape[1]
    if nobs <= k_params and cov_type in ("HC1", "cluster"):
        raise UsageError(f"cov_type={cov_type!r} needs more observations than parameters, but nobs={nobs:g} <= {k_params}")
    if w is None:
        f = torch.ones(n, dtype=Xa.dtype, device=Xa.device)
    elif cov_type == "cluster" or weights_kind == "var_weights":
        f = w
    else:
        f = w.sqrt()
    if cov_type in ("HC2", "HC3"):
        # leverage of each sample (each copy, for frequency weights) in the IRLS hat matrix
        assert curvature is not None  # HC2 and HC3 come with the curvature
        c_n = curvature if w is None or weights_kind == "freq_weights" else curvature * w
        h = torch.where(f > 0, c_n * ((Xa @ bread) * Xa).sum(1), 0)  # a zero-weight sample adds nothing
        full = h >= 1 - 100 * torch.finfo(h.dtype).eps
        if bool(full.any()):
            i = int(full.nonzero()[0, 0])
            raise UsageError(f"cov_type={cov_type!r} is undefined here: sample {i} has leverage 1 (it alone fixes a parameter)")
        f = f / (1 - h).sqrt() if cov_type == "HC2" else f / (1 - h)
    meat = Xa.new_zeros(c * a, c * a)
    sums = Xa.new_zeros(n_groups, c * a) if codes is not None else None  # type: ignore[arg-type]  # with codes
    chunk = chunk_size or max(1, (1 << 22) // (c * a))
    for start in range(0, n, chunk):
        rows = slice(start, start + chunk)
        s = ((f[rows, None] * resid[rows])[:, :, None] * Xa[rows, None, :]).reshape(-1, c * a)
        if sums is not None:
            sums.index_add_(0, codes[rows], s)  # type: ignore[index]  # sums come with codes
        else:
            meat.addmm_(s.T, s)
    if sums is not None:
        meat = sums.T @ sums
    cov = bread @ meat @ bread
    cov = (cov + cov.T) / 2
    if cov_type == "HC1":
        cov = cov * (nobs / (nobs - k_params))
    elif cov_type == "cluster":
        cov = cov * (n_groups / (n_groups - 1) * (nobs - 1) / (nobs - k_params))  # type: ignore[operator]  # with codes
    return cov


def _margeff_summaries(Xa: Tensor, contrasts: Tensor, omega: Tensor) -> dict:
    """What :meth:`InferenceResult.get_margeff` needs, computed once on the device: the effects and their
    Jacobians averaged over the samples (``"overall"``) and at the weighted mean row (``"mean"``), and the
    mask of the non-constant columns (``"keep"``, statsmodels leaves out columns of zero variance)."""
    overall = _margeff_terms(Xa, contrasts, omega)
    mean_row = (omega[:, None] * Xa).sum(0, keepdim=True)
    at_mean = _margeff_terms(mean_row, contrasts, omega.new_ones(1))
    keep = _np64(Xa.amax(0) != Xa.amin(0)).astype(bool) if Xa.shape[0] > 1 else np.ones(Xa.shape[1], bool)
    return {"overall": tuple(map(_np64, overall)), "mean": tuple(map(_np64, at_mean)), "keep": keep}


def _margeff_terms(Xa: Tensor, B: Tensor, omega: Tensor, chunk_size: int | None = None) -> tuple[Tensor, Tensor]:
    """Average marginal effects ``m (K, A)`` and their Jacobian ``(K A, (K-1) A)`` with respect to the contrasts.

    ``B`` ``(K, A)`` holds the contrasts with class 0 at zero (binary: ``[0, beta]``, so that the
    softmax of ``x~ B^T`` is ``(1 - p, p)``) and ``omega`` ``(N,)`` the averaging weights. With
    ``P_n = softmax(B x~_n)``, ``bbar_n = sum_l P_nl B_l`` and ``D_nkj = B_kj - bbar_nj``, the effect
    of column j on class k is ``m_kj = sum_n omega_n P_nk D_nkj`` and

    ``dm_kj / dB_lc = sum_n omega_n [x_nc (delta_kl P_nk D_nkj - P_nk P_nl D_nkj - P_nk P_nl D_nlj)
    + delta_jc (delta_kl P_nk - P_nk P_nl)]``, for the free classes l = 1..K-1.

    The three ``x_nc`` terms are one ``(K, A, A)`` and two ``(K A, K A)`` products over the rows, taken
    ``chunk_size`` rows at a time. Cost ``O(N K^2 A^2)``, that of the Hessian.
    """
    n, a = Xa.shape
    k = B.shape[0]
    ka = k * a
    me = Xa.new_zeros(k, a)
    own = Xa.new_zeros(k, a, a)
    cross = Xa.new_zeros(ka, ka)  # [(k, j), (l, c)]: sum omega P_nk D_nkj P_nl x_nc
    swap = Xa.new_zeros(ka, ka)  # [(k, c), (l, j)]: sum omega P_nk x_nc P_nl D_nlj
    q = Xa.new_zeros(k, k)
    chunk_size = chunk_size or max(1, (1 << 21) // ka)
    for start in range(0, n, chunk_size):
        x, om = Xa[start : start + chunk_size], omega[start : start + chunk_size]
        m = x.shape[0]
        P = torch.softmax(x @ B.T, dim=1)
        U = P[:, :, None] * (B[None] - (P @ B)[:, None, :])  # per-sample effects P_nk D_nkj
        V = P[:, :, None] * x[:, None, :]
        Uw = U * om[:, None, None]
        me += Uw.sum(0)
        own += torch.einsum("mkj,mc->kjc", Uw, x)
        cross.addmm_(Uw.reshape(m, ka).T, V.reshape(m, ka))
        swap.addmm_((V * om[:, None, None]).reshape(m, ka).T, U.reshape(m, ka))
        Pw = P * om[:, None]
        q += torch.diag(Pw.sum(0)) - Pw.T @ P
    jac = -cross.view(k, a, k, a) - swap.view(k, a, k, a).permute(0, 3, 2, 1)
    diag = torch.arange(k, device=Xa.device)
    jac[diag, :, diag, :] += own
    jac += q[:, None, :, None] * torch.eye(a, dtype=Xa.dtype, device=Xa.device)[None, :, None, :]
    return me, jac[:, :, 1:, :].reshape(ka, (k - 1) * a)


# --- linear restrictions written as text ------------------------------------------------------

_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_WORD = re.compile(r"[^\s=+\-*/(),]+")


def _parse_constraints(text: str, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(R, q)`` of the restrictions in ``text`` over the parameters ``names`` (:meth:`InferenceResult.wald_test`).

    Grammar: ``restrictions := restriction ("," restriction)*``; ``restriction := chain | "(" chain ")"``;
    ``chain := expr ("=" expr)*`` (``a = b = c`` is ``a - b = 0, b - c = 0``; a lone ``expr`` is
    ``expr = 0``); ``expr := ["+" | "-"] term (("+" | "-") term)*``; ``term := factor (("*" | "/")
    factor)*`` with at most one factor holding a parameter and only constants as divisors;
    ``factor := number | name | "(" expr ")"``. Names are matched longest first, before numbers.
    """
    tokens = _tokenize(text, names)
    n = len(names)
    pos = 0

    def fail(what: str) -> NoReturn:
        raise UsageError(f"cannot read the restrictions {text!r}: {what}")

    def peek():
        return tokens[pos] if pos < len(tokens) else ("end", None)

    def take(op: str) -> bool:
        nonlocal pos
        if peek() == ("op", op):
            pos += 1
            return True
        return False

    def factor() -> tuple[np.ndarray, float]:
        nonlocal pos
        kind, value = peek()
        pos += 1
        if kind == "name":
            v = np.zeros(n)
            v[value] = 1.0
            return v, 0.0
        if kind == "num":
            return np.zeros(n), value
        if (kind, value) == ("op", "("):
            out = expr()
            if not take(")"):
                fail("a parenthesis is not closed")
            return out
        fail("it ends too early" if kind == "end" else f"unexpected {value!r}")

    def term() -> tuple[np.ndarray, float]:
        v, c = factor()
        while peek() in (("op", "*"), ("op", "/")):
            divide = peek()[1] == "/"
            take(peek()[1])
            v2, c2 = factor()
            if divide:
                if v2.any() or c2 == 0:
                    fail("only division by a non-zero constant is linear")
                v, c = v / c2, c / c2
            elif v.any() and v2.any():
                fail("a product of two parameters is not linear")
            else:
                v, c = (v * c2, c * c2) if v.any() else (v2 * c, c * c2)
        return v, c

    def expr() -> tuple[np.ndarray, float]:
        sign = -1.0 if take("-") else 1.0
        if sign > 0:
            take("+")
        v, c = term()
        v, c = sign * v, sign * c
        while peek() in (("op", "+"), ("op", "-")):
            sign = -1.0 if peek()[1] == "-" else 1.0
            take(peek()[1])
            v2, c2 = term()
            v, c = v + sign * v2, c + sign * c2
        return v, c

    def chain() -> list[tuple[np.ndarray, float]]:
        sides = [expr()]
        while take("="):
            sides.append(expr())
        if len(sides) == 1:
            sides.append((np.zeros(n), 0.0))
        # a = b  <=>  (v_a - v_b) theta = c_b - c_a
        return [(va - vb, cb - ca) for (va, ca), (vb, cb) in zip(sides, sides[1:], strict=False)]

    def restriction() -> list[tuple[np.ndarray, float]]:
        nonlocal pos
        if peek() == ("op", "("):
            depth, j = 0, pos
            while j < len(tokens):  # a parenthesised restriction holds "=" at its own depth
                depth += {("op", "("): 1, ("op", ")"): -1}.get(tokens[j], 0)  # type: ignore[arg-type]
                if depth == 0:
                    break
                if depth == 1 and tokens[j] == ("op", "="):
                    pos += 1
                    rows = chain()
                    if not take(")"):
                        fail("a parenthesis is not closed")
                    return rows
                j += 1
        return chain()

    rows = restriction()
    while take(","):
        rows += restriction()
    if pos != len(tokens):
        fail(f"unexpected {tokens[pos][1]!r}")
    return np.array([v for v, _ in rows]), np.array([c for _, c in rows])


def _tokenize(text: str, names: list[str]) -> list[tuple[str, object]]:
    """``("name", index)``, ``("num", value)`` and ``("op", char)`` tokens of ``text``."""
    by_length = sorted(range(len(names)), key=lambda i: -len(names[i]))
    tokens: list[tuple[str, object]] = []
    i = 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        for j in by_length:
            end = i + len(names[j])
            # a name must not be the start of a longer word
            if text.startswith(names[j], i) and not (end < len(text) and _joins(names[j][-1], text[end])):
                tokens.append(("name", j))
                i = end
                break
        else:
            number = _NUMBER.match(text, i)
            word = _WORD.match(text, i)
            if number and (word is None or word.end() <= number.end()):
                tokens.append(("num", float(number.group())))
                i = number.end()
            elif text[i] in "=+-*/(),":
                tokens.append(("op", text[i]))
                i += 1
            else:
                shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
                raise UsageError(f"cannot read the restrictions {text!r}: {word.group()!r} "  # type: ignore[union-attr]
                                 f"is not a parameter name ({shown})")
    return tokens


def _joins(last: str, nxt: str) -> bool:
    return (last.isalnum() or last == "_") and (nxt.isalnum() or nxt in "_.")


def check_conditioning(info: Tensor, names: list[str], n_contrasts: int = 1) -> str | None:
    """Refuse a singular information matrix, naming the columns responsible; warn of an ill-conditioned one.

    ``info`` is ``(C A, C A)`` for ``C = n_contrasts`` class contrasts (class-major) of the ``A``
    parameters ``names``. It is scaled to unit diagonal and its eigenvalues (float64) give the
    reciprocal condition number ``rcond``; the bounds are :func:`rcond_bounds` of ``info.dtype``.
    Raises ``ValueError`` when a column has zero or non-finite information or ``rcond`` is below
    the singular bound; returns the text of a :class:`CollinearityWarning` when it is below the
    collinear bound, else None.
    """
    singular, collinear = rcond_bounds(info.dtype)
    a = len(names)
    dtype_name = str(info.dtype).removeprefix("torch.")
    device = info.device if info.device.type in ("cpu", "cuda") else torch.device("cpu")
    info = info.detach().to(device=device, dtype=torch.float64)
    diag = info.diagonal()
    empty = (~torch.isfinite(diag) | (diag <= 0)).view(n_contrasts, a).any(0)
    if bool(empty.any()):
        cols = [names[j] for j in empty.nonzero()[:, 0].tolist()]
        raise UsageError(
            f"the design is singular: {_columns(cols)} {'has' if len(cols) == 1 else 'have'} zero or non-finite "
            f"information (zero for every sample with positive weight, or too large for {dtype_name}); "
            f"drop {'it' if len(cols) == 1 else 'them'} so standard errors exist"
        )
    scale = diag.rsqrt()
    scaled = scale[:, None] * info * scale[None, :]
    if not bool(torch.isfinite(scaled).all()):
        raise UsageError(_SINGULAR)
    size = torch.linalg.eigvalsh(scaled).abs()
    rcond = float(size.min() / size.max())
    if rcond >= collinear:
        return None
    values, vectors = torch.linalg.eigh(scaled)
    size = values.abs()
    bound = singular if rcond < singular else collinear
    near_null = vectors[:, size < bound * size.max()]
    if near_null.shape[1] == 0:  # eigh and eigvalsh disagree at the last digit
        near_null = vectors[:, size.argmin()].unsqueeze(1)
    loading = near_null.square().sum(1).sqrt().view(n_contrasts, a).amax(0)
    picked = (loading > LOADING).nonzero()[:, 0].tolist() or [int(loading.argmax())]
    cols = [names[j] for j in picked]
    relations = max(1, -(-near_null.shape[1] // n_contrasts))
    if rcond < singular:
        if len(cols) == 1:
            what, todo = f"{_columns(cols)} is a combination of the others", "drop it"
        else:
            todo = "drop one of them" if relations == 1 else f"drop {relations} of them (one per linear relation)"
            what = f"{_columns(cols)} are collinear"
        raise UsageError(
            f"the design is singular (reciprocal condition number {rcond:.2g} < {singular:.2g}): {what}; "
            f"{todo} so standard errors exist"
        )
    what = f"{_columns(cols)} " + ("is nearly a combination of the others" if len(cols) == 1 else "are nearly collinear")
    return (
        f"the design is nearly singular (reciprocal condition number {rcond:.2g} < {collinear:.2g}): {what}, "
        f"so their standard errors are large and keep fewer than half of the {dtype_name} digits; "
        "consider dropping or combining them"
    )


def _columns(cols: list[str]) -> str:
    return ("column " if len(cols) == 1 else "columns ") + ", ".join(repr(c) for c in cols)


def _xlogy(x: Tensor, y: Tensor) -> Tensor:
    return torch.special.xlogy(x, y)








