"""End-to-end tests of every command on CPU, the accuracy targets, the TensorBoard events, and
one clear error (exit 2, no traceback, nothing damaged) for each user mistake."""

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from torch_logreg.app.cli import main

from helpers import expect_error, run_cli

#: the command line end to end: left out of `make test-fast`
pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


def train(capsys, tmp_path, *sets, config="breast_cancer.toml", name="run"):
    run_dir = tmp_path / name
    args = ["train", "--config", CONFIGS / config, "--run-dir", run_dir, "--quiet", "--set", "train.device=cpu"]
    for s in sets:
        args += ["--set", s]
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    return run_dir, out


def snapshot(directory: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One default breast-cancer run shared by the read-only tests."""
    run_dir = tmp_path_factory.mktemp("shared") / "bc"
    assert main(["train", "--run-dir", str(run_dir), "--quiet", "--set", "train.device=cpu"]) == 0
    return run_dir


def test_default_train_writes_a_complete_run(trained):
    names = {p.name for p in trained.iterdir()}
    assert {"config.toml", "checkpoint.pt", "best.pt", "metrics.json"} <= names
    assert any(n.startswith("events.out.tfevents") for n in names)
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.97
    assert {"loss", "accuracy", "auc"} <= set(metrics["test"])
    assert metrics["device"] == "cpu" and metrics["stop_reason"] and metrics["epochs"] >= 1
    assert "wall_time_s" in metrics
    # the reported test metrics are honest: scikit-learn on the saved model and the run's own test split
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    _, model, prep = run_parts(trained)
    assert model.dtype == torch.float32  # the config's dtype, as evaluate uses it
    y = prep.y["test"].numpy()
    with torch.no_grad():
        logits = model.logits(prep.X["test"])[:, 0].double().numpy()
        probs = model(prep.X["test"])[:, 0].double().numpy()
    test = metrics["test"]
    # exact: the same count over the same n (no test logit is near 0: measured min |z| = 0.05)
    assert test["accuracy"] == accuracy_score(y, probs >= 0.5)
    # the run's loss comes from float32 logits, sklearn's from float32 probabilities: measured relative
    # difference 1.2e-7 (float32 epsilon 6e-8 per output), so rel 1e-5
    assert test["loss"] == pytest.approx(log_loss(y, probs), rel=1e-5)
    # AUC is a rank statistic: scored on the logits (float32 probabilities saturate near 1 and tie, the
    # run ranks logits too), both are the same count / (n_pos * n_neg); measured difference 0
    assert test["auc"] == pytest.approx(roc_auc_score(y, logits), rel=1e-12)


def run_parts(run_dir: Path, dtype: torch.dtype | None = None):
    """The run's saved config, its final model and its data splits (the app's own preparation), on the
    CPU in ``dtype`` (default: the run's)."""
    from torch_logreg.app.checkpoint import load_checkpoint
    from torch_logreg.app.config import load_config
    from torch_logreg.app.fitting import prepare
    from torch_logreg.app.runs import model_from_checkpoint
    from torch_logreg.devices import resolve_dtype

    cfg = load_config(run_dir / "config.toml")
    dtype = dtype or resolve_dtype(cfg.train.dtype)
    model = model_from_checkpoint(load_checkpoint(run_dir / "checkpoint.pt"), torch.device("cpu"), dtype)
    return cfg, model, prepare(cfg, torch.device("cpu"), dtype)


# the exact optimum of the same objective: Newton in float64 to a max-abs gradient of 1e-12 (the config's
# l2 and data unchanged; converges in 1-10 iterations on the configs below)
NEWTON = ("train.solver=newton", "train.dtype=float64", "train.tol=1e-12")


def newton_run(capsys, tmp_path, *sets, config="breast_cancer.toml", name="newton"):
    run_dir, out = train(capsys, tmp_path, *sets, *NEWTON, config=config, name=name)
    assert "iterations, stopped: converged" in out
    return run_dir


def assert_near_optimum(run_dir: Path, newton_dir: Path, rel_gap: float):
    """The loop's final training objective ((1/N) sum loss + l2/2 ||W||^2, evaluated in float64) is within
    ``rel_gap`` of the Newton optimum, and never below it. Returns both runs' test metrics and n_test."""
    cfg, model, prep = run_parts(run_dir, torch.float64)
    _, optimum, _ = run_parts(newton_dir, torch.float64)
    X, T = prep.X["train"], prep.T["train"]
    f_loop = model.objective_and_grad(X, T, cfg.train.l2)[0].item()
    f_opt = optimum.objective_and_grad(X, T, cfg.train.l2)[0].item()
    assert f_opt * (1 - 1e-12) <= f_loop <= f_opt * (1 + rel_gap), (f_loop, f_opt)
    tests = [json.loads((d / "metrics.json").read_text())["test"] for d in (run_dir, newton_dir)]
    return tests[0], tests[1], prep.X["test"].shape[0]


def n_correct(accuracy: float, n: int) -> int:
    """Correctly classified samples behind a reported accuracy over ``n`` samples."""
    return round(accuracy * n)


def test_tensorboard_reads_the_events_file(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(trained), size_guidance={"scalars": 0, "histograms": 0, "images": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    for tag in ("train/loss", "val/loss", "train/accuracy", "val/accuracy", "val/auc", "lr", "grad_norm",
                "perf/samples_per_second", "train/batch_objective", "train/objective"):
        assert tag in tags["scalars"], tag
        assert len(acc.Scalars(tag)) >= 2, tag
    steps = [e.step for e in acc.Scalars("train/loss")]
    assert steps == sorted(steps)
    assert any(t.startswith("weights/") for t in tags["histograms"])
    assert any(t.startswith("gradients/") for t in tags["histograms"])
    assert "test/pr_curve" in tags["tensors"] and "config/text_summary" in tags["tensors"]
    assert {"_hparams_/session_start_info", "_hparams_/session_end_info"} <= set(hparams_tags(trained))
    assert {"test/loss", "test/accuracy", "test/auc"} <= set(tags["scalars"])  # the scores at the final step
    assert not [t for t in tags["scalars"] if t.startswith("hparam")]


def hparams_tags(run_dir) -> list[str]:
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator as PluginAccumulator

    acc = PluginAccumulator(str(run_dir))
    acc.Reload()
    return list(acc.PluginTagToContent("hparams"))


def test_evaluate_prints_split_metrics(trained, capsys):
    code, out, _ = run_cli(capsys, "evaluate", "--run", trained, "--json")
    assert code == 0
    metrics = json.loads(out)
    saved = json.loads((trained / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] == pytest.approx(saved["test"]["accuracy"])


def test_predict_applies_the_saved_standardizer(trained, tmp_path, capsys):
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    rows = bunch.data[:25]
    path = tmp_path / "in.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(bunch.feature_names)
        w.writerows(rows)
    out_path = tmp_path / "preds.csv"
    code, out, _ = run_cli(capsys, "predict", "--run", trained, "--input", path, "--output", out_path)
    assert code == 0 and "25 predictions" in out
    with open(out_path) as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == ["p_0", "p_1", "label"]
    probs = np.array([float(r["p_1"]) for r in table])
    assert np.allclose(probs + np.array([float(r["p_0"]) for r in table]), 1.0, atol=1e-6)
    labels = np.array([int(r["label"]) for r in table])
    assert np.array_equal(labels, (probs >= 0.5).astype(int))
    assert (labels == bunch.target[:25]).mean() >= 0.9
    # the same rows through evaluate's path give the same probabilities
    from torch_logreg.app.checkpoint import load_checkpoint
    from torch_logreg.app.data import Standardizer
    from torch_logreg.app.runs import model_from_checkpoint

    payload = load_checkpoint(trained / "checkpoint.pt")
    model = model_from_checkpoint(payload)
    X = Standardizer.from_state_dict(payload["standardizer"]).transform(torch.from_numpy(rows)).float()
    assert np.allclose(model(X)[:, 0].detach().double().numpy(), probs, rtol=1e-6)


def test_gradcheck_command_prints_a_passing_table(capsys):
    code, out, _ = run_cli(capsys, "gradcheck", "--config", CONFIGS / "digits.toml", "--set", "train.device=cpu")
    assert code == 0
    assert "closed_form" in out and "autograd" in out and "finite_difference" in out and "PASS" in out


# rel_gap: the loop's final objective above Newton's, measured 8.8e-4 (digits: early stopping at epoch ~800)
# and 9.1e-6 (donut: 1000 epochs); both test accuracies measured equal to Newton's
@pytest.mark.parametrize("config,threshold,rel_gap", [("digits.toml", 0.96, 1e-2), ("donut_radius.toml", 0.98, 1e-4)])
def test_accuracy_targets(capsys, tmp_path, config, threshold, rel_gap):
    run_dir, _ = train(capsys, tmp_path, config=config)
    loop, exact, n_test = assert_near_optimum(run_dir, newton_run(capsys, tmp_path, config=config), rel_gap)
    assert loop["accuracy"] >= threshold
    # within two of the n_test samples of the exact optimum's test accuracy
    assert abs(n_correct(loop["accuracy"], n_test) - n_correct(exact["accuracy"], n_test)) <= 2


def test_donut_without_radius_stays_near_chance(capsys, tmp_path):
    run_dir, _ = train(capsys, tmp_path, config="donut.toml")
    assert json.loads((run_dir / "metrics.json").read_text())["test"]["accuracy"] < 0.7


def test_digits_run_logs_weight_images_and_2d_run_logs_probability_map(capsys, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for config, tag in (("digits.toml", "weights"), ("donut_radius.toml", "probability_map")):
        run_dir, _ = train(capsys, tmp_path, "train.epochs=20", config=config, name=config)
        acc = EventAccumulator(str(run_dir), size_guidance={"images": 0})
        acc.Reload()
        assert any(t.startswith(tag) for t in acc.Tags()["images"]), acc.Tags()["images"]


def test_multilabel_and_linear_kinds_train(capsys, tmp_path):
    from sklearn.metrics import r2_score

    from torch_logreg.models import LogisticRegression
    from torch_logreg.solvers import fit_exact

    # multilabel (one sigmoid per digit class). lr 0.3 and 500 epochs: the loop's final objective is measured
    # 3.4e-4 above Newton's (lr 0.1 and 50 epochs left it 45 % above, 3 test samples off), hence 5e-3
    sets = ("model.kind=multilabel", "train.lr=0.3", "train.epochs=500")
    run_dir, _ = train(capsys, tmp_path, *sets, config="digits.toml", name="ml")
    newton_dir = newton_run(capsys, tmp_path, *sets, config="digits.toml", name="ml-newton")
    loop, exact, n_test = assert_near_optimum(run_dir, newton_dir, 5e-3)
    assert loop["accuracy"] > 0.8
    assert abs(n_correct(loop["accuracy"], n_test) - n_correct(exact["accuracy"], n_test)) <= 2  # measured 0
    # the objective separates over the outputs: each row of the Newton run's weights is a binary fit of its
    # class. Measured max difference 1.5e-10 (|W| <= 1.7); with both solves stopped at a max-abs gradient of
    # 1e-10 instead it was 1.3e-8, as a gradient g leaves the weights up to g / l2 = 3e-8 away
    cfg, model, prep = run_parts(newton_dir)
    assert model.dtype == torch.float64 and model.n_outputs == 10
    rows, biases = [], []
    for k in range(model.n_outputs):
        ref = LogisticRegression(model.n_features).double()
        fit_exact(ref, prep.X["train"], prep.T["train"][:, k], solver="newton", l2=cfg.train.l2, tol=1e-12)
        rows.append(ref.linear.weight.detach()[0])
        biases.append(ref.linear.bias.detach()[0])
    assert torch.allclose(model.linear.weight.detach(), torch.stack(rows), rtol=1e-7, atol=1e-7)
    assert torch.allclose(model.linear.bias.detach(), torch.stack(biases), rtol=1e-7, atol=1e-7)

    # linear regression on the 0/1 breast-cancer target. The features are collinear (Hessian eigenvalues
    # 1.4e-4 .. 13.7): lr 0.05 (lr * L = 0.69) without early stopping for 1000 epochs leaves the objective
    # measured 7.4e-4 above Newton's (lr 0.1 oscillated and early-stopped at r2 = -1.0), hence 1e-2
    sets = ("model.kind=linear", "train.lr=0.05", "train.patience=0")
    run_dir, _ = train(capsys, tmp_path, *sets, name="lin")
    newton_dir = newton_run(capsys, tmp_path, *sets, name="lin-newton")
    loop, exact, _ = assert_near_optimum(run_dir, newton_dir, 1e-2)
    assert loop["r2"] == pytest.approx(exact["r2"], abs=0.02)  # measured 0.6034 vs 0.6051
    # Newton's weights solve the ridge least-squares problem (1/2N)||X w + b - t||^2 + (l2/2)||w||^2 (no bias
    # penalty): lstsq on X with a bias column, stacked on sqrt(N l2) [I 0] rows. Measured max relative
    # difference 4.5e-12 (the augmented matrix's condition number is 110)
    cfg, model, prep = run_parts(newton_dir)
    X, t = prep.X["train"].numpy(), prep.T["train"][:, 0].numpy()
    n, d = X.shape
    A = np.vstack([np.hstack([X, np.ones((n, 1))]), np.sqrt(n * cfg.train.l2) * np.eye(d, d + 1)])
    theta = np.linalg.lstsq(A, np.concatenate([t, np.zeros(d)]), rcond=None)[0]
    np.testing.assert_allclose(model.linear.weight.detach()[0].numpy(), theta[:d], rtol=1e-8)
    np.testing.assert_allclose(model.linear.bias.detach().numpy(), theta[d:], rtol=1e-8)
    # and its reported test r2 is scikit-learn's on its predictions (measured difference 8e-15)
    with torch.no_grad():
        predictions = model(prep.X["test"])[:, 0].numpy()
    assert exact["r2"] == pytest.approx(r2_score(prep.T["test"][:, 0].numpy(), predictions), rel=1e-12)


def test_runs_are_never_overwritten(capsys, tmp_path, trained):
    before = snapshot(trained)
    code, _, err = run_cli(capsys, "train", "--run-dir", trained, "--quiet")
    assert code == 2 and "already exists" in err
    assert snapshot(trained) == before
    # without --run-dir, each run gets a new directory under log.dir
    for _ in range(2):
        assert run_cli(capsys, "train", "--quiet", "--set", f"log.dir={tmp_path / 'runs'}", "--set", "train.epochs=2",
                       "--set", "train.device=cpu")[0] == 0
    assert len(list((tmp_path / "runs").iterdir())) == 2


def test_help_states_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "default" in out and "breast_cancer.toml" in out


# --- resume ---------------------------------------------------------------------------------


def _weights(run_dir: Path) -> dict:
    from torch_logreg.app.checkpoint import load_checkpoint

    return load_checkpoint(run_dir / "checkpoint.pt")["model"]


RESUME_SETS = ["train.epochs=250", "train.batch_size=32", "train.patience=0", "train.tol=0",
               "train.solver=momentum", "train.lr=0.01", "log.checkpoint_every=1", "train.device=cpu",
               "train.dtype=float64"]


def _cmd(*args):
    return [sys.executable, "-m", "torch_logreg.app.cli", *map(str, args)]


def _train_cmd(run_dir, *extra):
    cmd = _cmd("train", "--run-dir", run_dir, "--quiet")
    for s in (*RESUME_SETS, *extra):
        cmd += ["--set", s]
    return cmd


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra,epochs",
    [((), 250), (("train.batch_size=0", "train.epochs=600"), 600),  # mini-batch; full batch (fast path)
     # an MLP on XOR, a checkpoint every third epoch (the kill still lands between two of them)
     (("data.name=xor", "model.kind=mlp", "model.hidden=[8]", "train.epochs=150", "log.checkpoint_every=3"), 150),
     (("train.solver=adam", "train.schedule=cosine", "train.warmup_epochs=20"), 250)],  # moments, step count, schedule
    ids=["minibatch", "fullbatch", "mlp", "adam"],
)
def test_sigkill_then_resume_is_bit_identical(tmp_path, extra, epochs):
    import time

    env = {**os.environ, "PYTHONHASHSEED": "0"}
    reference = tmp_path / "reference"  # the uninterrupted run, alongside the one to be killed
    whole = subprocess.Popen(_train_cmd(reference, *extra), env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(run_dir, *extra), env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    start = time.time()
    while not (run_dir / "checkpoint.pt").exists():
        assert proc.poll() is None and time.time() - start < 120, "run ended before its first checkpoint"
        time.sleep(0.01)
    time.sleep(float(np.random.default_rng(len(extra)).uniform(0.2, 1.0)))
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    proc.kill()
    proc.wait()
    _, err = whole.communicate(timeout=600)
    assert whole.returncode == 0, err
    result = subprocess.run(_cmd("resume", "--run", run_dir, "--quiet"), env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    ref, got = _weights(reference), _weights(run_dir)
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == epochs


@pytest.mark.slow
@pytest.mark.parametrize("signame,status", [("SIGINT", 130), ("SIGTERM", 143)])
def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(tmp_path, signame, status):
    """Ctrl-C, and SIGTERM (what kill and job schedulers send), stop at the end of the epoch, save,
    flush TensorBoard and exit with 128 + the signal's number."""
    import signal
    import time

    run_dir = tmp_path / "interrupted"
    proc = subprocess.Popen(_train_cmd(run_dir), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not (run_dir / "checkpoint.pt").exists():
        assert proc.poll() is None
        time.sleep(0.01)
    time.sleep(0.3)
    proc.send_signal(getattr(signal, signame))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == status, err
    assert "Traceback" not in err and "torch-logreg resume --run" in err
    assert not (run_dir / "metrics.json").exists()
    events = [p for p in run_dir.iterdir() if p.name.startswith("events")]
    assert events and events[0].stat().st_size > 0
    result = subprocess.run(_cmd("resume", "--run", run_dir, "--quiet"), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 250
    again = subprocess.run(_cmd("resume", "--run", run_dir), cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 2 and "already finished" in again.stderr


# --- bad input --------------------------------------------------------------------------------


def csv_train(capsys, tmp_path, text, *sets, target="label"):
    path = tmp_path / "data.csv"
    path.write_text(text)
    return ("train", "--quiet", "--run-dir", tmp_path / "r", "--set", f"data.path={path}",
            "--set", f"data.target={target}", "--set", "train.device=cpu", *sum((["--set", s] for s in sets), []))


GOOD_CSV = "a,b,label\n" + "".join(f"{i % 7},{(i * 3) % 5},{i % 2}\n" for i in range(40))


@pytest.mark.parametrize(
    "text,message",
    [
        ("", "is empty"),
        ("a,b,label\n1,2,0\n1,2\n", "line 3: expected 3 columns"),
        ("a,b,label\n1,abc,0\n", "line 2, column 'b': 'abc' is not a number"),
        ("a,b,label\n1,,0\n", "line 2, column 'b': empty cell"),
        ("a,b,label\n1,inf,0\n", "line 2, column 'b': 'inf' is not a finite number"),
        ("a,b,y\n1,2,0\n", "target column 'label' is not in the header"),
        ("a,b,label\n" + "".join(f"{i},{i},{i % 3}\n" for i in range(30)), "3 classes but model.kind = 'logistic' is binary"),
        ("a,b,label\n" + "".join(f"{i},{i},1\n" for i in range(30)), "only one class"),
    ],
)
def test_bad_csv(capsys, tmp_path, text, message):
    expect_error(capsys, message, *csv_train(capsys, tmp_path, text))
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_missing_data_file(capsys, tmp_path):
    expect_error(capsys, "does not exist", "train", "--quiet", "--set", f"data.path={tmp_path / 'nope.csv'}",
                 "--set", "data.target=y", "--set", f"log.dir={tmp_path}")


def test_unreadable_data_file(capsys, tmp_path):
    path = tmp_path / "bin.csv"
    path.write_bytes(b"\xff\xfe\x00\x81garbage")
    expect_error(capsys, "line 1: byte 0xff is not UTF-8 text", "train", "--quiet", "--set", f"data.path={path}",
                 "--set", "data.target=y", "--set", f"log.dir={tmp_path}")


def test_constant_feature_is_fine(capsys, tmp_path):
    text = "a,const,label\n" + "".join(f"{i % 7},3.5,{(i % 7) > 3:d}\n" for i in range(60))
    code, out, err = run_cli(capsys, *csv_train(capsys, tmp_path, text, "train.epochs=50"))
    assert code == 0, err
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert all(np.isfinite(v) for v in metrics["train"].values())


@pytest.mark.parametrize(
    "args,message",
    [
        (["--set", "train.lrr=0.1"], "did you mean 'lr'"),
        (["--set", "train.lr=-1"], "train.lr must be a finite number > 0, got -1"),
        (["--set", "train.epochs=ten"], "train.epochs must be an integer"),
        (["--config", "/nonexistent/c.toml"], "does not exist"),
    ],
)
def test_bad_config(capsys, tmp_path, args, message):
    expect_error(capsys, message, "train", "--quiet", "--set", f"log.dir={tmp_path}", *args)
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_that_is_not_there(capsys, tmp_path):
    expect_error(capsys, "no CUDA GPU is available", "train", "--quiet", "--device", "cuda:1", "--set", f"log.dir={tmp_path}")


def test_diverging_learning_rate_keeps_last_good_checkpoint(capsys, tmp_path):
    run_dir = tmp_path / "div"
    line = expect_error(capsys, "smaller learning rate", "train", "--quiet", "--run-dir", run_dir, "--set", "model.kind=linear",
                        "--set", "train.lr=50", "--set", "train.solver=gd", "--set", "log.checkpoint_every=1",
                        "--set", "train.device=cpu", "--set", "data.standardize=false")
    assert "checkpoint.pt" in line
    from torch_logreg.app.checkpoint import load_checkpoint

    payload = load_checkpoint(run_dir / "checkpoint.pt")
    assert all(torch.isfinite(v).all() for v in payload["model"].values())


@pytest.mark.parametrize("damage", ["truncated", "garbage", "foreign", "empty"])
def test_damaged_checkpoint(capsys, tmp_path, trained, damage):
    run_dir = tmp_path / "copy"
    run_dir.mkdir()
    for p in trained.iterdir():
        (run_dir / p.name).write_bytes(p.read_bytes())
    ckpt = run_dir / "checkpoint.pt"
    if damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    elif damage == "garbage":
        ckpt.write_bytes(b"not a checkpoint at all" * 10)
    elif damage == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, ckpt)
    else:
        ckpt.write_bytes(b"")
    before = snapshot(run_dir)
    for cmd in (["evaluate", "--run", run_dir], ["resume", "--run", run_dir],
                ["predict", "--run", run_dir, "--input", "x.csv", "--output", tmp_path / "o.csv"]):
        expect_error(capsys, "checkpoint", *cmd)
    assert snapshot(run_dir) == before


def test_predict_input_with_other_columns(capsys, tmp_path, trained):
    path = tmp_path / "in.csv"
    path.write_text("foo,bar\n1,2\n")
    expect_error(capsys, "column 'foo' was not used in training", "predict", "--run", trained, "--input", path,
                 "--output", tmp_path / "o.csv")
    path.write_text("mean radius\n1\n")
    expect_error(capsys, "column 'mean texture' used in training is missing", "predict", "--run", trained,
                 "--input", path, "--output", tmp_path / "o.csv")
    assert not (tmp_path / "o.csv").exists()


def test_predict_refuses_non_finite_and_damaged_numpy_inputs(capsys, tmp_path, trained):
    """NaN or infinity used to come out as rows like "nan,0"; a truncated .npz as a traceback."""
    X = np.random.default_rng(0).normal(size=(4, 30))
    X[2, 5] = np.nan
    np.save(tmp_path / "x.npy", X)
    expect_error(capsys, "x.npy: row 2, column 5: nan is not a finite number", "predict", "--run", trained,
                 "--input", tmp_path / "x.npy", "--output", tmp_path / "o.csv")
    X[2, 5] = np.inf
    np.savez(tmp_path / "x.npz", X=X)
    expect_error(capsys, "x.npz: row 2, column 5: inf is not a finite number", "predict", "--run", trained,
                 "--input", tmp_path / "x.npz", "--output", tmp_path / "o.csv")
    data = (tmp_path / "x.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    expect_error(capsys, "cut.npz is not a readable NumPy file", "predict", "--run", trained,
                 "--input", tmp_path / "cut.npz", "--output", tmp_path / "o.csv")
    assert not (tmp_path / "o.csv").exists()


def test_predict_output_never_replaces_what_it_should_not(capsys, tmp_path, trained):
    """--output used to replace whatever was at the path through a rename: the input itself, the
    run's checkpoint, a symlink, a device node. Now only a regular file, and only with --force."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    inp = tmp_path / "in.csv"
    inp.write_text(",".join(bunch.feature_names) + "\n" + ",".join(map(str, bunch.data[0])) + "\n")
    before = inp.read_text()
    args = ["predict", "--run", trained, "--input", inp, "--output"]
    expect_error(capsys, "it is this command's input", *args, inp, "--force")
    expect_error(capsys, "is a file of the run", *args, trained / "checkpoint.pt", "--force")
    (tmp_path / "link.csv").symlink_to(tmp_path / "target.csv")
    expect_error(capsys, "is a symbolic link", *args, tmp_path / "link.csv", "--force")
    expect_error(capsys, "is not a regular file", *args, "/dev/null", "--force")
    (tmp_path / "old.csv").write_text("keep me\n")
    expect_error(capsys, "old.csv exists; pass --force to replace it", *args, tmp_path / "old.csv")
    assert (tmp_path / "old.csv").read_text() == "keep me\n" and inp.read_text() == before
    assert not (tmp_path / "target.csv").exists()
    code, out, err = run_cli(capsys, *args, tmp_path / "old.csv", "--force")
    assert code == 0 and (tmp_path / "old.csv").read_text().startswith("p_0,p_1,label"), err


def test_missing_run_directory(capsys, tmp_path):
    expect_error(capsys, "does not exist", "evaluate", "--run", tmp_path / "nothing")


def test_ecommerce_style_csv_with_categorical_column(capsys, tmp_path):
    rng = np.random.default_rng(0)
    lines = ["is_mobile,n_products_viewed,visit_duration,is_returning_visitor,time_of_day,user_action"]
    for _ in range(300):
        mobile, viewed, dur = rng.integers(0, 2), rng.integers(0, 6), rng.exponential(2)
        ret, tod = rng.integers(0, 2), rng.integers(0, 4)
        action = int(rng.random() < 1 / (1 + np.exp(-(dur - 2 + 0.5 * viewed - 1.0 * (tod == 3)))))
        lines.append(f"{mobile},{viewed},{dur:.4f},{ret},{tod},{action if rng.random() > 0.2 else 2 + action}")
    path = tmp_path / "shop.csv"
    path.write_text("\n".join(lines) + "\n")
    run_dir = tmp_path / "shop"
    code, out, err = run_cli(capsys, "train", "--config", CONFIGS / "ecommerce_csv.toml", "--run-dir", run_dir, "--quiet",
                             "--set", f"data.path={path}", "--set", "train.device=cpu")
    assert code == 0, err
    payload_schema = json.loads(json.dumps(__import__("torch_logreg.app.checkpoint", fromlist=["x"]).load_checkpoint(
        run_dir / "checkpoint.pt")["schema"]))
    assert payload_schema["categorical"] == {"time_of_day": ["0", "1", "2", "3"]}
    pred_in = tmp_path / "new.csv"
    pred_in.write_text(lines[0].rsplit(",", 1)[0] + "\n1,3,2.5,0,3\n0,0,0.1,1,1\n")
    assert run_cli(capsys, "predict", "--run", run_dir, "--input", pred_in, "--output", tmp_path / "p.csv")[0] == 0
    pred_in.write_text(lines[0].rsplit(",", 1)[0] + "\n1,3,2.5,0,7\n")
    expect_error(capsys, "category '7' was not seen in training", "predict", "--run", run_dir, "--input", pred_in,
                 "--output", tmp_path / "p.csv", "--force")


# --- exact solvers and cross-validation from the command line ---------------------------------


def test_newton_from_the_config_matches_lbfgs(capsys, tmp_path):
    from torch_logreg.app.checkpoint import load_checkpoint

    weights = {}
    for solver in ("newton", "lbfgs"):
        run_dir, out = train(capsys, tmp_path, f"train.solver={solver}", "train.l2=0.01", "train.dtype=float64",
                             "train.tol=1e-10", "train.epochs=500", name=solver)
        assert "iterations, stopped: converged" in out
        weights[solver] = load_checkpoint(run_dir / "checkpoint.pt")["model"]["linear.weight"]
    assert torch.allclose(weights["newton"], weights["lbfgs"], rtol=1e-7, atol=1e-9)


def test_exact_solver_warns_at_its_iteration_limit(capsys, tmp_path):
    code, out, err = run_cli(capsys, "train", "--quiet", "--run-dir", tmp_path / "r", "--set", "train.solver=newton",
                             "--set", "train.epochs=2", "--set", "train.tol=1e-12", "--set", "train.device=cpu")
    assert code == 0
    assert "torch-logreg: warning: newton: did not converge in 2 iterations" in err


def test_l1_needs_newton(capsys, tmp_path):
    expect_error(capsys, "train.l1 = 0.1 needs train.solver in ['newton'", "train", "--quiet", "--set", "train.l1=0.1",
                 "--set", "train.solver=lbfgs", "--set", f"log.dir={tmp_path}")


def test_cv_command_ranks_the_grid_and_logs_hparams(capsys, tmp_path):
    code, out, err = run_cli(capsys, "cv", "--quiet", "--grid", "train.l2=0,0.01,1", "--folds", "3", "--run-dir",
                             tmp_path / "cv", "--set", "train.solver=newton", "--set", "train.dtype=float64",
                             "--set", "train.device=cpu")
    assert code == 0, err
    assert "rank" in out and "mean_loss" in out
    result = json.loads((tmp_path / "cv" / "results.json").read_text())
    rows = result["rows"]
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert [r["mean_loss"] for r in rows] == sorted(r["mean_loss"] for r in rows)
    assert rows[0]["train.l2"] == 0.01  # neither unpenalised nor heavily penalised wins
    trials = sorted((tmp_path / "cv").glob("trial-*"))
    assert len(trials) == 3
    assert "_hparams_/session_start_info" in hparams_tags(trials[0])
    expect_error(capsys, "--grid expects KEY=V1,V2", "cv", "--grid", "train.l2")


def test_cv_early_stopping_reads_a_validation_part_of_each_fold(capsys, tmp_path, monkeypatch):
    """With patience, each fold's fit holds out a validation part of the fold's training rows (the
    config's val share of the non-test rows), as train does; without it, the whole fold trains."""
    from torch_logreg.app import cv, fitting

    seen = []
    real_fit = fitting.fit

    def spy(cfg, model, X, T, *, X_val=None, T_val=None, **options):
        seen.append((cfg.train.patience, X.shape[0], None if X_val is None else X_val.shape[0]))
        return real_fit(cfg, model, X, T, X_val=X_val, T_val=T_val, **options)

    monkeypatch.setattr(cv, "fit", spy)
    code, _, err = run_cli(capsys, "cv", "--quiet", "--grid", "train.patience=0,5", "--folds", "3", "--run-dir",
                           tmp_path / "cv", "--set", "train.epochs=30", "--set", "train.device=cpu")
    assert code == 0, err
    # breast cancer: 569 rows, 20% test, 20% validation -> a pool of 455, folds of ~303 training rows
    without, with_val = seen[:3], seen[3:]
    assert all(p == 0 and v is None for p, _, v in without)
    share = 0.2 / 0.8
    for (_, n_whole, _), (p, n_fit, n_val) in zip(without, with_val):
        assert p == 5 and n_fit + n_val == n_whole and abs(n_val - share * n_whole) <= 1


def test_a_run_saved_by_version_0_1_0_still_loads(capsys, tmp_path):
    """tests/data/run_0_1_0: a breast-cancer run saved by release 0.1.0 after 3 of 6 epochs
    (its History has no train_objective). evaluate reproduces the metrics that release wrote;
    resume finishes the run."""
    import shutil

    run_dir = tmp_path / "old"
    shutil.copytree(Path(__file__).parent / "data" / "run_0_1_0", run_dir)
    saved = json.loads((run_dir / "metrics.json").read_text())
    code, out, err = run_cli(capsys, "evaluate", "--run", run_dir)
    assert code == 0, err
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line[:1].strip()}  # the summary's rows
    assert rows["split"][1] == "loss"
    for split in ("train", "val", "test"):
        # the same float32 model on the same split; summation order may differ on another CPU
        assert rows[split][1] == f"{saved[split]['loss']:.4f}"
    code, out, err = run_cli(capsys, "resume", "--run", run_dir, "--quiet")
    assert code == 0, err
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 6 and metrics["stop_reason"] == "max_epochs"
    assert metrics["train"]["loss"] < saved["train"]["loss"]


def test_cv_records_a_diverged_combination_and_writes_strict_json(capsys, tmp_path):
    def strict(text):  # JSON has no NaN or Infinity: a strict reader refuses them
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON output"))

    code, out, err = run_cli(capsys, "cv", "--quiet", "--grid", "train.lr=0.1,1e6", "--folds", "2", "--run-dir",
                             tmp_path / "cv", "--set", "train.epochs=50", "--set", "train.device=cpu")
    assert code == 0, err
    rows = strict((tmp_path / "cv" / "results.json").read_text())["rows"]
    by_lr = {r["train.lr"]: r for r in rows}
    assert by_lr[1e6]["mean_diverged"] == 1.0 and by_lr[1e6]["mean_loss"] is None and by_lr[1e6]["rank"] == 2
    assert by_lr[0.1]["mean_diverged"] == 0.0 and by_lr[0.1]["mean_loss"] > 0 and by_lr[0.1]["rank"] == 1


def test_progress_bar_on_a_terminal_and_lines_otherwise():
    import io

    import torch_logreg as tl
    from torch_logreg.app.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    X, y = torch.randn(50, 3), torch.randint(0, 2, (50,))
    term, pipe = Terminal(), io.StringIO()
    tl.fit(tl.LogisticRegression(3), X, y, epochs=20, tol=0, device="cpu", callbacks=[Progress(20, stream=term)])
    tl.fit(tl.LogisticRegression(3), X, y, epochs=20, tol=0, device="cpu", callbacks=[Progress(20, stream=pipe)])
    assert "20/20" in term.getvalue() and "epoch/s" in term.getvalue() and "loss=" in term.getvalue()
    lines = pipe.getvalue().splitlines()
    assert lines[0].startswith("epoch 1/20  objective") and lines[-2].startswith("epoch 20/20  objective")
    assert all(" loss " in line for line in lines[:-1])
    assert lines[-1] == "reached the epoch limit 20/20 (resume --set train.epochs=N goes on)"
    assert term.getvalue().rstrip().endswith("reached the epoch limit 20/20 (resume --set train.epochs=N goes on)")
    assert "\r" not in pipe.getvalue()


def test_periodic_gradient_check_is_logged(capsys, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = train(capsys, tmp_path, "train.grad_check_every=5", "train.epochs=30", "train.patience=0",
                       "log.every=5", "train.dtype=float64")
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    errors = [e.value for e in acc.Scalars("gradcheck/max_rel_error")]
    assert len(errors) >= 5 and max(errors) < 1e-6
    assert json.loads((run_dir / "metrics.json").read_text())["grad_check_max_rel_error"] < 1e-6


def test_cuda_graph_needs_cuda_and_full_batch(capsys, tmp_path):
    runs = f"log.dir={tmp_path / 'runs'}"
    expect_error(capsys, "train.cuda_graph = true needs a CUDA device", "train", "--quiet", "--set", runs,
                 "--set", "train.cuda_graph=true", "--set", "train.device=cpu")
    if torch.cuda.is_available():
        expect_error(capsys, "needs full-batch training", "train", "--quiet", "--set", runs,
                     "--set", "train.cuda_graph=true", "--set", "train.device=cuda", "--set", "train.batch_size=32")
    expect_error(capsys, "train.cuda_graph = true needs a CUDA device", "cv", "--quiet", "--grid", "train.l2=0,0.1",
                 "--folds", "2", "--run-dir", tmp_path / "cv", "--set", "train.cuda_graph=true",
                 "--set", "train.device=cpu")
    assert not (tmp_path / "cv").exists()
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_directory(capsys, tmp_path):
    """Divergence in the first epochs used to leave a directory with a config and no checkpoint,
    which resume could not use. Now the directory is removed, and the message says so."""
    line = expect_error(capsys, "training diverged", "train", "--quiet", "--run-dir", tmp_path / "r",
                        "--set", "train.lr=1e6", "--set", "log.checkpoint_every=1000", "--set", "train.device=cpu")
    assert "run directory" in line and "so it was removed" in line
    assert not (tmp_path / "r").exists()
    (tmp_path / "empty").mkdir()  # a directory the user made is kept, empty as it was
    expect_error(capsys, "what this run wrote in it was removed", "train", "--quiet", "--run-dir", tmp_path / "empty",
                 "--set", "train.lr=1e6", "--set", "log.checkpoint_every=1000", "--set", "train.device=cpu")
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())


def test_a_run_directory_that_cannot_be_made_is_one_sentence(capsys, tmp_path):
    (tmp_path / "afile").write_text("")
    expect_error(capsys, f"{tmp_path / 'afile'} is a file, not a directory", "train", "--quiet", "--run-dir",
                 tmp_path / "afile" / "run", "--set", "train.epochs=2", "--set", "train.device=cpu")
    expect_error(capsys, f"{tmp_path / 'afile'} is a file, not a directory", "train", "--quiet",
                 "--set", f"log.dir={tmp_path / 'afile'}", "--set", "train.epochs=2", "--set", "train.device=cpu")
    expect_error(capsys, "data.path is empty; leave it out to use data.name", "train", "--quiet",
                 "--set", "data.path=", "--set", f"log.dir={tmp_path}")


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda p: p.pop("standardizer"), "'standardizer'"),
        (lambda p: p["standardizer"].update(scale=torch.zeros(30, dtype=torch.float64)), "scale that is not positive"),
        (lambda p: p["standardizer"].update(mean=torch.zeros(3, dtype=torch.float64)), "not two vectors of one length"),
        (lambda p: p["schema"].pop("columns"), "'columns'"),
        (lambda p: p.update(classes=[0, 1]), "class names are not a list of strings"),
        (lambda p: p["rng"].update(torch=torch.zeros(3)), "random-number state is not a byte tensor"),
        (lambda p: p["trainer"].pop("history"), "'history'"),
    ],
)
def test_a_checkpoint_with_a_damaged_part_is_named_before_any_work(capsys, tmp_path, damage, message):
    """The format marker alone used to let a checkpoint through, to fail later in a traceback."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(Path(__file__).parent / "data" / "run_0_1_0", run_dir)
    payload = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    damage(payload)
    torch.save(payload, run_dir / "checkpoint.pt")
    before = (run_dir / "checkpoint.pt").read_bytes()
    for cmd in (["evaluate", "--run", run_dir], ["resume", "--run", run_dir, "--quiet"],
                ["export", "--run", run_dir, "--format", "state_dict", "--output", tmp_path / "m.pt"]):
        line = expect_error(capsys, "is incomplete or from another program", *cmd)
        assert message in line
    assert (run_dir / "checkpoint.pt").read_bytes() == before


@pytest.mark.parametrize("key", ["model.kind=logistic,softmax", "data.path=a.csv,b.csv", "data.val_fraction=0.1,0.2"])
def test_cv_refuses_a_grid_it_would_ignore(capsys, tmp_path, key):
    """These values are read once, before the folds: every row used to come out the same."""
    expect_error(capsys, "cv compares training settings on one data set", "cv", "--grid", key, "--run-dir",
                 tmp_path / "cv")
    assert not (tmp_path / "cv").exists()


def test_resume_refuses_an_edited_config(capsys, tmp_path):
    """resume used to ignore an edited config.toml, which then no longer described the run."""
    import shutil

    run_dir = tmp_path / "old"
    shutil.copytree(Path(__file__).parent / "data" / "run_0_1_0", run_dir)
    text = (run_dir / "config.toml").read_text()
    (run_dir / "config.toml").write_text(text.replace("lr = 0.1\n", "lr = 0.25\n"))
    before = (run_dir / "checkpoint.pt").read_bytes()
    expect_error(capsys, "config.toml was edited after the run started (train.lr)", "resume", "--run", run_dir)
    assert (run_dir / "checkpoint.pt").read_bytes() == before
    (run_dir / "config.toml").write_text(text)
    assert run_cli(capsys, "resume", "--run", run_dir, "--quiet")[0] == 0
