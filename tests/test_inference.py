"""Inference against statsmodels' Logit and MNLogit on the reference data sets it ships."""

import warnings

import numpy as np
import pytest
import statsmodels.api as sm
import torch

import torch_logreg as tl
from torch_logreg.inference import (
    CollinearityWarning,
    PerfectSeparationError,
    SeparationWarning,
    find_separation,
    infer,
    rcond_bounds,
)
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


# --- collinearity -----------------------------------------------------------------------------


def _collinearity_data(link):
    """300 samples of three standard-normal features; binary or 3-class responses that depend on them."""
    rng = np.random.default_rng(1)
    n = 300
    X = rng.normal(size=(n, 3))
    eta = X @ np.array([0.8, -0.6, 0.4])
    if link == "binary":
        return X, (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(int)
    P = np.exp(np.column_stack([np.zeros(n), eta, -X[:, 1]]))
    P /= P.sum(1, keepdims=True)
    return X, (rng.random(n)[:, None] > P.cumsum(1)).sum(1)


def _model(link, d):
    return tl.LogisticRegression(d) if link == "binary" else tl.SoftmaxRegression(d, 3)


def _named_columns(message):
    """The parameter names quoted in a collinearity message."""
    import re

    return set(re.findall(r"'([^']*)'", message.split(":", 1)[1]))


def _rcond_and_bound(message):
    """``(rcond, bound)`` as a collinearity message states them."""
    rcond, bound = message.split("number ", 1)[1].split(")", 1)[0].split(" < ")
    return float(rcond), float(bound)


#: an extra column "e" built from a, b, c, and the columns a refusal must name
SINGULAR_CASES = {
    "duplicate": (lambda X: X[:, 1], {"b", "e"}),
    "combination": (lambda X: X[:, 0] - 2 * X[:, 2], {"a", "c", "e"}),
    "constant": (lambda X: np.full(len(X), 2.0), {"const", "e"}),
}


@pytest.mark.parametrize("link", ["binary", "softmax"])
@pytest.mark.parametrize("case", sorted(SINGULAR_CASES))
def test_singular_design_is_refused_naming_the_columns(link, case):
    X, y = _collinearity_data(link)
    extra, responsible = SINGULAR_CASES[case]
    X = np.column_stack([X, extra(X)])
    with pytest.raises(ValueError, match=r"^the design is singular \(reciprocal condition number ") as info:
        _fit_and_infer(_model(link, 4), X, y, feature_names=["a", "b", "c", "e"])
    message = str(info.value)
    assert _named_columns(message) == responsible, message
    assert message.endswith("are collinear; drop one of them so standard errors exist")
    rcond, bound = _rcond_and_bound(message)
    assert rcond < 1e-14 and bound == pytest.approx(rcond_bounds(torch.float64)[0], rel=0.05)  # 1.6e-10


@pytest.mark.parametrize("link", ["binary", "softmax"])
@pytest.mark.parametrize("case", ["duplicate", "constant"])
def test_singular_design_is_refused_in_float32(link, case):
    X, y = _collinearity_data(link)
    extra, responsible = SINGULAR_CASES[case]
    X = np.column_stack([X, extra(X)])
    model = _model(link, 4).float()
    result = fit_exact(model, X, y, tol=1e-5)
    with pytest.raises(ValueError, match=r"^the design is singular \(reciprocal condition number ") as info:
        infer(model, X, y, result=result, feature_names=["a", "b", "c", "e"])
    assert _named_columns(str(info.value)) == responsible
    rcond, bound = _rcond_and_bound(str(info.value))
    assert rcond < 1e-14 and bound == pytest.approx(rcond_bounds(torch.float32)[0], rel=0.05)  # 4.7e-5


@pytest.mark.parametrize("link", ["binary", "softmax"])
def test_empty_column_is_refused_by_name(link):
    X, y = _collinearity_data(link)
    X = np.column_stack([X, np.zeros(len(X))])
    with pytest.raises(ValueError, match=r"^the design is singular: column 'e' has zero or non-finite information"):
        _fit_and_infer(_model(link, 4), X, y, feature_names=["a", "b", "c", "e"])


@pytest.mark.parametrize("link", ["binary", "softmax"])
def test_two_linear_relations_ask_for_two_columns_to_go(link):
    X, y = _collinearity_data(link)
    X = np.column_stack([X, X[:, 1], 3 * X[:, 0]])
    with pytest.raises(ValueError, match=r"drop 2 of them \(one per linear relation\)") as info:
        _fit_and_infer(_model(link, 5), X, y)
    assert _named_columns(str(info.value)) == {"x1", "x2", "x4", "x5"}


@pytest.mark.parametrize("link", ["binary", "softmax"])
def test_scaled_column_is_not_refused_and_matches_statsmodels(link):
    """A column in units 1e6 times smaller: the unit-diagonal scaling sees the same design."""
    X, y = _collinearity_data(link)
    X = X * np.array([1.0, 1e6, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error", CollinearityWarning)
        _, res = _fit_and_infer(_model(link, 3), X, y)
    Xc = sm.add_constant(X)
    if link == "binary":
        ref = sm.Logit(y, Xc).fit(disp=0, method="newton", tol=1e-12, maxiter=100)
        params, bse = ref.params, ref.bse
    else:
        ref = sm.MNLogit(y, Xc).fit(disp=0, method="newton", tol=1e-12, maxiter=100)
        params, bse = np.asarray(ref.params).T, np.asarray(ref.bse).T
    np.testing.assert_allclose(res.params, params, rtol=1e-6)
    np.testing.assert_allclose(res.bse, bse, rtol=1e-6)
    np.testing.assert_allclose(res.llf, ref.llf, rtol=1e-10)


def test_well_conditioned_designs_give_no_warning(spector, anes96):
    with warnings.catch_warnings():
        warnings.simplefilter("error", CollinearityWarning)
        _fit_and_infer(tl.LogisticRegression(3), *spector[:2])
        _fit_and_infer(tl.SoftmaxRegression(anes96[0].shape[1], 7), *anes96[:2])
        for link in ("binary", "softmax"):
            _fit_and_infer(_model(link, 3), *_collinearity_data(link))


@pytest.mark.filterwarnings("ignore::statsmodels.tools.sm_exceptions.ConvergenceWarning")
@pytest.mark.parametrize("link", ["binary", "softmax"])
def test_nearly_collinear_design_warns_and_still_reports(link):
    """A copy of b blurred by noise of 1e-4 its scale: rcond ~1e-9, well between the two bounds."""
    X, y = _collinearity_data(link)
    X = np.column_stack([X, X[:, 1] + 1e-4 * np.random.default_rng(2).normal(size=len(X))])
    with pytest.warns(CollinearityWarning, match=r"^the design is nearly singular \(reciprocal condition number") as rec:
        _, res = _fit_and_infer(_model(link, 4), X, y, feature_names=["a", "b", "c", "e"])
    messages = [str(w.message) for w in rec if issubclass(w.category, CollinearityWarning)]
    assert len(messages) == 1 and _named_columns(messages[0]) == {"b", "e"}, messages
    rcond, bound = _rcond_and_bound(messages[0])
    singular, collinear = rcond_bounds(torch.float64)
    assert 4 * singular < rcond < collinear / 4 and bound == pytest.approx(collinear, rel=0.05)
    Xc = sm.add_constant(X)
    if link == "binary":
        ref = sm.Logit(y, Xc).fit(disp=0, method="newton", tol=1e-12, maxiter=100)
        bse = ref.bse
    else:
        ref = sm.MNLogit(y, Xc).fit(disp=0, method="newton", tol=1e-12, maxiter=100)
        bse = np.asarray(ref.bse).T
    assert res.bse.max() > 100  # the price of the near collinearity
    np.testing.assert_allclose(res.bse, bse, rtol=1e-4)


def test_estimator_names_the_collinear_columns():
    import pandas as pd

    X, y = _collinearity_data("binary")
    frame = pd.DataFrame(X, columns=["age", "income", "height"]).assign(income_copy=X[:, 1])
    est = tl.LogisticRegressionClassifier(penalty=None, tol=1e-10).fit(frame, y)
    with pytest.raises(tl.InferenceUnavailable, match="the design is singular") as info:
        _ = est.inference_
    assert _named_columns(str(info.value).split("fit: ", 1)[1]) == {"income", "income_copy"}
