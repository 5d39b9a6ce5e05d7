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

Robust covariances (``cov_type``: ``HC0``-``HC3``, ``cluster``) are stated in :mod:`.covariance`;
``k`` is the number of parameters. ``bse``, ``zvalues``, ``pvalues``, ``conf_int``,
``cov_params()``, :meth:`InferenceResult.wald_test` and the marginal effects use the chosen
covariance; ``summary()`` names it as statsmodels does (``Covariance Type: HC0``).

Tests and effects: :meth:`~InferenceResult.wald_test` (``R theta = q``: a matrix, the pair
``(R, q)`` or a string such as ``"GPA = TUCE = 0"``), :meth:`~InferenceResult.lr_test` (against a
nested fit), :meth:`~InferenceResult.odds_ratios` and :meth:`~InferenceResult.get_margeff` (marginal effects
``at=`` overall, mean, median or zero, ``method=`` dydx, eyex, dyex or eydx, ``dummy=``, with delta-method
standard errors, statsmodels' ``get_margeff()``). Tables come as a
:class:`Table` (values, row and column labels) rather than a pandas DataFrame: the library does not
depend on pandas.

The package, each module importing only those listed before it:

    stats               the normal quantile and the chi-square tail, float64 NumPy copies
    tables              Summary and Table: statsmodels' layout
    fitdata             FitData: the fit's rows, kept for what is computed on demand
    diagnostics         separation (re-exported from solvers.separation) and collinearity: whether the MLE
                        and its covariance exist
    covariance          nonrobust, HC0-HC3 and cluster covariances
    constraints         linear restrictions R theta = q given as arrays, the Wald test, ChiSquareTest
    constraint_strings  restrictions written as text ("GPA = TUCE = 0") read into (R, q)
    margins             marginal effects and their delta-method standard errors
    prediction          get_prediction: predicted probabilities with delta-method intervals (binary, softmax)
    profile             profile-likelihood intervals (conf_int(method="profile")), for ML and Firth fits
    residuals           resid_*, get_influence (leverage, Cook's distance) and Hosmer-Lemeshow (binary)
    results             InferenceResult and infer, which computes it
"""

from .constraints import ChiSquareTest
from .covariance import COV_TYPES, WEIGHTS_KINDS
from .diagnostics import (
    CERTAINTY,
    COLLINEAR_RCOND_POWER,
    LOADING,
    LP_MAX_ROWS,
    SINGULAR_RCOND_POWER,
    CollinearityWarning,
    PerfectSeparationError,
    Separation,
    SeparationWarning,
    check_conditioning,
    find_separation,
    rcond_bounds,
)
from .margins import MarginalEffects
from .prediction import MultinomialPredictionResults, PredictionResults
from .residuals import Influence
from .results import SPARSE_DENSE_MAX_ENTRIES, InferenceResult, infer
from .tables import Summary, Table

__all__ = [
    "CERTAINTY",
    "COLLINEAR_RCOND_POWER",
    "COV_TYPES",
    "LOADING",
    "LP_MAX_ROWS",
    "SINGULAR_RCOND_POWER",
    "SPARSE_DENSE_MAX_ENTRIES",
    "WEIGHTS_KINDS",
    "ChiSquareTest",
    "CollinearityWarning",
    "InferenceResult",
    "Influence",
    "MarginalEffects",
    "MultinomialPredictionResults",
    "PerfectSeparationError",
    "PredictionResults",
    "Separation",
    "SeparationWarning",
    "Summary",
    "Table",
    "check_conditioning",
    "find_separation",
    "infer",
    "rcond_bounds",
]
