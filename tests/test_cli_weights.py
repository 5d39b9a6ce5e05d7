"""Row and class weights from the command line: ``data.weight`` names a CSV column of row weights
and ``train.class_weight = "balanced"`` weights each class alike, in the loop, the exact solvers
and cv. Fits are compared with scikit-learn's exact solver given the same weights."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from torch_logreg.app.runs import model_from_checkpoint

from helpers import run_cli

#: the command line end to end: left out of `make test-fast`
pytestmark = pytest.mark.e2e


def weighted_csv(path, n: int = 300, seed: int = 0, classes: int = 2):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    logits = X @ rng.normal(size=(3, classes)) + np.array([0.0, 1.5, -0.5][:classes])  # unbalanced classes
    y = (logits + rng.gumbel(size=(n, classes))).argmax(1)
    w = rng.uniform(0.0, 3.0, n)
    w[::11] = 0.0
    path.write_text("a,b,c,w,y\n" + "".join(f"{a:.6f},{b:.6f},{c:.6f},{v:.6f},{t}\n" for (a, b, c), v, t in zip(X, w, y)))
    table = np.loadtxt(path, delimiter=",", skiprows=1)  # the values as written
    return table[:, :3], table[:, 3], y


def args(path, run_dir, *sets):
    out = ["train", "--quiet", "--run-dir", run_dir, "--set", f"data.path={path}", "--set", "data.target=y",
           "--set", "data.val_fraction=0", "--set", "data.test_fraction=0", "--set", "train.device=cpu",
           "--set", "train.dtype=float64", "--set", "train.l2=0.01", "--set", "train.tol=1e-11"]
    for s in sets:
        out += ["--set", s]
    return out


def coefficients(run_dir):
    model = model_from_checkpoint(torch.load(run_dir / "checkpoint.pt", weights_only=True))
    return model.linear.weight.detach().numpy(), model.linear.bias.detach().numpy()


@pytest.mark.parametrize("solver", ["newton", "lbfgs", "nesterov"])
@pytest.mark.parametrize("class_weight", ["", "balanced"])
def test_weights_match_scikit_learn(capsys, tmp_path, solver, class_weight):
    X, w, y = weighted_csv(tmp_path / "d.csv")
    sets = [f"train.solver={solver}", "data.weight=w", f"train.class_weight={class_weight}", "train.epochs=20000",
            "train.lr=0.5", "train.patience=0"]
    code, _, err = run_cli(capsys, *args(tmp_path / "d.csv", tmp_path / "run", *sets))
    assert code == 0, err
    W, b = coefficients(tmp_path / "run")
    Xs = StandardScaler().fit_transform(X)
    ref = LogisticRegression(C=1 / (0.01 * len(y)), solver="newton-cholesky", tol=1e-12, max_iter=1000,
                             class_weight=class_weight or None).fit(Xs, y, sample_weight=w)
    tol = 1e-8 if solver != "nesterov" else 1e-6
    assert np.abs(W - ref.coef_).max() <= tol and abs(b[0] - ref.intercept_[0]) <= tol


def test_balanced_softmax_matches_scikit_learn(capsys, tmp_path):
    X, w, y = weighted_csv(tmp_path / "d.csv", classes=3)
    code, _, err = run_cli(capsys, *args(tmp_path / "d.csv", tmp_path / "run", "model.kind=softmax", "data.weight=w",
                                         "train.solver=newton", "train.class_weight=balanced"))
    assert code == 0, err
    W, b = coefficients(tmp_path / "run")
    Xs = StandardScaler().fit_transform(X)
    ref = LogisticRegression(C=1 / (0.01 * len(y)), solver="lbfgs", tol=1e-12, max_iter=10_000,
                             class_weight="balanced").fit(Xs, y, sample_weight=w)
    assert np.abs(W - ref.coef_).max() <= 1e-6
    assert np.abs((b - b.mean()) - (ref.intercept_ - ref.intercept_.mean())).max() <= 1e-6


def test_mini_batches_cv_and_predict_take_the_weight_column(capsys, tmp_path):
    weighted_csv(tmp_path / "d.csv")
    code, _, err = run_cli(capsys, *args(tmp_path / "d.csv", tmp_path / "run", "data.weight=w", "train.batch_size=32",
                                         "train.epochs=3", "train.solver=adam", "train.lr=0.05"))
    assert code == 0, err
    code, _, err = run_cli(capsys, "predict", "--run", tmp_path / "run", "--input", tmp_path / "d.csv", "--output",
                           tmp_path / "p.csv", "--keep", "y")
    assert code == 0, err  # the weight column of a new file is not a feature, and not an error
    code, _, err = run_cli(capsys, "cv", "--quiet", "--folds", "3", "--run-dir", tmp_path / "cv", "--set",
                           f"data.path={tmp_path / 'd.csv'}", "--set", "data.target=y", "--set", "data.weight=w",
                           "--set", "train.class_weight=balanced", "--set", "train.solver=newton",
                           "--grid", "train.l2=0.01,0.1")
    assert code == 0, err


@pytest.mark.parametrize("cells,sets,message", [
    ("1,2,-1,0", ["data.weight=w"], "line 2, column 'w': a row weight must be non-negative, got -1"),
    ("1,2,x,0", ["data.weight=w"], "line 2, column 'w': 'x' is not a number"),
    ("1,2,0,0", ["data.weight=w"], "every row weight in column 'w' is 0"),
    ("1,2,1,0", ["data.weight=v"], "data.weight column 'v' is not in the header"),
    ("1,2,1,0", ["data.weight=y"], "cannot also be the target or a feature"),
    ("1,2,1,0", ["model.kind=linear", "train.class_weight=balanced"], "train.class_weight needs classes"),
])
def test_bad_weights_are_one_sentence(capsys, tmp_path, cells, sets, message):
    path = tmp_path / "d.csv"
    path.write_text("a,b,w,y\n" + f"{cells}\n" + "".join(f"{i},{i % 3},1,{i % 2}\n" for i in range(20)))
    if "every row weight" in message:
        path.write_text("a,b,w,y\n" + "".join(f"{i},{i % 3},0,{i % 2}\n" for i in range(20)))
    code, _, err = run_cli(capsys, *args(path, tmp_path / "run", *sets))
    assert code == 2 and message in err, err
    assert not (tmp_path / "run").exists()
