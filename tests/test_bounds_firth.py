"""Penalty factors, coefficient bounds and Firth's bias-reduced logit: the optimality conditions of each problem,
a reference Newton solve written here, and (where installed) glum and firthmodels."""

import numpy as np
import pytest
import torch

import torch_logreg as tl
from torch_logreg.errors import UsageError
from torch_logreg.estimators.estimator import LogisticRegressionClassifier
from torch_logreg.solvers import fit_exact

INF = np.inf


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    n, d = 400, 6
    X = rng.normal(size=(n, d)) * np.array([1.0, 2.0, 0.5, 1.0, 3.0, 1.0])
    eta = 0.4 + X @ np.array([1.0, -0.8, 0.6, 0.0, 0.3, -1.2]) + 0.3 * rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    w = rng.uniform(0.2, 3.0, size=n)
    offset = 0.5 * rng.normal(size=n)
    return X, y, w, offset


def _theta(model):
    layer = model.linear
    return np.r_[layer.bias.detach().numpy(), layer.weight.detach().numpy()[0]]


def _smooth_gradient(theta, X, y, w, offset, l2, factor):
    """The gradient of (1/N) sum_n w_n loss_n + (l2/2) sum_j f_j theta_j^2 with respect to [b, W]."""
    Xa = np.column_stack([np.ones(len(y)), X])
    p = 1 / (1 + np.exp(-(Xa @ theta + offset)))
    f = np.r_[0.0, factor]
    return Xa.T @ (w * (p - y)) / len(y) + l2 * f * theta


def _kkt_violation(theta, g, l1, factor, lower, upper):
    """The largest violation of the KKT conditions of min smooth + l1 sum f_j |theta_j| over the box, per coefficient:
    at an interior point the subgradient contains 0; at a bound the direction into the box does not descend."""
    lam = l1 * np.r_[0.0, factor]
    lo, hi = np.r_[-INF, lower], np.r_[INF, upper]
    worst = 0.0
    for j in range(len(theta)):
        t, gj, lj = theta[j], g[j], lam[j]
        up = gj + lj * (np.sign(t) if t != 0 else 1.0)  # derivative of the objective moving up
        down = -gj - lj * (np.sign(t) if t != 0 else -1.0)  # moving down
        if t <= lo[j] and t >= hi[j]:
            continue
        if t <= lo[j]:
            worst = max(worst, -up)
        elif t >= hi[j]:
            worst = max(worst, -down)
        else:
            worst = max(worst, -up, -down)
    return worst


PROBLEMS = {
    "factors_l2": dict(l2=0.05, l1=0.0, factor=[1, 0, 2, 1, 0.5, 1], lower=None, upper=None),
    "factors_l1": dict(l2=0.01, l1=0.02, factor=[1, 0, 2, 1, 0.5, 3], lower=None, upper=None),
    "monotone": dict(l2=0.0, l1=0.0, factor=None, lower=[0, 0, -INF, -INF, -INF, 0], upper=None),
    "box_elastic": dict(l2=0.01, l1=0.005, factor=[1, 1, 0, 1, 1, 1], lower=[-INF, -0.5, -INF, 0.1, -INF, -0.4],
                        upper=[0.5, INF, 0.2, INF, INF, INF]),
}


@pytest.mark.parametrize("solver", ["newton", "cd"])
@pytest.mark.parametrize("name", sorted(PROBLEMS))
@pytest.mark.parametrize("weighted", [False, True])
def test_bounded_weighted_problem_meets_kkt(data, name, solver, weighted):
    X, y, w, offset = data
    prob = PROBLEMS[name]
    sw = w if weighted else np.ones_like(y)
    model = tl.LogisticRegression(X.shape[1]).double()
    result = fit_exact(model, X, y, solver=solver, l2=prob["l2"], l1=prob["l1"], sample_weight=sw if weighted else None,
                       offset=offset, penalty_factor=prob["factor"], lower_bounds=prob["lower"],
                       upper_bounds=prob["upper"], tol=1e-11)
    assert result.converged
    theta = _theta(model)
    factor = np.ones(X.shape[1]) if prob["factor"] is None else np.asarray(prob["factor"], float)
    lower = np.full(X.shape[1], -INF) if prob["lower"] is None else np.asarray(prob["lower"], float)
    upper = np.full(X.shape[1], INF) if prob["upper"] is None else np.asarray(prob["upper"], float)
    assert np.all(theta[1:] >= lower) and np.all(theta[1:] <= upper)
    g = _smooth_gradient(theta, X, y, sw, offset, prob["l2"], factor)
    assert _kkt_violation(theta, g, prob["l1"], factor, lower, upper) <= 1e-8
    if prob["lower"] is not None or prob["upper"] is not None:  # the box binds: the problem differs from the free one
        assert np.any(theta[1:] == lower) or np.any(theta[1:] == upper)


def test_zero_factor_leaves_a_coefficient_unpenalised(data):
    """With factor 0 on every weight, an L2 penalty changes nothing: the fit is the maximum-likelihood one."""
    X, y, w, offset = data
    free, zero = tl.LogisticRegression(6).double(), tl.LogisticRegression(6).double()
    fit_exact(free, X, y, tol=1e-12)
    fit_exact(zero, X, y, l2=1.0, penalty_factor=np.zeros(6), tol=1e-12)
    np.testing.assert_allclose(_theta(zero), _theta(free), atol=1e-9)


def test_estimator_takes_factors_and_bounds(data):
    X, y, w, offset = data
    n = len(y)
    est = LogisticRegressionClassifier(C=2.0, penalty_factor=[1, 0, 2, 1, 0.5, 1], lower_bounds=[0] * 6, tol=1e-11)
    est.fit(X, y)
    model = tl.LogisticRegression(6).double()
    fit_exact(model, X, y, l2=1 / (2.0 * n), penalty_factor=[1, 0, 2, 1, 0.5, 1], lower_bounds=[0] * 6, tol=1e-12)
    np.testing.assert_allclose(np.r_[est.intercept_, est.coef_[0]], _theta(model), atol=1e-6)
    assert est.coef_.min() >= 0 and np.any(est.coef_ == 0)


def test_bad_factors_and_bounds_are_refused(data):
    X, y, w, offset = data
    m = tl.LogisticRegression(6).double()
    with pytest.raises(UsageError, match=r"penalty_factor\[2\] is -1.0; each entry must be a finite number >= 0"):
        fit_exact(m, X, y, l2=0.1, penalty_factor=[1, 1, -1, 1, 1, 1])
    with pytest.raises(UsageError, match=r"lower_bounds\[1\] = 2 exceeds upper_bounds\[1\] = 1"):
        fit_exact(m, X, y, lower_bounds=[0, 2, 0, 0, 0, 0], upper_bounds=[INF, 1, INF, INF, INF, INF])
    with pytest.raises(UsageError, match=r"upper_bounds\[0\] is nan"):
        fit_exact(m, X, y, upper_bounds=[np.nan] + [INF] * 5)
    with pytest.raises(UsageError, match=r"shape \(6,\), got shape \(2,\)"):
        fit_exact(m, X, y, lower_bounds=[0, 0])


def test_bounds_match_glum(data):
    glum = pytest.importorskip("glum")
    X, y, w, offset = data
    lower = np.array([0, 0, -INF, -INF, -INF, 0])
    model = tl.LogisticRegression(6).double()
    fit_exact(model, X, y, l2=0.02, penalty_factor=[1, 0, 2, 1, 0.5, 1], lower_bounds=lower, tol=1e-12)
    # glum minimises sum_n w_n loss_n / sum w + alpha (P2 / 2) ||beta||^2: the same problem for unit weights
    ref = glum.GeneralizedLinearRegressor(family="binomial", alpha=0.02, l1_ratio=0.0, P2=np.array([1, 0, 2, 1, 0.5, 1.0]),
                                          lower_bounds=lower, gradient_tol=1e-12, max_iter=1000).fit(X, y)
    np.testing.assert_allclose(_theta(model), np.r_[ref.intercept_, ref.coef_], atol=1e-6)


# --- Firth ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def separated():
    """Quasi-completely separated: x1 > 0 always has y = 1, so the maximum-likelihood estimate is infinite."""
    rng = np.random.default_rng(3)
    n = 60
    X = rng.normal(size=(n, 2))
    y = np.where(X[:, 0] > 0, 1.0, (rng.random(n) < 0.3).astype(float))
    return X, y


def _firth_reference(X, y, w=None, offset=None, iters=100):
    """Firth's modified-score Newton iteration (Heinze & Schemper 2002) in NumPy, run to the rounding floor."""
    Xa = np.column_stack([np.ones(len(y)), X])
    w = np.ones(len(y)) if w is None else w
    offset = np.zeros(len(y)) if offset is None else offset
    beta = np.zeros(Xa.shape[1])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(Xa @ beta + offset)))
        W = w * p * (1 - p)
        info = Xa.T @ (W[:, None] * Xa)
        h = W * np.einsum("na,ab,nb->n", Xa, np.linalg.inv(info), Xa)
        score = Xa.T @ (w * (y - p) + h * (0.5 - p))
        step = np.linalg.solve(info, score)
        beta = beta + step
        if np.abs(step).max() < 1e-15:
            break
    return beta


@pytest.mark.parametrize("weighted", [False, True])
def test_firth_matches_a_reference_newton_solve(separated, weighted):
    X, y = separated
    w = np.random.default_rng(5).uniform(0.5, 2, size=len(y)) if weighted else None
    offset = np.linspace(-0.5, 0.5, len(y))
    model = tl.LogisticRegression(2).double()
    result = fit_exact(model, X, y, penalty="firth", sample_weight=w, offset=offset, tol=1e-12)
    assert result.converged and result.separation is None
    np.testing.assert_allclose(_theta(model), _firth_reference(X, y, w, offset), rtol=0, atol=1e-8)
    assert np.all(np.isfinite(_theta(model)))


def test_firth_estimator_on_separated_data(separated):
    X, y = separated
    est = LogisticRegressionClassifier(penalty="firth").fit(X, y)
    np.testing.assert_allclose(np.r_[est.intercept_, est.coef_[0]], _firth_reference(X, y), atol=1e-8)


def test_firth_matches_firthmodels(separated):
    firthmodels = pytest.importorskip("firthmodels")
    X, y = separated
    ref = firthmodels.FirthLogisticRegression(gtol=1e-12, xtol=1e-12, max_iter=100).fit(X, y)
    est = LogisticRegressionClassifier(penalty="firth").fit(X, y)
    np.testing.assert_allclose(est.coef_[0], np.ravel(ref.coef_), atol=1e-6)
    np.testing.assert_allclose(est.intercept_, np.ravel(ref.intercept_), atol=1e-6)


def test_firth_standard_errors_are_the_inverse_information_at_the_estimate(separated):
    """Ours are Heinze and Schemper's (and logistf's): the inverse of X'WX at Firth's estimate. firthmodels
    reports the inverse of its Newton matrix instead, the information of the augmented data, whose row
    weights are w_n + h_n (h the leverages): both computed here from the same estimate, each equal to its
    package's numbers, so the two differ by that choice and not by the fit."""
    firthmodels = pytest.importorskip("firthmodels")
    X, y = separated
    est = LogisticRegressionClassifier(penalty="firth").fit(X, y)
    Xa = np.column_stack([np.ones(len(y)), X])
    p = 1 / (1 + np.exp(-(Xa @ np.r_[est.intercept_, est.coef_[0]])))
    info = Xa.T @ (Xa * (p * (1 - p))[:, None])
    cov = np.linalg.inv(info)
    np.testing.assert_allclose(np.asarray(est.inference_.bse), np.sqrt(np.diag(cov)), rtol=1e-8)
    h = (p * (1 - p)) * np.einsum("ij,jk,ik->i", Xa, cov, Xa)
    augmented = Xa.T @ (Xa * ((1 + h) * p * (1 - p))[:, None])
    ref = firthmodels.FirthLogisticRegression(gtol=1e-12, xtol=1e-12, max_iter=100).fit(X, y)
    theirs = np.r_[ref.bse_[-1], ref.bse_[:-1]]  # firthmodels puts the intercept last
    np.testing.assert_allclose(theirs, np.sqrt(np.diag(np.linalg.inv(augmented))), rtol=1e-6)


def test_firth_refuses_other_penalties(separated):
    X, y = separated
    with pytest.raises(UsageError, match="only penalty of its fit"):
        fit_exact(tl.LogisticRegression(2).double(), X, y, penalty="firth", l2=0.1)
    with pytest.raises(UsageError, match="penalty"):
        fit_exact(tl.LogisticRegression(2).double(), X, y, penalty="ridge")
    assert torch.get_default_dtype() == torch.float32  # nothing here changed the process's defaults


def test_separation_warning_points_to_firth():
    from torch_logreg.solvers.separation import SeparationWarning

    X, y = np.array([[-2.0], [-1.0], [-0.5], [0.5], [1.0], [2.0]]), np.array([0, 0, 0, 1, 1, 1])
    with pytest.warns(SeparationWarning, match="penalty='firth'"):
        fit_exact(tl.LogisticRegression(1).double(), X, y, warn=True)


def _penalised_loglik(beta, X, y, w=None):
    Xa = np.column_stack([np.ones(len(y)), X]) if X.size else np.ones((len(y), 1))
    w = np.ones(len(y)) if w is None else w
    p = 1 / (1 + np.exp(-(Xa @ beta)))
    info = Xa.T @ ((w * p * (1 - p))[:, None] * Xa)
    return (w * (y * np.log(p) + (1 - y) * np.log(1 - p))).sum() + 0.5 * np.linalg.slogdet(info)[1], info


@pytest.mark.parametrize("weighted", [False, True])
def test_firth_inference_matches_the_reference(separated, weighted):
    X, y = separated
    w = np.random.default_rng(5).uniform(0.5, 2, size=len(y)) if weighted else None
    est = LogisticRegressionClassifier(penalty="firth", tol=1e-12).fit(X, y, sample_weight=w)
    res = est.inference_
    beta = _firth_reference(X, y, w)
    llf, info = _penalised_loglik(beta, X, y, w)
    np.testing.assert_allclose(res.params, beta, atol=1e-8)
    np.testing.assert_allclose(res.bse, np.sqrt(np.diag(np.linalg.inv(info))), rtol=1e-8)
    np.testing.assert_allclose(res.llf, llf, rtol=1e-10)
    null = _firth_reference(np.empty((len(y), 0)), y, w)
    np.testing.assert_allclose(res.llnull, _penalised_loglik(null, np.empty((len(y), 0)), y, w)[0], rtol=1e-10)
    assert res.model_name == "Firth logit"


def test_firth_loglik_matches_firthmodels(separated):
    firthmodels = pytest.importorskip("firthmodels")
    X, y = separated
    ref = firthmodels.FirthLogisticRegression(gtol=1e-12, xtol=1e-12, max_iter=100).fit(X, y)
    res = LogisticRegressionClassifier(penalty="firth").fit(X, y).inference_
    np.testing.assert_allclose(res.llf, ref.loglik_, rtol=1e-10)
