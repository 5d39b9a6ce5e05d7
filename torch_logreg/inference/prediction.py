"""Confidence intervals for predicted probabilities: statsmodels' ``get_prediction`` (binary) and its softmax extension.

For a row ``x~ = [1, x]`` with offset ``o``, the linear predictor ``eta = x~^T theta + o`` has the standard
error ``se_eta = sqrt(x~^T Cov x~)`` (the fit's covariance, of its ``cov_type``); its interval
``eta -+ z_{1-alpha/2} se_eta`` is mapped through the link: ``mean_ci = sigmoid(eta -+ z se_eta)``, which stays
in (0, 1). ``mean = sigmoid(eta)`` and ``mean_se = mu (1 - mu) se_eta`` (the delta method). These are the
columns of statsmodels' ``GLMResults.get_prediction(X).summary_frame(alpha)`` for ``family=Binomial()``.

K classes (``MNLogit``'s parameterization: ``theta_j`` ``(A,)`` for classes ``j = 1..K-1`` against the reference
class 0, whose logit is 0; ``Cov`` ``((K-1)A, (K-1)A)``, class-major): ``eta_0 = 0``, ``eta_j = x~^T theta_j`` and
``p_k = softmax(eta)_k``. The delta method differentiates each class's probability in all parameters,
``d p_k / d theta_j = p_k (delta_kj - p_j) x~``, so with ``g_kj = p_k (delta_kj - p_j)`` and ``V_jl = x~^T Cov_jl x~``
(the ``(K-1, K-1)`` covariance of the logits ``eta_1..eta_{K-1}`` of the row),
``mean_se_k = sqrt(g_k^T V g_k)``. The interval is the one on ``logit(p_k)`` mapped back, as in the binary case:
``se(logit p_k) = mean_se_k / (p_k (1 - p_k))`` (the delta method again) and
``mean_ci_k = sigmoid(logit(p_k) -+ z_{1-alpha/2} se(logit p_k))``, which stays in (0, 1) (an interval on ``p_k``
itself would leave it). With K = 2 the class-1 columns are the binary ones (``logit p_1 = eta_1``).
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


@dataclass
class MultinomialPredictionResults:
    """K classes: ``predicted_mean`` ``p`` ``(M, K)``, ``se_mean`` ``(M, K)`` (delta method), ``class_names`` (K)."""

    predicted_mean: np.ndarray
    se_mean: np.ndarray
    class_names: list[str]

    def conf_int(self, alpha: float = 0.05) -> np.ndarray:
        """``(M, K, 2)``: the lower and upper limits of each ``p_k``, ``sigmoid(logit p_k -+ z se(logit p_k))``."""
        q = normal_quantile(alpha)
        p = self.predicted_mean
        with np.errstate(divide="ignore", invalid="ignore"):  # p_k = 0 or 1 (underflow): a point interval
            logit = np.log(p) - np.log1p(-p)
            se = self.se_mean / (p * (1 - p))
        lo, hi = _expit(logit - q * se), _expit(logit + q * se)
        degenerate = ~np.isfinite(se)
        lo, hi = np.where(degenerate, p, lo), np.where(degenerate, p, hi)
        return np.stack([lo, hi], axis=2)

    def summary_frame(self, alpha: float = 0.05):
        """A ``dict`` of ``(M,)`` arrays, four columns per class in class order, named as statsmodels' binary
        columns with the class appended: ``mean_<class>``, ``mean_se_<class>``, ``mean_ci_lower_<class>``,
        ``mean_ci_upper_<class>`` (``pandas.DataFrame(...)`` of it is a frame with those columns)."""
        ci = self.conf_int(alpha)
        frame = {}
        for k, c in enumerate(self.class_names):
            frame[f"mean_{c}"] = self.predicted_mean[:, k]
            frame[f"mean_se_{c}"] = self.se_mean[:, k]
            frame[f"mean_ci_lower_{c}"] = ci[:, k, 0]
            frame[f"mean_ci_upper_{c}"] = ci[:, k, 1]
        return frame


def _design(X, has_intercept: bool, n_params: int) -> np.ndarray:
    """``X~ = [1, X]`` (or ``X``) as float64 ``(M, A)``, checked against the ``A = n_params`` parameters."""
    from ..errors import UsageError

    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[None, :]
    if X.ndim != 2 or X.shape[1] + int(has_intercept) != n_params:
        raise UsageError(f"X must have {n_params - int(has_intercept)} columns, got shape {X.shape}")
    return np.column_stack([np.ones(X.shape[0]), X]) if has_intercept else X


def predict_multinomial(params: np.ndarray, cov: np.ndarray, X, has_intercept: bool,
                        class_names: list[str]) -> MultinomialPredictionResults:
    """:class:`MultinomialPredictionResults` for the rows of ``X`` ``(M, D)`` under ``params`` ``(K-1, A)`` (classes
    1..K-1 against class 0) and ``cov`` ``((K-1)A, (K-1)A)`` (class-major)."""
    c, a = params.shape
    Xa = _design(X, has_intercept, a)
    eta = np.column_stack([np.zeros(Xa.shape[0]), Xa @ params.T])  # (M, K)
    p = np.exp(eta - np.logaddexp.reduce(eta, axis=1, keepdims=True))
    V = np.einsum("na,jalb,nb->njl", Xa, cov.reshape(c, a, c, a), Xa)  # (M, K-1, K-1)
    eye = np.eye(p.shape[1])[:, 1:]  # delta_kj for j = 1..K-1, (K, K-1)
    G = p[:, :, None] * (eye[None] - p[:, None, 1:])  # g_kj = p_k (delta_kj - p_j), (M, K, K-1)
    var = np.einsum("nkj,njl,nkl->nk", G, V, G)
    return MultinomialPredictionResults(predicted_mean=p, se_mean=np.sqrt(np.maximum(var, 0.0)), class_names=list(class_names))


def predict(params: np.ndarray, cov: np.ndarray, X, has_intercept: bool, offset=None) -> PredictionResults:
    """:class:`PredictionResults` for the rows of ``X`` ``(M, D)`` under ``params`` ``(A,)`` and ``cov`` ``(A, A)``."""
    from ..errors import UsageError

    Xa = _design(X, has_intercept, params.shape[0])
    eta = Xa @ params
    if offset is not None:
        off = np.asarray(offset, dtype=np.float64).reshape(-1)
        if off.shape[0] != Xa.shape[0]:
            raise UsageError(f"offset must have one entry per row of X, shape ({Xa.shape[0]},), got shape {off.shape}")
        eta = eta + off
    se = np.sqrt(np.einsum("na,ab,nb->n", Xa, cov, Xa))
    mu = _expit(eta)
    return PredictionResults(predicted_mean=mu, se_mean=mu * (1 - mu) * se, linpred=eta, se_linpred=se)


def _expit(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` without overflow: ``exp(-log(1 + exp(-x)))``."""
    return np.exp(-np.logaddexp(0.0, -x))
