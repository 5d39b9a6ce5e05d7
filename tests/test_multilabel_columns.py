"""``data.target`` as a list of 0/1 columns trains a multilabel model (one sigmoid per column), scored
per output, and its errors are one sentence."""

import json

import numpy as np
import pytest
import torch

from torch_logreg.app.config import load_config
from torch_logreg.app.metrics import multilabel_metrics

from helpers import expect_error, run_cli


def write(path, n=200, seed=0, bad=None):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    a, b = (X[:, 0] > 0).astype(int), (X[:, 1] - X[:, 2] > 0).astype(int)
    lines = ["x1,x2,x3,id,a,b"] + [f"{x[0]:.6f},{x[1]:.6f},{x[2]:.6f},{i},{u},{v}" for i, (x, u, v) in enumerate(zip(X, a, b))]
    if bad is not None:
        lines[bad] = lines[bad].rsplit(",", 1)[0] + ",2"
    path.write_text("\n".join(lines) + "\n")
    return path


SETS = ['data.target=["a", "b"]', 'data.drop=["id"]', "model.kind=multilabel", "train.device=cpu", "train.epochs=60"]


def test_the_targets_are_the_columns_and_the_features_the_rest(tmp_path):
    from torch_logreg.app.fitting import prepare

    cfg = load_config(None, [f"data.path={write(tmp_path / 'm.csv')}", *SETS])
    prep = prepare(cfg, torch.device("cpu"), torch.float64)
    assert prep.classes == ["a", "b"] and prep.schema.feature_names == ["x1", "x2", "x3"]
    T = torch.cat([prep.T[s] for s in ("train", "val", "test")])
    assert T.shape == (200, 2) and (T.sum(dim=1) == 2).any() and (T.sum(dim=1) == 0).any()  # rows with 0 or 2 labels


def test_multilabel_metrics_equal_scikit_learn():
    from sklearn.metrics import accuracy_score, f1_score, hamming_loss, roc_auc_score

    gen = torch.Generator().manual_seed(0)
    T = torch.randint(0, 2, (50, 3), generator=gen).double()
    z = 2 * T - 1 + 1.5 * torch.randn(50, 3, generator=gen, dtype=torch.float64)
    m = multilabel_metrics(z, T, ["u", "v", "w"])
    pred, truth, p = (z >= 0).long().numpy(), T.long().numpy(), torch.sigmoid(z).numpy()
    assert m["accuracy"] == pytest.approx(accuracy_score(truth, pred))
    assert m["hamming_accuracy"] == pytest.approx(1 - hamming_loss(truth, pred))
    assert m["auc"] == pytest.approx(roc_auc_score(truth, p, average="macro"))
    assert m["f1_macro"] == pytest.approx(f1_score(truth, pred, average="macro"))
    expected = torch.nn.functional.binary_cross_entropy_with_logits(z, T).item()
    assert m["log_loss"] == pytest.approx(expected, rel=1e-12)
    assert set(m) >= {"f1[u]", "precision[v]", "recall[w]"}


def test_a_list_target_is_refused_where_it_does_not_apply(tmp_path, capsys):
    path = write(tmp_path / "m.csv")
    expect_error(capsys, "data.target as a list of columns is for model.kind = 'multilabel'", "train", "--set",
                 f"data.path={path}", "--set", 'data.target=["a", "b"]', "--run-dir", tmp_path / "r1", "--quiet")
    expect_error(capsys, "data.target must be a column name or a list of column names", "train", "--set",
                 f"data.path={path}", "--set", "data.target=[1, 2]", "--set", "model.kind=multilabel",
                 "--run-dir", tmp_path / "r2", "--quiet")
    bad = write(tmp_path / "bad.csv", bad=5)  # the file's line 6
    expect_error(capsys, "line 6, column 'b': a multilabel target is 0 or 1, got 2", "train", "--set",
                 f"data.path={bad}", *[a for s in SETS for a in ("--set", s)], "--run-dir", tmp_path / "r3", "--quiet")


@pytest.mark.e2e
def test_train_evaluate_and_predict_a_multilabel_target(tmp_path, capsys):
    path = write(tmp_path / "m.csv")
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--set", f"data.path={path}", *[a for s in SETS for a in ("--set", s)],
                           "--run-dir", run_dir, "--quiet")
    assert code == 0, err
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["hamming_accuracy"] > 0.8 and "f1[b]" in metrics["test"]
    code, out, err = run_cli(capsys, "evaluate", "--run", run_dir, "--data", path)
    assert code == 0 and "hamming_accuracy" in out, err
    code, _, err = run_cli(capsys, "predict", "--run", run_dir, "--input", path, "--output", tmp_path / "p.csv",
                           "--keep", "id")
    assert code == 0, err
    assert (tmp_path / "p.csv").read_text().splitlines()[0] == "id,p_a,p_b,label"
