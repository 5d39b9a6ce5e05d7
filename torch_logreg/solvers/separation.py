"""Separation: when a linear combination of the features classifies some samples perfectly,
the maximum-likelihood estimate does not exist (the likelihood keeps increasing as the
coefficients grow).

This is checked exactly, following Albert & Anderson's characterisation, with a linear program:
separation exists iff some ``beta != 0`` gives every sample a non-negative margin (binary:
``(2y_n - 1) x~_n^T beta >= 0``; K classes: ``x~_n^T (beta_{y_n} - beta_k) >= 0`` for all k) and
a positive margin to at least one sample. :func:`find_separation` solves it (scipy's HiGHS, on the
CPU, imported when a check runs). The exact solvers warn with it after an unpenalised fit, and
:func:`~torch_logreg.inference.infer` refuses standard errors for such data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .params import augment, linear_layer

#: a sample counts as predicted with certainty when its observed class has probability > 1 - this
CERTAINTY = 1e-7


#: above this many LP rows (samples x contrasts) separation is only screened, not proven
LP_MAX_ROWS = 200_000


class SeparationWarning(UserWarning):
    """The classes are (quasi-)completely separated: the MLE does not exist."""


class PerfectSeparationError(ValueError):
    """Inference was asked of data whose classes are (quasi-)completely separated."""

    def __init__(self, separation: Separation) -> None:
        super().__init__(separation.message)
        self.separation = separation


@dataclass
class Separation:
    """A (quasi-)complete separation found in the data.

    ``kind`` is ``"complete"`` (every sample is classified perfectly by a linear combination of
    the features), ``"quasi-complete"`` (some are, the rest lie on its boundary) or
    ``"suspected"`` (too large for the exact check; samples are fitted with near certainty).
    ``rows`` are the indices of the perfectly predicted samples; ``direction`` is a separating
    direction ``(K, A)`` in the augmented parametrisation (intercept first).
    """

    kind: str
    n_separated: int
    n_samples: int
    rows: np.ndarray
    direction: np.ndarray | None
    message: str = ""


def find_separation(model, X: Tensor, T: Tensor, sample_weight: Tensor | None = None, screen: bool = True) -> Separation | None:
    """Check whether the classes of ``T`` are (quasi-)completely separated by ``X``.

    ``X`` ``(N, D)`` and ``T`` ``(N, K)`` prepared as for the model (one binary output or
    one-hot softmax targets; other targets return None). With ``screen`` the exact check runs
    only if the model, as fitted, predicts some sample's class with probability above
    ``1 - CERTAINTY`` (what an unpenalised fit does to separated samples); problems with more
    than ``LP_MAX_ROWS`` constraints are reported from that screen alone (kind "suspected").
    Samples with zero weight are ignored. Returns a :class:`Separation` or None.
    """
    layer = linear_layer(model)
    bias = layer.bias is not None
    if model.link == "sigmoid" and model.n_outputs == 1:
        labels = T[:, 0].round().to(torch.int64)
        binary = True
    elif model.link == "softmax" and bool(((T == 0) | (T == 1)).all()):
        labels = T.argmax(dim=1)
        binary = False
    else:
        return None
    keep = torch.ones(X.shape[0], dtype=torch.bool, device=X.device) if sample_weight is None else sample_weight > 0
    rows_needed = int(keep.sum()) * (1 if binary else max(1, T.shape[1] - 1))
    with torch.no_grad():
        z = model.logits(X)
        if binary:
            margin = torch.where(labels == 1, z[:, 0], -z[:, 0])
            certain = (torch.sigmoid(margin) > 1 - CERTAINTY) & keep
        else:
            p_obs = torch.softmax(z, dim=1).gather(1, labels[:, None])[:, 0]
            certain = (p_obs > 1 - CERTAINTY) & keep
    n_certain = int(certain.sum())
    if screen and n_certain == 0:
        return None
    n_samples = int(keep.sum())
    if rows_needed > LP_MAX_ROWS:
        if n_certain == 0:
            return None
        rows = certain.nonzero()[:, 0].cpu().numpy()
        sep = Separation("suspected", n_certain, n_samples, rows, None)
        sep.message = _separation_message(sep, binary)
        return sep

    if X.layout != torch.strided:  # the LP reads dense rows; it runs on at most LP_MAX_ROWS of them
        X = X.to_dense()
    Xa = augment(X, bias)[keep].detach().to("cpu", torch.float64).numpy()
    lab = labels[keep].cpu().numpy()
    index = keep.nonzero()[:, 0].cpu().numpy()
    found = _separation_lp(Xa, lab, binary, T.shape[1])
    if found is None:
        return None
    kind, separated, direction = found
    sep = Separation(kind, int(separated.sum()), n_samples, index[separated], direction)
    sep.message = _separation_message(sep, binary)
    return sep


def _separation_lp(Xa: np.ndarray, labels: np.ndarray, binary: bool, k: int):
    """Solve the separation LPs on the CPU; returns (kind, separated mask, direction) or None."""
    from scipy import sparse
    from scipy.optimize import linprog

    n, a = Xa.shape
    scale = np.abs(Xa).max(axis=0)
    scale[scale == 0] = 1.0
    Xs = Xa / scale
    if binary:
        sign = np.where(labels == 1, 1.0, -1.0)
        M = sparse.csr_matrix(Xs * sign[:, None])  # margins M beta, one row per sample
        owner = np.arange(n)
        nvar = a
    else:
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        owners: list[np.ndarray] = []
        r = 0
        for cls in range(k):
            idx = np.nonzero(labels == cls)[0]
            for other in range(k):
                if other == cls or idx.size == 0:
                    continue
                rr = np.repeat(np.arange(r, r + idx.size), a)
                base = np.tile(np.arange(a), idx.size)
                xv = Xs[idx].reshape(-1)
                rows += [rr, rr]
                cols += [cls * a + base, other * a + base]
                vals += [xv, -xv]
                owners.append(idx)
                r += idx.size
        M = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(r, k * a))
        owner = np.concatenate(owners)
        nvar = k * a
    # LP 1: maximise the summed margin subject to every margin >= 0 and |beta| <= 1
    res = linprog(-np.asarray(M.sum(axis=0)).ravel(), A_ub=-M, b_ub=np.zeros(M.shape[0]), bounds=[(-1, 1)] * nvar, method="highs")
    if res.status != 0 or -res.fun <= 1e-9 * max(1, M.shape[0]):
        return None
    beta = res.x
    margins = M @ beta
    tol = 1e-9 * max(1.0, np.abs(margins).max())
    positive = margins > tol
    # a sample is separated when all its margins are positive
    separated = np.ones(n, dtype=bool)
    np.logical_and.at(separated, owner, positive)
    # LP 2: maximise the smallest margin t; t > 0 means complete separation
    c2 = np.zeros(nvar + 1)
    c2[-1] = -1.0
    A2 = sparse.hstack([-M, sparse.csr_matrix(np.ones((M.shape[0], 1)))]).tocsr()
    res2 = linprog(c2, A_ub=A2, b_ub=np.zeros(M.shape[0]), bounds=[(-1, 1)] * nvar + [(None, 1)], method="highs")
    kind = "quasi-complete"
    if res2.status == 0 and -res2.fun > 1e-9:
        kind = "complete"
        beta = res2.x[:-1]
        separated[:] = True
    direction = (beta / np.tile(scale, 1 if binary else k)).reshape(1 if binary else k, a)
    return kind, separated, direction


def _separation_message(sep: Separation, binary: bool) -> str:
    shown = ", ".join(str(int(i)) for i in sep.rows[:10]) + (", ..." if sep.rows.size > 10 else "")
    what = "the two classes" if binary else "the classes"
    remedy = (
        "Remove or merge the separating features, collect more data, or fit with a penalty "
        "(l2 > 0; estimator: penalty='l2'), whose estimate does exist."
    )
    if binary:  # Firth's estimate is finite under separation and, unlike a ridge one, first-order unbiased
        remedy += " Firth's bias-reduced logit also exists: fit_exact(..., penalty='firth'); estimator: penalty='firth'."
    if sep.kind == "complete":
        return (
            f"Complete separation: a linear combination of the features classifies all {sep.n_samples} samples "
            f"perfectly, so {what} are separable and the maximum-likelihood estimate does not exist: the "
            f"coefficients grow without bound as the fit goes on and their standard errors are meaningless. {remedy}"
        )
    if sep.kind == "quasi-complete":
        return (
            f"Quasi-complete separation: a linear combination of the features predicts {sep.n_separated} of "
            f"{sep.n_samples} samples perfectly (rows {shown}) and leaves the others on its boundary, so the "
            f"maximum-likelihood estimate does not exist: some coefficients grow without bound and their "
            f"standard errors are meaningless. {remedy}"
        )
    return (
        f"Possible separation: the fit predicts {sep.n_separated} of {sep.n_samples} samples (rows {shown}) "
        f"with probability above 1 - {CERTAINTY:g}, which happens when {what} are (quasi-)completely "
        f"separated and the coefficients diverge. {remedy}"
    )
