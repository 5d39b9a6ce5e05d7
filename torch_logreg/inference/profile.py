"""Profile-likelihood confidence intervals, R's ``confint`` on a glm and logistf's default intervals.

For the flattened parameters ``theta`` ``(P,)`` (binary: ``(A,)``; K classes: the ``(K-1) A`` contrasts
against class 0) and the log-likelihood ``l`` (Firth's fits: the penalised ``l + (1/2) log det I``), the
profile of coefficient j is ``l_p(v) = max { l(theta) : theta_j = v }`` and its ``1 - alpha`` interval is
``{ v : 2 (l(theta^) - l_p(v)) <= z_{1-alpha/2}^2 }`` (chi-square with one degree of freedom). Each end is
the root of ``f(v) = sqrt(2 (l(theta^) - l_p(v))) - z_{1-alpha/2}`` on its side of ``theta^_j``, the signed root
being nearly linear in ``v``. Its derivative comes free: by the envelope theorem ``dl_p / dv`` is the score
``dl / dtheta_j`` at the constrained maximum, so the root is found by Newton's method on ``f``, kept inside
the bracket it has found (bisection where a step would leave it; doubling outward until it has one).

Each ``l_p(v)`` is a Newton ascent over the other coordinates (for Firth's penalised likelihood, which is not
concave everywhere, Fisher scoring, as logistf, where its curvature is not positive definite), with the
step halved until ``l`` increases, started from the nearest maximiser found inside the interval; it stops when
the Newton decrement ``s^T I^-1 s`` of the free coordinates is below ``1e-20``. An end is ``-inf`` / ``inf`` when
the profile stays below the threshold as far as ``1e8 (1 + |theta^_j|)`` from the estimate.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .. import functional as F
from .fitdata import FitData
from .stats import normal_quantile

#: Newton decrement ``s^T I^-1 s`` at which a constrained maximisation stops
DECREMENT_TOL = 1e-20
#: ``|f(v)|``, in units of the signed root (about ``v`` in standard errors), at which an end is taken
ROOT_TOL = 1e-10


def loglik(data: FitData, theta: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(l, score (P,), curvature (P, P), information (P, P))`` at the flattened parameters ``theta``: the
    curvature ``-d2 l`` is the information. Firth: the penalised ``l* = l + (1/2) log det I``, its gradient (the modified score,
    ``sum_n (w_n (y_n - p_n) + h_n (1/2 - p_n)) x~_n``, ``h_n = s_n x~_n^T I^-1 x~_n``, ``s = w p (1 - p)``) and
    ``-d2 l* = I - (1/2) X~^T diag(s'' q) X~ + (1/2) sum_nm s'_n s'_m (x~_n^T I^-1 x~_m)^2 x~_n x~_m^T`` where that is
    (``q_n = x~_n^T I^-1 x~_n``, ``s'``, ``s''`` the derivatives of ``s`` in ``eta``; the double sum taken as
    ``M^T (I^-1 (x) I^-1) M`` with ``M = sum_n s'_n x~_n (x) x~_n (x) x~_n``, ``O(N A^3)``), which need not be
    positive definite away from the estimate, and ``I``."""
    Xa, w = data.Xa, data.w
    a = Xa.shape[1]
    if data.softmax:
        contrasts = theta.view(-1, a)
        Z = Xa @ torch.cat([Xa.new_zeros(1, a), contrasts]).T
        logp = torch.log_softmax(Z, dim=1)
        P = logp.exp()
        ll = (w[:, None] * data.T * logp).sum()
        score = ((w[:, None] * (data.T - P))[:, 1:].T @ Xa).reshape(-1)
        ka = (contrasts.shape[0] + 1) * a
        info = (F.softmax_hessian(Xa, P, w) * Xa.shape[0]).reshape(ka, ka)[a:, a:]  # classes 1..K-1
        return ll, score, info, info
    eta = Xa @ theta if data.offset is None else Xa @ theta + data.offset
    y = data.T[:, 0]
    p = torch.sigmoid(eta)
    ll = (w * (y * F.log_sigmoid(eta) + (1 - y) * F.log_sigmoid(-eta))).sum()
    s = w * p * (1 - p)
    info = Xa.T @ (s[:, None] * Xa)
    resid = w * (y - p)
    if data.firth:
        chol, status = torch.linalg.cholesky_ex(info)
        if int(status) != 0:  # a trial step too far: fitted probabilities of 0 or 1
            return ll.new_tensor(-math.inf), torch.zeros_like(theta), info, info
        inv = torch.cholesky_inverse(chol)
        q = ((Xa @ inv) * Xa).sum(1)
        resid = resid + s * q * (0.5 - p)  # s q: the leverages
        ll = ll + torch.log(chol.diagonal()).sum()  # (1/2) log det I
        d1, d2 = s * (1 - 2 * p), s * (1 - 6 * p + 6 * p * p)  # ds/deta, d2s/deta2
        M = torch.einsum("n,na,nb,nc->abc", d1, Xa, Xa, Xa)
        cross = torch.einsum("efc,efd->cd", torch.einsum("abc,ae,bf->efc", M, inv, inv), M)
        curvature = info - 0.5 * Xa.T @ ((d2 * q)[:, None] * Xa) + 0.5 * cross
        return ll, Xa.T @ resid, curvature, info
    return ll, Xa.T @ resid, info, info


def constrained_max(data: FitData, theta: Tensor, j: int, max_iter: int = 100) -> tuple[float, float, Tensor]:
    """Maximise ``l`` over every coordinate but ``j`` (held at ``theta[j]``) from ``theta``: ``(l_p, score_j, theta)``."""
    free = torch.ones_like(theta, dtype=torch.bool)
    free[j] = False
    ll, score, curvature, info = loglik(data, theta)
    for _ in range(max_iter):
        # Newton where the free block of the curvature is positive definite, else Fisher scoring (as logistf)
        block = curvature[free][:, free]
        if int(torch.linalg.cholesky_ex(block)[1]) != 0:
            block = info[free][:, free]
        step = torch.zeros_like(theta)
        step[free] = torch.linalg.solve(block, score[free])
        decrement = float((score[free] * step[free]).sum())
        if decrement <= DECREMENT_TOL:
            break
        t = 1.0
        for _ in range(40):
            trial = theta + t * step
            ll_t, score_t, curvature_t, info_t = loglik(data, trial)
            if bool(torch.isfinite(ll_t)) and float(ll_t) >= float(ll):
                break
            if decrement <= 1e-12:  # within rounding of the maximum: a shorter step gains nothing either
                return float(ll), float(score[j]), theta
            t *= 0.5
        else:
            break
        theta, ll, score, curvature, info = trial, ll_t, score_t, curvature_t, info_t
    return float(ll), float(score[j]), theta


def profile_intervals(data: FitData, params: np.ndarray, bse: np.ndarray, alpha: float, max_iter: int = 100) -> np.ndarray:
    """The profile-likelihood intervals of the flattened ``params`` ``(P,)``: ``(P, 2)`` (lower, upper);
    ``bse`` ``(P,)`` places the first trial of each end at the Wald end."""
    z = normal_quantile(alpha)
    with torch.no_grad():
        theta_hat = torch.as_tensor(params, dtype=data.Xa.dtype, device=data.Xa.device)
        l_hat = float(loglik(data, theta_hat)[0])
        out = np.empty((len(params), 2))
        for j in range(len(params)):
            for side, col in ((-1.0, 0), (1.0, 1)):
                out[j, col] = _end(data, theta_hat, l_hat, j, side, z, float(bse[j]), max_iter)
    return out


def _end(data: FitData, theta_hat: Tensor, l_hat: float, j: int, side: float, z: float, se: float, max_iter: int) -> float:
    """The end of coefficient ``j``'s interval on ``side`` (-1: lower, +1: upper), in the distance
    ``u = side (v - theta^_j) >= 0``, where ``f(u) = sqrt(2 (l^ - l_p)) - z`` increases."""
    centre = float(theta_hat[j])
    far = 1e8 * (1.0 + abs(centre))
    u_in, u_out = 0.0, math.inf
    start = theta_hat
    u = z * se if math.isfinite(se) and se > 0 else 1.0
    for _ in range(max_iter):
        theta = start.clone()
        theta[j] = centre + side * u
        lp, score_j, theta = constrained_max(data, theta, j)
        r = math.sqrt(max(2.0 * (l_hat - lp), 0.0))
        f = r - z
        if abs(f) <= ROOT_TOL:
            return centre + side * u
        if f < 0:
            u_in, start = u, theta
        else:
            u_out = u
        if u_out - u_in <= 1e-14 * (1.0 + abs(centre) + u):
            return centre + side * u
        slope = -side * score_j / r if r > 0 else 0.0  # df/du
        proposal = u - f / slope if slope > 0 else math.nan
        if math.isfinite(u_out):
            u = proposal if u_in < proposal < u_out else (u_in + u_out) / 2
        else:
            if u_in >= far:
                return side * math.inf
            u = min(proposal, 8 * u) if proposal > u else 2 * u
    return centre + side * u
