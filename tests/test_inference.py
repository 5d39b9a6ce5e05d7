"""Inference against statsmodels' Logit and MNLogit on the reference data sets it ships."""


import numpy as np
import pytest
import statsmodels.api as sm
import torch

import torch_logreg as tl
from torch_logreg.inference import PerfectSeparationError, SeparationWarning, find_separation, infer
from torch_logreg.solvers import fit_exact, prepare

from conftest import DEVICES


@pytest.fixture(scope="module")
def spector():
    """Spector & Mazzeo (1980): 32 students, GPA, TUCE, PSI -> GRADE."""
    data = sm.datasets.spector.load_pandas()
    X, y = data.exog.to_numpy(dtype=float).copy(), data.endog.to_numpy(dtype=float).copy()
    ref = sm.Logit(y, sm.add_constant(X)).fit(disp=0, method="newton", tol=1e-12, maxiter=100)
    return X, y, ref


@pytest.fixture(scope="module")
def anes96():
    """1996 American National Election Study: party identification (7 classes), 944 voters."""
    data = sm.datasets.anes96.load_pandas()
    X, y = data.exog.to_numpy(dtype=float).copy(), data.endog.to_numpy().astype(int)
    ref = sm.MNLogit(y, sm.add_constant(X)).fit(disp=0, method="newton", tol=1e-12, maxiter=100)
    return X, y, ref


def _fit_and_infer(model, X, y, device="cpu", **kwargs):
    model = model.double().to(device)
    Xt = torch.as_tensor(X, dtype=torch.float64, device=device)
    yt = torch.as_tensor(y, device=device)
    result = fit_exact(model, Xt, yt, tol=1e-10)
    return result, infer(model, Xt, yt, result=result, **kwargs)


@pytest.mark.parametrize("device", DEVICES)
def test_logit_matches_statsmodels(spector, device):
    X, y, ref = spector
    result, res = _fit_and_infer(tl.LogisticRegression(3), X, y, device)
    assert result.converged and result.n_iter <= 15
    for name in ("params", "bse", "tvalues", "pvalues"):
        np.testing.assert_allclose(getattr(res, name), getattr(ref, name), rtol=1e-6, atol=1e-10, err_msg=name)
    np.testing.assert_allclose(res.zvalues, ref.tvalues, rtol=1e-6)
    np.testing.assert_allclose(res.conf_int(), ref.conf_int(), rtol=1e-6)
    np.testing.assert_allclose(res.conf_int(0.1), ref.conf_int(0.1), rtol=1e-6)
    np.testing.assert_allclose(res.cov_params(), ref.cov_params(), rtol=1e-6)
    for name in ("llf", "llnull", "llr", "llr_pvalue", "prsquared", "aic", "bic", "df_model", "df_resid", "nobs"):
        np.testing.assert_allclose(getattr(res, name), getattr(ref, name), rtol=1e-6, err_msg=name)
    assert res.param_names == ["const", "x1", "x2", "x3"]


@pytest.mark.parametrize("device", DEVICES)
def test_mnlogit_matches_statsmodels(anes96, device):
    X, y, ref = anes96
    result, res = _fit_and_infer(tl.SoftmaxRegression(X.shape[1], 7), X, y, device)
    assert result.converged and result.n_iter <= 15
    # statsmodels lays MNLogit out as (1 + D, K - 1); ours is (K - 1, 1 + D), contrasts vs class 0
    assert res.params.shape == (6, 6)
    np.testing.assert_allclose(res.params, np.asarray(ref.params).T, rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(res.bse, np.asarray(ref.bse).T, rtol=1e-6)
    np.testing.assert_allclose(res.zvalues, np.asarray(ref.tvalues).T, rtol=1e-6)
    np.testing.assert_allclose(res.pvalues, np.asarray(ref.pvalues).T, rtol=1e-6, atol=1e-300)
    ci = np.asarray(ref.conf_int()).reshape(6, 6, 2)  # (class, param, [lower, upper])
    np.testing.assert_allclose(res.conf_int(), ci, rtol=1e-6)
    for name in ("llf", "llnull", "llr", "prsquared", "aic", "bic", "df_model", "df_resid"):
        np.testing.assert_allclose(getattr(res, name), getattr(ref, name), rtol=1e-6, err_msg=name)
    # statsmodels' LLR p-value underflows at this size; ours comes from the regularised gamma and
    # equals SciPy's chi-square survival function (~1.8e-102) to its last digits
    from scipy.stats import chi2

    assert 0 < res.llr_pvalue < 1e-90 and ref.llr_pvalue < 1e-90
    np.testing.assert_allclose(res.llr_pvalue, chi2.sf(res.llr, res.df_model), rtol=1e-10)


def test_summary_reads_like_statsmodels(spector, anes96):
    X, y, _ = spector
    _, res = _fit_and_infer(tl.LogisticRegression(3), X, y, feature_names=["GPA", "TUCE", "PSI"])
    text = str(res.summary())
    for piece in ("Logit Regression Results", "No. Observations:", "32", "Pseudo R-squ.:", "0.3740",
                  "Log-Likelihood:", "-12.89", "LL-Null:", "LLR p-value:", "coef", "std err", "P>|z|",
                  "[0.025", "0.975]", "const", "-13.0213", "GPA", "2.8261", "PSI"):
        assert piece in text, piece
    assert res.summary().tables[0][1]["name"] == "GPA"
    X, y, _ = anes96
    _, res = _fit_and_infer(tl.SoftmaxRegression(X.shape[1], 7), X, y)
    text = res.summary().as_text()
    assert "MNLogit Regression Results" in text and all(f"y={k}" in text for k in range(1, 7))


def test_sample_weights_are_frequency_weights(spector):
    X, y, _ = spector
    w = np.random.default_rng(0).integers(1, 4, len(y))
    model = tl.LogisticRegression(3).double()
    result = fit_exact(model, X, y, sample_weight=w, tol=1e-10)
    weighted = infer(model, X, y, w, result=result)
    _, repeated = _fit_and_infer(tl.LogisticRegression(3), np.repeat(X, w, 0), np.repeat(y, w))
    for name in ("params", "bse", "pvalues"):
        np.testing.assert_allclose(getattr(weighted, name), getattr(repeated, name), rtol=1e-8)
    for name in ("llf", "llnull", "aic", "bic", "nobs"):
        np.testing.assert_allclose(getattr(weighted, name), getattr(repeated, name), rtol=1e-10)


def test_without_intercept(spector):
    X, y, _ = spector
    ref = sm.Logit(y, X).fit(disp=0, method="newton", tol=1e-12)
    _, res = _fit_and_infer(tl.LogisticRegression(3, bias=False), X, y)
    np.testing.assert_allclose(res.params, ref.params, rtol=1e-6)
    np.testing.assert_allclose(res.bse, ref.bse, rtol=1e-6)
    np.testing.assert_allclose(res.llf, ref.llf, rtol=1e-8)
    assert res.param_names == ["x1", "x2", "x3"]


# --- refusals ---------------------------------------------------------------------------------


def test_penalised_fit_is_refused_by_name(spector):
    X, y, _ = spector
    model = tl.LogisticRegression(3).double()
    result = fit_exact(model, X, y, l2=0.01)
    with pytest.raises(ValueError, match=r"inference needs an unpenalised fit.*l2=0.01.*Refit with l2=0 and l1=0"):
        infer(model, X, y, result=result)
    # without the result the gradient check still catches it
    with pytest.raises(ValueError, match="not at the maximum-likelihood estimate"):
        infer(model, X, y)


@pytest.mark.parametrize(
    "X,y,kind",
    [
        (np.arange(8.0)[:, None], np.array([0, 0, 0, 0, 1, 1, 1, 1]), "complete"),
        (np.array([[0.0], [1], [2], [3], [3], [4], [5], [6]]), np.array([0, 0, 0, 0, 1, 1, 1, 1]), "quasi-complete"),
    ],
)
def test_binary_separation_is_refused_in_plain_words(X, y, kind):
    model = tl.LogisticRegression(1).double()
    with pytest.warns(SeparationWarning):
        result = fit_exact(model, X, y)
    with pytest.raises(PerfectSeparationError, match="maximum-likelihood estimate does not exist") as info:
        infer(model, X, y, result=result)
    sep = info.value.separation
    assert sep.kind == kind
    if kind == "quasi-complete":
        np.testing.assert_array_equal(sep.rows, [0, 1, 2, 5, 6, 7])
        assert "6 of 8 samples" in str(info.value)


def test_multinomial_complete_separation():
    X = np.array([[0.0], [0.2], [1.0], [1.2], [2.0], [2.2]])
    y = np.array([0, 0, 1, 1, 2, 2])
    model = tl.SoftmaxRegression(1, 3).double()
    with pytest.warns(SeparationWarning, match="Complete separation"):
        fit_exact(model, X, y)
    with pytest.raises(PerfectSeparationError, match="Complete separation"):
        infer(model, X, y)


def test_find_separation_sees_none_in_real_data(anes96):
    X, y, _ = anes96
    model = tl.SoftmaxRegression(X.shape[1], 7).double()
    Xt, T, w = prepare(model, X, y)
    assert find_separation(model, Xt, T, w, screen=False) is None


def test_collinear_features_are_reported():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 2))
    X = np.column_stack([X, X[:, 0] + X[:, 1]])
    y = (rng.random(60) < 0.5).astype(int)
    model = tl.LogisticRegression(3).double()
    result = fit_exact(model, X, y, tol=1e-9)
    with pytest.raises(ValueError, match="collinear"):
        infer(model, X, y, result=result)


def test_inference_needs_a_logistic_model():
    with pytest.raises(ValueError, match="logistic models"):
        infer(tl.LinearRegression(2).double(), np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(ValueError, match="one binary output or a softmax"):
        infer(tl.LogisticRegression(2, n_outputs=2).double(), np.zeros((3, 2)), np.zeros((3, 2)))
