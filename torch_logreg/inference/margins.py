"""Marginal effects ``d P(y = k | x) / d x_j`` with delta-method standard errors, statsmodels' ``get_margeff()``.

:func:`margeff_summaries` computes, once on the device when the result is built, the effects and their
exact Jacobians with respect to the parameters; :func:`marginal_effects` turns them and the result's
covariance into a :class:`MarginalEffects`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import UsageError
from .stats import normal_quantile, to_numpy
from .tables import Summary, Table, coefficient_summary


@dataclass
class MarginalEffects:
    """Marginal effects with delta-method standard errors (:func:`marginal_effects`).

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
        q = normal_quantile(alpha)
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
        lines = [f"{self.model_name} Marginal Effects".center(37), "=" * 37]
        for key, value in (("Dep. Variable:", self.dep_variable), ("Method:", self.method), ("At:", self.at)):
            lines.append(f"{key:<16}{value:>21}")
        ci = self.conf_int(alpha)
        blocks: list[tuple[str | None, Any, Any, Any, Any, Any]] = [
            (None, self.margeff, self.margeff_se, self.zvalues, self.pvalues, ci)]
        if self.endog_names is not None:
            blocks = [(e, self.margeff[k], self.margeff_se[k], self.zvalues[k], self.pvalues[k], ci[k])
                      for k, e in enumerate(self.endog_names)]
        return coefficient_summary(lines, self.names, blocks, "dy/dx", alpha)


def marginal_effects(result, at: str = "overall", method: str = "dydx") -> MarginalEffects:
    """The marginal effects of ``result``, an :class:`~torch_logreg.inference.InferenceResult`, ``at`` the
    samples' average (``"overall"``) or their mean (``"mean"``): ``result.get_margeff(at, method)``.

    The effects of the non-constant columns (for a binary model, on ``P(y = 1)``) are picked from
    ``result.margeff_terms`` and ``Cov(effects) = J Cov(theta) J^T`` with ``result.cov``.
    """
    if method != "dydx":
        raise UsageError(f"get_margeff supports method='dydx' only, got {method!r}")
    if at not in ("overall", "mean"):
        raise UsageError(f"get_margeff supports at='overall' or at='mean', got {at!r}")
    if result.margeff_terms is None:
        raise UsageError("this InferenceResult was built without the data needed for marginal effects")
    effects, jac = result.margeff_terms[at]
    keep = result.margeff_terms["keep"]
    k, a = effects.shape
    rows = [1] if result.params.ndim == 1 else list(range(k))
    cols = np.flatnonzero(keep)
    index = [r * a + j for r in rows for j in cols]
    jac = jac[index]
    cov = jac @ result.cov @ jac.T
    shape = (len(rows), len(cols))
    me = effects[np.ix_(rows, cols)]  # type: ignore[arg-type]  # numpy's stub takes no list of ints
    se = np.sqrt(np.clip(np.diag(cov), 0, None)).reshape(shape)
    if result.params.ndim == 1:
        me, se = me[0], se[0]
    return MarginalEffects(
        margeff=me,
        margeff_se=se,
        margeff_cov=cov,
        at=at,
        method=method,
        names=[result.param_names[j] for j in cols],
        endog_names=None if result.params.ndim == 1 else [f"{result.dep_variable}={c}" for c in result.class_names],
        model_name=result.model_name,
        dep_variable=result.dep_variable,
    )


def margeff_summaries(Xa: Tensor, contrasts: Tensor, omega: Tensor) -> dict:
    """What :func:`marginal_effects` needs, computed once on the device: the effects and their
    Jacobians averaged over the samples (``"overall"``) and at the weighted mean row (``"mean"``), and the
    mask of the non-constant columns (``"keep"``, statsmodels leaves out columns of zero variance)."""
    overall = margeff_terms(Xa, contrasts, omega)
    mean_row = (omega[:, None] * Xa).sum(0, keepdim=True)
    at_mean = margeff_terms(mean_row, contrasts, omega.new_ones(1))
    keep = to_numpy(Xa.amax(0) != Xa.amin(0)).astype(bool) if Xa.shape[0] > 1 else np.ones(Xa.shape[1], bool)
    return {"overall": tuple(map(to_numpy, overall)), "mean": tuple(map(to_numpy, at_mean)), "keep": keep}


def margeff_terms(Xa: Tensor, B: Tensor, omega: Tensor, chunk_size: int | None = None) -> tuple[Tensor, Tensor]:
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
