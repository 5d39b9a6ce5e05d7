"""TensorBoard logging as a callback: it reads values from the device only at its own intervals
and decides nothing about training; and the hyper-parameters of a run for the HPARAMS dashboard."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch
from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from torch.utils.tensorboard import SummaryWriter

from ..train import Callback, TrainState
from . import metrics as metrics_lib
from .config import Config


class TensorBoardLogger(Callback):
    """Scalars every ``every`` steps (``train/batch_objective``, ``grad_norm``: the step's before
    any clipping, ``grad_norm/clipped_steps``: the steps clipped so far, ``lr``,
    ``perf/samples_per_second``); at the first stopping check after each interval the epoch
    metrics (``train/objective``: mean NLL + penalty, what the steps minimise; ``train/loss`` and
    ``val/loss``: mean NLL, comparable; ``train/accuracy``, ``val/accuracy``, ``val/auc``);
    weight and gradient histograms every ``histograms_every`` epochs; gradient-check errors;
    ``pictures(writer, state)`` every ``pictures_every`` epochs (the probability map of 2-D data,
    so the decision boundary can be watched as it moves)."""

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

    def on_train_begin(self, state: TrainState) -> None:
        self._grad_checks_logged = len(state.history.grad_checks)
        self._clock = time.perf_counter()

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
        self.writer.flush()


#: the scores of a run's HPARAMS session, each logged as the scalar ``hparam/<name>`` in the run's
#: own directory: a train run's held-out split (test; validation when there is no test split; else
#: training), a cv trial's mean over its held-out folds
HPARAM_METRICS = ("loss", "accuracy", "auc", "f1_macro", "log_loss", "brier", "r2")
#: the HPARAMS dashboard's metric columns, the same for every train run and cv trial
METRIC_TAGS = (*(f"hparam/{m}" for m in HPARAM_METRICS), "hparam/train/loss")


def config_hparams(cfg: Config, scored_on: str) -> dict:
    """The hyper-parameters of a run or a cv trial: every ``model.*`` and ``train.*`` key, ``data``
    (the file or the built-in set), ``data.standardize``, and ``scored_on``: what the scores were
    measured on (``"test"``, ``"val"``, ``"train"``, or e.g. ``"5-fold cv"``)."""
    hp = {f"{sec}.{k}": v for sec, body in cfg.to_dict().items() if sec in ("model", "train") for k, v in body.items()}
    hp.update({"data": cfg.data.path or cfg.data.name, "data.standardize": cfg.data.standardize, "scored_on": scored_on})
    return hp


def write_hparams(writer: SummaryWriter, hparams: dict, metrics: dict, step: int = 0) -> None:
    """A run's hyper-parameters and scores for the HPARAMS dashboard, in its own events file.

    ``metrics`` maps names (:data:`HPARAM_METRICS`, or e.g. ``test/accuracy``) to scores; each
    finite one is logged as the scalar ``hparam/<name>`` at ``step``, where the dashboard reads the
    run's value. TensorBoard takes the dashboard's columns from the first experiment summary it
    finds in the log directory, so every run writes the same one, whatever it sets: the names of
    :func:`config_hparams` (a value of another type or name is still recorded with the run) and
    :data:`METRIC_TAGS`. Train runs and cv trials sharing a log directory then show side by side.
    """
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    dtype = {bool: "DATA_TYPE_BOOL", int: "DATA_TYPE_FLOAT64", float: "DATA_TYPE_FLOAT64"}
    columns = [api_pb2.HParamInfo(name=name, type=api_pb2.DataType.Value(dtype.get(type(v), "DATA_TYPE_STRING")))
               for name, v in config_hparams(Config(), "").items()]
    experiment = api_pb2.Experiment(hparam_infos=columns,
                                    metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=t)) for t in METRIC_TAGS])
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
    for tag, data in ((metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment)),
                      (metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=start)),
                      (metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end))):
        data.version = metadata.PLUGIN_DATA_VERSION
        plugin = SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME, content=data.SerializeToString())
        fw.add_summary(Summary(value=[Summary.Value(tag=tag, metadata=SummaryMetadata(plugin_data=plugin))]))
    for name, v in metrics.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            writer.add_scalar(f"hparam/{name}", float(v), step)

