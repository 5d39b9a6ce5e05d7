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


@pytest.mark.parametrize("classes", [2, 3])
def test_l2_covariance_is_the_objectives_curvature(classes):
    """With ``l2``, ``mean_se`` is ``J H^+ J^T``: ``H`` the autograd Hessian of N times the run's objective in all
    K (or, binary, one) rows of ``[b, W]``, ``H^+`` its pseudo-inverse (a common shift of the K classes' intercepts
    changes nothing), ``J`` the autograd Jacobian of the probabilities."""
    import torch

    import torch_logreg as tl
    from torch_logreg.inference import infer
    from torch_logreg.solvers import fit_exact

    rng = np.random.default_rng(1)
    X = rng.normal(size=(120, 3))
    y = (X[:, 0] - X[:, 1] + rng.logistic(size=120) > 0).astype(int) + (classes == 3) * (X[:, 2] > 0.5)
    model = (tl.LogisticRegression(3) if classes == 2 else tl.SoftmaxRegression(3, 3)).double()
    l2 = 0.2
    fit_exact(model, X, y, l2=l2, tol=1e-12)
    res = infer(model, X, y, l2=l2)
    Xt, new = torch.tensor(X), torch.tensor(X[:6])
    T = model.targets(torch.tensor(y), len(y))
    theta0 = torch.cat([model.linear.bias.detach()[:, None], model.linear.weight.detach()], 1).reshape(-1)

    def objective(theta):
        th = theta.view(-1, 4)
        z = Xt @ th[:, 1:].T + th[:, 0]
        nll = (-(T * torch.log_softmax(z, 1)).sum() if classes == 3
               else torch.nn.functional.binary_cross_entropy_with_logits(z, T, reduction="sum"))
        return nll + len(y) * 0.5 * l2 * (th[:, 1:] ** 2).sum()

    def probs(theta):
        th = theta.view(-1, 4)
        z = new @ th[:, 1:].T + th[:, 0]
        return torch.softmax(z, 1) if classes == 3 else torch.sigmoid(z)[:, 0]

    H = torch.autograd.functional.hessian(objective, theta0)
    J = torch.autograd.functional.jacobian(probs, theta0)
    expected = torch.einsum("...i,ij,...j->...", J, torch.linalg.pinv(H, hermitian=True, rtol=1e-10), J).sqrt().numpy()
    se = res.get_prediction(X[:6]).se_mean
    np.testing.assert_allclose(se, expected, rtol=1e-6)


def test_softmax_prediction_refuses_an_offset(anes96_fit):
    from torch_logreg.errors import UsageError

    X, res = anes96_fit
    with pytest.raises(UsageError, match="binary models"):
        res.get_prediction(X[:2], offset=np.zeros(2))


# --- predict --interval ------------------------------------------------------------------------


def _write_csv(path, n: int = 150, classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    W = np.array([[0.0, 0.0], [1.0, -0.5], [-0.7, 1.2]])[:classes]
    eta = X @ W.T + rng.gumbel(size=(n, classes))
    y = eta.argmax(axis=1)
    path.write_text("a,b,y\n" + "".join(f"{u:.6f},{v:.6f},{t}\n" for (u, v), t in zip(X, y)))
    return path


def _train(capsys, tmp_path, data, name, *more):
    from helpers import run_cli

    args = ["train", "--quiet", "--run-dir", tmp_path / name]
    for s in [f"data.path={data}", "data.target=y", "train.device=cpu", "train.dtype=float64", *more]:
        args += ["--set", s]
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    return tmp_path / name


@pytest.mark.e2e
@pytest.mark.parametrize("l2", [0.0, 0.1])
@pytest.mark.parametrize("kind, classes", [("softmax", 3), ("logistic", 2)])
def test_cli_interval_equals_get_prediction_on_the_training_split(capsys, tmp_path, kind, classes, l2):
    import pandas as pd
    import torch

    from torch_logreg.app import ingest
    from torch_logreg.app.fitting import prepare
    from torch_logreg.app.runs import load_run, model_from_checkpoint
    from torch_logreg.inference import infer

    from helpers import run_cli

    data = _write_csv(tmp_path / "d.csv", classes=classes)
    run = _train(capsys, tmp_path, data, "run", f"model.kind={kind}", "train.solver=newton", f"train.l2={l2}",
                 "train.tol=1e-12", "train.epochs=100")
    new = tmp_path / "new.csv"
    new.write_text("a,b\n0.3,-1.2\n2.5,0.4\n-1.0,1.0\n")
    code, _, err = run_cli(capsys, "predict", "--run", run, "--input", new, "--output", tmp_path / "out.csv",
                           "--interval", "0.9")
    assert code == 0, err
    out = pd.read_csv(tmp_path / "out.csv", dtype={"label": str})

    # the library on the run's training split (val and test rows held out) and the same standardized rows
    _, payload, cfg = load_run(run)
    model = model_from_checkpoint(payload, torch.device("cpu"), torch.float64)
    standardizer = ingest.Standardizer.from_state_dict(payload["standardizer"])
    prep = prepare(cfg, torch.device("cpu"), torch.float64, standardizer)
    X_train, T = prep.rows.tensors()
    assert len(X_train) < 150
    res = infer(model, X_train, T, l2=l2)
    Xn = standardizer.transform(torch.tensor([[0.3, -1.2], [2.5, 0.4], [-1.0, 1.0]], dtype=torch.float64)).numpy()
    names = [str(c) for c in payload["classes"]]
    if kind == "softmax":
        ci = res.get_prediction(Xn).conf_int(0.1)
        expected = {c: ci[:, k] for k, c in enumerate(names)}
    else:
        ci = res.get_prediction(Xn).conf_int(0.1)
        expected = {names[1]: ci, names[0]: 1 - ci[:, ::-1]}
    assert list(out.columns) == [col for c in names for col in (f"p_{c}", f"p_{c}_lower", f"p_{c}_upper")] + ["label"]
    for c in names:
        np.testing.assert_allclose(out[f"p_{c}_lower"], expected[c][:, 0], rtol=0, atol=1e-8)
        np.testing.assert_allclose(out[f"p_{c}_upper"], expected[c][:, 1], rtol=0, atol=1e-8)
        assert (out[f"p_{c}_lower"] < out[f"p_{c}"]).all() and (out[f"p_{c}"] < out[f"p_{c}_upper"]).all()


@pytest.mark.e2e
@pytest.mark.slow
def test_cli_interval_refusals(capsys, tmp_path):
    from sklearn.datasets import dump_svmlight_file

    from helpers import expect_error

    data = _write_csv(tmp_path / "d.csv", classes=2)
    new = tmp_path / "new.csv"
    new.write_text("a,b\n0.3,-1.2\n")
    newton = ["train.solver=newton", "train.epochs=20", "train.l2=0"]
    runs = {
        "plain": (newton, None),
        "mlp": (["model.kind=mlp", "model.hidden=[3]", "train.epochs=2"], "model.kind = 'mlp'"),
        "linear": (["model.kind=linear", *newton], "model.kind = 'linear'"),
        "l1": (["train.solver=cd", "train.l1=0.01", "train.epochs=20"], "the L1 penalty has no curvature"),
        "short": (["train.solver=gd", "train.epochs=3"], "--interval: the model is not at the minimum"),
        "factor": ([*newton, "train.l2=0.1", "train.penalty_factor={a = 2.0}"], "without train.penalty_factor"),
        "bounds": ([*newton, "train.lower_bounds={a = 0.0}"], "train.lower_bounds"),
    }
    for name, (more, message) in runs.items():
        run = _train(capsys, tmp_path, data, name, *more)
        if message is not None:
            expect_error(capsys, message, "predict", "--run", run, "--input", new, "--output", tmp_path / f"{name}.csv",
                         "--interval", "0.95")
    for level in ("0", "1", "1.5", "-0.2"):
        expect_error(capsys, "between 0 and 1 (exclusive)", "predict", "--run", tmp_path / "plain", "--input", new,
                     "--output", tmp_path / "x.csv", "--interval", level)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    dump_svmlight_file(X, (X[:, 0] + rng.logistic(size=60) > 0).astype(int), str(tmp_path / "d.svm"))
    from helpers import run_cli

    code, _, err = run_cli(capsys, "train", "--quiet", "--run-dir", tmp_path / "sparse", "--set",
                           f"data.path={tmp_path / 'd.svm'}", "--set", "train.solver=newton", "--set", "train.device=cpu")
    assert code == 0, err
    expect_error(capsys, "this run's are sparse", "predict", "--run", tmp_path / "sparse", "--input", tmp_path / "d.svm",
                 "--output", tmp_path / "s.csv", "--interval", "0.95")
