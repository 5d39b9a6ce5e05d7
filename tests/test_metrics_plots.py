"""The metrics a run reports (checked against scikit-learn on the same predictions), the pictures it
logs to TensorBoard (confusion matrix, reliability diagram, probability map during training, weight
images) and its HPARAMS session, read back as TensorBoard reads them."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
)

import torch_logreg as tl
from torch_logreg.app import metrics as metrics_lib
from torch_logreg.app.cli import main

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _model_with_random_weights(model, seed: int):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return model


def _data(n: int, d: int, k: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen, dtype=torch.float64), torch.randint(0, k, (n,), generator=gen)


def _expect_per_class(m: dict, y, pred, names):
    p, r, f, _ = precision_recall_fscore_support(y, pred, labels=list(range(len(names))), zero_division=0)
    for i, name in enumerate(names):
        assert m[f"precision[{name}]"] == pytest.approx(p[i], abs=1e-12)
        assert m[f"recall[{name}]"] == pytest.approx(r[i], abs=1e-12)
        assert m[f"f1[{name}]"] == pytest.approx(f[i], abs=1e-12)
    p, r, f, _ = precision_recall_fscore_support(y, pred, average="macro", zero_division=0)
    assert (m["precision_macro"], m["recall_macro"], m["f1_macro"]) == pytest.approx((p, r, f), abs=1e-12)


def test_binary_metrics_match_scikit_learn():
    X, y = _data(300, 4, 2, seed=1)
    model = _model_with_random_weights(tl.LogisticRegression(4).double(), seed=2)
    m = metrics_lib.evaluate(model, X, model.targets(y, len(y)), classes=["benign", "malignant"])
    with torch.no_grad():
        z = model.logits(X)[:, 0].numpy()
    p, y = 1 / (1 + np.exp(-z)), y.numpy()
    assert m["accuracy"] == accuracy_score(y, z >= 0)
    assert m["auc"] == pytest.approx(roc_auc_score(y, p), rel=1e-12)
    assert m["log_loss"] == pytest.approx(log_loss(y, p), rel=1e-9)
    assert m["loss"] == pytest.approx(m["log_loss"], rel=1e-9)  # the model's mean NLL is the same log-loss
    assert m["brier"] == pytest.approx(brier_score_loss(y, p), rel=1e-12)
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2), rel=1e-12)
    _expect_per_class(m, y, (z >= 0).astype(int), ["benign", "malignant"])
    assert all(isinstance(v, float) and np.isfinite(v) for v in m.values())  # flat scalars, as the CLI prints them
    # the cheap metrics logged during training are the same numbers
    quick = metrics_lib.training_metrics(model, X, model.targets(torch.from_numpy(y), len(y)))
    assert quick["accuracy"] == m["accuracy"] and quick["auc"] == pytest.approx(m["auc"], rel=1e-12)


def test_k_class_metrics_match_scikit_learn():
    names = ["setosa", "versicolor", "virginica"]
    X, y = _data(400, 5, 3, seed=3)
    model = _model_with_random_weights(tl.SoftmaxRegression(5, 3).double(), seed=4)
    m = metrics_lib.evaluate(model, X, model.targets(y, len(y)), classes=names)
    with torch.no_grad():
        P = torch.softmax(model.logits(X), dim=1).numpy()
    y = y.numpy()
    assert m["accuracy"] == accuracy_score(y, P.argmax(axis=1))
    assert m["auc"] == pytest.approx(roc_auc_score(y, P, multi_class="ovr", average="macro"), rel=1e-12)
    assert m["log_loss"] == pytest.approx(log_loss(y, P), rel=1e-9)
    assert m["brier"] == pytest.approx(brier_score_loss(y, P, labels=[0, 1, 2]), rel=1e-12)  # sum over classes
    _expect_per_class(m, y, P.argmax(axis=1), names)
    # without labels (as cv scores its folds): the summary only
    assert not any("[" in k for k in metrics_lib.evaluate(model, X, model.targets(torch.from_numpy(y), len(y))))


def test_one_sigmoid_per_class_and_a_missing_class():
    """One sigmoid per class: log-loss and Brier on the probabilities normalised over the classes,
    AUC on each class's own sigmoid. A class absent from the split scores 0 (never NaN) and is left
    out of the AUC."""
    X, y = _data(200, 3, 3, seed=5)
    y[y == 2] = 1  # class 2 never occurs
    model = _model_with_random_weights(tl.LogisticRegression(3, n_outputs=3).double(), seed=6)
    m = metrics_lib.evaluate(model, X, model.targets(torch.nn.functional.one_hot(y, 3), len(y)), classes=["a", "b", "c"])
    with torch.no_grad():
        S = torch.sigmoid(model.logits(X)).numpy()
    P, y = S / S.sum(axis=1, keepdims=True), y.numpy()
    assert m["log_loss"] == pytest.approx(log_loss(y, P, labels=[0, 1, 2]), rel=1e-9)
    assert m["brier"] == pytest.approx(brier_score_loss(y, P, labels=[0, 1, 2]), rel=1e-12)
    assert m["auc"] == pytest.approx(roc_auc_score(np.eye(3)[y][:, :2], S[:, :2], average="macro"), rel=1e-12)
    assert m["recall[c]"] == 0.0 and all(np.isfinite(v) for v in m.values())


def _train(tmp_path, name: str, *sets: str, config: str = "xor.toml") -> Path:
    run_dir = tmp_path / name
    args = ["train", "--config", str(CONFIGS / config), "--run-dir", str(run_dir), "--quiet", "--set", "train.device=cpu"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    return run_dir


def _images(run_dir: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return {tag: acc.Images(tag) for tag in acc.Tags()["images"]}


@pytest.fixture(scope="module")
def xor_run(tmp_path_factory):
    """A short XOR run (2-D data, a linear model that cannot separate it) in a log directory of its own."""
    logs = tmp_path_factory.mktemp("logs")
    return _train(logs, "xor", "data.n_samples=200", "train.epochs=20", "train.patience=0", "log.checkpoint_every=5")


def test_a_2d_run_logs_its_pictures(xor_run, capsys):
    images = _images(xor_run)
    for tag in ("test/confusion_matrix", "test/reliability", "probability_map"):
        assert tag in images, sorted(images)
        assert images[tag][-1].width >= 300 and images[tag][-1].height >= 300, tag
    metrics = json.loads((xor_run / "metrics.json").read_text())
    assert {"loss", "accuracy", "auc", "log_loss", "brier", "precision_macro", "recall_macro", "f1_macro",
            "precision[0]", "recall[1]", "f1[1]"} <= set(metrics["test"])


def test_the_probability_map_is_logged_as_training_goes(xor_run):
    """Every log.checkpoint_every epochs (5, 10, 15, 20 of 20), then the final model's."""
    from PIL import Image

    maps = _images(xor_run)["probability_map"]
    steps = [e.step for e in maps]
    assert len(maps) >= 4 and steps == sorted(steps) and len(set(steps)) >= 4, steps
    first, last = (np.asarray(Image.open(io.BytesIO(e.encoded_image_string))) for e in (maps[0], maps[-1]))
    assert first.shape == last.shape and not np.array_equal(first, last)  # the boundary moved


def test_k_class_run_logs_weight_images_with_their_labels(tmp_path):
    run_dir = _train(tmp_path, "digits", "data.keep_classes=['3','5','8']", "train.epochs=5", config="digits.toml")
    images = _images(run_dir)
    for tag in ("weights/class_3", "weights/class_5", "weights/class_8", "test/confusion_matrix", "test/reliability"):
        assert tag in images and images[tag][-1].width > 100, sorted(images)
    test = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert {"f1[3]", "f1[5]", "f1[8]", "auc", "brier"} <= set(test)


def _hparams_dashboard(logdir: Path):
    """What TensorBoard's HPARAMS dashboard shows for ``logdir``: its experiment, and each session's
    hyper-parameters and metric values by tag."""
    from tensorboard import context as tb_context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, get_experiment, list_session_groups

    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    tb = base_plugin.TBContext(logdir=str(logdir), multiplexer=mux,
                               data_provider=data_provider.MultiplexerDataProvider(mux, str(logdir)))
    ctx, request = backend_context.Context(tb), tb_context.RequestContext()
    experiment = get_experiment.Handler(request, ctx, "", api_pb2.GetExperimentRequest()).run()
    groups = list_session_groups.Handler(request, ctx, "", api_pb2.ListSessionGroupsRequest(
        slice_size=100, allowed_statuses=[api_pb2.STATUS_SUCCESS, api_pb2.STATUS_UNKNOWN])).run()
    sessions = {g.name: ({k: getattr(v, v.WhichOneof("kind")) for k, v in g.hparams.items()},
                         {m.name.tag: m.value for m in g.metric_values}) for g in groups.session_groups}
    return experiment, sessions


def test_hparams_of_train_runs_and_cv_trials_share_one_dashboard(xor_run):
    """TensorBoard builds the dashboard from the sessions: the keys each run set (those that apply
    to its model), the varied ones first, and each run's scores under their own tags: a train run's
    test split (test/...), a cv trial's fold means (trial/...), never mixed in one column."""
    from torch.utils.tensorboard import SummaryWriter

    from torch_logreg.app.config import load_config
    from torch_logreg.app.tensorboard import config_hparams, write_hparams

    # a cv trial in the same log directory, written as cv writes one: the trial's config, its fold means
    trial = load_config(xor_run / "config.toml")
    trial.train.l2 = 0.5
    with SummaryWriter(str(xor_run.parent / "cv-xor" / "trial-000")) as writer:
        write_hparams(writer, config_hparams(trial, "3-fold cv"), {"trial/loss": 0.69, "trial/accuracy": 0.55})
    experiment, sessions = _hparams_dashboard(xor_run.parent)
    infos = {h.name: h for h in experiment.hparam_infos}
    assert {"train.lr", "train.l2", "model.kind", "data", "scored_on"} <= set(infos)
    assert not {"model.hidden", "model.activation", "train.betas"} & set(infos)  # not a logistic run's keys
    assert infos["train.l2"].differs and not infos["train.lr"].differs
    assert [h.name for h in experiment.hparam_infos][0] in ("train.l2", "scored_on")  # the varied keys first
    metric_tags = {m.name.tag for m in experiment.metric_infos}
    assert {"test/loss", "test/accuracy", "trial/loss", "trial/accuracy", "val/loss"} <= metric_tags
    assert not [t for t in metric_tags if t.startswith("hparam")]
    assert set(sessions) == {"xor", "cv-xor/trial-000"}
    test = json.loads((xor_run / "metrics.json").read_text())["test"]
    hparams, values = sessions["xor"]
    assert hparams["scored_on"] == "test" and hparams["data"] == "xor" and hparams["train.epochs"] == 20
    for name in ("loss", "accuracy", "auc"):
        assert values[f"test/{name}"] == pytest.approx(test[name], rel=1e-6), name
    assert "train/loss" in values
    hparams, values = sessions["cv-xor/trial-000"]
    assert hparams["train.l2"] == 0.5 and hparams["scored_on"] == "3-fold cv"
    assert values == {"trial/loss": pytest.approx(0.69), "trial/accuracy": pytest.approx(0.55)}
