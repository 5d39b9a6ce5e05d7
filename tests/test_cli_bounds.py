"""Penalty factors and coefficient bounds by feature name: ``train.penalty_factor``,
``train.lower_bounds`` and ``train.upper_bounds`` in the config, passed by ``train`` (and ``path``)
to the exact solvers; the regularization path honours them at every penalty (its KKT conditions)."""

import math

import numpy as np
import pytest
import torch

import torch_logreg as tl
from torch_logreg.app.config import load_config
from torch_logreg.app.fitting import prepare
from torch_logreg.app.runs import model_from_checkpoint
from torch_logreg.solvers import fit_exact

from helpers import expect_error, run_cli

INF = math.inf


def write_csv(path, n: int = 240, seed: int = 3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    colour = rng.choice(["red", "green", "blue"], size=n)
    eta = X @ np.array([1.0, -1.5, 0.5]) + (colour == "red") * 0.8 - 0.3
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(int)
    path.write_text("x1,x2,x3,colour,y\n" + "".join(f"{a:.6f},{b:.6f},{c:.6f},{k},{t}\n"
                                                    for (a, b, c), k, t in zip(X, colour, y)))
    return path


def sets(path, *more):
    base = [f"data.path={path}", "data.target=y", "data.categorical=['colour']", "data.val_fraction=0",
            "data.test_fraction=0", "train.device=cpu", "train.dtype=float64", "train.tol=1e-10", "train.epochs=200"]
    return [*base, *more]


def cli_args(run_dir, overrides):
    out = ["train", "--quiet", "--run-dir", run_dir]
    for s in overrides:
        out += ["--set", s]
    return out


TERMS = ["train.solver=newton", "train.l2=0.05", "train.l1=0.01",
         "train.penalty_factor={x1 = 0.0, colour = 2.0}",
         "train.lower_bounds={x2 = -0.4, x3 = 0.0}", "train.upper_bounds={x1 = 0.5}"]


@pytest.mark.e2e
def test_cli_train_equals_fit_exact_on_the_same_arrays(capsys, tmp_path):
    path = write_csv(tmp_path / "d.csv")
    overrides = sets(path, *TERMS)
    code, _, err = run_cli(capsys, *cli_args(tmp_path / "run", overrides))
    assert code == 0, err
    model = model_from_checkpoint(torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True))

    cfg = load_config(None, overrides)
    prep = prepare(cfg, torch.device("cpu"), torch.float64)
    X, T = prep.rows.tensors()
    names = prep.schema.feature_names
    assert names == ["x1", "x2", "x3", "colour=blue", "colour=green", "colour=red"]
    factor = [0.0, 1.0, 1.0, 2.0, 2.0, 2.0]  # "colour" stands for its three one-hot columns
    lower = [-INF, -0.4, 0.0, -INF, -INF, -INF]
    upper = [0.5, INF, INF, INF, INF, INF]
    ref = tl.LogisticRegression(len(names)).double()
    fit_exact(ref, X, T, solver="newton", l2=0.05, l1=0.01, tol=1e-10, max_iter=200, penalty_factor=factor,
              lower_bounds=lower, upper_bounds=upper)
    W = model.linear.weight.detach().numpy()[0]
    assert np.abs(W - ref.linear.weight.detach().numpy()[0]).max() <= 1e-8
    assert abs(float(model.linear.bias.detach()[0]) - float(ref.linear.bias.detach()[0])) <= 1e-8
    assert W[0] <= 0.5 + 1e-12 and W[1] >= -0.4 - 1e-12 and W[2] >= -1e-12  # the box holds
    assert "penalty_factor = {\"x1\" = 0.0, \"colour\" = 2.0}" in (tmp_path / "run" / "config.toml").read_text()


@pytest.mark.parametrize("overrides, message", [
    (["train.solver=newton", "train.lower_bounds={x9 = 0.0}"],
     "train.lower_bounds: unknown feature 'x9'; the features are x1, x2, x3, colour=blue, colour=green, "
     "colour=red (a categorical column's name stands for all its one-hot columns)"),
    (["train.solver=lbfgs", "train.lower_bounds={x1 = 0.0}"],
     "train.lower_bounds is honoured by train.solver = 'newton' or 'cd'"),
    (["train.solver=adam", "train.penalty_factor={x1 = 0.0}"],
     "train.penalty_factor is honoured by train.solver = 'newton' or 'cd'"),
    (["train.solver=newton", "model.kind=softmax", "train.upper_bounds={x1 = 1.0}"],
     "train.upper_bounds applies to a binary model"),
    (["train.solver=newton", "train.penalty_factor={x1 = -1.0}"], "each value must be a finite number >= 0"),
    (["train.solver=newton", "train.lower_bounds={x1 = 1.0}", "train.upper_bounds={x1 = 0.0}"],
     "train.lower_bounds['x1'] = 1 exceeds train.upper_bounds['x1'] = 0"),
])
def test_mistakes_are_one_sentence(capsys, tmp_path, overrides, message):
    path = write_csv(tmp_path / "d.csv")
    line = expect_error(capsys, message, *cli_args(tmp_path / "run", sets(path, *overrides)))
    assert not (tmp_path / "run").exists(), line


def test_config_file_table_round_trips(tmp_path):
    text = ('[train]\nsolver = "cd"\nlower_bounds = {x1 = 0.0, "colour=red" = -inf}\n'
            'penalty_factor = {x2 = 0}\n')
    (tmp_path / "c.toml").write_text(text)
    cfg = load_config(tmp_path / "c.toml")
    assert cfg.train.lower_bounds == {"x1": 0.0, "colour=red": -INF} and cfg.train.penalty_factor == {"x2": 0.0}
    (tmp_path / "again.toml").write_text(cfg.to_toml())
    assert load_config(tmp_path / "again.toml").to_dict() == cfg.to_dict()


def _kkt(theta, X, y, lam, l1_ratio, factor, lower, upper):
    """The largest violation of the KKT conditions at ``theta = [b, w]`` of
    mean loss + lam (1 - a)/2 sum f_j w_j^2 + lam a sum f_j |w_j| over lower <= w <= upper."""
    Xa = np.column_stack([np.ones(len(y)), X])
    p = 1 / (1 + np.exp(-(Xa @ theta)))
    f = np.r_[0.0, factor]
    g = Xa.T @ (p - y) / len(y) + lam * (1 - l1_ratio) * f * theta
    l1 = lam * l1_ratio * f
    lo, hi = np.r_[-INF, lower], np.r_[INF, upper]
    worst = 0.0
    for j, t in enumerate(theta):
        up = g[j] + l1[j] * (np.sign(t) if t != 0 else 1.0)  # the derivative moving up
        down = -g[j] + l1[j] * (-np.sign(t) if t != 0 else 1.0)  # moving down
        worst = max(worst, -up if t < hi[j] else 0.0, -down if t > lo[j] else 0.0)
    return worst


@pytest.mark.parametrize("solver", ["newton", "cd"])
def test_path_honours_factors_and_bounds_at_every_penalty(solver):
    rng = np.random.default_rng(0)
    n, d = 200, 5
    X = rng.normal(size=(n, d))
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ np.array([1.5, -1.0, 0.8, 0.0, -0.6]))))).astype(float)
    factor = np.array([0.0, 1.0, 2.0, 1.0, 0.5])
    lower = np.array([-INF, 0.0, -INF, -INF, -0.2])  # x2 must be >= 0 though its effect is negative
    upper = np.array([1.0, INF, INF, 0.0, INF])
    result = tl.regularization_path(X, y, l1_ratio=0.7, n_penalties=6, cv=2, solver=solver, tol=1e-10, max_iter=200,
                                    penalty_factor=factor, lower_bounds=lower, upper_bounds=upper)
    coef = result.coef_path.numpy()[:, 0, :]
    assert (coef >= lower - 1e-12).all() and (coef <= upper + 1e-12).all()
    assert (coef[:, 0] != 0).all()  # unpenalised: never zeroed
    for j in (0, 3, 5):
        theta = np.r_[result.intercept_path.numpy()[j, 0], coef[j]]
        assert _kkt(theta, X, y, result.penalties[j], 0.7, factor, lower, upper) <= 1e-8


def test_path_refuses_terms_a_solver_cannot_honour():
    X = np.random.default_rng(0).normal(size=(40, 2))
    y = (X[:, 0] > 0).astype(float)
    with pytest.raises(tl.UsageError, match="honoured by solver='newton' or 'cd', not 'lbfgs'"):
        tl.regularization_path(X, y, l1_ratio=0.0, solver="lbfgs", cv=2, lower_bounds=[0.0, 0.0])
    with pytest.raises(tl.UsageError, match="kind='binary'"):
        tl.regularization_path(X, (X[:, 0] > 0).astype(int), kind="softmax", cv=2, penalty_factor=[1.0, 0.0])


@pytest.mark.e2e
def test_cli_path_takes_the_terms(capsys, tmp_path):
    path = write_csv(tmp_path / "d.csv")
    overrides = sets(path, "train.solver=cd", "train.lower_bounds={x2 = 0.0}", "train.penalty_factor={x1 = 0.0}")
    args = ["path", "--quiet", "--folds", "2", "--n-penalties", "4", "--run-dir", tmp_path / "p"]
    for s in overrides:
        args += ["--set", s]
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    model = model_from_checkpoint(torch.load(tmp_path / "p" / "refit" / "checkpoint.pt", weights_only=True))
    W = model.linear.weight.detach().numpy()[0]
    assert W[1] >= 0.0 and W[0] != 0.0
