"""The covariance of the estimate: nonrobust (the inverse information), robust (HC0-HC3) and clustered.

Nonrobust: ``Cov = I^-1``, ``I`` the observed information (the package docstring).

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
  (the repeated rows); statsmodels' GLM puts the number of rows there. With fewer than
  :data:`FEW_CLUSTERS` clusters a :class:`FewClustersWarning` says that the standard errors are
  not to be trusted. statsmodels computes the same numbers without a word; we warn rather than
  refuse because the estimate is the one asked for and exact, and with, say, 20 clusters a user
  may knowingly want it. But the meat is a sum of ``G`` outer products, so the covariance has rank
  at most ``G - 1`` after centring (with ``G`` no larger than the parameters it is singular and
  some standard errors come out near 0), and below about 30-50 clusters the CRV1 correction does
  not remove its downward bias (Cameron & Miller 2015, sections VI and VII: use few-cluster
  methods such as the wild cluster bootstrap there).

References: MacKinnon, J. G. & White, H. (1985), Some heteroskedasticity-consistent covariance
matrix estimators with improved finite sample properties, J. Econometrics 29, 305-325. Long, J. S.
& Ervin, L. H. (2000), Using heteroscedasticity consistent standard errors in the linear regression
model, The American Statistician 54, 217-224. Zeileis, A. (2006), Object-oriented computation of
sandwich estimators, J. Statistical Software 16(9). Cameron, A. C. & Miller, D. L. (2015), A
practitioner's guide to cluster-robust inference, J. Human Resources 50, 317-372.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..errors import UsageError
from .diagnostics import SINGULAR

#: the covariance types :func:`~torch_logreg.inference.infer` computes (``cov_type``), statsmodels' names
COV_TYPES = ("nonrobust", "HC0", "HC1", "HC2", "HC3", "cluster")
#: cov_type="cluster": fewer clusters than this draw a FewClustersWarning (see the module docstring)
FEW_CLUSTERS = 30


class FewClustersWarning(UserWarning):
    """Cluster-robust standard errors from too few clusters to be trusted (see the module docstring)."""
#: how :func:`~torch_logreg.inference.infer` reads ``sample_weight`` (``weights_kind``), statsmodels' GLM names
WEIGHTS_KINDS = ("freq_weights", "var_weights")


def inverse_information(info: Tensor) -> Tensor:
    """``I^-1`` of the information ``info`` ``(C A, C A)`` by its Cholesky factor: the nonrobust covariance,
    and the bread of the sandwiches. Raises ``ValueError`` when ``info`` is not positive definite."""
    chol, status = torch.linalg.cholesky_ex(info)
    if int(status) != 0:
        raise UsageError(SINGULAR)
    return torch.cholesky_inverse(chol)


def check_cov_type(cov_type: str, groups, link: str) -> str:
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


def group_codes(groups, n: int, device) -> tuple[Tensor, int]:
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


def _warn_few_clusters(n_groups: int, k_params: int) -> None:
    """A FewClustersWarning below FEW_CLUSTERS clusters (see the module docstring)."""
    if n_groups >= FEW_CLUSTERS:
        return
    import warnings

    singular = f"; with {n_groups} clusters for {k_params} parameters it is singular" if n_groups <= k_params else ""
    warnings.warn(f"cov_type='cluster' with {n_groups} clusters: cluster-robust standard errors from fewer than "
                  f"{FEW_CLUSTERS} clusters are biased down{singular} (Cameron & Miller 2015); treat them with caution, "
                  "or use cov_type='HC0'-'HC3'", FewClustersWarning, stacklevel=4)


def sandwich(
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
    """The robust covariance ``H^-1 M H^-1`` of ``cov_type`` (the module docstring), ``bread = H^-1`` ``(C A, C A)``.

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
        _warn_few_clusters(int(n_groups or 0), k_params)
    return cov

