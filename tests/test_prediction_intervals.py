"""Prediction intervals: the softmax delta method of ``get_prediction`` and ``predict --interval``."""

import numpy as np
import pytest
import statsmodels.api as sm

from torch_logreg import LogisticRegressionClassifier


@pytest.fixture(scope="module")
def anes96_fit():
    """anes96 (7 classes, 944 voters) fit without a penalty, as MNLogit fits it."""
    data = sm.datasets.anes96.load_pandas()
    X, y = data.exog.to_numpy(dtype=float).copy(), data.endog.to_numpy().astype(int)
    est = LogisticRegressionClassifier(penalty=None, tol=1e-10).fit(X, y)
    return X, est.inference_


def _softmax_probs(params, Xa):
    """``p`` ``(M, K)`` with class 0's logit fixed at 0, ``params`` ``(K-1, A)``: written apart from the library."""
    eta = np.column_stack([np.zeros(len(Xa)), Xa @ params.T])
    e = np.exp(eta - eta.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_softmax_mean_se_is_the_finite_difference_delta_method(anes96_fit):
    X, res = anes96_fit
    new = X[::90]  # 11 rows
    Xa = np.column_stack([np.ones(len(new)), new])
    theta = res.params.reshape(-1)
    h = 1e-6
    J = np.empty((len(new), 7, theta.size))  # d p_k / d theta, central differences
    for i in range(theta.size):
        step = np.zeros_like(theta)
        step[i] = h
        up = _softmax_probs((theta + step).reshape(res.params.shape), Xa)
        down = _softmax_probs((theta - step).reshape(res.params.shape), Xa)
        J[:, :, i] = (up - down) / (2 * h)
    expected_se = np.sqrt(np.einsum("nki,ij,nkj->nk", J, res.cov_params(), J))

    pred = res.get_prediction(new)
    frame = pred.summary_frame(alpha=0.1)
    classes = res.class_names
    assert list(frame) == [f"{col}_{c}" for c in classes for col in ("mean", "mean_se", "mean_ci_lower", "mean_ci_upper")]
    mean = np.column_stack([frame[f"mean_{c}"] for c in classes])
    se = np.column_stack([frame[f"mean_se_{c}"] for c in classes])
    np.testing.assert_allclose(mean, _softmax_probs(res.params, Xa), rtol=1e-12)
    np.testing.assert_allclose(se, expected_se, rtol=1e-6, atol=1e-9)
    # the interval on logit(p_k), mapped back: inside (0, 1) and around the mean
    lower = np.column_stack([frame[f"mean_ci_lower_{c}"] for c in classes])
    upper = np.column_stack([frame[f"mean_ci_upper_{c}"] for c in classes])
    assert (0 < lower).all() and (lower < mean).all() and (mean < upper).all() and (upper < 1).all()
    q = 1.6448536269514722  # z_{0.95}
    se_logit = expected_se / (mean * (1 - mean))
    logit = np.log(mean / (1 - mean))
    np.testing.assert_allclose(lower, 1 / (1 + np.exp(-(logit - q * se_logit))), rtol=1e-6)
    np.testing.assert_allclose(upper, 1 / (1 + np.exp(-(logit + q * se_logit))), rtol=1e-6)
    np.testing.assert_allclose(pred.conf_int(0.1)[:, :, 0], lower, rtol=0, atol=0)


def test_two_class_softmax_gives_the_binary_columns():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2))
    y = (X @ [1.0, -0.5] + rng.logistic(size=200) > 0).astype(int)
    binary = LogisticRegressionClassifier(penalty=None, tol=1e-12).fit(X, y).inference_
    frame = binary.get_prediction(X[:5]).summary_frame()
    assert list(frame) == ["mean", "mean_se", "mean_ci_lower", "mean_ci_upper"]  # the binary layout is unchanged
    from torch_logreg.inference.prediction import predict_multinomial

    # the same fit as a softmax with the reference class 0: class 1's columns are the binary ones
    soft = predict_multinomial(binary.params[None, :], binary.cov, X[:5], True, ["0", "1"]).summary_frame()
    for col in frame:
        np.testing.assert_allclose(soft[f"{col}_1"], frame[col], rtol=1e-12)
    np.testing.assert_allclose(soft["mean_0"] + soft["mean_1"], 1.0, rtol=1e-14)
    np.testing.assert_allclose(soft["mean_se_0"], soft["mean_se_1"], rtol=1e-12)


def test_softmax_prediction_refuses_an_offset(anes96_fit):
    from torch_logreg.errors import UsageError

    X, res = anes96_fit
    with pytest.raises(UsageError, match="binary models"):
        res.get_prediction(X[:2], offset=np.zeros(2))
