"""Linear restrictions ``R theta = q`` on the flattened parameters and their Wald test, from arrays.

The string form (``"GPA = TUCE = 0"``) is read into ``(R, q)`` by :mod:`.constraint_strings`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import UsageError
from .stats import chi2_sf


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



def linear_constraints(R, q, n_params: int) -> tuple[np.ndarray, np.ndarray]:
    """``(R, q)`` as float64 arrays ``(r, n_params)`` and ``(r,)``, checked.

    ``R`` is an ``(r, n_params)`` matrix (an array or a list of rows), or a vector for one
    restriction; ``q`` one value per restriction, a scalar for all of them, or None for 0. A tuple is
    statsmodels' pair ``(R, q)``, with ``q`` then left None.
    """
    if isinstance(R, tuple):
        if len(R) != 2 or q is not None:
            raise UsageError("wald_test takes q once: R as the pair (R, q) with q left out, or R a matrix and q apart")
        R, q = R
    try:
        R = np.atleast_2d(np.asarray(R, dtype=np.float64))
        q = None if q is None else np.asarray(q, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"wald_test needs R and q of numbers (a matrix and a vector): {exc}") from None
    if R.ndim != 2 or R.shape[1] != n_params:
        raise UsageError(f"wald_test needs R with {n_params} columns (one per parameter), got shape {R.shape}")
    if q is not None and q.shape not in ((), (1,), (R.shape[0],)):
        raise UsageError(f"wald_test needs q with one value per restriction ({R.shape[0]}) or one in all, got shape {q.shape}")
    q = np.zeros(R.shape[0]) if q is None else np.broadcast_to(q, (R.shape[0],))
    if not (np.isfinite(R).all() and np.isfinite(q).all()):
        raise UsageError("wald_test needs finite R and q")
    return R, q


def wald_test(params: np.ndarray, cov: np.ndarray, R: np.ndarray, q: np.ndarray) -> ChiSquareTest:
    """Wald test of the ``r`` linear restrictions ``R theta = q`` on ``theta = params.reshape(-1)``.

    ``W = (R theta - q)^T (R Cov R^T)^+ (R theta - q)``, ``df = r`` and ``pvalue = P(chi2_r > W)``, with
    ``cov`` ``(n, n)`` the covariance of ``theta`` and ``R`` ``(r, n)``, ``q`` ``(r,)`` as
    :func:`linear_constraints` gives them. Refuses a restriction without a parameter and linearly
    dependent restrictions.
    """
    r = R.shape[0]
    if r == 0 or not np.any(R, axis=1).all():
        raise UsageError("every restriction of wald_test must involve at least one parameter")
    if np.linalg.matrix_rank(R) < r:
        raise UsageError(f"the {r} restrictions of wald_test are linearly dependent: drop the redundant ones")
    d = R @ params.reshape(-1) - q
    stat = float(d @ np.linalg.pinv(R @ cov @ R.T) @ d)
    return ChiSquareTest("Wald", stat, r, chi2_sf(stat, r), R, np.asarray(q, dtype=np.float64))
