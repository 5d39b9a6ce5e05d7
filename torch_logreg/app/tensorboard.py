"""TensorBoard logging as a callback: it reads values from the device only at its own intervals
and decides nothing about training."""

from __future__ import annotations

import time

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

from ..train import Callback, TrainState
from . import metrics as metrics_lib


class TensorBoardLogger(Callback):
    """Scalars every ``every`` steps (``train/batch_objective``, ``grad_norm``, ``lr``,
    ``perf/samples_per_second``); at the first stopping check after each interval the epoch
    metrics (``train/objective``: mean NLL + penalty, what the steps minimise; ``train/loss`` and
    ``val/loss``: mean NLL, comparable; ``train/accuracy``, ``val/accuracy``, ``val/auc``);
    weight and gradient histograms every ``histograms_every`` epochs; gradient-check errors."""

    def __init__(self, writer: SummaryWriter, *, every: int, histograms_every: int, lr: float,
                 train_eval=None, val_eval=None) -> None:
        self.writer = writer
        self.every = every
        self.histograms_every = histograms_every
        self.lr = lr
        self.train_eval, self.val_eval = train_eval, val_eval  # (X, T) pairs or None
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
        w.add_scalar("grad_norm", norm.item(), state.step)
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
                m = metrics_lib.evaluate(state.model, *data)
                for key in ("accuracy", "r2") + (("auc",) if prefix == "val" else ()):
                    if key in m and np.isfinite(m[key]):
                        w.add_scalar(f"{prefix}/{key}", m[key], step)
        if self.histograms_every and state.epoch % self.histograms_every == 0:
            self.histograms(state)

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


def write_hparams(writer: SummaryWriter, hparams: dict, final_metrics: dict, step: int = 0) -> None:
    """Hyper-parameters with the final metrics, written into this run's own events file."""
    clean = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in hparams.items()}
    metric_dict = {f"hparam/{k}": v for k, v in final_metrics.items() if isinstance(v, float) and np.isfinite(v)}
    exp, ssi, sei = hparams_summary(clean, metric_dict)
    fw = writer._get_file_writer()
    for summary in (exp, ssi, sei):
        fw.add_summary(summary)
    for k, v in metric_dict.items():
        writer.add_scalar(k, v, step)
