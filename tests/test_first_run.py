"""What a first run shows: the terminal summary (within 100 columns, no duplicate metric, the reason
the run stopped), runs named after their data, rows to predict on without pandas, and TensorBoard
at a glance (no hparam/* curves, train and validation overlaid, histograms at the start and end)."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from torch_logreg.app.config import load_config
from torch_logreg.app.metrics import per_class_table, summary_table
from torch_logreg.app.progress import stop_sentence
from torch_logreg.app.sample import sample
from torch_logreg.app.tensorboard import applicable_config, config_hparams
from torch_logreg.errors import UsageError

from helpers import run_cli

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_summary_table_keeps_one_of_loss_and_log_loss():
    same = {"train": {"loss": 0.1, "log_loss": 0.1, "accuracy": 0.9}, "test": {"loss": 0.2, "log_loss": 0.2,
                                                                           "accuracy": 0.8}}
    lines = summary_table(same).splitlines()
    assert lines[0].split() == ["split", "loss", "accuracy"]
    assert lines[2].split() == ["test", "0.2000", "0.8000"]
    differ = {"test": {"loss": 0.5, "log_loss": 0.3}}  # one sigmoid per class: they differ
    assert summary_table(differ).splitlines()[0].split() == ["split", "loss", "log_loss"]
    assert summary_table({"test": {"loss": 1.0, "r2": float("nan")}}).splitlines()[1].split() == ["test", "1.0000", "n/a"]


def test_per_class_table_has_a_row_per_class_and_cuts_long_labels():
    long = "a label far longer than sixteen"
    m = {s: {f"{k}[{c}]": 0.5 for c in ("x", long) for k in ("precision", "recall", "f1")} for s in ("train", "test")}
    lines = per_class_table(m).splitlines()
    assert lines[0].split() == ["train", "test"] and lines[1].split() == ["class"] + ["prec", "recall", "f1"] * 2
    assert lines[2].split() == ["x"] + ["0.5000"] * 6
    assert lines[3].startswith("a label far lon~") and max(map(len, lines)) <= 100
    assert per_class_table({"test": {"loss": 1.0}}) == ""


def test_stop_sentences_say_why():
    assert stop_sentence("early_stopping", 69, 1000, patience=20, best_epoch=49) == (
        "stopped early at 69/1000: validation loss no better for 20 epochs (best at epoch 49, its weights kept)")
    assert stop_sentence("converged", 12, 100, tol=1e-6) == "converged at 12/100: gradient norm below train.tol = 1e-06"
    assert stop_sentence("max_epochs", 100, 100).startswith("reached the epoch limit 100/100")


def test_only_the_keys_that_apply():
    logistic = applicable_config(load_config(CONFIGS / "breast_cancer.toml"))
    assert "hidden" not in logistic["model"] and "activation" not in logistic["model"]
    assert logistic["train"]["momentum"] == 0.9 and "betas" not in logistic["train"] and "n_samples" not in logistic["data"]
    newton = applicable_config(load_config(None, ["train.solver=newton"]))
    assert "lr" not in newton["train"] and "momentum" not in newton["train"] and "l1" in newton["train"]
    mlp = config_hparams(load_config(CONFIGS / "digits_mlp.toml", ["train.solver=adam"]), "test")
    assert mlp["model.hidden"] == "[64]"
    assert {"train.betas", "train.eps", "model.activation"} <= set(mlp) and "train.momentum" not in mlp
    assert mlp["scored_on"] == "test"


def test_sample_refuses_before_reading_the_run(tmp_path):
    with pytest.raises(UsageError, match="--rows must be at least 1, got 0"):
        sample(tmp_path / "no-run", tmp_path / "new.csv", rows=0)
    with pytest.raises(UsageError, match="--split must be one of train, val, test"):
        sample(tmp_path / "no-run", tmp_path / "new.csv", split="dev")
    with pytest.raises(UsageError, match="does not exist"):
        sample(tmp_path / "no-run", tmp_path / "new.csv")


@pytest.mark.e2e
def test_train_on_digits_prints_nothing_wider_than_100_columns(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "train", "--config", CONFIGS / "digits.toml", "--run-dir", "r",
                             "--set", "train.epochs=30", "--set", "train.device=cpu")
    assert code == 0, err
    lines = (out + err).splitlines()
    assert max(len(line) for line in lines) <= 100, max(lines, key=len)
    assert err.splitlines()[-1] == "reached the epoch limit 30/30 (resume --set train.epochs=N goes on)"
    header = out.splitlines()[1].split()
    assert header[:2] == ["split", "loss"] and "log_loss" not in header  # the same number as loss
    assert len([line for line in out.splitlines() if re.match(r"\d ", line)]) == 10  # a row per digit


@pytest.mark.e2e
def test_a_run_on_a_file_is_named_after_it(capsys, tmp_path, monkeypatch):
    from sklearn.datasets import dump_svmlight_file

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 5)) * (rng.random((120, 5)) < 0.4)
    dump_svmlight_file(X, (X.sum(axis=1) > 0).astype(int), "clicks.svm")
    code, out, err = run_cli(capsys, "train", "--set", "data.path=clicks.svm", "--set", "train.epochs=5",
                             "--set", "train.device=cpu", "--quiet")
    assert code == 0, err
    (run,) = Path("runs").iterdir()
    assert run.name.startswith("clicks-")
    saved = load_config(run / "config.toml")
    assert saved.data.name == "clicks" and saved.data.path == "clicks.svm"
    assert run_cli(capsys, "evaluate", "--run", run)[0] == 0  # the saved config still describes the run


@pytest.mark.e2e
def test_sample_writes_rows_that_predict_and_evaluate_take(capsys, tmp_path):
    run = tmp_path / "run"
    assert run_cli(capsys, "train", "--run-dir", run, "--set", "train.epochs=5", "--set", "train.device=cpu",
                   "--quiet")[0] == 0
    code, out, err = run_cli(capsys, "sample", "--run", run, "--rows", "7", "--output", tmp_path / "new.csv")
    assert code == 0 and "wrote 7 rows of the test split" in out, err
    header = (tmp_path / "new.csv").read_text().splitlines()[0].split(",")
    assert header[0] == "mean radius" and header[-1] == "target" and len(header) == 31
    code, out, err = run_cli(capsys, "predict", "--run", run, "--input", tmp_path / "new.csv", "--output",
                             tmp_path / "p.csv")
    assert code == 0 and "7 predictions" in out, err
    code, out, err = run_cli(capsys, "evaluate", "--run", run, "--data", tmp_path / "new.csv", "--json")
    whole = json.loads(run_cli(capsys, "evaluate", "--run", run, "--json")[1])
    assert code == 0 and 0 < json.loads(out)["data"]["loss"] < 10 * whole["test"]["loss"] + 1, err
    code, _, err = run_cli(capsys, "sample", "--run", run, "--output", tmp_path / "new.csv")
    assert code == 2 and "exists" in err  # never over a file without --force


@pytest.mark.e2e
def test_the_default_run_reads_at_a_glance_in_tensorboard(capsys, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2

    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--run-dir", run, "--set", "train.epochs=60", "--set", "train.device=cpu",
                           "--quiet")
    assert code == 0, err
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    assert not [t for t in tags["scalars"] if t.startswith("hparam")]
    # one chart holds the training and the validation loss (TensorBoard's custom scalars)
    layout = layout_pb2.Layout.FromString(acc.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    charts = {c.title: c.multiline.tag for cat in layout.category for c in cat.chart}
    overlaid = [t for t, regexes in charts.items()
                if all(any(re.search(r, tag) for r in regexes) for tag in ("train/loss", "val/loss"))]
    assert overlaid and {"train/loss", "val/loss"} <= set(tags["scalars"])
    # weights at the start, at the checkpoint (epoch 50) and at the end; gradients from the first step on
    steps = [e.step for e in acc.Histograms("weights/linear.weight")]
    assert steps[0] == 0 and len(set(steps)) >= 2 and steps[-1] == json.loads((run / "metrics.json").read_text())["steps"]
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "momentum" in text and "hidden" not in text and "betas" not in text


@pytest.mark.e2e
def test_path_reports_each_pass_over_the_penalties(capsys, tmp_path):
    code, out, err = run_cli(capsys, "path", "--n-penalties", "4", "--folds", "2", "--run-dir", tmp_path / "p",
                             "--set", "train.device=cpu")
    assert code == 0, err
    passes = [line for line in err.splitlines() if line.startswith("path: ")]
    assert [line.split(":")[1].strip() for line in passes] == ["training split", "fold 1", "fold 2"]
    assert all("4 penalties fitted" in line for line in passes)


@pytest.mark.slow
def test_the_stop_sentence_names_the_runs_own_patience(capsys, tmp_path):
    code, out, err = run_cli(capsys, "train", "--run-dir", tmp_path / "run", "--set", "train.epochs=400",
                             "--set", "train.patience=3", "--set", "train.device=cpu")
    assert code == 0, err
    assert "validation loss no better for 3 epochs" in out + err
