"""Inference against statsmodels' Logit and MNLogit on the reference data sets it ships."""

import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import torch

import torch_logreg as tl
from torch_logreg.errors import UsageError
from torch_logreg.inference import (
    CollinearityWarning,
    PerfectSeparationError,
    SeparationWarning,
    find_separation,
    infer,
    rcond_bounds,
)
from torch_logreg.solvers import fit_exact, prepare

from conftest import CUDA_ONLY, DEVICES


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


@pytest.mark.slow
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


# --- robust covariance ------------------------------------------------------------------------

SPECTOR_NAMES = ["GPA", "TUCE", "PSI"]
SM_FIT = dict(disp=0, method="newton", tol=1e-12, maxiter=100)


def _spector_groups(kind, X):
    """Cluster labels for the 32 students: 8 blocks of 4 consecutive rows, or PSI (2 clusters), as strings."""
    return np.array([f"g{i // 4}" for i in range(len(X))]) if kind == "blocks" else X[:, 2]


def _sm_kwargs(cov_type, groups):
    return dict(cov_type=cov_type) if groups is None else dict(cov_type=cov_type, cov_kwds=dict(groups=groups))


@pytest.mark.parametrize("cov_type,grouping", [("HC0", None), ("cluster", "blocks"), ("cluster", "PSI")])
def test_logit_robust_cov_matches_statsmodels(spector, cov_type, grouping):
    X, y, _ = spector
    groups = None if grouping is None else _spector_groups(grouping, X)
    ref = sm.Logit(y, sm.add_constant(X)).fit(**SM_FIT, **_sm_kwargs(cov_type, groups))
    _, res = _fit_and_infer(tl.LogisticRegression(3), X, y, cov_type=cov_type, groups=groups,
                            feature_names=SPECTOR_NAMES, dep_variable="GRADE")
    assert res.cov_type == cov_type == ref.cov_type
    np.testing.assert_allclose(res.cov_params(), ref.cov_params(), rtol=1e-9, atol=1e-12 * np.abs(ref.cov_params()).max())
    for name in ("params", "bse", "tvalues", "pvalues"):
        np.testing.assert_allclose(getattr(res, name), getattr(ref, name), rtol=1e-9, err_msg=name)
    np.testing.assert_allclose(res.conf_int(0.1), ref.conf_int(0.1), rtol=1e-9)
    assert res.n_groups == (None if groups is None else len(np.unique(groups)))
    text = str(res.summary())
    assert f"Covariance Type:{cov_type:>22}" in text and "GRADE" in text
    assert f"{ref.bse[1]:.4f}" in text


def _numpy_hc(X, y, beta, cov_type, w=None, kind="freq_weights"):
    """HC1-HC3 of a weighted logistic fit written out in NumPy: bread (X^T W X)^-1, scores, IRLS leverage."""
    w = np.ones(len(y)) if w is None else np.asarray(w, float)
    Xa = sm.add_constant(X)
    p = 1 / (1 + np.exp(-Xa @ beta))
    bread = np.linalg.inv(Xa.T @ (Xa * (w * p * (1 - p))[:, None]))
    c = p * (1 - p) * (w if kind == "var_weights" else 1)
    h = c * np.einsum("ni,ij,nj->n", Xa, bread, Xa)
    u2 = (y - p) ** 2 * (w**2 if kind == "var_weights" else w)
    u2 = {"HC1": u2, "HC2": u2 / (1 - h), "HC3": u2 / (1 - h) ** 2}[cov_type]
    cov = bread @ (Xa.T @ (Xa * u2[:, None])) @ bread
    nobs, k = (w.sum() if kind == "freq_weights" else len(y)), Xa.shape[1]
    return cov * nobs / (nobs - k) if cov_type == "HC1" else cov


@pytest.mark.parametrize("cov_type", ["HC1", "HC2", "HC3"])
def test_hc1_to_hc3_follow_their_formulas(spector, cov_type):
    """statsmodels accepts HC1-HC3 for Logit but returns HC0 for all of them; ours are MacKinnon & White's."""
    X, y, ref = spector
    hc0 = sm.Logit(y, sm.add_constant(X)).fit(**SM_FIT, cov_type="HC0")
    same = sm.Logit(y, sm.add_constant(X)).fit(**SM_FIT, cov_type=cov_type)
    np.testing.assert_allclose(same.cov_params(), hc0.cov_params(), rtol=1e-12)
    _, res = _fit_and_infer(tl.LogisticRegression(3), X, y, cov_type=cov_type)
    expected = _numpy_hc(X, y, ref.params, cov_type)
    np.testing.assert_allclose(res.cov_params(), expected, rtol=1e-9)
    np.testing.assert_allclose(res.bse, np.sqrt(np.diag(expected)), rtol=1e-9)
    assert res.cov_type == cov_type
    # the corrections only ever widen HC0
    assert (res.bse > hc0.bse).all()


@pytest.mark.parametrize("cov_type", ["HC0", "HC1", "HC2", "HC3", "cluster"])
def test_robust_cov_with_frequency_weights_equals_repeated_rows(spector, cov_type):
    X, y, _ = spector
    w = np.random.default_rng(0).integers(1, 4, len(y))
    w[[3, 17]] = 0  # dropped rows
    groups = np.arange(len(y)) // 4 if cov_type == "cluster" else None
    model = tl.LogisticRegression(3).double()
    result = fit_exact(model, X, y, sample_weight=w, tol=1e-10)
    weighted = infer(model, X, y, w, result=result, cov_type=cov_type, groups=groups)
    _, repeated = _fit_and_infer(tl.LogisticRegression(3), np.repeat(X, w, 0), np.repeat(y, w), cov_type=cov_type,
                                 groups=None if groups is None else np.repeat(groups, w))
    np.testing.assert_allclose(weighted.cov_params(), repeated.cov_params(), rtol=1e-8)
    if cov_type in ("HC0", "cluster"):  # against statsmodels' Logit of the repeated rows
        ref = sm.Logit(np.repeat(y, w), sm.add_constant(np.repeat(X, w, 0))).fit(
            **SM_FIT, **_sm_kwargs(cov_type, None if groups is None else np.repeat(groups, w)))
        np.testing.assert_allclose(weighted.bse, ref.bse, rtol=1e-8)
    else:
        np.testing.assert_allclose(weighted.cov_params(), _numpy_hc(X, y, weighted.params, cov_type, w), rtol=1e-8)


@pytest.mark.filterwarnings("ignore:cov_type not fully supported with var_weights")
@pytest.mark.parametrize("kind", ["freq_weights", "var_weights"])
def test_weights_follow_statsmodels_glm(spector, kind):
    X, y, _ = spector
    w = np.random.default_rng(0).integers(1, 4, len(y)).astype(float)
    glm = sm.GLM(y, sm.add_constant(X), family=sm.families.Binomial(), **{kind: w})
    ref = glm.fit(tol=1e-12)
    model = tl.LogisticRegression(3).double()
    result = fit_exact(model, X, y, sample_weight=w, tol=1e-10)
    res = infer(model, X, y, w, result=result, weights_kind=kind)
    assert res.weights_kind == kind
    for name in ("params", "bse", "pvalues"):
        np.testing.assert_allclose(getattr(res, name), getattr(ref, name), rtol=1e-8, err_msg=name)
    for name in ("llf", "llnull", "aic", "df_resid", "df_model"):
        np.testing.assert_allclose(getattr(res, name), getattr(ref, name), rtol=1e-10, err_msg=name)
    # GLM's nobs counts rows and its wnobs the weighted observations; its BIC of the log-likelihood uses wnobs
    np.testing.assert_allclose(res.nobs, glm.wnobs if kind == "freq_weights" else ref.nobs)
    np.testing.assert_allclose(res.bic, ref.bic_llf, rtol=1e-10)
    robust = [("HC0", None)] + ([("cluster", np.arange(len(y)) // 4)] if kind == "var_weights" else [])
    for cov_type, groups in robust:
        rob = infer(model, X, y, w, result=result, weights_kind=kind, cov_type=cov_type, groups=groups)
        np.testing.assert_allclose(rob.bse, glm.fit(tol=1e-12, **_sm_kwargs(cov_type, groups)).bse, rtol=1e-8)
    if kind == "var_weights":
        expected = _numpy_hc(X, y, ref.params, "HC3", w, kind)
        rob = infer(model, X, y, w, result=result, weights_kind=kind, cov_type="HC3")
        np.testing.assert_allclose(rob.cov_params(), expected, rtol=1e-8)


@pytest.mark.parametrize("cov_type", ["HC0", "cluster"])
def test_mnlogit_robust_cov_matches_statsmodels(anes96, cov_type):
    X, y, _ = anes96
    groups = np.arange(len(y)) % 37 if cov_type == "cluster" else None
    ref = sm.MNLogit(y, sm.add_constant(X)).fit(**SM_FIT, **_sm_kwargs(cov_type, groups))
    _, res = _fit_and_infer(tl.SoftmaxRegression(X.shape[1], 7), X, y, cov_type=cov_type, groups=groups)
    cov = np.asarray(ref.cov_params())
    np.testing.assert_allclose(res.cov_params(), cov, rtol=1e-8, atol=1e-12 * np.abs(cov).max())
    np.testing.assert_allclose(res.bse, np.asarray(ref.bse).T, rtol=1e-9)
    np.testing.assert_allclose(res.pvalues, np.asarray(ref.pvalues).T, rtol=1e-8)
    assert f"Covariance Type:{cov_type:>22}" in str(res.summary())


def test_robust_cov_refusals(spector, anes96):
    X, y, _ = spector
    model = tl.LogisticRegression(3).double()
    result = fit_exact(model, X, y, tol=1e-10)
    cases = [
        (dict(cov_type="HC4"), r"^cov_type must be one of 'nonrobust', 'HC0', .*got 'HC4'$"),
        (dict(cov_type="cluster"), r"^cov_type='cluster' needs groups"),
        (dict(cov_type="HC0", groups=np.zeros(32)), r"^groups are used by cov_type='cluster' only"),
        (dict(cov_type="cluster", groups=np.zeros(31)), r"^groups must be one label per sample, shape \(32,\)"),
        (dict(cov_type="cluster", groups=np.zeros(32)), r"needs at least 2 groups"),
        (dict(cov_type="cluster", groups=np.r_[np.nan, np.zeros(31)]), r"missing or non-finite label at sample 0"),
        (dict(weights_kind="analytic"), r"^weights_kind must be one of 'freq_weights', 'var_weights'"),
    ]
    for kwargs, message in cases:
        with pytest.raises(UsageError, match=message):
            infer(model, X, y, result=result, **kwargs)
    assert infer(model, X, y, result=result, cov_type="hc0").cov_type == "HC0"
    X, y, _ = anes96
    model = tl.SoftmaxRegression(X.shape[1], 7).double()
    for cov_type in ("HC2", "HC3"):
        with pytest.raises(ValueError, match=rf"cov_type='{cov_type}' .*binary models only; use 'HC0', 'HC1'"):
            infer(model, X, y, cov_type=cov_type)


# --- Wald and likelihood-ratio tests ----------------------------------------------------------


@pytest.mark.parametrize("cov_type", ["nonrobust", "HC0"])
@pytest.mark.parametrize(
    "ours,theirs",
    [
        ("GPA = TUCE = 0", "GPA = TUCE = 0"),
        ("(GPA = 0), (TUCE = 0)", "(GPA = 0), (TUCE = 0)"),
        ("GPA - 2 * TUCE = 1", "GPA - 2 * TUCE = 1"),
        ("GPA + TUCE = PSI, const = -10", "GPA + TUCE = PSI, const = -10"),
        ("(GPA + TUCE) / 2 = PSI", "0.5 * GPA + 0.5 * TUCE - PSI = 0"),
        ("PSI", "PSI = 0"),
    ],
)
def test_wald_test_matches_statsmodels(spector, ours, theirs, cov_type):
    X, y, _ = spector
    frame = sm.datasets.spector.load_pandas().exog
    ref = sm.Logit(y, sm.add_constant(frame)).fit(**SM_FIT, cov_type=cov_type)
    _, res = _fit_and_infer(tl.LogisticRegression(3), X, y, feature_names=SPECTOR_NAMES, cov_type=cov_type)
    test = res.wald_test(ours)
    expected = ref.wald_test(theirs, scalar=True, use_f=False)
    np.testing.assert_allclose(test.statistic, expected.statistic, rtol=1e-9)
    np.testing.assert_allclose(test.pvalue, expected.pvalue, rtol=1e-9)
    assert test.df == expected.df_denom and test.test == "Wald"
    assert str(test).startswith("<Wald test (chi2): statistic=")


def test_wald_test_with_a_matrix(spector, anes96):
    X, y, ref = spector
    _, res = _fit_and_infer(tl.LogisticRegression(3), X, y)
    R = np.array([[0, 1, 0, 0], [0, 0, 1, -1.0]])
    test = res.wald_test(R, q=[1, 0])
    expected = ref.wald_test((R, np.array([1, 0])), scalar=True, use_f=False)
    np.testing.assert_allclose([test.statistic, test.pvalue], [expected.statistic, expected.pvalue], rtol=1e-9)
    single = res.wald_test([0, 0, 0, 1.0])
    np.testing.assert_allclose(single.statistic, res.zvalues[3] ** 2, rtol=1e-12)
    # K classes: the flattened contrasts, class-major, named "<class>:<name>"
    X, y, ref = anes96
    _, res = _fit_and_infer(tl.SoftmaxRegression(X.shape[1], 7), X, y)
    assert res.flat_param_names[:7] == ["1:const", "1:x1", "1:x2", "1:x3", "1:x4", "1:x5", "2:const"]
    R = np.zeros((2, res.k_params))
    R[0, 1], R[0, 7], R[1, 8] = 1, -1, 1
    expected = ref.wald_test(R, scalar=True, use_f=False)
    for test in (res.wald_test(R), res.wald_test("1:x1 = 2:x1, 2:x2 = 0")):
        np.testing.assert_allclose([test.statistic, test.pvalue], [expected.statistic, expected.pvalue], rtol=1e-9)


@pytest.mark.parametrize(
    "restriction,message",
    [
        ("GPA = SAT", r"'SAT' is not a parameter name \(const, GPA, TUCE, PSI\)"),
        ("GPA * TUCE = 0", "a product of two parameters is not linear"),
        ("GPA / TUCE = 0", "only division by a non-zero constant is linear"),
        ("(GPA = 0", "a parenthesis is not closed"),
        ("GPA = ", "it ends too early"),
        ("GPA = 0, GPA = 1 = 2", "involve at least one parameter"),
        ("GPA = 0, 2 * GPA = 1", "linearly dependent"),
        ("GPA = 0 TUCE", "unexpected"),
    ],
)
def test_wald_test_refuses_unreadable_restrictions(spector, restriction, message):
    X, y, _ = spector
    _, res = _fit_and_infer(tl.LogisticRegression(3), X, y, feature_names=SPECTOR_NAMES)
    with pytest.raises(ValueError, match=message):
        res.wald_test(restriction)


def test_wald_test_refuses_bad_matrices(spector):
    X, y, _ = spector
    _, res = _fit_and_infer(tl.LogisticRegression(3), X, y, feature_names=SPECTOR_NAMES)
    with pytest.raises(ValueError, match=r"needs R with 4 columns"):
        res.wald_test(np.eye(3))
    with pytest.raises(ValueError, match="takes q only with a matrix"):
        res.wald_test("GPA = 0", q=1)
    with pytest.raises(ValueError, match="finite"):
        res.wald_test([0, np.nan, 0, 0])


@pytest.mark.parametrize(
    "text,R,q",
    [
        ("GPA = TUCE = 0", [[0, 1, -1, 0], [0, 0, 1, 0]], [0, 0]),
        ("GPA - 2 * TUCE = 1", [0, 1, -2, 0], 1),
        ("(GPA + TUCE) / 2 = PSI, const = -10", [[0, 0.5, 0.5, -1], [1, 0, 0, 0]], [0, -10]),
    ],
)
def test_wald_test_from_arrays_equals_the_string_form(spector, text, R, q):
    """``R, q`` as arrays, as the pair ``(R, q)`` or as text: one test, the same statistic, p-value and df."""
    X, y, _ = spector
    _, res = _fit_and_infer(tl.LogisticRegression(3), X, y, feature_names=SPECTOR_NAMES, cov_type="HC1")
    from_text = res.wald_test(text)
    np.testing.assert_array_equal(from_text.r_matrix, np.atleast_2d(R))
    np.testing.assert_array_equal(from_text.q, np.broadcast_to(q, from_text.q.shape))
    for test in (res.wald_test(np.array(R), q), res.wald_test((np.array(R), np.array(q))), res.wald_test(R, q=q)):
        np.testing.assert_allclose([test.statistic, test.pvalue], [from_text.statistic, from_text.pvalue], rtol=1e-12)
        assert test.df == from_text.df == np.atleast_2d(R).shape[0] and test.test == "Wald"


def test_wald_test_from_arrays_refuses_bad_shapes(spector):
    X, y, _ = spector
    _, res = _fit_and_infer(tl.LogisticRegression(3), X, y, feature_names=SPECTOR_NAMES)
    R = np.array([[0, 1.0, 0, 0], [0, 0, 1, 0]])
    with pytest.raises(UsageError, match=r"needs R with 4 columns \(one per parameter\), got shape \(2, 3\)"):
        res.wald_test(R[:, :3])
    with pytest.raises(UsageError, match=r"needs R with 4 columns .* got shape \(1, 2, 4\)"):
        res.wald_test(R[None])
    with pytest.raises(UsageError, match=r"q with one value per restriction \(2\) or one in all, got shape \(3,\)"):
        res.wald_test(R, [0, 0, 0])
    with pytest.raises(UsageError, match=r"q with one value per restriction .* got shape \(2, 1\)"):
        res.wald_test((R, np.zeros((2, 1))))
    for pair, q in (((R, [0, 0]), [0, 0]), ((R, [0, 0], 1), None)):
        with pytest.raises(UsageError, match=r"takes q once: R as the pair \(R, q\) with q left out"):
            res.wald_test(pair, q=q)
    with pytest.raises(UsageError, match="R and q of numbers"):
        res.wald_test([[0, 1, 0, 0], [0, 1]])


def test_lr_test_matches_statsmodels(spector):
    from scipy.stats import chi2

    X, y, ref = spector
    restricted_ref = sm.Logit(y, sm.add_constant(X[:, 2:])).fit(**SM_FIT)
    _, full = _fit_and_infer(tl.LogisticRegression(3), X, y, feature_names=SPECTOR_NAMES)
    _, restricted = _fit_and_infer(tl.LogisticRegression(1), X[:, 2:], y, feature_names=["PSI"])
    test = full.lr_test(restricted)
    statistic = 2 * (ref.llf - restricted_ref.llf)
    np.testing.assert_allclose(test.statistic, statistic, rtol=1e-9)
    np.testing.assert_allclose(test.pvalue, chi2.sf(statistic, 2), rtol=1e-9)
    assert test.df == 2 and test.test == "LR"
    # against the intercept-only model it is statsmodels' llr
    _, null = _fit_and_infer(tl.LogisticRegression(1, bias=False), np.ones((32, 1)), y)
    np.testing.assert_allclose(full.lr_test(null).statistic, ref.llr, rtol=1e-9)
    np.testing.assert_allclose(full.lr_test(null).pvalue, ref.llr_pvalue, rtol=1e-9)


def test_lr_test_refusals(spector, anes96):
    X, y, _ = spector
    _, full = _fit_and_infer(tl.LogisticRegression(3), X, y)
    _, small = _fit_and_infer(tl.LogisticRegression(1), X[:, 2:], y)
    with pytest.raises(ValueError, match="must have fewer parameters than this one, but it has 4 against 2"):
        small.lr_test(full)
    with pytest.raises(ValueError, match="must have fewer parameters"):
        full.lr_test(full)
    _, fewer_rows = _fit_and_infer(tl.LogisticRegression(1), X[:30, 2:], y[:30])
    with pytest.raises(ValueError, match="same data, but they have nobs 32 and 30"):
        full.lr_test(fewer_rows)
    y_other = np.r_[np.ones(31), 0.0]  # a fit to other data with the higher log-likelihood
    _, other = _fit_and_infer(tl.LogisticRegression(1, bias=False), np.ones((32, 1)), y_other)
    with pytest.raises(ValueError, match="restricted fit has the higher log-likelihood"):
        full.lr_test(other)
    with pytest.raises(ValueError, match="InferenceResult of the restricted fit"):
        full.lr_test(-12.0)
    X, y, _ = anes96
    _, multi = _fit_and_infer(tl.SoftmaxRegression(X.shape[1], 7), X[:32], np.arange(32) % 7)
    with pytest.raises(ValueError, match="same kind of model"):
        multi.lr_test(small)


# --- odds ratios and marginal effects ---------------------------------------------------------


@pytest.mark.slow
def test_odds_ratios(spector, anes96):
    X, y, ref = spector
    _, res = _fit_and_infer(tl.LogisticRegression(3), X, y, feature_names=SPECTOR_NAMES, cov_type="HC0")
    table = res.odds_ratios(alpha=0.1)
    assert table.columns == ["odds_ratio", "lower", "upper"]
    assert table.index == ["const", *SPECTOR_NAMES]
    ref = sm.Logit(y, sm.add_constant(X)).fit(**SM_FIT, cov_type="HC0")
    np.testing.assert_allclose(table["odds_ratio"], np.exp(ref.params), rtol=1e-9)
    np.testing.assert_allclose(table[["lower", "upper"]], np.exp(ref.conf_int(0.1)), rtol=1e-9)
    frame = pd.DataFrame(table.values, index=table.index, columns=table.columns)
    np.testing.assert_allclose(frame.loc["GPA", "odds_ratio"], np.exp(ref.params[1]), rtol=1e-9)
    assert "odds_ratio" in str(table) and "TUCE" in str(table) and list(table.to_dict()) == table.columns
    with pytest.raises(KeyError, match="no column 'ratio'; the columns are odds_ratio, lower, upper"):
        table["ratio"]
    X, y, ref = anes96
    _, res = _fit_and_infer(tl.SoftmaxRegression(X.shape[1], 7), X, y)
    table = res.odds_ratios()
    assert table.shape == (36, 3) and table.index[6] == "2:const"
    np.testing.assert_allclose(table["odds_ratio"], np.exp(np.asarray(ref.params).T.reshape(-1)), rtol=1e-8)


@pytest.mark.parametrize("at", ["overall", "mean"])
@pytest.mark.parametrize("cov_type", ["nonrobust", "HC0", "cluster"])
def test_logit_marginal_effects_match_statsmodels(spector, at, cov_type):
    X, y, _ = spector
    groups = np.arange(len(y)) // 4 if cov_type == "cluster" else None
    frame = sm.datasets.spector.load_pandas()
    ref = sm.Logit(frame.endog, sm.add_constant(frame.exog)).fit(**SM_FIT, **_sm_kwargs(cov_type, groups))
    _, res = _fit_and_infer(tl.LogisticRegression(3), X, y, feature_names=SPECTOR_NAMES, cov_type=cov_type,
                            groups=groups, dep_variable="GRADE")
    me, expected = res.get_margeff(at=at), ref.get_margeff(at=at)
    np.testing.assert_allclose(me.margeff, expected.margeff, rtol=1e-9)
    np.testing.assert_allclose(me.margeff_se, expected.margeff_se, rtol=1e-9)
    np.testing.assert_allclose(me.margeff_cov, expected.margeff_cov, rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(me.zvalues, expected.tvalues, rtol=1e-9)
    np.testing.assert_allclose(me.pvalues, expected.pvalues, rtol=1e-8)
    np.testing.assert_allclose(me.conf_int(), expected.conf_int(), rtol=1e-9)
    frame_ours, frame_ref = me.summary_frame(), expected.summary_frame()
    assert frame_ours.columns == list(frame_ref.columns) and frame_ours.index == list(frame_ref.index)
    np.testing.assert_allclose(frame_ours.values, frame_ref.to_numpy(), rtol=1e-8)
    text = str(me.summary())
    for piece in ("Logit Marginal Effects", "GRADE", f"At:{at:>34}", "dy/dx", "GPA", f"{expected.margeff[0]:.4f}"):
        assert piece in text, piece


@pytest.mark.parametrize("at", ["overall", "mean"])
@pytest.mark.parametrize("cov_type", ["nonrobust", "HC0", "cluster"])
def test_mnlogit_marginal_effects_match_statsmodels(anes96, at, cov_type):
    X, y, _ = anes96
    groups = np.arange(len(y)) % 37 if cov_type == "cluster" else None
    ref = sm.MNLogit(y, sm.add_constant(X)).fit(**SM_FIT, **_sm_kwargs(cov_type, groups))
    _, res = _fit_and_infer(tl.SoftmaxRegression(X.shape[1], 7), X, y, cov_type=cov_type, groups=groups)
    me, expected = res.get_margeff(at=at), ref.get_margeff(at=at)
    # statsmodels lays the effects out (D, K); ours are (K, D), one row per class including class 0
    assert me.margeff.shape == (7, 5)
    np.testing.assert_allclose(me.margeff, expected.margeff.T, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(me.margeff_se, expected.margeff_se.T, rtol=1e-9)
    np.testing.assert_allclose(me.margeff_cov, expected.margeff_cov, rtol=1e-7, atol=1e-13 * np.abs(expected.margeff_cov).max())
    np.testing.assert_allclose(me.conf_int(), np.moveaxis(expected.conf_int(), 2, 0), rtol=1e-8, atol=1e-15)
    frame_ours, frame_ref = me.summary_frame(), expected.summary_frame()
    np.testing.assert_allclose(frame_ours.values, frame_ref.to_numpy(), rtol=1e-7, atol=1e-15)
    frame = pd.DataFrame(frame_ours.values, index=pd.MultiIndex.from_tuples(frame_ours.index, names=frame_ours.index_names),
                         columns=frame_ours.columns)
    pd.testing.assert_index_equal(frame.index, frame_ref.index)
    assert frame.columns.equals(frame_ref.columns)


def test_marginal_effects_with_frequency_weights_equal_repeated_rows(spector):
    X, y, _ = spector
    w = np.random.default_rng(0).integers(1, 4, len(y))
    model = tl.LogisticRegression(3).double()
    weighted = infer(model, X, y, w, result=fit_exact(model, X, y, sample_weight=w, tol=1e-10))
    _, repeated = _fit_and_infer(tl.LogisticRegression(3), np.repeat(X, w, 0), np.repeat(y, w))
    for at in ("overall", "mean"):
        a, b = weighted.get_margeff(at), repeated.get_margeff(at)
        np.testing.assert_allclose(a.margeff, b.margeff, rtol=1e-8)
        np.testing.assert_allclose(a.margeff_se, b.margeff_se, rtol=1e-8)


def test_marginal_effects_without_intercept_skip_constant_columns(spector):
    """With a constant column of the user's own (no bias), statsmodels leaves it out of the effects too."""
    X, y, _ = spector
    Xc = sm.add_constant(X)
    ref = sm.Logit(y, Xc).fit(**SM_FIT)
    _, res = _fit_and_infer(tl.LogisticRegression(4, bias=False), Xc, y)
    me, expected = res.get_margeff(), ref.get_margeff()
    assert me.names == ["x2", "x3", "x4"]
    np.testing.assert_allclose(me.margeff, expected.margeff, rtol=1e-9)
    np.testing.assert_allclose(me.margeff_se, expected.margeff_se, rtol=1e-9)


def test_marginal_effects_refusals(spector):
    X, y, _ = spector
    _, res = _fit_and_infer(tl.LogisticRegression(3), X, y)
    with pytest.raises(ValueError, match="method must be one of 'dydx', 'eyex', 'dyex', 'eydx', got 'ey'"):
        res.get_margeff(method="ey")
    with pytest.raises(ValueError, match="at must be one of 'overall', 'mean', 'median', 'zero', got 'all'"):
        res.get_margeff(at="all")


@pytest.mark.parametrize("cov_type", ["HC2", "cluster"])
def test_chunked_sums_equal_one_pass(cov_type):
    """The meat and the marginal-effect Jacobian are sums over chunks of rows: the chunking must not matter."""
    from torch_logreg.inference.covariance import sandwich
    from torch_logreg.inference.margins import margeff_terms

    rng = np.random.default_rng(4)
    n, a, k = 50, 4, 3
    Xa = torch.as_tensor(np.column_stack([np.ones(n), rng.normal(size=(n, a - 1))]))
    B = torch.as_tensor(np.vstack([np.zeros(a), rng.normal(size=(k - 1, a))]))
    omega = torch.as_tensor(rng.random(n))
    one = margeff_terms(Xa, B, omega)
    for chunk in (1, 7):
        for x, y in zip(one, margeff_terms(Xa, B, omega, chunk_size=chunk), strict=True):
            torch.testing.assert_close(y, x, rtol=1e-12, atol=1e-14)
    p = torch.sigmoid(Xa @ B[1])
    bread = torch.linalg.inv(Xa.T @ (Xa * (p * (1 - p))[:, None]))
    resid = (torch.as_tensor(rng.random(n) < 0.5, dtype=torch.float64) - p)[:, None]
    codes = torch.as_tensor(np.arange(n) % 6)
    groups = (codes, 6) if cov_type == "cluster" else (None, None)
    args = (bread, Xa, resid, omega, cov_type, "var_weights", *groups, float(n), a, p * (1 - p))
    torch.testing.assert_close(sandwich(*args, chunk_size=3), sandwich(*args), rtol=1e-12, atol=1e-14)


# --- CUDA against the CPU ---------------------------------------------------------------------


@pytest.mark.parametrize("device", CUDA_ONLY)
@pytest.mark.parametrize("link,cov_type", [("binary", "HC3"), ("binary", "cluster"), ("softmax", "HC1"), ("softmax", "cluster")])
def test_robust_inference_on_cuda_matches_cpu(device, link, cov_type):
    X, y = _collinearity_data(link)
    groups = np.arange(len(y)) % 11 if cov_type == "cluster" else None
    w = np.random.default_rng(3).integers(1, 4, len(y)).astype(float)
    results = {}
    for dev in ("cpu", device):
        model = _model(link, 3).double().to(dev)
        fit = fit_exact(model, X, y, sample_weight=w, tol=1e-10)
        results[dev] = infer(model, X, y, w, result=fit, cov_type=cov_type, groups=groups)
    cpu, gpu = results["cpu"], results[device]
    np.testing.assert_allclose(gpu.cov_params(), cpu.cov_params(), rtol=1e-8, atol=1e-14)
    for at in ("overall", "mean"):
        np.testing.assert_allclose(gpu.get_margeff(at).margeff_se, cpu.get_margeff(at).margeff_se, rtol=1e-8)
