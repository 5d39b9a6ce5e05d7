"""LogisticRegressionClassifier: scikit-learn's own estimator checks, parity with scikit-learn's
LogisticRegression, inference_ against statsmodels, and the parameter errors."""

import re
import warnings

import numpy as np
import pytest
import statsmodels.api as sm
import torch
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression as SkLogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import torch_logreg as tl
from torch_logreg.estimators.estimator import InferenceUnavailable, LogisticRegressionClassifier
from torch_logreg.inference import SeparationWarning
from torch_logreg.solvers import ConvergenceWarning

from helpers import l1_optimality, model_at

CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


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
        ({"penalty": "l1", "solver": "lbfgs"}, ValueError, r"penalty='l1' .*solver in \['auto', 'newton'\], got solver='lbfgs'"),
        ({"penalty": "elasticnet", "l1_ratio": 0.5, "solver": "gd"}, ValueError,
         r"solver in \['auto', 'newton'\], got solver='gd'"),
        ({"penalty": "l3"}, ValueError, r"penalty must be one of \['l2', 'l1', 'elasticnet', None\], got 'l3'"),
        ({"solver": "saga"}, ValueError,
         r"solver must be one of \['auto', 'newton', 'lbfgs', 'gd', 'momentum', 'nesterov', 'adagrad'"),
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


def test_first_order_solver_refuses_weights(iris):
    X, y = iris
    with pytest.raises(ValueError, match="does not support sample_weight or class_weight"):
        LogisticRegressionClassifier(solver="gd", class_weight="balanced").fit(X, y)


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
        clf = LogisticRegressionClassifier(penalty=None, dtype=dtype, tol=0.0, max_iter=30).fit(big, y)
    np.testing.assert_allclose(clf.coef_ * scale, ref.coef_, rtol=rtol)
    np.testing.assert_allclose(clf.intercept_, ref.intercept_, rtol=rtol)
    assert clf.score(big, y) == ref.score(small, y)
