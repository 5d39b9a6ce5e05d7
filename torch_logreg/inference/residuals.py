"""Residuals, leverage, Cook's distance and the Hosmer-Lemeshow test of a binary fit, in statsmodels' GLM terms.

With ``y_n`` in {0, 1}, the fitted probability ``mu_n``, the variance weight ``v_n`` (the sample weight for
``weights_kind="var_weights"``, else 1) and the IRLS weight ``c_n = w_n mu_n (1 - mu_n)``:

* ``resid_response = y - mu``;
* ``resid_pearson = sqrt(v) (y - mu) / sqrt(mu (1 - mu))``;
* ``resid_deviance = sign(y - mu) sqrt(2 v (y log(y / mu) + (1 - y) log((1 - y) / (1 - mu))))``;
* the leverage ``h_n = c_n x~_n^T I^-1 x~_n``, the diagonal of ``W^1/2 X~ (X~^T W X~)^-1 X~^T W^1/2``;
* ``resid_studentized = resid_pearson / sqrt(1 - h)`` and Cook's distance
  ``D_n = resid_studentized_n^2 h_n / ((1 - h_n) k)`` (``k`` parameters, scale 1).

These equal statsmodels' ``GLMResults.resid_*`` and ``GLMResults.get_influence()`` (``hat_matrix_diag``,
``resid_studentized``, ``cooks_distance[0]``) for ``GLM(y, X, family=Binomial())``. statsmodels'
``cooks_distance`` is the pair (distance, F p-value); here it is the distance alone.

Hosmer-Lemeshow (Hosmer & Lemeshow 2000, section 5.2.2): the rows sorted by ``mu`` (ties by row order)
are cut into ``g`` groups of as nearly equal size as possible (``numpy.array_split``: the first
``N mod g`` groups one row larger); with ``O_j = sum y``, ``E_j = sum mu`` and ``n_j`` rows in group j
(weights multiply each row's contribution to all three),
``HL = sum_j (O_j - E_j)^2 / (E_j (1 - E_j / n_j))``, referred to chi-square with ``g - 2`` degrees of freedom.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from .constraints import ChiSquareTest
from .stats import chi2_sf


@dataclass
class Fitted:
    """The per-row quantities of a binary fit that the residuals read: ``endog`` ``y`` ``(N,)``, ``mu`` ``(N,)``,
    ``weights`` ``w`` ``(N,)`` (ones without weights), ``var_weights`` ``v`` ``(N,)`` and ``hat`` ``h`` ``(N,)``."""

    endog: np.ndarray
    mu: np.ndarray
    weights: np.ndarray
    var_weights: np.ndarray
    hat: np.ndarray

    def resid_response(self) -> np.ndarray:
        return self.endog - self.mu

    def resid_pearson(self) -> np.ndarray:
        return np.sqrt(self.var_weights) * (self.endog - self.mu) / np.sqrt(self.mu * (1 - self.mu))

    def resid_deviance(self) -> np.ndarray:
        y, mu = self.endog, self.mu
        with np.errstate(divide="ignore", invalid="ignore"):
            dev = np.where(y > 0, y * np.log(y / mu), 0.0) + np.where(y < 1, (1 - y) * np.log((1 - y) / (1 - mu)), 0.0)
        return np.sign(y - mu) * np.sqrt(np.clip(2 * self.var_weights * dev, 0, None))


@dataclass
class Influence:
    """Leverage and influence of each row: ``hat_matrix_diag``, ``resid_studentized`` and ``cooks_distance`` ``(N,)``
    (statsmodels' ``GLMInfluence`` names; the module docstring gives the formulas)."""

    hat_matrix_diag: np.ndarray
    resid_studentized: np.ndarray
    cooks_distance: np.ndarray


def influence(fitted: Fitted, k_params: int) -> Influence:
    """The :class:`Influence` of ``fitted``, a fit of ``k_params`` parameters."""
    h = fitted.hat
    student = fitted.resid_pearson() / np.sqrt(1 - h)
    return Influence(hat_matrix_diag=h.copy(), resid_studentized=student, cooks_distance=student**2 * h / (1 - h) / k_params)


def hosmer_lemeshow(fitted: Fitted, groups: int = 10) -> ChiSquareTest:
    """The Hosmer-Lemeshow goodness-of-fit test over ``groups`` groups of fitted probability (module docstring)."""
    n = fitted.mu.shape[0]
    if not isinstance(groups, (int, np.integer)) or not 3 <= groups <= n:
        raise UsageError(f"groups must be an integer from 3 to the number of rows ({n}), got {groups!r}")
    order = np.argsort(fitted.mu, kind="stable")
    stat = 0.0
    for rows in np.array_split(order, int(groups)):
        w = fitted.weights[rows]
        size, observed, expected = w.sum(), (w * fitted.endog[rows]).sum(), (w * fitted.mu[rows]).sum()
        stat += (observed - expected) ** 2 / (expected * (1 - expected / size))
    df = int(groups) - 2
    return ChiSquareTest("Hosmer-Lemeshow", float(stat), df, chi2_sf(float(stat), df))
