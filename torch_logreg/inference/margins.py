"""Marginal effects ``d P(y = k | x) / d x_j`` with delta-method standard errors, statsmodels' ``get_margeff()``.

:func:`marginal_effects` computes, on the fit's device from the rows the result keeps, the effects and their
exact Jacobians with respect to the parameters (:func:`margeff_terms`, :func:`discrete_change`) and turns them
and the result's covariance into a :class:`MarginalEffects`.
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
    dummy: bool = False

    @property
    def zvalues(self) -> np.ndarray:
        """``margeff / margeff_se``; NaN where both are 0 (a column that is 0 at the row the effects are read at,
        with ``method="dyex"`` or ``"eyex"``)."""
        with np.errstate(divide="ignore", invalid="ignore"):
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
        """The table of statsmodels' ``summary_frame()``, as a :class:`Table` with its columns (``dy/dx`` or the
        method's title, :data:`METHODS`,
        ``Std. Err.``, ``z``, ``Pr(>|z|)``, ``Conf. Int. Low``, ``Cont. Int. Hi.``, statsmodels' spelling) and
        rows: the column names, or for K classes the pairs ``(endog, exog)`` with ``endog``
        ``"<dep_variable>=<class>"``, class-major (a pandas MultiIndex from ``t.index``)."""
        ci = self.conf_int(alpha)
        columns = [METHODS[self.method], "Std. Err.", "z", "Pr(>|z|)", "Conf. Int. Low", "Cont. Int. Hi."]
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
        return coefficient_summary(lines, self.names, blocks, METHODS[self.method], alpha)


#: where the effects are evaluated (statsmodels' ``at=``, less ``"all"``, which has no standard errors)
AT = ("overall", "mean", "median", "zero")
#: what is differentiated (statsmodels' ``method=``): ``d y / d x``, ``d ln y / d ln x``, ``d y / d ln x``,
#: ``d ln y / d x``, and the column titles statsmodels gives them
METHODS = {"dydx": "dy/dx", "eyex": "d(lny)/d(lnx)", "dyex": "dy/d(lnx)", "eydx": "d(lny)/dx"}


def marginal_effects(result, at: str = "overall", method: str = "dydx", dummy: bool = False) -> MarginalEffects:
    """The marginal effects of ``result``, an :class:`~torch_logreg.inference.InferenceResult`:
    ``result.get_margeff(at, method, dummy)``, statsmodels' ``get_margeff`` (its docstring states the maths).

    The effects of the non-constant columns (for a binary model, on ``P(y = 1)``) and their Jacobian with
    respect to the contrasts come from :func:`margeff_terms` (and :func:`discrete_change` for the 0/1
    columns when ``dummy``), evaluated at the rows :func:`evaluation_rows` picks;
    ``Cov(effects) = J Cov(theta) J^T`` with ``result.cov``.
    """
    if at not in AT:
        raise UsageError(f"get_margeff: at must be one of {', '.join(map(repr, AT))}, got {at!r}")
    if method not in METHODS:
        raise UsageError(f"get_margeff: method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
    if dummy and method in ("eyex", "dyex"):
        raise UsageError(f"get_margeff: method={method!r} takes the logarithm of x, which a 0/1 column does not "
                         "allow with dummy=True; use 'dydx' or 'eydx'")
    if dummy and at in ("median", "zero"):
        raise UsageError(f"get_margeff: at={at!r} sets each 0/1 column to one value, so with dummy=True use at="
                         "'overall' or 'mean'")
    data = result.data
    if data is None or data.offset is not None:
        why = "an offset" if data is not None else "no data kept"
        raise UsageError(f"get_margeff: this InferenceResult was built with {why}; marginal effects are computed "
                         "for fits without an offset")
    Xa, w = data.Xa, data.w
    params = torch.as_tensor(result.params, dtype=Xa.dtype, device=Xa.device)
    with torch.no_grad():
        n_contrasts, a = (1, params.shape[0]) if params.ndim == 1 else params.shape
        contrasts = torch.cat([Xa.new_zeros(1, a), params.view(n_contrasts, a)])  # (K, A), class 0 at zero
        keep_t = Xa.amax(0) != Xa.amin(0) if Xa.shape[0] > 1 else torch.ones(a, dtype=torch.bool, device=Xa.device)
        rows, omega = evaluation_rows(Xa, w, at, keep_t)
        ey, ex = method.startswith("ey"), method.endswith("ex")
        effects_t, jac_t = margeff_terms(rows, contrasts, omega, ey=ey, ex=ex)
        if dummy:
            k = contrasts.shape[0]
            for j in dummy_columns(Xa):
                effects_t[:, j], jac_j = discrete_change(rows, j, contrasts, omega, log=ey)
                jac_t.view(k, a, -1)[:, j] = jac_j
    effects, jac = to_numpy(effects_t), to_numpy(jac_t)
    keep = to_numpy(keep_t).astype(bool)
    k, a = effects.shape
    rows_k = [1] if result.params.ndim == 1 else list(range(k))
    cols = np.flatnonzero(keep)
    index = [r * a + j for r in rows_k for j in cols]
    jac = jac[index]
    cov = jac @ result.cov @ jac.T
    shape = (len(rows_k), len(cols))
    me = effects[np.ix_(rows_k, cols)]  # type: ignore[arg-type]  # numpy's stub takes no list of ints
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
        dummy=dummy,
    )


def evaluation_rows(Xa: Tensor, w: Tensor, at: str, keep: Tensor) -> tuple[Tensor, Tensor]:
    """The rows ``(M, A)`` at which the effects are evaluated and their averaging weights ``(M,)``.

    ``"overall"``: every row, weighted ``w / sum w``; ``"mean"``: the weighted mean row; ``"median"``: the
    column-wise weighted median (the median of the rows repeated ``w_n`` times: the midpoint of the smallest
    values whose cumulative weight reaches, and exceeds, ``sum w / 2``); ``"zero"``: zeros, with 1 in the
    constant columns (``~keep``), as statsmodels.
    """
    if at == "overall":
        return Xa, w / w.sum()
    one = w.new_ones(1)
    if at == "mean":
        return ((w / w.sum())[:, None] * Xa).sum(0, keepdim=True), one
    if at == "zero":
        return (~keep).to(Xa.dtype)[None, :], one
    values, order = Xa.sort(0)
    cum = w[order].cumsum(0)  # (N, A): cumulative weight along each sorted column
    half = (w.sum() / 2).expand(Xa.shape[1], 1).contiguous()
    last = Xa.shape[0] - 1
    lo = torch.searchsorted(cum.T.contiguous(), half, right=False).clamp(max=last)
    hi = torch.searchsorted(cum.T.contiguous(), half, right=True).clamp(max=last)
    median = (values.gather(0, lo.T) + values.gather(0, hi.T)) / 2
    return median, one


def dummy_columns(Xa: Tensor) -> list[int]:
    """The columns holding 0 and 1 and nothing else (statsmodels' ``dummy=True`` reads them as switches)."""
    zero_one = ((Xa == 0) | (Xa == 1)).all(0) & (Xa.amin(0) == 0) & (Xa.amax(0) == 1)
    return [int(j) for j in zero_one.nonzero()[:, 0]]


def discrete_change(rows: Tensor, j: int, B: Tensor, omega: Tensor, log: bool) -> tuple[Tensor, Tensor]:
    """The effect of switching column ``j`` from 0 to 1, ``m_k = sum_n omega_n [g(P_nk(x_n, x_nj = 1)) -
    g(P_nk(x_n, x_nj = 0))]`` ``(K,)`` with ``g`` the identity (``log``: the logarithm), and its Jacobian
    ``(K, (K-1) A)`` with respect to the contrasts of classes 1..K-1, from
    ``d g(P_nk) / d B_lc = P_nk^a (delta_kl - P_nl) x_nc`` (``a = 0`` for the logarithm, else 1)."""
    k = B.shape[0]
    eye = torch.eye(k, dtype=rows.dtype, device=rows.device)
    effect, jac = rows.new_zeros(k), rows.new_zeros(k, k, rows.shape[1])
    for value, sign in ((1.0, 1.0), (0.0, -1.0)):
        x = rows.clone()
        x[:, j] = value
        P = torch.softmax(x @ B.T, dim=1)
        G = torch.ones_like(P) if log else P
        effect += sign * (omega[:, None] * (torch.log(P) if log else P)).sum(0)
        M = G[:, :, None] * (eye[None] - P[:, None, :])  # (n, k, l)
        jac += sign * torch.einsum("nkl,nc->klc", omega[:, None, None] * M, x)
    return effect, jac[:, 1:, :].reshape(k, -1)


def margeff_terms(Xa: Tensor, B: Tensor, omega: Tensor, chunk_size: int | None = None, *, ey: bool = False,
                  ex: bool = False) -> tuple[Tensor, Tensor]:
    """Average marginal effects ``m (K, A)`` and their Jacobian ``(K A, (K-1) A)`` with respect to the contrasts.

    ``B`` ``(K, A)`` holds the contrasts with class 0 at zero (binary: ``[0, beta]``, so that the
    softmax of ``x~ B^T`` is ``(1 - p, p)``) and ``omega`` ``(N,)`` the averaging weights. With
    ``P_n = softmax(B x~_n)``, ``bbar_n = sum_l P_nl B_l`` and ``D_nkj = B_kj - bbar_nj``, the effect
    of column j on class k is ``m_kj = sum_n omega_n P_nk^a D_nkj c_nj``, with ``a = 1`` for ``dy`` and 0 for
    ``ey`` (``d ln P / d x = D``) and ``c_nj = x_nj`` for ``ex`` (``d / d ln x = x d / d x``), else 1; and

    ``dm_kj / dB_lc = sum_n omega_n c_nj [a x_nc (delta_kl P_nk D_nkj - P_nk P_nl D_nkj) - P_nk^a P_nl D_nlj x_nc
    + delta_jc P_nk^a (delta_kl - P_nl)]``, for the free classes l = 1..K-1.

    The three ``x_nc`` terms are one ``(K, A, A)`` and two ``(K A, K A)`` products over the rows, taken
    ``chunk_size`` rows at a time. Cost ``O(N K^2 A^2)``, that of the Hessian.
    """
    n, a = Xa.shape
    k = B.shape[0]
    ka = k * a
    me = Xa.new_zeros(k, a)
    own = Xa.new_zeros(k, a, a)
    cross = Xa.new_zeros(ka, ka)  # [(k, j), (l, c)]: sum omega c_nj P_nk D_nkj P_nl x_nc
    swap = Xa.new_zeros(ka, ka)  # [(k, c), (l, j)]: sum omega P_nk^a x_nc P_nl D_nlj c_nj
    q = Xa.new_zeros(k, k, a)  # [k, l, j]: sum omega c_nj P_nk^a (delta_kl - P_nl)
    chunk_size = chunk_size or max(1, (1 << 21) // ka)
    for start in range(0, n, chunk_size):
        x, om = Xa[start : start + chunk_size], omega[start : start + chunk_size]
        m = x.shape[0]
        P = torch.softmax(x @ B.T, dim=1)
        Pa = torch.ones_like(P) if ey else P
        c = x if ex else torch.ones_like(x)
        D = B[None] - (P @ B)[:, None, :]
        U = Pa[:, :, None] * D * c[:, None, :]  # per-sample effects P_nk^a D_nkj c_nj
        Uw = U * om[:, None, None]
        me += Uw.sum(0)
        if not ey:
            own += torch.einsum("mkj,mc->kjc", Uw, x)
            cross.addmm_(Uw.reshape(m, ka).T, (P[:, :, None] * x[:, None, :]).reshape(m, ka))
        left = (om[:, None] * Pa)[:, :, None] * x[:, None, :]
        swap.addmm_(left.reshape(m, ka).T, (P[:, :, None] * D * c[:, None, :]).reshape(m, ka))
        Pw = om[:, None] * Pa
        q += torch.diag_embed((Pw.T @ c).T).permute(1, 2, 0) - torch.einsum("mk,ml,mj->klj", Pw, P, c)
    jac = -cross.view(k, a, k, a) - swap.view(k, a, k, a).permute(0, 3, 2, 1)
    diag = torch.arange(k, device=Xa.device)
    jac[diag, :, diag, :] += own
    jac += q.permute(0, 2, 1)[:, :, :, None] * torch.eye(a, dtype=Xa.dtype, device=Xa.device)[None, :, None, :]
    return me, jac[:, :, 1:, :].reshape(ka, (k - 1) * a)


# --- linear restrictions written as text ------------------------------------------------------
