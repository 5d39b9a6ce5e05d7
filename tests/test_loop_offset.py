"""Offsets in the hand-written loop (``tl.fit(..., offset=)``, the reference step with the offset added
to the logits) and on the command line (``data.offset``, read at train, evaluate and predict)."""

import csv
import json

import numpy as np
import pytest
import torch

import torch_logreg as tl
from torch_logreg.app.config import load_config
from torch_logreg.app.fitting import prepare
from torch_logreg.app.runs import model_from_checkpoint
from torch_logreg.solvers import fit_exact
from torch_logreg.steps.offset import OffsetStep

from helpers import expect_error, run_cli, sample_then_predict


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    n, d = 300, 3
    X = rng.normal(size=(n, d))
    offset = np.log(rng.uniform(0.5, 3.0, size=n))  # a log exposure
    eta = -0.5 + X @ np.array([1.0, -0.7, 0.3]) + offset
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    return X, y, offset


def _gradient(model, X, y, offset, l2):
    """The gradient of mean loss(x b + w x + o) + (l2/2)||w||^2 with respect to [b, w], in float64."""
    w = model.linear.weight.detach().double().numpy()[0]
    b = float(model.linear.bias.detach().double()[0])
    p = 1 / (1 + np.exp(-(b + X @ w + offset)))
    return np.r_[(p - y).mean(), X.T @ (p - y) / len(y) + l2 * w]


def test_step_gradient_with_offset_equals_autograd(data):
    X, y, offset = data
    model = tl.LogisticRegression(3).double()
    with torch.no_grad():
        model.linear.weight.copy_(torch.tensor([[0.3, -0.2, 0.5]]))
        model.linear.bias.fill_(0.1)
    Xt, yt, ot = (torch.from_numpy(a) for a in (X, y, offset))
    loss, grads = OffsetStep(model, ot[:, None]).step(Xt, yt[:, None], 0.01)
    W = model.linear.weight.detach().clone().requires_grad_(True)
    b = model.linear.bias.detach().clone().requires_grad_(True)
    ref = torch.nn.functional.binary_cross_entropy_with_logits((Xt @ W.T + b)[:, 0] + ot, yt) + 0.005 * (W * W).sum()
    ref.backward()
    assert torch.allclose(loss, ref.detach(), rtol=0, atol=1e-14)
    assert torch.allclose(grads["linear.weight"], W.grad, rtol=0, atol=1e-14)
    assert torch.allclose(grads["linear.bias"], b.grad, rtol=0, atol=1e-14)


def test_loop_with_offset_reaches_the_fit_exact_optimum(data):
    X, y, offset = data
    l2 = 0.01
    model = tl.LogisticRegression(3)
    history = tl.fit(model, X, y, offset=offset, solver="nesterov", lr=0.5, epochs=3000, l2=l2, tol=1e-10,
                     dtype="float64", device="cpu")
    assert history.stop_reason == "converged"
    assert np.abs(_gradient(model, X, y, offset, l2)).max() <= 1e-9  # the optimality condition, not an iterate
    ref = tl.LogisticRegression(3).double()
    fit_exact(ref, X, y, l2=l2, offset=offset, tol=1e-12)
    assert torch.allclose(model.linear.weight, ref.linear.weight, rtol=0, atol=1e-7)
    without = tl.LogisticRegression(3)
    tl.fit(without, X, y, solver="nesterov", lr=0.5, epochs=300, l2=l2, tol=1e-10, dtype="float64", device="cpu")
    assert np.abs(_gradient(without, X, y, offset, l2)).max() > 1e-3  # the offset changed the optimum


def test_mini_batches_add_each_batch_rows_offsets(data):
    """An offset ``c x_1`` is the same model as no offset with ``w_1`` larger by ``c``: started ``c``
    apart, the two runs step through the same batches (one seed) with the same gradients and stay
    ``c`` apart, which fails if a batch took other rows' offsets."""
    X, y, _ = data
    weights = np.random.default_rng(0).uniform(0.5, 2.0, size=len(y))
    runs = []
    for offset in (0.7 * X[:, 0], None):
        model = tl.LogisticRegression(3).double()
        if offset is None:
            with torch.no_grad():
                model.linear.weight[0, 0] = 0.7
        tl.fit(model, X, y, offset=offset, sample_weight=weights, solver="momentum", lr=0.05, epochs=5,
               batch_size=32, dtype="float64", device="cpu", seed=3)
        runs.append(model.linear.weight.detach().numpy()[0])
    np.testing.assert_allclose(runs[1] - runs[0], [0.7, 0.0, 0.0], rtol=0, atol=1e-10)


def test_validation_rows_need_their_offsets(data):
    X, y, offset = data
    with pytest.raises(tl.UsageError, match="offset and offset_val must be given together"):
        tl.fit(tl.LogisticRegression(3), X, y, offset=offset, X_val=X[:10], y_val=y[:10], epochs=2)
    with pytest.raises(tl.UsageError, match=r"offset must have one entry per row, shape \(300,\)"):
        tl.fit(tl.LogisticRegression(3), X, y, offset=offset[:5], epochs=2)
    history = tl.fit(tl.LogisticRegression(3), X, y, offset=offset, X_val=X[:50], y_val=y[:50],
                     offset_val=offset[:50], epochs=3, patience=2, device="cpu")
    assert len(history.val_loss) == 3


# --- the command line -------------------------------------------------------------------------


def write_csv(path, data, n=None):
    X, y, offset = data
    n = n or len(y)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["x1", "x2", "x3", "log_exposure", "y"])
        w.writerows([[f"{a:.6f}", f"{b:.6f}", f"{c:.6f}", f"{o:.6f}", int(t)]
                     for (a, b, c), o, t in zip(X[:n], offset[:n], y[:n])])
    return path


def sets(path, *more):
    out = []
    for s in (f"data.path={path}", "data.target=y", "data.offset=log_exposure", "data.val_fraction=0.2",
              "data.test_fraction=0.2", "train.device=cpu", "train.dtype=float64", *more):
        out += ["--set", s]
    return out


@pytest.mark.e2e
@pytest.mark.parametrize("solver", ["newton", "nesterov"])
def test_cli_train_with_offset_equals_the_library(capsys, tmp_path, data, solver):
    path = write_csv(tmp_path / "d.csv", data)
    more = ["train.l2=0.01", "train.tol=1e-10", "train.epochs=3000", "train.patience=0", "train.lr=0.5",
            f"train.solver={solver}"]
    code, _, err = run_cli(capsys, "train", "--quiet", "--run-dir", tmp_path / "run", *sets(path, *more))
    assert code == 0, err
    model = model_from_checkpoint(torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True))

    cfg = load_config(None, sets(path, *more)[1::2])
    prep = prepare(cfg, torch.device("cpu"), torch.float64)
    X, T = prep.rows.tensors()
    ref = tl.LogisticRegression(3).double()
    fit_exact(ref, X, T, l2=0.01, offset=prep.rows.offset[:, 0], tol=1e-12)
    tol = 1e-8 if solver == "newton" else 1e-6
    assert torch.allclose(model.linear.weight, ref.linear.weight, rtol=0, atol=tol)
    assert torch.allclose(model.linear.bias, ref.linear.bias, rtol=0, atol=tol)

    # evaluate (the run's splits, and a file) and predict read the offset column
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    with torch.no_grad():
        z = ref.logits(prep.X["test"]) + prep.offset["test"]
    expected_loss = float(torch.nn.functional.binary_cross_entropy_with_logits(z, prep.T["test"]))
    assert abs(metrics["test"]["loss"] - expected_loss) <= 1e-6
    new = write_csv(tmp_path / "new.csv", data, n=40)
    code, out, err = run_cli(capsys, "predict", "--run", tmp_path / "run", "--input", new, "--output",
                             tmp_path / "p.csv")
    assert code == 0, err
    with open(tmp_path / "p.csv") as fh:
        p = np.array([float(r["p_1"]) for r in csv.DictReader(fh)])
    raw = np.loadtxt(new, delimiter=",", skiprows=1)
    Xs = prep.standardizer.transform(torch.from_numpy(raw[:, :3]))
    with torch.no_grad():
        expected = torch.sigmoid(ref.logits(Xs)[:, 0] + torch.from_numpy(raw[:, 3])).numpy()
    np.testing.assert_allclose(p, expected, rtol=0, atol=1e-6)
    code, out, err = run_cli(capsys, "evaluate", "--run", tmp_path / "run", "--data", new, "--json")
    assert code == 0, err
    # sample writes the offset column, which predict then reads
    assert sample_then_predict(capsys, tmp_path / "run", tmp_path, 5) == "x1,x2,x3,log_exposure,y"


@pytest.mark.e2e
def test_cli_offset_mistakes_are_one_sentence(capsys, tmp_path, data):
    path = write_csv(tmp_path / "d.csv", data, n=60)
    expect_error(capsys, "data.offset is taken by the loop's update rules and, among the exact solvers, by "
                 "train.solver = 'newton' or 'cd'", "train", "--quiet", "--run-dir", tmp_path / "r1",
                 *sets(path, "train.solver=lbfgs"))
    expect_error(capsys, "data.offset column 'nope' is not in the header", "train", "--quiet", "--run-dir",
                 tmp_path / "r2", *sets(path, "data.offset=nope"))
    expect_error(capsys, "data.offset names a column of a CSV or Parquet file (data.path)", "train", "--quiet",
                 "--set", "data.offset=o")
    code, _, err = run_cli(capsys, "train", "--quiet", "--run-dir", tmp_path / "run", *sets(path, "train.epochs=3"))
    assert code == 0, err
    no_offset = tmp_path / "no_offset.csv"
    no_offset.write_text("x1,x2,x3\n0.1,0.2,0.3\n")
    expect_error(capsys, "the offset column 'log_exposure' (data.offset) is needed", "predict", "--run",
                 tmp_path / "run", "--input", no_offset, "--output", tmp_path / "p.csv")


@pytest.mark.e2e
def test_cli_cv_fits_and_scores_each_fold_with_its_rows_offsets(capsys, tmp_path, data):
    """cv's held-out loss of a fold equals an exact fit of that fold's training rows with their
    offsets, scored on its held-out rows with theirs (the folds and the pool as cv deals them)."""
    from torch_logreg import folds as folds_lib
    from torch_logreg.app import data as data_lib
    from torch_logreg.app.fitting import split_data

    path = write_csv(tmp_path / "d.csv", data)
    more = ["train.solver=newton", "train.tol=1e-12", "train.epochs=100"]
    code, out, err = run_cli(capsys, "cv", "--grid", "train.l2=0.001,0.1", "--folds", "3", "--run-dir",
                             tmp_path / "cv", *sets(path, *more))
    assert code == 0, err
    rows = json.loads((tmp_path / "cv" / "results.json").read_text())["rows"]

    cfg = load_config(None, sets(path, *more)[1::2])
    rows_data, y, classes, idx = split_data(cfg, torch.device("cpu"))
    pool = torch.cat([idx["train"], idx["val"]])
    X_pool, y_pool = rows_data.rows(pool), y.index_select(0, pool).double()
    o_pool = torch.from_numpy(rows_data.offset[pool.numpy()])
    splits = folds_lib.kfold(y_pool.numpy(), 3, seed=cfg.train.seed, stratify=True)
    for row in rows:
        for i, (train, test) in enumerate(splits):
            std = data_lib.Standardizer.fit(X_pool[train])
            model = tl.LogisticRegression(3).double()
            fit_exact(model, std.transform(X_pool[train]), y_pool[train], l2=row["train.l2"], offset=o_pool[train],
                      tol=1e-12)
            with torch.no_grad():
                z = model.logits(std.transform(X_pool[test]))[:, 0] + o_pool[test]
            loss = float(torch.nn.functional.binary_cross_entropy_with_logits(z, y_pool[test]))
            assert row[f"split{i}_loss"] == pytest.approx(loss, rel=1e-9), (row["train.l2"], i)
    # without the offset the same folds score worse: the column carries signal
    code, _, err = run_cli(capsys, "cv", "--grid", "train.l2=0.001", "--folds", "3", "--run-dir", tmp_path / "cv0",
                           *sets(path, *more, "data.offset="))
    assert code == 0, err
    plain = json.loads((tmp_path / "cv0" / "results.json").read_text())["rows"][0]
    assert plain["mean_loss"] > min(r["mean_loss"] for r in rows)


def _kkt_offset(theta, X, y, o, lam, l1_ratio):
    """The largest violation of the optimality conditions at ``theta = [b, w]`` of
    mean loss(sigmoid(b + X w + o), y) + lam (1 - a)/2 ||w||^2 + lam a ||w||_1."""
    Xa = np.column_stack([np.ones(len(y)), X])
    p = 1 / (1 + np.exp(-(Xa @ theta + o)))
    g = Xa.T @ (p - y) / len(y) + lam * (1 - l1_ratio) * np.r_[0.0, theta[1:]]
    l1 = lam * l1_ratio * np.r_[0.0, np.ones(len(theta) - 1)]
    return max(abs(g[j] + l1[j] * np.sign(t)) if t != 0 else max(abs(g[j]) - l1[j], 0.0) for j, t in enumerate(theta))


@pytest.mark.parametrize("solver", ["newton", "cd"])
def test_path_with_an_offset_meets_the_optimality_conditions_and_scores_with_it(data, solver):
    X, y, offset = data
    result = tl.regularization_path(X, y, l1_ratio=0.7, n_penalties=5, cv=3, solver=solver, tol=1e-11, max_iter=300,
                                    offset=offset, keep_fold_coefs=True)
    coef, intercept = result.coef_path.numpy()[:, 0, :], result.intercept_path.numpy()[:, 0]
    assert (coef[0] == 0).all()  # the largest penalty zeroes W; its intercept is the offset model's own
    p0 = 1 / (1 + np.exp(-(intercept[0] + offset)))
    assert abs(np.mean(p0 - y)) <= 1e-12
    assert (coef[-1] != 0).any()
    for j in range(len(result.penalties)):
        assert _kkt_offset(np.r_[intercept[j], coef[j]], X, y, offset, result.penalties[j], 0.7) <= 1e-8, j
    # a fold's held-out log loss adds the held-out rows' offsets to their logits
    train, test = result.folds[1]
    b, w = result.fold_intercept_path[1, 2, 0].item(), result.fold_coef_path[1, 2, 0].numpy()
    z = b + X[test] @ w + offset[test]
    loss = np.mean(np.logaddexp(0, z) - y[test] * z)
    assert result.scores[1, 2] == pytest.approx(loss, rel=1e-12)
    with pytest.raises(tl.UsageError, match="offset is honoured by solver='newton' or 'cd'"):
        tl.regularization_path(X, y, l1_ratio=0.0, solver="lbfgs", cv=2, offset=offset)


@pytest.mark.e2e
def test_cli_path_with_an_offset_equals_the_library(capsys, tmp_path, data):
    path = write_csv(tmp_path / "d.csv", data)
    more = ["train.solver=newton", "train.tol=1e-11", "train.epochs=200"]
    code, _, err = run_cli(capsys, "path", "--quiet", "--folds", "3", "--n-penalties", "4", "--l1-ratio", "0",
                           "--run-dir", tmp_path / "p", *sets(path, *more))
    assert code == 0, err
    table = json.loads((tmp_path / "p" / "path.json").read_text())
    cfg = load_config(None, sets(path, *more)[1::2])
    prep = prepare(cfg, torch.device("cpu"), torch.float64)
    X, T = prep.rows.tensors()
    ref = tl.regularization_path(X, T[:, 0], l1_ratio=0.0, n_penalties=4, cv=3, solver="newton", tol=1e-11,
                                 max_iter=200, seed=cfg.train.seed, offset=prep.rows.offset[:, 0])
    assert [r["penalty"] for r in table["rows"]] == pytest.approx(list(ref.penalties), rel=1e-12)
    assert table["penalty"] == pytest.approx(ref.penalty, rel=1e-12)
    # the refit run is the exact fit with the offset at the chosen penalty
    model = model_from_checkpoint(torch.load(tmp_path / "p" / "refit" / "checkpoint.pt", weights_only=True))
    assert torch.allclose(model.linear.weight, ref.model.linear.weight, rtol=0, atol=1e-7)
