"""Confidence intervals for the predicted probability of a binary fit: statsmodels' ``get_prediction``.

For a row ``x~ = [1, x]`` with offset ``o``, the linear predictor ``eta = x~^T theta + o`` has the standard
error ``se_eta = sqrt(x~^T Cov x~)`` (the fit's covariance, of its ``cov_type``); its interval
``eta -+ z_{1-alpha/2} se_eta`` is mapped through the link: ``mean_ci = sigmoid(eta -+ z se_eta)``, which stays
in (0, 1). ``mean = sigmoid(eta)`` and ``mean_se = mu (1 - mu) se_eta`` (the delta method). These are the
columns of statsmodels' ``GLMResults.get_prediction(X).summary_frame(alpha)`` for ``family=Binomial()``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .stats import normal_quantile


@dataclass
class PredictionResults:
    """``predicted_mean`` ``mu`` ``(M,)``, ``se_mean`` ``(M,)``, the linear predictor ``linpred`` and its ``se_linpred``."""

    predicted_mean: np.ndarray
    se_mean: np.ndarray
    linpred: np.ndarray
    se_linpred: np.ndarray

    def conf_int(self, alpha: float = 0.05) -> np.ndarray:
        """``(M, 2)``: the lower and upper limits of ``mu``, ``sigmoid(eta -+ z_{1-alpha/2} se_eta)``."""
        q = normal_quantile(alpha)
        eta = np.stack([self.linpred - q * self.se_linpred, self.linpred + q * self.se_linpred], axis=1)
        return _expit(eta)

    def summary_frame(self, alpha: float = 0.05):
        """Columns ``mean``, ``mean_se``, ``mean_ci_lower``, ``mean_ci_upper`` (statsmodels' names), a
        ``dict`` of ``(M,)`` arrays in that order: ``pandas.DataFrame(...)`` of it is statsmodels' frame
        (pandas is no dependency of the library, so the type does not depend on what is installed)."""
        ci = self.conf_int(alpha)
        return {"mean": self.predicted_mean, "mean_se": self.se_mean, "mean_ci_lower": ci[:, 0], "mean_ci_upper": ci[:, 1]}


def predict(params: np.ndarray, cov: np.ndarray, X, has_intercept: bool, offset=None) -> PredictionResults:
    """:class:`PredictionResults` for the rows of ``X`` ``(M, D)`` under ``params`` ``(A,)`` and ``cov`` ``(A, A)``."""
    from ..errors import UsageError

    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[None, :]
    Xa = np.column_stack([np.ones(X.shape[0]), X]) if has_intercept else X
    if X.ndim != 2 or Xa.shape[1] != params.shape[0]:
        raise UsageError(f"X must have {params.shape[0] - int(has_intercept)} columns, got shape {X.shape}")
    eta = Xa @ params
    if offset is not None:
        off = np.asarray(offset, dtype=np.float64).reshape(-1)
        if off.shape[0] != X.shape[0]:
            raise UsageError(f"offset must have one entry per row of X, shape ({X.shape[0]},), got shape {off.shape}")
        eta = eta + off
    se = np.sqrt(np.einsum("na,ab,nb->n", Xa, cov, Xa))
    mu = _expit(eta)
    return PredictionResults(predicted_mean=mu, se_mean=mu * (1 - mu) * se, linpred=eta, se_linpred=se)


def _expit(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` without overflow: ``exp(-log(1 + exp(-x)))``."""
    return np.exp(-np.logaddexp(0.0, -x))
