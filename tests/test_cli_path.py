"""``torch-logreg path``: the regularization path from a config, its table, its pictures and the
refit run, which is the exact solver's fit at the chosen penalty."""

import json

import numpy as np
import pytest
import torch
from sklearn.datasets import dump_svmlight_file

import torch_logreg as tl
from torch_logreg.app.config import load_config
from torch_logreg.app.fitting import prepare
from torch_logreg.app.runs import model_from_checkpoint

from helpers import run_cli

#: the command line end to end: left out of `make test-fast`
pytestmark = pytest.mark.e2e


def path_args(run_dir, *extra, sets=()):
    args = ["path", "--quiet", "--run-dir", run_dir, "--folds", "3", "--n-penalties", "6", "--min-ratio", "0.01",
            "--set", "train.device=cpu", "--set", "train.tol=1e-9", "--set", "train.dtype=float64",
            "--set", "data.name=breast_cancer", *extra]
    for s in sets:
        args += ["--set", s]
    return args


@pytest.mark.parametrize("choice", ["best", "1se"])
def test_the_refit_is_the_exact_fit_at_the_chosen_penalty(capsys, tmp_path, choice):
    code, out, err = run_cli(capsys, *path_args(tmp_path / "p", "--choice", choice))
    assert code == 0, err
    table = json.loads((tmp_path / "p" / "path.json").read_text())
    rows = table["rows"]
    assert len(rows) == 6 and [r["penalty"] for r in rows] == sorted((r["penalty"] for r in rows), reverse=True)
    chosen = next(r for r in rows if choice in r["choice"].split(","))
    assert table["penalty"] == chosen["penalty"]
    assert (tmp_path / "p" / "path.csv").read_text().count("\n") == 7
    assert f"chosen penalty {chosen['penalty']:.6g}" in out and "test" in out
    # the refit run: train.l1 = the penalty (l1_ratio 1), the exact solver's optimum on the training split
    payload = torch.load(tmp_path / "p" / "refit" / "checkpoint.pt", weights_only=True)
    assert payload["config"]["train"]["l1"] == pytest.approx(chosen["penalty"], rel=1e-15)
    model = model_from_checkpoint(payload).double()
    cfg = load_config(None, ["train.device=cpu", "data.name=breast_cancer"])
    prep = prepare(cfg, torch.device("cpu"), torch.float64)
    ref = tl.LogisticRegression(30).double()
    tl.fit_exact(ref, prep.X["train"], prep.y["train"], l1=chosen["penalty"], tol=1e-12, solver="newton")
    assert (model.linear.weight - ref.linear.weight).abs().max() <= 1e-6
    assert int((model.linear.weight != 0).sum()) == chosen["n_nonzero"]


def test_the_pictures_and_scalars_reach_tensorboard(capsys, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert run_cli(capsys, *path_args(tmp_path / "p"))[0] == 0
    events = EventAccumulator(str(tmp_path / "p"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert {"path/coefficients", "path/cross_validation"} <= set(events.Tags()["images"])
    scores = [e.value for e in events.Scalars("path/mean_log_loss")]
    table = json.loads((tmp_path / "p" / "path.json").read_text())["rows"]
    assert np.allclose(scores, [r["mean_log_loss"] for r in table], rtol=1e-6)


def test_ridge_softmax_and_a_sparse_file(capsys, tmp_path):
    code, _, err = run_cli(capsys, *path_args(tmp_path / "ridge", "--l1-ratio", "0", sets=["data.name=iris",
                                                                                          "model.kind=softmax"]))
    assert code == 0, err
    payload = torch.load(tmp_path / "ridge" / "refit" / "checkpoint.pt", weights_only=True)
    assert payload["config"]["train"]["l1"] == 0 and payload["config"]["train"]["l2"] > 0
    rng = np.random.default_rng(0)
    X = (rng.random((200, 40)) < 0.1) * rng.uniform(1, 2, (200, 40))
    y = (X[:, :5].sum(1) + 0.3 * rng.normal(size=200) > 0.6).astype(int)
    dump_svmlight_file(X, y, str(tmp_path / "d.svm"))
    code, _, err = run_cli(capsys, *path_args(tmp_path / "sparse", sets=[f"data.path={tmp_path / 'd.svm'}"]))
    assert code == 0, err


@pytest.mark.parametrize("extra,sets,message", [
    (["--folds", "1"], [], "--folds must be at least 2"),
    ([], ["model.kind=mlp", "model.hidden=[4]"], "path fits one Linear layer"),
    (["--l1-ratio", "1.5"], [], "l1_ratio"),
    (["--scoring", "mse"], [], "scoring must be one of"),
])
def test_mistakes_are_one_sentence(capsys, tmp_path, extra, sets, message):
    code, _, err = run_cli(capsys, *path_args(tmp_path / "p", *extra, sets=sets))
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "p").exists()
