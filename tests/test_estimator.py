"""LogisticRegressionClassifier: scikit-learn's own estimator checks, parity with scikit-learn's
LogisticRegression, inference_ against statsmodels (default settings, robust and clustered covariances),
convergence, and the parameter errors."""

import re
import warnings

import numpy as np
import pytest
import statsmodels.api as sm
import torch
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.exceptions import ConvergenceWarning as SklearnConvergenceWarning
from sklearn.linear_model import LogisticRegression as SkLogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import torch_logreg as tl
from torch_logreg.errors import UsageError
from torch_logreg.estimators.estimator import InferenceUnavailable, LogisticRegressionClassifier
from torch_logreg.inference import CollinearityWarning, SeparationWarning
from torch_logreg.solvers import ConvergenceWarning

from helpers import l1_optimality, model_at

CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


@pytest.fixture(scope="module")
def spector():
    """Spector & Mazzeo's 32 students: the features GPA, TUCE, PSI as a DataFrame, GRADE as a named Series."""
    data = sm.datasets.spector.load_pandas()
    return data.exog.copy(), data.endog.copy()


#: statsmodels run to its own rounding floor: the reference the default fits are held to
SM_FIT = dict(disp=0, method="newton", tol=1e-12, maxiter=100)


@parametrize_with_checks([LogisticRegressionClassifier(device="cpu", dtype="float64")])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# --- parity with scikit-learn -----------------------------------------------------------------


@pytest.mark.parametrize("solver", ["newton", "lbfgs"])
@pytest.mark.parametrize("C", [0.01, 1.0, 100.0])
def test_binary_coefficients_match_sklearn(cancer, solver, C):
    X, y = cancer
    sk = SkLogisticRegression(C=C, tol=1e-10, solver="newton-cholesky").fit(X, y)
    est = LogisticRegressionClassifier(C=C, solver=solver, tol=1e-10, max_iter=2000).fit(X, y)
    assert est.coef_.shape == (1, 30) and est.intercept_.shape == (1,)
    np.testing.assert_allclose(est.coef_, sk.coef_, rtol=1e-5, atol=1e-5 * np.abs(sk.coef_).max())
    np.testing.assert_allclose(est.intercept_, sk.intercept_, rtol=1e-5, atol=1e-8)
    # both stop at a max-abs gradient of 1e-10; Newton's quadratic convergence lands far below
    # it, L-BFGS just below, and with a smallest Hessian eigenvalue near 1/(C N) (C = 100) that
    # leaves its probabilities a few 1e-8 from the optimum
    np.testing.assert_allclose(est.predict_proba(X), sk.predict_proba(X), atol=1e-8 if solver == "newton" else 5e-8)
    np.testing.assert_allclose(est.decision_function(X), sk.decision_function(X), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(est.predict(X), sk.predict(X))
    if solver == "newton":
        assert est.n_iter_[0] <= 15


def test_multinomial_with_string_labels_matches_sklearn(iris):
    X, y = iris
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    # both are Newton fits to a gradient of ~1e-16: probabilities agree to rounding, far inside 1e-10
    sk = SkLogisticRegression(C=1.0, tol=1e-10, solver="newton-cholesky").fit(X, labels)
    est = LogisticRegressionClassifier(tol=1e-10).fit(X, labels)
    assert est.result_.solver == "newton"
    np.testing.assert_array_equal(est.classes_, sk.classes_)
    assert est.coef_.shape == (3, 4) and est.intercept_.shape == (3,)
    np.testing.assert_allclose(est.predict_proba(X), sk.predict_proba(X), atol=1e-10)
    np.testing.assert_allclose(est.predict_log_proba(X), np.log(est.predict_proba(X)), atol=1e-10)
    np.testing.assert_array_equal(est.predict(X), sk.predict(X))
    assert est.score(X, labels) == pytest.approx(sk.score(X, labels))


@pytest.mark.parametrize("class_weight", ["balanced", {0: 2.0, 1: 0.5}])
def test_class_and_sample_weights_match_sklearn(cancer, class_weight):
    X, y = cancer
    w = np.random.default_rng(0).uniform(0.2, 2.0, len(y))
    sk = SkLogisticRegression(tol=1e-10, solver="newton-cholesky", class_weight=class_weight).fit(X, y, sample_weight=w)
    est = LogisticRegressionClassifier(tol=1e-10, class_weight=class_weight).fit(X, y, sample_weight=w)
    np.testing.assert_allclose(est.coef_, sk.coef_, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(est.intercept_, sk.intercept_, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("penalty,l1_ratio", [("l1", None), ("elasticnet", 0.5)])
def test_l1_and_elastic_net_match_sklearn_saga(cancer, penalty, l1_ratio):
    X, y = cancer
    C, ratio = 0.1, 1.0 if penalty == "l1" else l1_ratio
    l1, l2 = ratio / (C * len(y)), (1 - ratio) / (C * len(y))
    est = LogisticRegressionClassifier(penalty=penalty, l1_ratio=l1_ratio, C=C, tol=1e-10).fit(X, y)
    # ours is the optimum (KKT at rounding level) with a support no small error can change
    ours = l1_optimality(est.model_, X, y, l1, l2)
    assert ours["violation"] < 1e-9 and ours["margin"] > 0.01
    # saga (seeded, tight tolerance) is iterative: trusted only once it is that close as well
    sk = SkLogisticRegression(C=C, l1_ratio=ratio, solver="saga", tol=1e-12, max_iter=100000, random_state=0).fit(X, y)
    ref = l1_optimality(model_at(tl.LogisticRegression(30), sk.coef_, sk.intercept_), X, y, l1, l2)
    assert ref["violation"] < 0.1 * ours["margin"] * l1
    np.testing.assert_array_equal(est.coef_ != 0, sk.coef_ != 0)
    # saga's measured distance is ~3e-8 in the weights
    np.testing.assert_allclose(est.coef_, sk.coef_, atol=1e-6)


def test_unpenalised_fit_matches_sklearn_no_penalty(iris):
    X, y = iris
    Xs, ys = X[:, :2], (y == 1).astype(int)
    sk = SkLogisticRegression(C=np.inf, tol=1e-10, solver="newton-cholesky").fit(Xs, ys)
    est = LogisticRegressionClassifier(penalty=None, tol=1e-10).fit(Xs, ys)
    np.testing.assert_allclose(est.coef_, sk.coef_, rtol=1e-7)


# --- inference_ ----------------------------------------------------------------------------


def test_inference_matches_statsmodels_with_feature_names():
    data = sm.datasets.spector.load_pandas()
    X, y = data.exog.copy(), data.endog.to_numpy().copy()
    ref = sm.Logit(y, sm.add_constant(X.to_numpy())).fit(disp=0, tol=1e-12)
    est = LogisticRegressionClassifier(penalty=None, tol=1e-10).fit(X, y)
    res = est.inference_
    np.testing.assert_allclose(res.params, ref.params, rtol=1e-6)
    np.testing.assert_allclose(res.params, np.r_[est.intercept_, est.coef_[0]], rtol=1e-12)
    np.testing.assert_allclose(res.bse, ref.bse, rtol=1e-6)
    np.testing.assert_allclose(res.zvalues, ref.tvalues, rtol=1e-6)
    np.testing.assert_allclose(res.pvalues, ref.pvalues, rtol=1e-6)
    np.testing.assert_allclose(res.conf_int(), ref.conf_int(), rtol=1e-6)
    for name in ("llf", "llnull", "prsquared", "llr_pvalue", "aic", "bic"):
        np.testing.assert_allclose(getattr(res, name), getattr(ref, name), rtol=1e-6, err_msg=name)
    assert res.param_names == ["const", "GPA", "TUCE", "PSI"]
    assert "GPA" in str(res.summary())


@pytest.mark.slow
def test_multinomial_inference_shape_and_reference_class():
    data = sm.datasets.anes96.load_pandas()
    X, y = data.exog.to_numpy(dtype=float).copy(), data.endog.to_numpy().astype(int)
    ref = sm.MNLogit(y, sm.add_constant(X)).fit(disp=0, method="newton", tol=1e-12)
    est = LogisticRegressionClassifier(penalty=None, tol=1e-10).fit(X, y)
    res = est.inference_
    assert res.params.shape == (6, 6)
    np.testing.assert_allclose(res.params, np.asarray(ref.params).T, rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(res.bse, np.asarray(ref.bse).T, rtol=1e-6)
    np.testing.assert_allclose(res.llf, ref.llf, rtol=1e-8)


def test_inference_of_a_penalised_fit_is_a_clear_error(cancer):
    X, y = cancer
    est = LogisticRegressionClassifier(C=1.0).fit(X, y)
    assert not hasattr(est, "inference_")
    with pytest.raises(InferenceUnavailable, match=r"needs an unpenalised fit \(penalty=None\).*penalty='l2'"):
        _ = est.inference_
    with pytest.raises(ValueError):  # also a ValueError
        _ = est.inference_


def test_separated_data_warns_and_refuses_inference():
    X = np.arange(10.0)[:, None]
    y = (X[:, 0] > 4.5).astype(int)
    with pytest.warns(SeparationWarning, match="Complete separation"):
        est = LogisticRegressionClassifier(penalty=None).fit(X, y)
    with pytest.raises(InferenceUnavailable, match="Complete separation"):
        _ = est.inference_
    # the penalised fit of the same data is fine
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LogisticRegressionClassifier(C=1.0).fit(X, y)


# --- unpenalised fits reach the maximum-likelihood estimate by default ---------------------------


def test_default_unpenalised_fit_is_the_mle(spector):
    """With the default tol and solver an unpenalised fit is Newton's, run to the rounding floor of the
    gradient: statsmodels' own Newton fit agrees to ~1e-14 (asserted: 1e-8 in params, 1e-6 in bse)."""
    X, y = spector
    ref = sm.Logit(y.to_numpy(), sm.add_constant(X.to_numpy())).fit(**SM_FIT)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est = LogisticRegressionClassifier(penalty=None).fit(X, y)
    res = est.inference_
    assert est.result_.solver == "newton" and est.result_.converged
    assert est.tol_ == 1e-10 and est.grad_norm_ <= est.tol_
    np.testing.assert_allclose(res.params, ref.params, rtol=1e-8)
    np.testing.assert_allclose(res.bse, ref.bse, rtol=1e-6)
    np.testing.assert_allclose(res.pvalues, ref.pvalues, rtol=1e-6)
    assert re.search(r"Converged:\s+True", str(res.summary()))


def test_default_unpenalised_fit_with_unscaled_columns():
    """Four raw breast-cancer columns (mean radius, texture, perimeter, area: up to ~2500): no refusal,
    statsmodels' estimates and standard errors."""
    X, y = load_breast_cancer(return_X_y=True)
    X = X[:, :4]
    assert X.max() > 2000
    ref = sm.Logit(y, sm.add_constant(X)).fit(**SM_FIT)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est = LogisticRegressionClassifier(penalty=None).fit(X, y)
    res = est.inference_
    np.testing.assert_allclose(res.params, ref.params, rtol=1e-8)
    np.testing.assert_allclose(res.bse, ref.bse, rtol=1e-6)
    np.testing.assert_allclose(res.llf, ref.llf, rtol=1e-12)


def test_truncated_fit_warns_with_its_gradient_and_refuses_inference(spector):
    X, y = spector
    match = r"lbfgs did not converge in 1 iterations \(max_iter=1\); max\|gradient\| = "
    with pytest.warns(ConvergenceWarning, match=match) as rec:
        est = LogisticRegressionClassifier(penalty=None, solver="lbfgs", max_iter=1).fit(X, y)
    warning = next(w for w in rec if issubclass(w.category, ConvergenceWarning))
    assert issubclass(warning.category, SklearnConvergenceWarning)  # scikit-learn's class as well
    gradient = f"{est.grad_norm_:.3e}"
    assert f"max|gradient| = {gradient} > tol=1e-10" in str(warning.message)
    with pytest.raises(InferenceUnavailable, match=rf"gradient of the objective is {re.escape(gradient)}, above the "
                                                   r"1\.000e-08 that standard errors need; refit with a smaller tol.*"
                                                   r"a larger max_iter or solver='newton'$"):
        _ = est.inference_


def test_loose_tol_is_no_silent_approximation(spector):
    """L-BFGS stopped at an explicit tol=1e-4 converged by its own test, but its estimates are ~1e-4 off
    the MLE: inference_ is refused rather than reported, and says what to change."""
    X, y = spector
    est = LogisticRegressionClassifier(penalty=None, solver="lbfgs", tol=1e-4).fit(X, y)
    assert est.result_.converged and 1e-8 < est.grad_norm_ <= 1e-4
    with pytest.raises(InferenceUnavailable, match=r"stopped short of the maximum-likelihood estimate.*smaller tol"):
        _ = est.inference_
    # the same solver with the default tol reaches it
    est = LogisticRegressionClassifier(penalty=None, solver="lbfgs").fit(X, y)
    ref = sm.Logit(y.to_numpy(), sm.add_constant(X.to_numpy())).fit(**SM_FIT)
    np.testing.assert_allclose(est.inference_.params, ref.params, rtol=1e-6)


def test_converged_line_reports_the_solver(spector):
    """tol=0 cannot be met: Newton stops at max_iter with a ConvergenceWarning, at the rounding floor, so
    inference_ is given and its summary says ``Converged: False``."""
    X, y = spector
    with pytest.warns(ConvergenceWarning, match=r"newton did not converge in 12 iterations"):
        est = LogisticRegressionClassifier(penalty=None, tol=0.0, max_iter=12).fit(X, y)
    assert est.grad_norm_ < 1e-12
    text = str(est.inference_.summary())
    assert re.search(r"Converged:\s+False", text) and re.search(r"Iterations:\s+12", text)


def test_default_tol_follows_the_penalty_and_the_units(cancer):
    X, y = cancer
    assert LogisticRegressionClassifier().fit(X, y).tol_ == 1e-4
    raw = load_breast_cancer().data[:, :6] * 1e6  # columns in the hundreds of millions
    est = LogisticRegressionClassifier(penalty=None).fit(raw, y)
    scale = np.abs(raw).mean(axis=0).max()
    assert est.tol_ == pytest.approx(100 * np.finfo(np.float64).eps * scale) and est.tol_ > 1e-10
    assert est.result_.converged and est.inference_.bse.shape == (7,)


def test_float32_unpenalised_default(spector):
    X, y = spector
    ref = sm.Logit(y.to_numpy(), sm.add_constant(X.to_numpy())).fit(**SM_FIT)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        est = LogisticRegressionClassifier(penalty=None, dtype="float32").fit(X, y)
    np.testing.assert_allclose(est.inference_.params, ref.params, rtol=1e-3)
    np.testing.assert_allclose(est.inference_.bse, ref.bse, rtol=1e-3)


def test_auto_solver_prefers_newton_for_unpenalised_fits():
    assert LogisticRegressionClassifier(penalty=None).resolve_params(1000) == ("newton", 0.0)
    assert LogisticRegressionClassifier(penalty=None).resolve_params(1001) == ("lbfgs", 0.0)
    assert LogisticRegressionClassifier().resolve_params(400) == ("newton", 0.0)
    assert LogisticRegressionClassifier().resolve_params(401) == ("lbfgs", 0.0)


# --- inference options: covariance type, clusters, weights, names ------------------------------


@pytest.mark.parametrize("cov_type,grouping", [("HC0", None), ("cluster", "PSI"), ("cluster", "blocks")])
def test_robust_and_cluster_covariance_match_statsmodels(spector, cov_type, grouping):
    X, y = spector
    groups = {None: None, "PSI": X["PSI"].to_numpy(), "blocks": np.repeat([f"b{i}" for i in range(8)], 4)}[grouping]
    kwds = {} if groups is None else {"cov_kwds": {"groups": np.unique(groups, return_inverse=True)[1]}}
    ref = sm.Logit(y.to_numpy(), sm.add_constant(X.to_numpy())).fit(**SM_FIT, cov_type=cov_type, **kwds)
    est = LogisticRegressionClassifier(penalty=None, cov_type=cov_type).fit(X, y, groups=groups)
    assert est.cov_type == cov_type  # stored as given
    res = est.inference_
    assert res.cov_type == cov_type
    assert res.n_groups == (None if groups is None else len(np.unique(groups)))
    np.testing.assert_allclose(res.bse, ref.bse, rtol=1e-6)
    np.testing.assert_allclose(res.pvalues, ref.pvalues, rtol=1e-6)
    assert f"Covariance Type:{cov_type:>22}" in str(res.summary())


def test_dep_variable_and_feature_names_reach_the_summary(spector):
    X, y = spector
    assert y.name == "GRADE"
    res = LogisticRegressionClassifier(penalty=None).fit(X, y).inference_
    assert res.dep_variable == "GRADE" and res.param_names == ["const", "GPA", "TUCE", "PSI"]
    assert re.search(r"Dep. Variable:\s+GRADE", str(res.summary()))
    plain = LogisticRegressionClassifier(penalty=None).fit(X.to_numpy(), y.to_numpy()).inference_
    assert plain.dep_variable == "y" and plain.param_names == ["const", "x1", "x2", "x3"]
    unnamed = LogisticRegressionClassifier(penalty=None).fit(X, y.rename(None)).inference_
    assert unnamed.dep_variable == "y"


@pytest.mark.parametrize("weights_kind", ["freq_weights", "var_weights"])
def test_weights_kind_is_forwarded(spector, weights_kind):
    X, y = spector
    w = np.random.default_rng(0).integers(1, 4, len(y)).astype(float)
    est = LogisticRegressionClassifier(penalty=None, weights_kind=weights_kind).fit(X, y, sample_weight=w)
    res = est.inference_
    assert res.weights_kind == weights_kind
    assert res.nobs == (w.sum() if weights_kind == "freq_weights" else len(y))


@pytest.mark.parametrize(
    "params,fit_kwargs,match",
    [
        ({"cov_type": "HC9"}, {}, r"^cov_type must be one of \['nonrobust', 'HC0', 'HC1', 'HC2', 'HC3', 'cluster'\], got 'HC9'$"),
        ({"cov_type": "cluster"}, {}, r"^cov_type='cluster' needs groups, the cluster label of each sample"),
        ({"cov_type": "cluster"}, {"groups": np.arange(31) % 4},
         r"^groups must hold one label per row of X, shape \(32,\), got shape \(31,\)$"),
        ({"cov_type": "cluster"}, {"groups": np.where(np.arange(32) == 5, np.nan, np.arange(32) % 4)},
         r"^groups has a missing or non-finite label at sample 5$"),
        ({"cov_type": "cluster"}, {"groups": np.array(["a", None] * 16, dtype=object)},
         r"^groups has a missing or non-finite label at sample 1$"),
        ({"cov_type": "cluster"}, {"groups": np.zeros(32)}, r"^cov_type='cluster' needs at least 2 groups"),
        ({"cov_type": "HC0"}, {"groups": np.arange(32) % 4}, r"^groups are used by cov_type='cluster' only, but cov_type='HC0'"),
        ({"weights_kind": "counts"}, {}, r"^weights_kind must be one of \['freq_weights', 'var_weights'\], got 'counts'$"),
    ],
)
def test_bad_inference_options_fail_at_fit(spector, params, fit_kwargs, match):
    X, y = spector
    est = LogisticRegressionClassifier(penalty=None, **params)
    with pytest.raises(UsageError, match=match):
        est.fit(X, y, **fit_kwargs)
    assert not hasattr(est, "coef_")


def test_leverage_covariance_of_a_multinomial_fit_fails_at_fit(iris):
    X, y = iris
    with pytest.raises(UsageError, match=r"^cov_type='HC3' \(leverage-corrected\) is available for binary models only"):
        LogisticRegressionClassifier(penalty=None, cov_type="HC3").fit(X, y)


# --- solvers, devices -------------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["gd", "nesterov"])
def test_first_order_solvers_use_the_learning_rate(cancer, solver):
    X, y = cancer
    exact = LogisticRegressionClassifier(C=0.1, tol=1e-10).fit(X, y)
    est = LogisticRegressionClassifier(C=0.1, solver=solver, learning_rate=1.0, max_iter=3000, tol=1e-6).fit(X, y)
    assert est.result_.stop_reason == "converged"
    np.testing.assert_allclose(est.coef_, exact.coef_, atol=1e-4)


def test_max_iter_warning(cancer):
    X, y = cancer
    with pytest.warns(ConvergenceWarning, match=r"did not converge in 1 iterations \(max_iter=1\)"):
        LogisticRegressionClassifier(max_iter=1, tol=1e-12).fit(X, y)


def test_auto_solver_choice(cancer, iris):
    X, y = cancer
    assert LogisticRegressionClassifier(tol=1e-8).fit(X, y).result_.solver == "newton"
    assert LogisticRegressionClassifier(penalty="l1", C=0.1).fit(X, y).result_.solver == "newton"
    wide = np.random.default_rng(0).normal(size=(60, 450))
    assert LogisticRegressionClassifier(C=0.01).fit(wide, np.arange(60) % 2).result_.solver == "lbfgs"


def test_float32(iris):
    X, y = iris
    est64 = LogisticRegressionClassifier(tol=1e-10).fit(X, y)
    est32 = LogisticRegressionClassifier(dtype="float32", tol=1e-4).fit(X, y)
    assert est32.model_.linear.weight.dtype == torch.float32
    np.testing.assert_allclose(est32.predict_proba(X), est64.predict_proba(X), atol=1e-4)


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="no CUDA GPU")
def test_cuda_matches_cpu(iris):
    X, y = iris
    cpu = LogisticRegressionClassifier(tol=1e-10).fit(X, y)
    gpu = LogisticRegressionClassifier(tol=1e-10, device="cuda").fit(X, y)
    assert gpu.model_.linear.weight.is_cuda
    np.testing.assert_allclose(gpu.coef_, cpu.coef_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(gpu.predict_proba(X), cpu.predict_proba(X), atol=1e-10)


def test_log_proba_is_finite_for_extreme_logits():
    X = np.array([[-1.0], [1.0], [-2.0], [2.0], [0.5], [-0.5]])
    y = np.array([0, 1, 0, 1, 0, 1])
    est = LogisticRegressionClassifier(C=1.0).fit(X, y)
    Xe = np.array([[-1e4], [1e4]])
    logp = est.predict_log_proba(Xe)
    # log sigmoid(+-z) = -log(1 + exp(-+z)), exact from logaddexp, finite however large |z| is
    z = Xe @ est.coef_[0] + est.intercept_[0]
    np.testing.assert_allclose(logp, np.stack([-np.logaddexp(0, z), -np.logaddexp(0, -z)], axis=1), rtol=1e-12)


@pytest.mark.slow
def test_works_inside_grid_search(iris):
    """GridSearchCV clones, sets parameters and scores it like scikit-learn's own estimator: the
    same grid over scikit-learn's LogisticRegression gives the same fold scores. Only the L1 cells
    use saga (seeded, tight tolerance): its coefficients are within ~1e-8 of the optimum, far from
    changing a prediction."""
    X, y = iris
    search = GridSearchCV(LogisticRegressionClassifier(tol=1e-10), {"C": [0.1, 1.0], "penalty": ["l2", "l1"]}, cv=3).fit(X, y)
    ref = GridSearchCV(SkLogisticRegression(solver="saga", tol=1e-12, max_iter=500_000, random_state=0),
                       {"C": [0.1, 1.0], "l1_ratio": [0.0, 1.0]}, cv=3).fit(X, y)
    for k in range(3):
        np.testing.assert_array_equal(search.cv_results_[f"split{k}_test_score"], ref.cv_results_[f"split{k}_test_score"])
    assert search.best_params_ == {"C": ref.best_params_["C"], "penalty": "l1" if ref.best_params_["l1_ratio"] else "l2"}


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params,exc,match",
    [
        ({"C": 0}, ValueError, r"C must be a finite number > 0"),
        ({"C": -1.0}, ValueError, r"C must be a finite number > 0"),
        ({"l1_ratio": 1.5, "penalty": "elasticnet"}, ValueError, r"l1_ratio must be a finite number >= 0 and <= 1, got 1.5"),
        ({"l1_ratio": -0.1}, ValueError, r"l1_ratio must be a finite number >= 0 and <= 1, got -0.1"),
        ({"penalty": "elasticnet"}, ValueError, r"penalty='elasticnet' needs l1_ratio, a finite number >= 0 and <= 1"),
        ({"penalty": "l1", "solver": "lbfgs"}, ValueError,
         r"solver='lbfgs' cannot minimise an L1 penalty \(penalty='l1'\); .*\['auto', 'newton', 'proximal', 'cd'\]"),
        ({"penalty": "elasticnet", "l1_ratio": 0.5, "solver": "gd"}, ValueError,
         r"solver='gd' cannot minimise an L1 penalty \(penalty='elasticnet'\); .*\['auto', 'newton', 'proximal', 'cd'\]"),
        ({"penalty": "l3"}, ValueError, r"penalty must be one of \['l2', 'l1', 'elasticnet', 'firth', None\], got 'l3'"),
        ({"solver": "saga"}, ValueError,
         r"solver must be one of \['auto', 'newton', 'lbfgs', 'proximal', 'cd', 'gd', 'momentum', 'nesterov'"),
        ({"max_iter": 0}, ValueError, r"max_iter must be an integer >= 1"),
        ({"class_weight": "auto"}, ValueError, r"class_weight must be None, 'balanced' or a dict"),
        ({"dtype": "float16"}, TypeError, r"unsupported dtype 'float16'"),
    ],
)
def test_bad_parameters_name_the_parameter(iris, params, exc, match):
    X, y = iris
    with pytest.raises(exc, match=match):
        LogisticRegressionClassifier(**params).fit(X, y)


def test_single_class_is_refused(iris):
    X, _ = iris
    with pytest.raises(ValueError, match=r"y contains only one class \(3\).*at least 2 classes"):
        LogisticRegressionClassifier().fit(X, np.full(len(X), 3))


def test_first_order_solver_takes_weights(iris):
    """Class weights with a loop solver are the sample weights they multiply (the optimum: test_estimator_parity.py)."""
    X, y = iris
    balanced = LogisticRegressionClassifier(solver="gd", class_weight="balanced", max_iter=50).fit(X, y)
    w = len(y) / (3 * np.bincount(y))[y]
    weighted = LogisticRegressionClassifier(solver="gd", max_iter=50).fit(X, y, sample_weight=w)
    np.testing.assert_allclose(balanced.coef_, weighted.coef_, rtol=1e-10, atol=1e-12)


# --- features too large for the dtype ----------------------------------------------------------


@pytest.mark.parametrize("solver", ["auto", "newton", "lbfgs", "gd"])
@pytest.mark.parametrize("penalty", ["l2", None])
@pytest.mark.parametrize("data_dtype", [np.float32, np.float64])
def test_features_whose_squares_overflow_float32_are_refused(cancer, solver, penalty, data_dtype):
    """X * 1e20 fit in float32 (the Hessian sums squares of 1e21) is a one-sentence ValueError
    naming the column, whatever the solver, not an error from inside LAPACK."""
    X, y = cancer
    X = X.astype(data_dtype) * data_dtype(1e20)
    clf = LogisticRegressionClassifier(dtype="float32", solver=solver, penalty=penalty)
    with pytest.raises(ValueError) as info:
        clf.fit(X, y)
    message = str(info.value)
    first = f"{float(np.abs(X[:, 0]).max()):.3g}"
    assert message == (f"X column 0 (and 29 more columns) has values of magnitude up to {first}, whose squares overflow "
                       "float32; rescale those columns or pass dtype='float64'")
    assert not hasattr(clf, "coef_")


@pytest.mark.parametrize("data_dtype", [np.float32, np.float64])
def test_one_large_column_is_named(cancer, data_dtype):
    X, y = cancer
    X = X.astype(data_dtype)
    X[:, 3] *= data_dtype(1e20)
    big = float(np.abs(X[:, 3]).max())
    with pytest.raises(ValueError, match=rf"^X column 3 has values of magnitude up to {re.escape(f'{big:.3g}')}, whose "
                                         r"squares overflow float32; rescale the column or pass dtype='float64'$"):
        LogisticRegressionClassifier(dtype="float32").fit(X, y)


def test_float64_limit_is_its_own(cancer):
    X, y = cancer
    with pytest.raises(ValueError, match=r"whose squares overflow float64; rescale those columns$"):
        LogisticRegressionClassifier().fit(X * 1e160, y)


@pytest.mark.slow
@pytest.mark.parametrize(
    "data_dtype,dtype,scale,rtol",
    [(data_dtype, "float64", scale, 1e-7) for data_dtype in (np.float32, np.float64) for scale in (1e20, 1e30)]
    + [(np.float64, "float64", 1e150, 1e-7)]
    + [(data_dtype, "float32", scale, 1e-3) for data_dtype in (np.float32, np.float64) for scale in (1e4, 1e15)],
)
def test_large_features_within_the_limit_fit_correctly(cancer, data_dtype, dtype, scale, rtol):
    """Below the squares' limit the fit is not refused and it is right: unpenalised coefficients of
    ``X * s`` are those of ``X`` divided by ``s``."""
    X, y = cancer
    big = X[:, :6].astype(data_dtype) * data_dtype(scale)
    small = big.astype(np.float64) / scale  # the same data (up to float64 rounding) at the usual scale
    ref = LogisticRegressionClassifier(penalty=None, tol=1e-10).fit(small, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # tol is absolute and the gradient scales with X
        # in float32 the information of radius and perimeter (columns 0 and 2) is nearly singular
        warnings.simplefilter("ignore", CollinearityWarning)
        clf = LogisticRegressionClassifier(penalty=None, dtype=dtype, tol=0.0, max_iter=30).fit(big, y)
    np.testing.assert_allclose(clf.coef_ * scale, ref.coef_, rtol=rtol)
    np.testing.assert_allclose(clf.intercept_, ref.intercept_, rtol=rtol)
    assert clf.score(big, y) == ref.score(small, y)
