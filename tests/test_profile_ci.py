"""Profile-likelihood intervals (``conf_int(method="profile")``) against a brute-force profile: scipy maximises
the (penalised) log-likelihood with the coefficient held, and brentq finds where it crosses the threshold."""

import numpy as np
import pytest
import statsmodels.api as sm
from scipy.optimize import brentq, minimize
from scipy.special import log_expit, log_softmax
from scipy.stats import chi2

import torch_logreg as tl
from torch_logreg.errors import UsageError
from torch_logreg.inference import PerfectSeparationError, infer
from torch_logreg.solvers import fit_exact


def _binary_loglik(theta, Xa, y, w, offset, firth):
    """``(l, dl/dtheta)``; with ``firth`` the penalised ``l + (1/2) log det I`` and its gradient (the modified score)."""
    eta = Xa @ theta + offset
    p = np.exp(log_expit(eta))
    ll = np.sum(w * (y * log_expit(eta) + (1 - y) * log_expit(-eta)))
    resid = w * (y - p)
    if firth:
        info = Xa.T @ ((w * p * (1 - p))[:, None] * Xa)
        ll += 0.5 * np.linalg.slogdet(info)[1]
        h = w * p * (1 - p) * np.einsum("na,ab,nb->n", Xa, np.linalg.inv(info), Xa)
        resid = resid + h * (0.5 - p)
    return ll, Xa.T @ resid


def _softmax_loglik(theta, Xa, y, w, k):
    B = np.vstack([np.zeros(Xa.shape[1]), theta.reshape(k - 1, -1)])
    logp = log_softmax(Xa @ B.T, axis=1)
    resid = w[:, None] * (np.eye(k)[y] - np.exp(logp))
    return np.sum(w * logp[np.arange(len(y)), y]), (resid[:, 1:].T @ Xa).reshape(-1)


def _brute_force(loglik, theta_hat, j, alpha, se):
    """The interval of coefficient j: ``l_p(v)`` by BFGS on the other coordinates (``loglik`` returns the
    value and the gradient), its two crossings of ``l^ - chi2_1(1 - alpha) / 2`` by brentq.

    The penalised likelihood of separated data has more than one local maximum along a profile, so each
    ``l_p(v)`` starts from the last maximiser found (a continuation from the estimate), not from the estimate."""
    l_hat = loglik(theta_hat)[0]
    cut = chi2.ppf(1 - alpha, 1) / 2
    start = {"x": np.delete(theta_hat, j)}

    def profile(v):
        def neg(free):
            ll, g = loglik(np.insert(free, j, v))
            return -ll, -np.delete(g, j)
        fit = minimize(neg, start["x"], jac=True, method="BFGS", options={"gtol": 1e-10, "maxiter": 10_000})
        start["x"] = fit.x
        return -fit.fun

    ends = []
    for side in (-1, 1):
        start["x"] = np.delete(theta_hat, j)
        step = 2 * se
        while l_hat - profile(theta_hat[j] + side * step) < cut:
            step *= 2
        f = lambda v: l_hat - profile(v) - cut  # noqa: E731
        ends.append(brentq(f, theta_hat[j], theta_hat[j] + side * step, xtol=1e-9, rtol=1e-12))
    return ends


@pytest.fixture(scope="module")
def spector():
    data = sm.datasets.spector.load_pandas()
    return data.exog.to_numpy(dtype=float).copy(), data.endog.to_numpy(dtype=float).copy()


@pytest.fixture(scope="module")
def separated():
    """Completely separated: y = 1 exactly where x1 > 0, so the maximum-likelihood estimate is infinite."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 2))
    return X, (X[:, 0] > 0).astype(float)


def _fit(X, y, w=None, offset=None, firth=False):
    model = tl.LogisticRegression(X.shape[1]).double()
    penalty = "firth" if firth else None
    result = fit_exact(model, X, y, sample_weight=w, offset=offset, penalty=penalty, tol=1e-12)
    return infer(model, X, y, w, result=result, offset=offset, penalty=penalty)


@pytest.mark.parametrize("extras", ["plain", "weights+offset"])
@pytest.mark.parametrize("firth", [False, True], ids=["ml", "firth"])
def test_binary_profile_matches_brute_force(spector, extras, firth):
    X, y = spector
    rng = np.random.default_rng(0)
    w = rng.integers(1, 4, len(y)).astype(float) if extras != "plain" else None
    offset = 0.3 * rng.normal(size=len(y)) if extras != "plain" else None
    res = _fit(X, y, w, offset, firth)
    ci = res.conf_int(method="profile", alpha=0.1)
    Xa = np.column_stack([np.ones(len(y)), X])
    args = (Xa, y, np.ones(len(y)) if w is None else w, np.zeros(len(y)) if offset is None else offset, firth)
    for j in (1,) if extras == "plain" else (3,):  # GPA, PSI: the others cost the same
        expected = _brute_force(lambda t: _binary_loglik(t, *args), res.params, j, 0.1, res.bse[j])
        np.testing.assert_allclose(ci[j], expected, rtol=1e-6, atol=1e-6)
    assert np.all(ci[:, 0] < res.params) and np.all(res.params < ci[:, 1])


def test_firth_on_separated_data(separated):
    """Maximum likelihood has no finite estimate (inference refuses, so there is no Wald interval to read);
    Firth's is finite, and the profile of its penalised likelihood gives the skewed interval logistf reports."""
    X, y = separated
    model = tl.LogisticRegression(2).double()
    result = fit_exact(model, X, y, tol=1e-10, warn=False, max_iter=200)
    with pytest.raises(PerfectSeparationError):
        infer(model, X, y, result=result, grad_tol=1.0)
    res = _fit(X, y, firth=True)
    ci = res.conf_int(method="profile")
    Xa = np.column_stack([np.ones(len(y)), X])
    args = (Xa, y, np.ones(len(y)), np.zeros(len(y)), True)
    expected = _brute_force(lambda t: _binary_loglik(t, *args), res.params, 1, 0.05, res.bse[1])
    np.testing.assert_allclose(ci[1], expected, rtol=1e-6, atol=1e-6)
    wald = res.conf_int()
    lower, upper = ci[1] - res.params[1]
    assert upper > 1.5 * -lower  # the separating coefficient: the likelihood is flat upward, so the interval is skewed
    assert ci[1, 1] > wald[1, 1]


@pytest.mark.filterwarnings("ignore:Step-halving failed to converge")  # firthmodels' fit, at the rounding floor
def test_firth_profile_matches_firthmodels(separated):
    firthmodels = pytest.importorskip("firthmodels")
    X, y = separated
    res = _fit(X, y, firth=True)
    ref = firthmodels.FirthLogisticRegression(backend="numpy", gtol=1e-12, xtol=1e-12, max_iter=200).fit(X, y)
    expected = ref.conf_int(method="pl", tol=1e-10, max_iter=200)  # intercept last
    np.testing.assert_allclose(res.conf_int(method="profile"), np.roll(expected, 1, axis=0), rtol=1e-6, atol=1e-6)


def test_multinomial_profile_matches_brute_force():
    rng = np.random.default_rng(2)
    n, d, k = 90, 2, 3
    X = rng.normal(size=(n, d))
    logits = np.column_stack([np.zeros(n), X @ [1.0, -0.5] + 0.2, X @ [-0.7, 0.8] - 0.1])
    y = np.array([rng.choice(k, p=np.exp(z - np.logaddexp.reduce(z))) for z in logits])
    model = tl.SoftmaxRegression(d, k).double()
    res = infer(model, X, y, result=fit_exact(model, X, y, tol=1e-12))
    ci = res.conf_int(method="profile")
    assert ci.shape == (k - 1, d + 1, 2)
    Xa = np.column_stack([np.ones(n), X])
    flat, se = res.params.reshape(-1), res.bse.reshape(-1)
    for j in (5,):
        expected = _brute_force(lambda t: _softmax_loglik(t, Xa, y, np.ones(n), k), flat, j, 0.05, se[j])
        np.testing.assert_allclose(ci.reshape(-1, 2)[j], expected, rtol=1e-6, atol=1e-6)


def test_profile_refusals(spector):
    X, y = spector
    res = _fit(X, y)
    with pytest.raises(UsageError, match=r"method must be one of \['wald', 'profile'\], got 'lr'"):
        res.conf_int(method="lr")
    np.testing.assert_array_equal(res.conf_int(), res.conf_int(method="wald"))
