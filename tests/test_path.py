"""The regularization path and the cross-validated classifier, held to exact references: the optimality (KKT)
conditions written out in NumPy, cold fits at the same penalties, a k-fold computation by hand, glmnet's
lambda_max and one-standard-error rule, scikit-learn's LogisticRegressionCV, and the dense path for sparse X."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.linear_model import LogisticRegressionCV
from sklearn.utils.estimator_checks import parametrize_with_checks

import torch_logreg as tl
from torch_logreg.errors import UsageError
from torch_logreg.estimators.cv_estimator import LogisticRegressionCVClassifier
from torch_logreg.path import best_index, one_standard_error_index, stratified_folds

from conftest import CUDA_ONLY


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the problems are small, and on a busy machine a second thread only waits."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def make_data(kind: str, n: int = 240, d: int = 6, seed: int = 0):
    """Standardised Gaussian features and labels drawn from a sparse logistic / softmax model."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    X = (X - X.mean(0)) / X.std(0)
    if kind == "binary":
        w = np.zeros(d)
        w[:3] = [1.5, -1.0, 0.5]
        y = (rng.random(n) < 1 / (1 + np.exp(-(X @ w + 0.3)))).astype(np.int64)
    else:
        W = np.zeros((3, d))
        W[0, 0], W[1, 1], W[2, :2] = 1.5, -1.0, [0.5, 0.7]
        z = X @ W.T
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        y = np.array([rng.choice(3, p=row) for row in p])
    return X, y


def targets(kind: str, y) -> np.ndarray:
    return y[:, None].astype(float) if kind == "binary" else np.eye(3)[y]


def probabilities(kind: str, X, coef, intercept) -> np.ndarray:
    """``(N, K)`` model probabilities in NumPy (sigmoid or a max-shifted softmax)."""
    z = X @ coef.T + intercept
    if kind == "binary":
        return 1 / (1 + np.exp(-z))
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def loss_gradients(kind: str, X, y, coef, intercept):
    """``dF_smooth/dW = (P - T)^T X / N`` ``(K, D)`` and ``dF_smooth/db = sum_n (p_n - t_n) / N``, written out."""
    r = probabilities(kind, X, coef, intercept) - targets(kind, y)
    return r.T @ X / X.shape[0], r.mean(0)


def held_out_log_loss(kind: str, X, y, coef, intercept) -> float:
    p = probabilities(kind, X, coef, intercept)
    t = targets(kind, y)
    if kind == "binary":
        return float(-(t * np.log(p) + (1 - t) * np.log1p(-p)).sum(1).mean())
    return float(-(t * np.log(p)).sum(1).mean())


def numpy_path(result, j):
    return result.coef_path[j].numpy(), result.intercept_path[j].numpy()


def cold_fit(kind, X, y, lam, l1_ratio, tol=1e-10):
    """A fit at one penalty from zero, not warm-started."""
    model = tl.LogisticRegression(X.shape[1]) if kind == "binary" else tl.SoftmaxRegression(X.shape[1], 3)
    model = model.double()
    tl.fit_exact(model, X, y, l1=lam * l1_ratio, l2=lam * (1 - l1_ratio), tol=tol, max_iter=200)
    return model.linear.weight.detach().numpy(), model.linear.bias.detach().numpy()


# --- (a) every fit on the path is optimal ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind,l1_ratio,solver", [("binary", 1.0, "auto"), ("binary", 0.5, "auto"), ("binary", 0.0, "auto"),
                                                  ("softmax", 1.0, "auto"), ("binary", 1.0, "proximal"),
                                                  ("softmax", 0.0, "lbfgs")])
def test_every_fit_on_the_path_satisfies_the_kkt_conditions(kind, l1_ratio, solver):
    X, y = make_data(kind)
    result = tl.regularization_path(X, y, kind=kind, l1_ratio=l1_ratio, n_penalties=12, penalty_min_ratio=1e-3, cv=3,
                                    tol=1e-10, max_iter=5000, solver=solver)
    assert np.all(np.diff(result.penalties) < 0) and result.n_not_converged == 0
    for j, lam in enumerate(result.penalties):
        l1, l2 = lam * l1_ratio, lam * (1 - l1_ratio)
        W, b = numpy_path(result, j)
        gW, gb = loss_gradients(kind, X, y, W, b)
        gW = gW + l2 * W
        off = W != 0
        assert np.abs(gW[off] + l1 * np.sign(W[off])).max(initial=0) <= 1e-7, j
        assert np.abs(gW[~off]).max(initial=0) <= l1 + 1e-7, j
        assert np.abs(gb).max() <= 1e-7, j


# --- (b) lambda_max -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["binary", "softmax"])
def test_the_largest_penalty_is_the_smallest_with_all_weights_zero(kind):
    X, y = make_data(kind)
    t = targets(kind, y)
    expected = np.abs((t.mean(0) - t).T @ X / X.shape[0]).max()  # the gradient at the intercept-only fit
    result = tl.regularization_path(X, y, kind=kind, n_penalties=5, cv=3, tol=1e-10)
    assert result.penalties[0] == pytest.approx(expected, rel=1e-8)
    assert np.all(result.coef_path[0].numpy() == 0) and result.n_nonzero[0] == 0
    # the intercept there is the intercept-only fit: the log-odds / log-shares of the labels
    b = result.intercept_path[0].numpy()
    if kind == "binary":
        np.testing.assert_allclose(b, np.log(t.mean(0) / (1 - t.mean(0))), atol=1e-9)
    else:
        np.testing.assert_allclose(b, np.log(t.mean(0)) - np.log(t.mean(0)).mean(), atol=1e-9)
    below = tl.regularization_path(X, y, kind=kind, penalties=[expected * (1 + 1e-6), expected * (1 - 1e-3)], cv=3,
                                   tol=1e-10)
    assert np.all(below.coef_path[0].numpy() == 0)
    assert below.n_nonzero[1] >= 1


def test_pure_l2_starts_at_the_glmnet_maximum_and_never_reaches_zero():
    X, y = make_data("binary")
    t = targets("binary", y)
    g = np.abs((t.mean(0) - t).T @ X / X.shape[0]).max()
    result = tl.regularization_path(X, y, l1_ratio=0.0, n_penalties=4, cv=3)
    assert result.penalties[0] == pytest.approx(g / 1e-3, rel=1e-8)
    assert result.n_nonzero[0] == X.shape[1]


# --- (c) warm starts reach the cold fits ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind,l1_ratio", [("binary", 1.0), ("softmax", 0.5)])
def test_warm_started_path_equals_cold_fits(kind, l1_ratio):
    X, y = make_data(kind)
    result = tl.regularization_path(X, y, kind=kind, l1_ratio=l1_ratio, n_penalties=10, penalty_min_ratio=1e-3, cv=3,
                                    tol=1e-10, max_iter=200)
    for j in (1, 5, 9):
        W, b = cold_fit(kind, X, y, result.penalties[j], l1_ratio)
        np.testing.assert_allclose(result.coef_path[j].numpy(), W, atol=1e-6)
        np.testing.assert_allclose(result.intercept_path[j].numpy(), b, atol=1e-6)
        assert np.array_equal(result.coef_path[j].numpy() != 0, W != 0)  # the same support


# --- (d) the scores are a k-fold computation --------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("scaling", ["mean", "sum"])
def test_cv_scores_equal_a_hand_made_k_fold(scaling):
    X, y = make_data("binary", seed=1)
    result = tl.regularization_path(X, y, l1_ratio=0.5, n_penalties=8, penalty_min_ratio=1e-3, cv=4, seed=3,
                                    penalty_scaling=scaling, tol=1e-10, max_iter=200)
    assert result.scores.shape == (4, 8)
    held_out = np.concatenate([test for _, test in result.folds])
    assert np.array_equal(np.sort(held_out), np.arange(len(y)))
    for train, test in result.folds:
        assert np.intersect1d(train, test).size == 0 and len(train) + len(test) == len(y)
        assert abs(y[test].mean() - y.mean()) < 0.02  # stratified
    for f, (train, test) in enumerate(result.folds):
        for j in (0, 3, 7):
            lam = result.penalties[j] * (len(y) / len(train) if scaling == "sum" else 1.0)
            W, b = cold_fit("binary", X[train], y[train], lam, 0.5)
            assert result.scores[f, j] == pytest.approx(held_out_log_loss("binary", X[test], y[test], W, b), abs=1e-7)
    np.testing.assert_allclose(result.mean_scores, result.scores.mean(0))
    np.testing.assert_allclose(result.std_errors, result.scores.std(0, ddof=1) / 2)
    rows = result.table()
    assert rows[result.best_index]["choice"].startswith("best")
    assert rows[2]["split1_log_loss"] == result.scores[1, 2] and rows[2]["penalty"] == result.penalties[2]
    text = result.format()
    assert "mean_log_loss" in text and "best" in text and len(text.splitlines()) == 8 + 2


def test_accuracy_scoring_and_the_given_folds():
    X, y = make_data("softmax")
    folds = stratified_folds(y, 3, seed=7)
    result = tl.regularization_path(X, y, kind="softmax", n_penalties=4, cv=folds, scoring="accuracy", tol=1e-8)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(result.folds, folds))
    f, j = 1, 3
    train, test = folds[f]
    W, b = cold_fit("softmax", X[train], y[train], result.penalties[j], 1.0)
    expected = np.mean(probabilities("softmax", X[test], W, b).argmax(1) == y[test])
    assert result.scores[f, j] == pytest.approx(expected)
    assert result.best_index == int(np.argmax(result.mean_scores))


# --- (e) the one-standard-error rule ----------------------------------------------------------------------------


def test_one_standard_error_rule_on_a_constructed_table():
    # penalties decreasing; the best mean is at 3 with SE 0.03: 2 (0.32 <= 0.33) qualifies, 1 (0.5) does not
    mean = np.array([0.9, 0.5, 0.32, 0.30, 0.31, 0.4])
    se = np.array([0.01, 0.01, 0.01, 0.03, 0.01, 0.01])
    assert best_index(mean) == 3
    assert one_standard_error_index(mean, se) == 2
    assert one_standard_error_index(mean, np.where(np.arange(6) == 3, 0.0, se)) == 3  # no slack: the best itself
    assert one_standard_error_index(mean, np.where(np.arange(6) == 3, 0.7, se)) == 0  # all within: the largest
    # a score where greater is better (accuracy): best 0.95 at 2 with SE 0.02, so 0.93 at 1 qualifies
    acc = np.array([0.5, 0.93, 0.95, 0.94])
    assert best_index(acc, greater_is_better=True) == 2
    assert one_standard_error_index(acc, np.array([0.0, 0.0, 0.02, 0.0]), greater_is_better=True) == 1
    assert best_index(np.array([0.2, 0.1, 0.1])) == 1  # ties: the larger penalty


@pytest.mark.slow
def test_the_1se_choice_is_refit():
    X, y = make_data("binary")
    result = tl.regularization_path(X, y, n_penalties=10, penalty_min_ratio=1e-3, cv=3, choice="1se", tol=1e-10)
    j = result.one_se_index
    assert j <= result.best_index and result.index == j and result.penalty == result.penalties[j]
    assert result.mean_scores[j] <= result.mean_scores[result.best_index] + result.std_errors[result.best_index]
    assert torch.equal(result.model.linear.weight.detach(), result.coef_path[j])


# --- (g) sparse X -----------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_sparse_x_gives_the_dense_path():
    rng = np.random.default_rng(4)
    Xs = sp.random(200, 12, density=0.3, format="csr", random_state=5, data_rvs=rng.standard_normal)
    X = Xs.toarray()
    y = (X @ np.r_[2.0, -2.0, 1.0, np.zeros(9)] + 0.5 * rng.standard_normal(200) > 0).astype(np.int64)
    kwargs = dict(l1_ratio=0.5, n_penalties=6, penalty_min_ratio=1e-2, cv=3, tol=1e-10)
    dense = tl.regularization_path(X, y, **kwargs)
    for sparse_x in (Xs, torch.sparse_csr_tensor(torch.from_numpy(Xs.indptr).long(), torch.from_numpy(Xs.indices).long(),
                                                 torch.from_numpy(Xs.data), size=Xs.shape, check_invariants=True)):
        sparse = tl.regularization_path(sparse_x, y, **kwargs)
        np.testing.assert_allclose(sparse.penalties, dense.penalties, rtol=1e-12)
        np.testing.assert_allclose(sparse.coef_path.numpy(), dense.coef_path.numpy(), atol=1e-9)
        np.testing.assert_allclose(sparse.scores, dense.scores, atol=1e-9)
        assert sparse.best_index == dense.best_index


@pytest.mark.parametrize("device", CUDA_ONLY)
def test_the_path_on_a_gpu_equals_the_cpu_path(device):
    X, y = make_data("softmax")
    kwargs = dict(kind="softmax", l1_ratio=0.5, n_penalties=6, penalty_min_ratio=1e-2, cv=3, tol=1e-10)
    cpu = tl.regularization_path(X, y, **kwargs)
    gpu = tl.regularization_path(X, y, device=device, **kwargs)
    assert gpu.coef_path.device.type == "cuda" and gpu.model.linear.weight.device.type == "cuda"
    np.testing.assert_allclose(gpu.coef_path.cpu().numpy(), cpu.coef_path.numpy(), atol=1e-8)
    np.testing.assert_allclose(gpu.scores, cpu.scores, atol=1e-8)


# --- bad input ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,match", [
    ({"kind": "poisson"}, "kind must be one of"),
    ({"scoring": "mse"}, "scoring must be one of"),
    ({"l1_ratio": 1.5}, "l1_ratio must be"),
    ({"penalties": [0.1, -1.0]}, "penalties must be finite numbers > 0"),
    ({"cv": 1}, "cv must be"),
    ({"cv": 200}, "fewer than cv=200"),
    ({"l1_ratio": 0.5, "solver": "lbfgs"}, "cannot minimise an L1 penalty"),
    ({"choice": "2se"}, "choice must be one of"),
])
def test_bad_arguments_raise_one_clear_usage_error(kwargs, match):
    X, y = make_data("binary", n=60)
    with pytest.raises(UsageError, match=match):
        tl.regularization_path(X, y, **{"n_penalties": 3, **kwargs})


# --- (f) the scikit-learn estimator ---------------------------------------------------------------------------------


@parametrize_with_checks([LogisticRegressionCVClassifier(Cs=3, cv=3)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.slow
def test_chosen_c_and_coefficients_match_sklearn_logistic_regression_cv(cancer):
    X, y = cancer
    folds = stratified_folds(y, 5, seed=0)
    Cs = np.logspace(-3, 2, 8)
    sk = LogisticRegressionCV(Cs=Cs, cv=folds, l1_ratios=(0,), scoring="neg_log_loss", solver="newton-cholesky",
                              tol=1e-10, max_iter=1000, use_legacy_attributes=False).fit(X, y)
    est = LogisticRegressionCVClassifier(Cs=Cs, cv=folds, tol=1e-10).fit(X, y)
    assert est.C_ == pytest.approx(sk.C_, rel=1e-12)
    np.testing.assert_allclose(est.Cs_, sk.Cs_, rtol=1e-12)
    np.testing.assert_allclose(est.coef_, sk.coef_, rtol=1e-5, atol=1e-5 * np.abs(sk.coef_).max())
    np.testing.assert_allclose(est.intercept_, sk.intercept_, rtol=1e-5, atol=1e-8)
    # the held-out log-losses agree where scikit-learn's clipping of probabilities at machine epsilon does not bite
    # (the largest C leaves a held-out sample with a probability below it)
    np.testing.assert_allclose(est.scores_[:, :-1], -sk.scores_[:, 0, :-1], rtol=1e-6)
    np.testing.assert_allclose(est.predict_proba(X), sk.predict_proba(X), atol=1e-7)


def test_estimator_choices_and_refit():
    X, y = make_data("softmax")
    labels = np.array(["a", "b", "c"])[y]
    best = LogisticRegressionCVClassifier(Cs=6, penalty="l1", tol=1e-8).fit(X, labels)
    one_se = LogisticRegressionCVClassifier(Cs=6, penalty="l1", tol=1e-8, choice="1se").fit(X, labels)
    assert one_se.C_ <= best.C_ and best.coef_.shape == (3, X.shape[1]) and list(best.classes_) == ["a", "b", "c"]
    assert best.C_ == pytest.approx(1 / (best.path_.penalty * len(y)))
    np.testing.assert_allclose(best.coef_, best.path_.coef_path[best.path_.index].numpy())
    averaged = LogisticRegressionCVClassifier(Cs=6, penalty="l1", tol=1e-8, refit=False).fit(X, labels)
    fold_mean = averaged.path_.fold_coef_path[:, averaged.path_.index].mean(0).numpy()
    np.testing.assert_allclose(averaged.coef_, fold_mean)
    assert set(averaged.predict(X)) <= {"a", "b", "c"}
    with pytest.raises(UsageError, match="penalty=None leaves no C"):
        LogisticRegressionCVClassifier(penalty=None).fit(X, labels)
    with pytest.raises(UsageError, match="Cs must hold distinct values"):
        LogisticRegressionCVClassifier(Cs=[1.0, 1.0]).fit(X, labels)
    with pytest.raises(UsageError, match="fewer than cv=5"):
        LogisticRegressionCVClassifier().fit(X[:12], labels[:12])
