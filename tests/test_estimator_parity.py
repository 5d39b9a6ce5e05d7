"""The estimators against scikit-learn's: warm starts, the (C, l1_ratio) grid of the CV estimator, and sample and
class weights with every solver (each fit checked against the optimality condition of the weighted objective)."""

import inspect
import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold
from sklearn.utils.class_weight import compute_class_weight

from torch_logreg.errors import UsageError
from torch_logreg.estimators.cv_estimator import LogisticRegressionCVClassifier
from torch_logreg.estimators.estimator import SOLVERS, LogisticRegressionClassifier

#: the loops' learning rates on these data (each converges to max|gradient| < 1e-10 within 5000 epochs)
RATES = {"gd": 1.0, "momentum": 1.0, "nesterov": 1.0, "adagrad": 1.0, "rmsprop": 0.03, "adam": 1.0, "adamw": 1.0}
#: rmsprop at a constant rate circles the softmax optimum (max|gradient| ~1e-3 after 5000 epochs at any rate
#: tried): its weights are checked against the sample weights they stand for, not against the optimum
CIRCLES = {("rmsprop", "softmax")}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n = 150
    X = rng.normal(size=(n, 4))
    signal = X @ [1.0, -1.0, 0.5, 0.0] + rng.normal(size=n)
    return X, (signal > 0).astype(int), np.digitize(signal, [-0.7, 0.7]), rng.uniform(0.5, 2.0, n)


# --- warm_start -------------------------------------------------------------------------------


@pytest.mark.parametrize("penalty", [None, "l2"])
@pytest.mark.parametrize("kind", ["binary", "softmax"])
def test_warm_start_refit_takes_at_most_two_newton_steps(data, penalty, kind):
    X, y2, y3, _ = data
    y = y2 if kind == "binary" else y3
    est = LogisticRegressionClassifier(penalty=penalty, solver="newton", warm_start=True).fit(X, y)
    cold_iter, coef = est.n_iter_[0], est.coef_.copy()
    est.fit(X, y)
    assert cold_iter > 2 and est.n_iter_[0] <= 2
    np.testing.assert_allclose(est.coef_, coef, rtol=1e-8, atol=1e-10)
    cold = LogisticRegressionClassifier(penalty=penalty, solver="newton").fit(X, y)
    cold.fit(X, y)
    assert cold.n_iter_[0] == cold_iter  # without warm_start every fit starts from zeros


def test_warm_start_after_a_change_of_C_and_of_shape(data):
    X, y2, y3, _ = data
    est = LogisticRegressionClassifier(C=0.1, solver="newton", warm_start=True).fit(X, y2)
    cold_iter = LogisticRegressionClassifier(C=1.0, solver="newton").fit(X, y2).n_iter_[0]
    assert est.set_params(C=1.0).fit(X, y2).n_iter_[0] < cold_iter
    est.fit(X, y3)  # three classes: the previous (1, D) coefficients do not fit, so it starts from zeros
    assert est.coef_.shape == (3, 4)
    with pytest.raises(UsageError, match="warm_start must be True or False"):
        LogisticRegressionClassifier(warm_start="yes").fit(X, y2)


# --- sample and class weights with every solver ------------------------------------------------


def _weighted_gradient(est, X, y_index, w, C):
    """The gradient of ``(1/N) sum_n w_n loss_n + ||W||^2 / (2 C N)`` at the estimator's coefficients: zero at the
    weighted optimum. Binary: the logistic loss; K classes: the multinomial one."""
    n = len(y_index)
    Xa = np.column_stack([np.ones(n), X])
    theta = np.column_stack([est.intercept_, est.coef_])  # (K or 1, A)
    Z = Xa @ theta.T
    if theta.shape[0] == 1:
        resid = 1 / (1 + np.exp(-Z[:, 0])) - y_index
        grad = (Xa.T @ (w * resid))[None] / n
    else:
        P = np.exp(Z - Z.max(1, keepdims=True))
        P /= P.sum(1, keepdims=True)
        grad = ((w[:, None] * (P - np.eye(theta.shape[0])[y_index])).T @ Xa) / n
    grad[:, 1:] += theta[:, 1:] / (C * n)
    return np.abs(grad).max()


@pytest.mark.parametrize("solver", [s for s in SOLVERS if s != "auto"])
@pytest.mark.parametrize("kind", ["binary", "softmax"])
def test_weights_with_every_solver_reach_the_weighted_optimum(data, solver, kind):
    X, y2, y3, sw = data
    y = y2 if kind == "binary" else y3
    class_weight = {0: 1.0, 1: 3.0} if kind == "binary" else "balanced"
    loop = dict(learning_rate=RATES[solver], max_iter=300 if (solver, kind) in CIRCLES else 5000) if solver in RATES \
        else dict(max_iter=500)
    est = LogisticRegressionClassifier(solver=solver, class_weight=class_weight, tol=1e-10, **loop)
    plain = LogisticRegressionClassifier(solver=solver, tol=1e-10, **loop)
    classes = np.unique(y)
    w = sw * compute_class_weight(class_weight, classes=classes, y=y, sample_weight=sw)[y]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if (solver, kind) in CIRCLES else "error")  # else converged: no warning
        est.fit(X, y, sample_weight=sw)
        plain.fit(X, y, sample_weight=w)
    if (solver, kind) not in CIRCLES:
        assert _weighted_gradient(est, X, y, w, C=1.0) < 1e-8
    # the class weights are the sample weights they multiply
    np.testing.assert_allclose(est.coef_, plain.coef_, rtol=1e-6, atol=1e-8)


# --- the (C, l1_ratio) grid of the CV estimator -------------------------------------------------


@pytest.mark.slow
def test_cv_l1_ratios_choose_the_pair_scikit_learn_chooses(data):
    """scikit-learn's saga on the same folds. Its stopping rule reads the change of the iterate, so its held-out
    log-losses carry an error of that order (3e-9 here at tol=1e-8); ours stop at a gradient of 1e-10. The grid of C
    starts above the C at which the fits are all-zero: there saga stops with the intercept short of logit(mean y)."""
    X, y, _, _ = data
    folds = list(StratifiedKFold(3, shuffle=True, random_state=0).split(X, y))
    Cs, ratios = [0.1, 0.3, 1.0, 3.0, 10.0], [0.1, 0.5, 0.9]
    options = dict(Cs=Cs, l1_ratios=ratios, solver="saga", cv=folds, scoring="neg_log_loss", tol=1e-8, max_iter=100_000)
    params = inspect.signature(LogisticRegressionCV).parameters
    if "use_legacy_attributes" in params:
        options["use_legacy_attributes"] = False  # scores_ (n_folds, n_l1_ratios, n_Cs)
    if params["penalty"].default != "deprecated":
        options["penalty"] = "elasticnet"
    ref = LogisticRegressionCV(**options).fit(X, y)
    ours = LogisticRegressionCVClassifier(Cs=Cs, l1_ratios=ratios, penalty="elasticnet", cv=folds, tol=1e-10,
                                          max_iter=1000).fit(X, y)
    assert (ours.C_, ours.l1_ratio_) == (np.ravel(ref.C_)[0], np.ravel(ref.l1_ratio_)[0])
    scores = np.asarray(ref.scores_[1] if isinstance(ref.scores_, dict) else ref.scores_)
    if scores.shape != ours.scores_.shape:  # the legacy layout, (n_folds, n_Cs, n_l1_ratios)
        scores = scores.transpose(0, 2, 1)
    np.testing.assert_allclose(ours.scores_, -scores, atol=1e-7)
    np.testing.assert_array_equal(ours.l1_ratios_, ratios)
    np.testing.assert_allclose(ours.Cs_, Cs)
    assert ours.path_ is ours.paths_[ratios.index(ours.l1_ratio_)]


def test_cv_l1_ratios_refusals(data):
    X, y, _, _ = data
    with pytest.raises(UsageError, match="l1_ratios is the grid of penalty='elasticnet'"):
        LogisticRegressionCVClassifier(l1_ratios=[0.5]).fit(X, y)
    with pytest.raises(UsageError, match="distinct numbers in \\[0, 1\\]"):
        LogisticRegressionCVClassifier(penalty="elasticnet", l1_ratios=[0.5, 1.5]).fit(X, y)
