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

Sample weights are read as frequency weights (``nobs = sum w``).

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
import warnings
from dataclasses import dataclass, field

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
    (``D`` without an intercept). ``cov_params()`` is ``(A, A)`` or ``((K-1)A, (K-1)A)``.
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
        if not 0 < alpha < 1:
            raise UsageError(f"alpha must be in (0, 1), got {alpha!r}")
        q = math.sqrt(2.0) * float(torch.special.erfinv(torch.tensor(1.0 - alpha, dtype=torch.float64)))
        return np.stack([self.params - q * self.bse, self.params + q * self.bse], axis=-1)

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
            ("Covariance Type:", "nonrobust"),
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
        blocks = [(None, self.params, self.bse, self.zvalues, self.pvalues, ci)]
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
            rows = []
            for j, name in enumerate(self.param_names):
                rows.append({"name": name, "coef": par[j], "std err": se[j], "z": zv[j], "P>|z|": pv[j],
                             "lower": c[j, 0], "upper": c[j, 1]})
                lines.append(
                    f"{name[:15]:<16}{_fmt(par[j]):>10}{_fmt(se[j]):>11}{zv[j]:>10.3f}{pv[j]:>10.3f}"
                    f"{_fmt(c[j, 0]):>11}{_fmt(c[j, 1]):>10}"
                )
            tables.append(rows)
        lines.append("=" * width)
        return Summary("\n".join(lines), tables)


def _fmt(v: float) -> str:
    return f"{v:.4g}" if abs(v) >= 1e4 or (v != 0 and abs(v) < 1e-3) else f"{v:.4f}"


# --- inference --------------------------------------------------------------------------------


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
) -> InferenceResult:
    """Standard errors, tests and likelihood statistics of an unpenalised fit of ``model``.

    ``model`` is a binary :class:`~torch_logreg.models.LogisticRegression` (one output) or a
    :class:`~torch_logreg.models.SoftmaxRegression`, already fitted to ``X`` ``(N, D)``, ``y``
    (and ``sample_weight``, read as frequency weights) by an unpenalised fit. ``result`` (the
    :class:`~torch_logreg.solvers.SolverResult` of that fit, optional) lets a penalised fit be
    refused by name; in any case the gradient of the mean log-likelihood must be below
    ``grad_tol`` (max-abs), i.e. the model must sit at the maximum-likelihood estimate.

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
    X, T, w = prepare(model, X, y, sample_weight)
    bias = layer.bias is not None
    d = X.shape[1]
    names = list(feature_names) if feature_names is not None else [f"x{j + 1}" for j in range(d)]
    if len(names) != d:
        raise UsageError(f"feature_names has {len(names)} entries but X has {d} features")
    if bias:
        names = ["const", *names]
    sep = find_separation(model, X, T, w, screen=X.shape[0] * max(1, model.n_outputs - 1) > LP_MAX_ROWS)
    if sep is not None:
        raise PerfectSeparationError(sep)

    with torch.no_grad():
        Xa = augment(X, bias)
        theta = get_theta(layer)  # (K, A)
        k, a = theta.shape
        n = X.shape[0]
        wn = torch.ones(n, dtype=X.dtype, device=X.device) if w is None else w
        nobs = wn.sum()
        z = Xa @ theta.T
        nll, grad_z = model.loss_fn(z, T, w)
        llf = -nll * n
        # gradient of the per-observation log-likelihood, sum_n w_n (p_n - t_n) x~_n / sum_n w_n
        # (grad_z is already divided by N): it must vanish at the MLE
        grad = (grad_z.T @ Xa).abs().max() * n
        if model.link == "sigmoid":
            info = F.block_diagonal_hessian(Xa, F.diagonal_curvature("sigmoid", z, w) * n)[0]
            params = theta[0]
            tbar = (wn[:, None] * T).sum(0) / nobs
            llnull = nobs * _xlogy(tbar, tbar).sum() + nobs * _xlogy(1 - tbar, 1 - tbar).sum()
            n_contrasts = 1
        else:
            p = torch.softmax(z, dim=1)
            full = F.softmax_hessian(Xa, p, w).view(k * a, k * a) * n
            info = full[a:, a:]  # classes 1..K-1 against the reference class 0
            params = theta[1:] - theta[0:1]
            props = (wn[:, None] * T).sum(0) / nobs
            llnull = nobs * _xlogy(props, props).sum()
            n_contrasts = k - 1
        collinearity = check_conditioning(info, names, n_contrasts)
        chol, status = torch.linalg.cholesky_ex(info)
        if int(status) != 0:
            raise UsageError(_SINGULAR)
        cov = torch.cholesky_inverse(chol)
        bse = torch.sqrt(cov.diagonal()).view(params.shape)
        zval = params / bse
        pval = torch.special.erfc(zval.abs() / math.sqrt(2.0))
        k_params = n_contrasts * a
        df_model = n_contrasts * (a - 1 if bias else a)
        llr = 2 * (llf - llnull)
        llr_p = (
            torch.special.gammaincc(torch.as_tensor(df_model / 2, dtype=X.dtype, device=X.device), llr.clamp(min=0) / 2)
            if df_model > 0
            else torch.full((), math.nan, dtype=X.dtype, device=X.device)
        )
        grad_v = grad.item() / float(nobs)
    if grad_v > grad_tol:
        raise UsageError(
            f"the model is not at the maximum-likelihood estimate: the gradient of the mean "
            f"log-likelihood has max |entry| {grad_v:.3e} > grad_tol={grad_tol:g}. Inference needs an "
            "unpenalised fit run to convergence (fit_exact(..., l2=0, l1=0) or penalty=None)."
        )
    if collinearity is not None:
        warnings.warn(collinearity, CollinearityWarning, stacklevel=2)
    classes = list(class_names) if class_names is not None else [str(c) for c in range(k if model.link == "softmax" else 2)]

    def np64(t: Tensor) -> np.ndarray:
        return t.detach().to("cpu", torch.float64).numpy()

    nobs_f = float(nobs)
    return InferenceResult(
        params=np64(params),
        bse=np64(bse),
        zvalues=np64(zval),
        pvalues=np64(pval),
        llf=float(llf),
        llnull=float(llnull),
        nobs=nobs_f,
        df_model=float(df_model),
        df_resid=nobs_f - k_params,
        llr_pvalue=float(llr_p),
        k_params=k_params,
        has_intercept=bias,
        param_names=names,
        class_names=classes,
        cov=np64(cov),
        model_name="Logit" if model.link == "sigmoid" else "MNLogit",
        solver=getattr(result, "solver", "") if result is not None else "",
        converged=getattr(result, "converged", None) if result is not None else None,
        n_iter=getattr(result, "n_iter", None) if result is not None else None,
        dep_variable=dep_variable,
    )


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








