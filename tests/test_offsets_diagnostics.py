"""Offsets, residuals, influence, Hosmer-Lemeshow and prediction intervals against statsmodels' GLM Binomial."""

import sys

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy import stats

import torch_logreg as tl
from torch_logreg.errors import UsageError
from torch_logreg.estimators.estimator import InferenceUnavailable, LogisticRegressionClassifier
from torch_logreg.inference import infer
from torch_logreg.solvers import fit_exact

WEIGHTINGS = ("none", "freq_weights", "var_weights")


@pytest.fixture(scope="module")
def exposure_data():
    """300 rows, 3 features, an offset (a log exposure) and positive weights; no separation."""
    rng = np.random.default_rng(29)
    n = 300
    X = rng.normal(size=(n, 3))
    offset = np.log(rng.uniform(0.2, 3.0, size=n))
    eta = 0.3 + X @ np.array([0.8, -0.5, 0.2]) + offset
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    w = rng.uniform(0.5, 2.0, size=n)
    return X, y, offset, w


def _glm(X, y, offset, w, weighting, intercept=True):
    kw = {} if weighting == "none" else {weighting: w}
    exog = sm.add_constant(X) if intercept else X
    return sm.GLM(y, exog, family=sm.families.Binomial(), offset=offset, **kw).fit(tol=1e-14, maxiter=100)


def _fit(X, y, offset, w, weighting, intercept=True):
    model = tl.LogisticRegression(X.shape[1], bias=intercept).double()
    sw = None if weighting == "none" else w
    result = fit_exact(model, X, y, offset=offset, sample_weight=sw, tol=1e-13)
    kind = "freq_weights" if weighting == "none" else weighting
    return model, infer(model, X, y, sw, result=result, offset=offset, weights_kind=kind)


@pytest.mark.parametrize("weighting", WEIGHTINGS)
@pytest.mark.parametrize("intercept", [True, False])
def test_offset_matches_statsmodels_glm(exposure_data, weighting, intercept):
    X, y, offset, w = exposure_data
    ref = _glm(X, y, offset, w, weighting, intercept)
    _, res = _fit(X, y, offset, w, weighting, intercept)
    np.testing.assert_allclose(res.params, ref.params, rtol=0, atol=1e-6)
    np.testing.assert_allclose(res.bse, ref.bse, rtol=0, atol=1e-6)
    np.testing.assert_allclose(res.llf, ref.llf, rtol=1e-10)
    np.testing.assert_allclose(res.llnull, ref.llnull, rtol=1e-10)


def test_offset_moves_the_fit(exposure_data):
    """The offset is part of the model: ignoring it gives another estimate."""
    X, y, offset, w = exposure_data
    with_offset, without = tl.LogisticRegression(3).double(), tl.LogisticRegression(3).double()
    fit_exact(with_offset, X, y, offset=offset, tol=1e-12)
    fit_exact(without, X, y, tol=1e-12)
    assert float((with_offset.linear.weight - without.linear.weight).detach().abs().max()) > 1e-3


def test_estimator_offset_fit_and_predictions(exposure_data):
    X, y, offset, w = exposure_data
    ref = _glm(X, y, offset, w, "none")
    est = LogisticRegressionClassifier(penalty=None).fit(X, y, offset=offset)
    np.testing.assert_allclose(np.r_[est.intercept_, est.coef_[0]], ref.params, atol=1e-6)
    np.testing.assert_allclose(est.inference_.bse, ref.bse, atol=1e-6)
    mu = ref.predict(sm.add_constant(X[:20]), offset=offset[:20])
    np.testing.assert_allclose(est.predict_proba(X[:20], offset=offset[:20])[:, 1], mu, atol=1e-8)
    eta = np.log(mu / (1 - mu))
    np.testing.assert_allclose(est.decision_function(X[:20], offset=offset[:20]), eta, atol=1e-7)
    assert np.array_equal(est.predict(X[:20], offset=offset[:20]), (eta > 0).astype(float))
    # without the offset the predictions are the fitted linear part alone
    np.testing.assert_allclose(est.decision_function(X[:20]), eta - offset[:20], atol=1e-7)


def test_offset_refused_where_it_does_not_apply(exposure_data):
    X, y, offset, w = exposure_data
    with pytest.raises(UsageError, match=r"offset must have one entry per row of X, shape \(300,\)"):
        fit_exact(tl.LogisticRegression(3).double(), X, y, offset=offset[:5])
    bad = offset.copy()
    bad[7] = np.nan
    with pytest.raises(UsageError, match=r"offset\[7\] is nan"):
        fit_exact(tl.LogisticRegression(3).double(), X, y, offset=bad)
    with pytest.raises(UsageError, match="binary logistic model"):
        fit_exact(tl.SoftmaxRegression(3, 3).double(), X, (y + (X[:, 0] > 0)).astype(int), offset=offset)
    with pytest.raises(UsageError, match="solver='newton' or 'cd'"):
        fit_exact(tl.LogisticRegression(3).double(), X, y, offset=offset, solver="lbfgs")
    y3 = np.digitize(X[:, 0], [-0.5, 0.5])
    with pytest.raises(UsageError, match="two classes"):
        LogisticRegressionClassifier(penalty=None).fit(X, y3, offset=offset)


@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_residuals_and_influence_match_statsmodels(exposure_data, weighting):
    X, y, offset, w = exposure_data
    ref = _glm(X, y, offset, w, weighting)
    _, res = _fit(X, y, offset, w, weighting)
    for name in ("resid_response", "resid_pearson", "resid_deviance"):
        np.testing.assert_allclose(getattr(res, name), getattr(ref, name), rtol=0, atol=1e-8, err_msg=name)
    inf, ref_inf = res.get_influence(), ref.get_influence()
    np.testing.assert_allclose(inf.hat_matrix_diag, ref_inf.hat_matrix_diag, rtol=0, atol=1e-8)
    np.testing.assert_allclose(inf.resid_studentized, ref_inf.resid_studentized, rtol=0, atol=1e-8)
    np.testing.assert_allclose(inf.cooks_distance, ref_inf.cooks_distance[0], rtol=0, atol=1e-8)


def test_residuals_without_offset_match_statsmodels():
    data = sm.datasets.spector.load_pandas()
    X, y = data.exog.to_numpy(dtype=float), data.endog.to_numpy(dtype=float)
    ref = sm.GLM(y, sm.add_constant(X), family=sm.families.Binomial()).fit(tol=1e-14)
    res = LogisticRegressionClassifier(penalty=None).fit(X, y).inference_
    np.testing.assert_allclose(res.resid_deviance, ref.resid_deviance, atol=1e-8)
    np.testing.assert_allclose(res.get_influence().cooks_distance, ref.get_influence().cooks_distance[0], atol=1e-8)


def _hosmer_lemeshow_reference(y, mu, w, groups):
    """Deciles of risk written out: rank the rows by mu, group g holds ranks [g N / G, (g + 1) N / G)."""
    n = len(y)
    rank = np.empty(n, int)
    rank[np.argsort(mu, kind="stable")] = np.arange(n)
    group = rank * groups // n
    stat = 0.0
    for g in range(groups):
        sel = group == g
        size, obs, exp = w[sel].sum(), (w[sel] * y[sel]).sum(), (w[sel] * mu[sel]).sum()
        stat += (obs - exp) ** 2 / exp + (obs - exp) ** 2 / (size - exp)  # the O/E table over both outcomes
    return stat, stats.chi2.sf(stat, groups - 2)


@pytest.mark.parametrize("weighting", ["none", "freq_weights"])
def test_hosmer_lemeshow_matches_a_reference(exposure_data, weighting):
    X, y, offset, w = exposure_data
    _, res = _fit(X, y, offset, w, weighting)
    mu = y - res.resid_response
    weights = np.ones_like(y) if weighting == "none" else w
    stat, p = _hosmer_lemeshow_reference(y, mu, weights, 10)
    test = res.hosmer_lemeshow(groups=10)
    assert test.df == 8
    np.testing.assert_allclose(test.statistic, stat, rtol=1e-8)
    np.testing.assert_allclose(test.pvalue, p, rtol=1e-8)
    with pytest.raises(UsageError, match="groups must be an integer from 3"):
        res.hosmer_lemeshow(groups=2)


@pytest.mark.parametrize("alpha", [0.05, 0.1])
@pytest.mark.parametrize("cov_type", ["nonrobust", "HC0"])
def test_prediction_intervals_match_statsmodels(exposure_data, alpha, cov_type):
    X, y, offset, w = exposure_data
    ref = sm.GLM(y, sm.add_constant(X), family=sm.families.Binomial(), offset=offset).fit(tol=1e-14, cov_type=cov_type)
    est = LogisticRegressionClassifier(penalty=None, cov_type=cov_type).fit(X, y, offset=offset)
    new = np.random.default_rng(1).normal(size=(25, 3)) * 2
    new_offset = np.linspace(-1, 1, 25)
    frame = pd.DataFrame(est.inference_.get_prediction(new, offset=new_offset).summary_frame(alpha=alpha))
    expected = ref.get_prediction(sm.add_constant(new), offset=new_offset).summary_frame(alpha=alpha)
    columns = ["mean", "mean_se", "mean_ci_lower", "mean_ci_upper"]
    assert list(frame.columns) == columns
    np.testing.assert_allclose(frame[columns].to_numpy(), expected[columns].to_numpy(), rtol=0, atol=1e-6)


def test_prediction_frame_is_a_dict_of_columns_without_pandas(exposure_data, monkeypatch):
    X, y, offset, w = exposure_data
    res = LogisticRegressionClassifier(penalty=None).fit(X, y).inference_
    pred = res.get_prediction(X[:4])
    expected = pred.summary_frame()
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
    frame = pred.summary_frame()
    assert isinstance(frame, dict) and list(frame) == ["mean", "mean_se", "mean_ci_lower", "mean_ci_upper"]
    assert all(v.shape == (4,) for v in frame.values())
    np.testing.assert_array_equal(np.column_stack(list(frame.values())), np.column_stack(list(expected.values())))


def test_diagnostics_refused_for_softmax():
    data = sm.datasets.anes96.load_pandas()
    X, y = data.exog.to_numpy(dtype=float)[:, :3], data.endog.to_numpy().astype(int) % 3
    model = tl.SoftmaxRegression(3, 3).double()
    result = fit_exact(model, X, y, tol=1e-10)
    res = infer(model, X, y, result=result)
    with pytest.raises(UsageError, match="binary fits only"):
        _ = res.resid_pearson


def test_inference_unavailable_after_a_bounded_fit(exposure_data):
    X, y, offset, w = exposure_data
    est = LogisticRegressionClassifier(penalty=None, lower_bounds=[0, 0, 0]).fit(X, y)
    assert est.coef_.min() >= 0
    with pytest.raises(InferenceUnavailable, match="within bounds"):
        _ = est.inference_
