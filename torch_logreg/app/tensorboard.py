"""TensorBoard logging as a callback: it reads values from the device only at its own intervals
and decides nothing about training; the custom-scalars layout that overlays the training and
held-out curves; the config keys that apply to a run (its Text summary and its hyper-parameters);
and the run's session for the HPARAMS dashboard."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from torch.utils.tensorboard import SummaryWriter

from ..registry import L1_LOOP_SOLVERS, L1_SOLVERS, LOOP_SOLVERS
from ..train import Callback, TrainState
from . import metrics as metrics_lib
from .config import Config, dumps_toml, target_is_real

#: the most probability maps a run draws: each takes a large part of a second, and TensorBoard's
#: Images dashboard keeps only 10 of a tag by default (``--samples_per_plugin images=N`` for more)
MAX_PICTURES = 10


def pictures_every(epochs: int, checkpoint_every: int) -> int:
    """The epochs between two probability maps: at each checkpoint, but at most :data:`MAX_PICTURES`
    in a run of ``epochs``."""
    return max(checkpoint_every, math.ceil(epochs / MAX_PICTURES))


class TensorBoardLogger(Callback):
    """Scalars every ``every`` steps (``train/batch_objective``, ``grad_norm``: the step's before
    any clipping, ``grad_norm/clipped_steps``: the steps clipped so far, ``lr``,
    ``perf/samples_per_second``; under float16 ``loss_scale`` and ``loss_scale/skipped_steps``);
    at the first stopping check after each interval the epoch metrics (``train/objective``: mean
    NLL + penalty, what the steps minimise; ``train/loss`` and ``val/loss``: mean NLL, comparable;
    ``train/accuracy``, ``val/accuracy``, ``val/auc``); weight and gradient histograms at the
    start, every ``histograms_every`` epochs and at the end; gradient-check errors;
    ``pictures(writer, state)`` every ``pictures_every`` epochs (the probability map of 2-D data,
    so the decision boundary can be watched as it moves). The custom-scalars :func:`layout` is
    written when training begins."""

    def __init__(self, writer: SummaryWriter, *, every: int, histograms_every: int, lr: float,
                 train_eval=None, val_eval=None, pictures: Callable[[SummaryWriter, TrainState], None] | None = None,
                 pictures_every: int = 0) -> None:
        self.writer = writer
        self.every = every
        self.histograms_every = histograms_every
        self.lr = lr
        self.train_eval, self.val_eval = train_eval, val_eval  # (X, T) pairs or None
        self.pictures, self.pictures_every = pictures, pictures_every
        self._samples = 0
        self._clock = time.perf_counter()
        self._pending_epoch_log = True
        self._grad_checks_logged = 0
        self._histogram_step: int | None = None

    def on_train_begin(self, state: TrainState) -> None:
        self._grad_checks_logged = len(state.history.grad_checks)
        self._clock = time.perf_counter()
        # in every events file of the run (a resumed run starts a new one): the dashboard merges
        # the layouts of all runs, dropping repeated charts
        self.writer.add_custom_scalars(layout(state.model.link == "identity"))
        if state.step == 0:  # the initial weights (no gradient yet); a resumed run has them already
            self.histograms(state)

    def on_step(self, state: TrainState) -> None:
        self._samples += state.batch_size
        if state.step % self.every:
            return
        w = self.writer
        w.add_scalar("train/batch_objective", state.loss.item(), state.step)
        norm = torch.sqrt(sum((g * g).sum() for g in state.grads.values()))
        w.add_scalar("grad_norm", norm.item(), state.step)  # before clipping
        clipped = getattr(state.trainer, "clipped_steps", None)
        if clipped is not None:
            w.add_scalar("grad_norm/clipped_steps", clipped.item(), state.step)
        scaler = getattr(state.trainer, "scaler", None)
        if scaler is not None:  # float16: the loss scale, and the steps skipped for a non-finite gradient
            w.add_scalar("loss_scale", scaler.scale.item(), state.step)
            w.add_scalar("loss_scale/skipped_steps", scaler.skipped, state.step)
        w.add_scalar("lr", self.lr if state.lr is None else state.lr, state.step)
        now = time.perf_counter()
        w.add_scalar("perf/samples_per_second", self._samples / max(now - self._clock, 1e-9), state.step)
        self._samples, self._clock = 0, now
        self._pending_epoch_log = True
        for step, err in state.history.grad_checks[self._grad_checks_logged:]:
            w.add_scalar("gradcheck/max_rel_error", err, step)
        self._grad_checks_logged = len(state.history.grad_checks)

    def on_epoch_end(self, state: TrainState) -> None:
        w, step = self.writer, state.step
        if state.checked and self._pending_epoch_log:
            self._pending_epoch_log = False
            w.add_scalar("train/objective", state.train_objective, step)
            w.add_scalar("train/loss", state.train_loss, step)
            if state.val_loss is not None:
                w.add_scalar("val/loss", state.val_loss, step)
            for prefix, data in (("train", self.train_eval), ("val", self.val_eval)):
                if data is None:
                    continue
                m = metrics_lib.training_metrics(state.model, *data)
                for key in ("accuracy", "r2") + (("auc",) if prefix == "val" else ()):
                    if key in m and np.isfinite(m[key]):
                        w.add_scalar(f"{prefix}/{key}", m[key], step)
        if self.histograms_every and state.epoch % self.histograms_every == 0:
            self.histograms(state)
        if self.pictures is not None and self.pictures_every and state.epoch % self.pictures_every == 0:
            self.pictures(w, state)

    def histograms(self, state: TrainState) -> None:
        if self._histogram_step == state.step:
            return
        self._histogram_step = state.step
        for name, p in state.model.named_parameters():
            tensors = {"weights": p.detach(), "gradients": (state.grads or {}).get(name)}
            for kind, t in tensors.items():
                if t is None or not bool(torch.isfinite(t).all()):
                    continue
                try:
                    self.writer.add_histogram(f"{kind}/{name}", t, state.step)
                except ValueError:  # values so large (a diverging run) that no bin holds them
                    pass

    def on_train_end(self, state: TrainState) -> None:
        if state.stop_reason != "diverged":  # the weights the run ends with (early stopping: the best ones)
            self.histograms(state)
        self.writer.flush()


def layout(regression: bool) -> dict:
    """The custom-scalars dashboard of a run: the training, validation and test curves of each
    quantity on one chart (the test split's score is one point, at the final step), and the
    objective of each epoch with that of each batch."""
    score = ("R^2", "r2") if regression else ("accuracy", "accuracy")
    return {"training": {
        "loss (mean negative log-likelihood): train, val, test": ["Multiline", [r"^(train|val|test)/loss$"]],
        f"{score[0]}: train, val, test": ["Multiline", [rf"^(train|val|test)/{score[1]}$"]],
        "objective (loss + penalty): epoch and batch": ["Multiline", [r"^train/(batch_)?objective$"]],
    }}


def applicable_config(cfg: Config) -> dict[str, dict]:
    """The config's sections with only the keys that apply to its data, model and solver: e.g.
    no ``model.hidden`` for logistic regression, no ``train.momentum`` for adam, no ``train.lr``
    for Newton, no ``data.n_samples`` for a file. What the run's Text summary and its
    hyper-parameters show; ``config.toml`` keeps every key."""
    d = cfg.to_dict()
    data, model, train = d["data"], d["model"], d["train"]
    keep: dict[str, set[str]] = {"log": set(d["log"])}
    keep["data"] = {"standardize", "val_fraction", "test_fraction", "keep_classes", "add_radius"}
    if data["path"]:
        keep["data"] |= {"name", "path", "target", "categorical", "drop_first", "weight", "max_bytes", "memory_budget"}
        keep["data"] |= {"hash", "hash_bits"} if data["hash"] else {"hash"}
    else:
        keep["data"] |= {"name"} | ({"n_samples", "noise"} if data["name"] in ("blobs", "donut", "xor", "synthetic")
                                    else set())
        keep["data"] |= {"n_features"} if data["name"] == "synthetic" else set()
    mlp = {"hidden", "activation", "link", "init", "dropout", "batch_norm"}
    keep["data"] |= {k for k in ("interactions", "offset") if data[k]}
    keep["model"] = {"kind", "bias"} | (mlp if model["kind"] == "mlp" else set())
    solver = train["solver"]
    keep["train"] = {"solver", "epochs", "l2", "tol", "seed", "device", "dtype", "step"}
    if solver in L1_SOLVERS + L1_LOOP_SOLVERS:
        keep["train"].add("l1")
    keep["train"] |= {k for k in ("penalty_factor", "lower_bounds", "upper_bounds") if train[k]}
    if not target_is_real(cfg.model):
        keep["train"].add("class_weight")
    if solver in LOOP_SOLVERS:
        from ..optimizers import optimizer_class

        keep["train"] |= {"lr", "batch_size", "schedule", "warmup_epochs", "patience", "check_every",
                          "grad_check_every", "cuda_graph", *optimizer_class(solver).defaults}
        keep["train"] |= {"step": {"step_size", "gamma"}, "exponential": {"gamma"}}.get(train["schedule"], set())
        keep["train"] |= {"warmup_start_factor"} if train["warmup_epochs"] else set()
    return {sec: {k: v for k, v in body.items() if k in keep[sec]} for sec, body in d.items()}


def config_text(cfg: Config) -> str:
    """The run's config as TensorBoard's Text shows it: TOML of :func:`applicable_config`."""
    return "```toml\n" + dumps_toml(applicable_config(cfg)) + "\n```"




#: the scores of a finished run sent to its HPARAMS session, logged as ``<split>/<name>`` at the
#: final step (the split the scores are measured on, ``scored_on``: test, else val, else train), so
#: they sit at the end of the curves of the same name; a cv trial logs its fold means as ``trial/<name>``
#: (a name that sorts after the curves', so TensorBoard's Time Series does not open on its single points)
HPARAM_METRICS = ("loss", "accuracy", "auc", "r2")


def config_hparams(cfg: Config, scored_on: str) -> dict:
    """The hyper-parameters of a run or a cv trial: the ``model.*`` and ``train.*`` keys that apply
    (:func:`applicable_config`), ``data`` (the file or the built-in set), ``data.standardize``, and
    ``scored_on``: what the scores were measured on (``"test"``, ``"val"``, ``"train"``, or e.g.
    ``"5-fold cv"``). Lists are written as text."""
    applied = applicable_config(cfg)
    hp = {f"{sec}.{k}": (str(v) if isinstance(v, (list, dict)) else v)
          for sec in ("model", "train") for k, v in applied[sec].items()}
    hp.update({"data": cfg.data.path or cfg.data.name, "data.standardize": cfg.data.standardize, "scored_on": scored_on})
    return hp


def write_hparams(writer: SummaryWriter, hparams: dict, metrics: dict, step: int = 0) -> None:
    """A run's session for the HPARAMS dashboard, in its own events file: its ``hparams`` and,
    as scalars at ``step``, its finite ``metrics`` (tag -> score, e.g. ``test/accuracy``).

    No experiment summary is written: TensorBoard then builds the dashboard from all the sessions
    of the log directory, so its columns are the keys any run set (each run sets those that apply
    to it), those that differ between runs listed first, and its metrics are the runs' scalar tags
    (the last value of each: a curve's end, or the score logged here)."""
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    start = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
    for name, v in hparams.items():
        if isinstance(v, bool):
            start.hparams[name].bool_value = v
        elif isinstance(v, (int, float)):
            start.hparams[name].number_value = v
        else:
            start.hparams[name].string_value = str(v)
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS, end_time_secs=time.time())
    fw = writer._get_file_writer()
    for tag, data in ((metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=start)),
                      (metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end))):
        data.version = metadata.PLUGIN_DATA_VERSION
        plugin = SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME, content=data.SerializeToString())
        fw.add_summary(Summary(value=[Summary.Value(tag=tag, metadata=SummaryMetadata(plugin_data=plugin))]))
    for name, v in metrics.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            writer.add_scalar(name, float(v), step)
