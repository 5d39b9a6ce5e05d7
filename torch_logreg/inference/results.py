"""The inference of an unpenalised fit: :func:`infer` computes it on the model's device and returns an
:class:`InferenceResult` (the maths: the package docstring; the covariances: :mod:`.covariance`)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import arguments
from .. import functional as F
from ..errors import UsageError
from ..penalty import theta_mask
from ..solvers import prepare
from ..solvers.glm import vector
from ..solvers.params import augment, get_theta, linear_layer
from . import constraints
from .constraint_strings import read_constraints
from .constraints import ChiSquareTest
from .covariance import WEIGHTS_KINDS, check_cov_type, group_codes, inverse_information, sandwich
from .diagnostics import LP_MAX_ROWS, CollinearityWarning, PerfectSeparationError, check_conditioning, find_separation
from .fitdata import FitData
from .margins import MarginalEffects, marginal_effects
from .prediction import MultinomialPredictionResults, PredictionResults, predict, predict_multinomial
from .profile import profile_intervals
from .residuals import Fitted, Influence, hosmer_lemeshow, influence
from .stats import chi2_sf, normal_quantile, to_numpy
from .tables import Summary, Table, coefficient_summary, fit_header


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
    #: the fit's rows on its device (:class:`~.fitdata.FitData`), read by :meth:`get_margeff` and
    #: :meth:`conf_int` with ``method="profile"``
    data: FitData | None = field(default=None, repr=False, compare=False)
    #: the per-row quantities of a binary fit (:class:`~.residuals.Fitted`), read by the residuals and diagnostics
    fitted: Fitted | None = field(default=None, repr=False, compare=False)

    def _fitted(self) -> Fitted:
        if self.fitted is None:
            raise UsageError("residuals and influence are computed for binary fits only (statsmodels' GLM Binomial)")
        return self.fitted

    @property
    def resid_response(self) -> np.ndarray:
        """``y - mu`` ``(N,)`` (:mod:`.residuals`)."""
        return self._fitted().resid_response()

    @property
    def resid_pearson(self) -> np.ndarray:
        """``sqrt(v) (y - mu) / sqrt(mu (1 - mu))`` ``(N,)`` (:mod:`.residuals`)."""
        return self._fitted().resid_pearson()

    @property
    def resid_deviance(self) -> np.ndarray:
        """The signed square roots of the rows' deviances ``(N,)`` (:mod:`.residuals`)."""
        return self._fitted().resid_deviance()

    def get_influence(self) -> Influence:
        """Leverage (``hat_matrix_diag``), ``resid_studentized`` and ``cooks_distance`` of each row, statsmodels'
        ``GLMResults.get_influence()`` for a binary fit (:mod:`.residuals`)."""
        return influence(self._fitted(), self.k_params)

    def hosmer_lemeshow(self, groups: int = 10) -> ChiSquareTest:
        """The Hosmer-Lemeshow test over ``groups`` groups of fitted probability (:func:`.residuals.hosmer_lemeshow`)."""
        return hosmer_lemeshow(self._fitted(), groups)

    def get_prediction(self, X, offset=None) -> PredictionResults | MultinomialPredictionResults:
        """The predicted probabilities of the rows of ``X`` ``(M, D)`` (plus ``offset`` ``(M,)``, binary fits)
        with their standard errors and confidence intervals (``.summary_frame(alpha)``): statsmodels'
        ``get_prediction`` for a binary GLM, and for K classes the delta method per class with columns
        ``mean_<class>``, ``mean_se_<class>``, ``mean_ci_lower_<class>``, ``mean_ci_upper_<class>``
        (:mod:`.prediction` states the maths)."""
        if self.params.ndim != 1:
            if offset is not None:
                raise UsageError("offset is supported for binary models (one sigmoid output) only")
            return predict_multinomial(self.params, self.cov, X, self.has_intercept, self.class_names)
        return predict(self.params, self.cov, X, self.has_intercept, offset)

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

    def conf_int(self, alpha: float = 0.05, method: str = "wald") -> np.ndarray:
        """Confidence intervals of the parameters: shape ``params.shape + (2,)`` (lower, upper).

        ``method="wald"``: ``params -+ z_{1 - alpha/2} bse``, with this result's covariance; ``"profile"``: the
        profile-likelihood intervals ``{v : 2 (llf - l_p(v)) <= z_{1 - alpha/2}^2}``, R's ``confint`` on a glm and
        logistf's (for Firth's fits the profile of the penalised likelihood), found by root-finding on the
        profile (:mod:`.profile`); they follow the likelihood's shape (asymmetric where it is) and do not
        depend on ``cov_type``. Each costs a few constrained Newton fits per end.
        """
        arguments.choice("method", method, ("wald", "profile"))
        if method == "profile":
            if self.data is None:
                raise UsageError("conf_int(method='profile') needs the fit's rows, which this InferenceResult does not keep")
            flat = profile_intervals(self.data, self.params.reshape(-1), self.bse.reshape(-1), alpha)
            return flat.reshape(*self.params.shape, 2)
        q = normal_quantile(alpha)
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
        parameters (:attr:`flat_param_names`), with ``q`` (default 0), or the pair ``(R, q)``
        (:func:`~.constraints.linear_constraints`), or a string of restrictions
        separated by commas, each a chain of linear expressions in the parameter names and constants,
        e.g. ``"GPA = TUCE = 0"`` (two restrictions), ``"(GPA = 0), (TUCE = 0)"``,
        ``"GPA - 2 * TUCE = 1"``; an expression without ``=`` is set to 0. Names are read before
        numbers, so a parameter named ``1`` is the parameter.
        """
        R, q = read_constraints(R, q, self.flat_param_names)
        return constraints.wald_test(self.params, self.cov, R, q)

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
        return ChiSquareTest("LR", stat, df, chi2_sf(stat, df))

    def odds_ratios(self, alpha: float = 0.05) -> Table:
        """``exp(params)`` with ``exp(conf_int(alpha))``: the odds ratios (K classes: the relative-risk
        ratios against class 0) with their confidence limits.

        A :class:`Table` with columns ``odds_ratio``, ``lower``, ``upper`` and one row per
        :attr:`flat_param_names` (``pandas.DataFrame(t.values, index=t.index, columns=t.columns)``).
        """
        ci = self.conf_int(alpha).reshape(-1, 2)
        values = np.column_stack([np.exp(self.params.reshape(-1)), np.exp(ci)])
        return Table(values, self.flat_param_names, ["odds_ratio", "lower", "upper"])

    def get_margeff(self, at: str = "overall", method: str = "dydx", dummy: bool = False) -> MarginalEffects:
        """Marginal effects ``d P(y = k | x) / d x_j`` with delta-method standard errors, statsmodels' ``get_margeff()``.

        ``at`` (where): ``"overall"``, the average over the samples (weighted by ``w_n / sum w``) of the
        effects at each sample; ``"mean"``, ``"median"``, the effects at the (weighted) mean or median row;
        ``"zero"``, at the row of zeros (1 in constant columns). ``method`` (what): ``"dydx"``,
        ``p (1 - p) beta_j`` (binary), ``p_k (beta_kj - sum_l p_l beta_lj)`` (K classes, all K classes
        including the reference); ``"eydx"`` divides by ``p`` (``d ln p / d x_j``), ``"dyex"`` multiplies by
        ``x_j`` (``d p / d ln x_j``), ``"eyex"`` both (elasticities); each at a row, before averaging.
        ``dummy=True`` (with ``"dydx"`` or ``"eydx"``, ``at="overall"`` or ``"mean"``, as statsmodels allows)
        gives each column holding only 0 and 1 its discrete change, ``p(x_j = 1) - p(x_j = 0)`` (``"eydx"``:
        of ``ln p``). Constant columns (the intercept) have no effect and are left out.
        ``Cov(effects) = J Cov(theta) J^T`` with the exact Jacobian ``J`` of the effects with respect to the
        parameters (:mod:`.margins`; statsmodels differentiates numerically with a complex step) and this
        result's covariance. Not computed for fits with an offset.
        """
        return marginal_effects(self, at, method, dummy)

    def summary(self, alpha: float = 0.05) -> Summary:
        """A table of the fit and the coefficients in the manner of statsmodels' ``summary()``."""
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
        ci = self.conf_int(alpha)
        blocks: list[tuple[str | None, Any, Any, Any, Any, Any]] = [(None, self.params, self.bse, self.zvalues, self.pvalues, ci)]
        if self.params.ndim == 2:
            blocks = [
                (f"{self.dep_variable}={self.class_names[k + 1]}", self.params[k], self.bse[k], self.zvalues[k],
                 self.pvalues[k], ci[k])
                for k in range(self.params.shape[0])
            ]
        lines = fit_header(f"{self.model_name} Regression Results", left, right)
        return coefficient_summary(lines, self.param_names, blocks, "coef", alpha)


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
    offset=None,
    penalty: str | None = None,
    l2: float = 0.0,
) -> InferenceResult:
    """Standard errors, tests and likelihood statistics of an unpenalised fit of ``model``.

    ``model`` is a binary :class:`~torch_logreg.models.LogisticRegression` (one output) or a
    :class:`~torch_logreg.models.SoftmaxRegression`, already fitted to ``X`` ``(N, D)``, ``y``
    (and ``sample_weight``) by an unpenalised fit. ``result`` (the
    :class:`~torch_logreg.solvers.SolverResult` of that fit, optional) lets a penalised fit be
    refused by name; in any case the gradient of the mean log-likelihood must be below
    ``grad_tol`` (max-abs), i.e. the model must sit at the maximum-likelihood estimate.

    ``cov_type`` is one of :data:`~.covariance.COV_TYPES` (:mod:`.covariance` gives each formula: ``"HC0"``,
    ``"cluster"`` as statsmodels; ``"HC1"`` ``= HC0 nobs / (nobs - k)``; ``"HC2"``, ``"HC3"`` with the
    GLM leverage, binary models only); ``groups`` ``(N,)``, the cluster label of each sample, is
    required by ``"cluster"`` and refused otherwise. ``weights_kind`` (:data:`~.covariance.WEIGHTS_KINDS`) says
    whether ``sample_weight`` holds frequency weights (``nobs = sum w``) or variance weights
    (``nobs = N``), as statsmodels' GLM. ``dep_variable`` names the response in the summaries.
    ``offset`` ``(N,)`` (binary models) is the known term the fit added to each logit, as in
    ``GLM(y, X, family=Binomial(), offset=offset)``: ``llnull`` is then the intercept-only fit with
    the offset, and marginal effects are not computed.

    ``penalty="firth"`` (binary, ``cov_type="nonrobust"``): the model holds Firth's estimate
    (``fit_exact(..., penalty="firth")``), the gradient checked is that of the penalised likelihood
    (the modified score), ``Cov = I^-1`` at the estimate (as R's logistf), separation is no
    obstacle, and ``llf``, ``llnull`` are the penalised log-likelihoods ``l + (1/2) log det I`` of
    the fit and of the intercept-only Firth fit (with the offset), as logistf reports them.

    ``l2 > 0`` (``cov_type="nonrobust"``, not Firth): the model holds the minimizer of the mean negative
    log-likelihood plus ``(l2 / 2) ||W||^2`` (the weights, not the intercept: :mod:`torch_logreg.penalty`), the
    objective every solver minimises. The gradient checked is that objective's, separation is no obstacle, and
    ``Cov`` is the inverse observed information of ``N`` times it, ``I + N l2 P``: binary ``P = diag(mask)``
    (1 on the weights); K classes, in the contrasts against class 0, ``P = (I_{K-1} - 1 1^T / K) (x) diag(mask)``,
    the Hessian of the penalty minimised over the common shift of all classes' weights, which no
    probability depends on (the minimizer has ``sum_k W_k = 0``). ``llf`` and ``llnull`` stay the likelihood's.

    Raises :class:`PerfectSeparationError` when the classes are (quasi-)completely separated
    and ``ValueError`` for a penalised fit or a singular information matrix (collinear or
    constant features, named: :func:`~.diagnostics.check_conditioning`); a nearly singular one is
    reported with a :class:`~.diagnostics.CollinearityWarning`. Names default to ``const, x1, ..., xD`` and the class
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
    cov_type = check_cov_type(cov_type, groups, model.link)
    firth = penalty == "firth"
    if penalty not in (None, "firth"):
        raise UsageError(f"penalty must be None or 'firth', got {penalty!r}")
    if not (l2 >= 0 and math.isfinite(l2)):
        raise UsageError(f"l2 must be a finite number >= 0, got {l2!r}")
    if l2 and (firth or cov_type != "nonrobust"):
        raise UsageError("inference with l2 > 0 is for penalty=None and cov_type='nonrobust'")
    if firth and (model.link != "sigmoid" or cov_type != "nonrobust"):
        raise UsageError("inference for penalty='firth' is for binary models with cov_type='nonrobust'")
    if weights_kind not in WEIGHTS_KINDS:
        raise UsageError(f"weights_kind must be one of {', '.join(map(repr, WEIGHTS_KINDS))}, got {weights_kind!r}")
    X, T, w = prepare(model, X, y, sample_weight)
    off = None
    if offset is not None:
        if model.link != "sigmoid":
            raise UsageError("offset is supported for binary models (one sigmoid output) only")
        off = vector(offset, "offset", X.shape[0], X.dtype, X.device)
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
    codes, n_groups = group_codes(groups, X.shape[0], X.device) if cov_type == "cluster" else (None, None)
    sep = None if firth or l2 else find_separation(model, X, T, w, screen=X.shape[0] * max(1, model.n_outputs - 1) > LP_MAX_ROWS)
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
        z = Xa @ theta.T if off is None else Xa @ theta.T + off[:, None]
        nll, grad_z = model.loss_fn(z, T, w)
        llf = -nll * n
        # gradient of the per-observation log-likelihood, sum_n w_n (p_n - t_n) x~_n / sum_n w_n
        # (grad_z is already divided by N): it must vanish at the MLE
        mask = theta_mask(theta, bias)
        grad = (grad_z.T @ Xa + l2 * mask * theta).abs().max() * n
        if model.link == "sigmoid":
            info = F.block_diagonal_hessian(Xa, F.diagonal_curvature("sigmoid", z, w) * n)[0]
            params = theta[0]
            tbar = (wn[:, None] * T).sum(0) / wsum
            llnull = wsum * _xlogy(tbar, tbar).sum() + wsum * _xlogy(1 - tbar, 1 - tbar).sum()
            if off is not None or firth:
                llnull = _llnull_offset(T[:, 0], off if off is not None else torch.zeros_like(wn), wn, tbar[0], firth)
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
        if l2:  # the penalty's curvature, N l2 P (see the docstring)
            P = torch.diag(mask[0])
            if model.link == "softmax":
                P = torch.kron(torch.eye(k - 1, dtype=X.dtype, device=X.device) - 1.0 / k, P)
            info = info + n * l2 * P
        collinearity = check_conditioning(info, names, n_contrasts)
        cov = inverse_information(info)
        if firth:  # the modified score's gradient and the penalised likelihood (solvers/glm.py)
            assert curvature is not None  # binary (checked above)
            h = wn * curvature * ((Xa @ cov) * Xa).sum(1)
            grad = (Xa.T @ (wn * (prob - T[:, 0]) - h * (0.5 - prob))).abs().max()
            llf = llf + 0.5 * torch.linalg.slogdet(info)[1]
        k_params = n_contrasts * a
        fitted = None
        if curvature is not None:  # binary: the rows' leverages in the IRLS hat matrix, from the nonrobust I^-1
            hat = wn * curvature * ((Xa @ cov) * Xa).sum(1)
            vw = wn if weights_kind == "var_weights" else torch.ones_like(wn)
            fitted = Fitted(*(to_numpy(v) for v in (T[:, 0], prob, wn, vw, hat)))
        if cov_type != "nonrobust":
            cov = sandwich(cov, Xa, resid, w, cov_type, weights_kind, codes, n_groups, nobs, k_params, curvature)
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
        data = FitData(Xa, T, wn, off, model.link == "softmax", firth)
    if grad_v > grad_tol and l2:
        raise UsageError(f"the model is not at the minimum of the log-likelihood plus the L2 penalty l2={l2:g}: the "
                         f"gradient of that mean objective has max |entry| {grad_v:.3e} > grad_tol={grad_tol:g}")
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
        params=to_numpy(params),
        bse=to_numpy(bse),
        zvalues=to_numpy(zval),
        pvalues=to_numpy(pval),
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
        cov=to_numpy(cov),
        model_name=("Firth logit" if firth else "Logit") if model.link == "sigmoid" else "MNLogit",
        solver=getattr(result, "solver", "") if result is not None else "",
        converged=getattr(result, "converged", None) if result is not None else None,
        n_iter=getattr(result, "n_iter", None) if result is not None else None,
        dep_variable=dep_variable,
        cov_type=cov_type,
        weights_kind=weights_kind,
        n_groups=n_groups,
        data=data,
        fitted=fitted,
    )


def _llnull_offset(y: Tensor, offset: Tensor, w: Tensor, ybar: Tensor, firth: bool = False, max_iter: int = 100) -> Tensor:
    """The log-likelihood of the intercept-only model with ``offset``, ``max_c sum_n w_n log p(y_n | c + o_n)``,
    by Newton on the one parameter from ``logit(ybar)`` (statsmodels' GLM ``llnull`` with an offset); with ``firth``
    the penalised one, ``+ (1/2) log I(c)``, ``I(c) = sum_n w_n p_n (1 - p_n)``, by Firth's modified score."""
    c = torch.log(ybar / (1 - ybar)) if 0 < float(ybar) < 1 else torch.zeros_like(ybar)
    for _ in range(max_iter):
        p = torch.sigmoid(c + offset)
        g, h = (w * (y - p)).sum(), (w * p * (1 - p)).sum()
        if firth:  # leverages w_n p_n (1 - p_n) / I, each times (1/2 - p_n)
            g = g + (w * p * (1 - p) * (0.5 - p)).sum() / h
        step = g / h
        c = c + step
        if bool(step.abs() <= 1e-15 * max(1.0, float(c.abs()))):
            break
    eta = c + offset
    llf = (w * (F.log_sigmoid(eta) * y + F.log_sigmoid(-eta) * (1 - y))).sum()
    if firth:
        p = torch.sigmoid(eta)
        llf = llf + 0.5 * torch.log((w * p * (1 - p)).sum())
    return llf


def _xlogy(x: Tensor, y: Tensor) -> Tensor:
    return torch.special.xlogy(x, y)
