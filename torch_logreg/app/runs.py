"""A run on disk: its directory, the checkpoint payload and the callbacks that write it, Ctrl-C
handling, and loading a run back (config, model, standardizer)."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import UsageError
from ..models import MODELS
from ..train import Callback, Trainer, TrainState
from .checkpoint import load_checkpoint, save_checkpoint
from .config import Config, config_from_dict
from .fitting import Prepared


@dataclass
class RunResult:
    run_dir: Path | None  # None on ranks other than 0
    metrics: dict
    interrupted: bool = False
    signal: int = signal.SIGINT  # what interrupted it: the exit status is 128 + this, as a shell reports


def new_run_dir(cfg: Config, name: str, run_dir: str | None) -> Path:
    """A fresh directory: an existing run is never overwritten."""
    if run_dir:
        path = Path(run_dir).expanduser()
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise UsageError(f"run directory {path} already exists and is not empty; choose another --run-dir")
        _make_directory(path, exist_ok=True)
        return path
    root = Path(cfg.log.dir).expanduser()  # ~ as in data.path
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        path = root / (f"{name}-{stamp}" + (f"-{i}" if i else ""))
        try:
            _make_directory(path, exist_ok=False)
            return path
        except FileExistsError:
            continue
    raise UsageError(f"cannot create a new run directory under {root}")


#: the lock file of a run directory (see :class:`RunLock`)
LOCK_NAME = "run.lock"


class RunLock:
    """One writer per run directory: ``train`` and ``resume`` hold an advisory lock
    (``fcntl.flock``, exclusive) on ``<run>/run.lock`` while they write the run, with their process
    id in the file; a second writer is refused with one sentence naming that process. The kernel
    releases the lock when its process ends, however it ends, so a lock left by a process that died
    is taken over (:attr:`stale`: the id it left). The file is emptied on release, so a run
    directory's files read the same after a command as before it."""

    def __init__(self, run_dir: Path) -> None:
        import fcntl

        self.path = Path(run_dir) / LOCK_NAME
        self.stale: int | None = None
        try:
            self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UsageError(f"cannot create the lock file {self.path}: {exc.strerror or exc}") from None
        left = self._holder()
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            who = f"process {left}" if left else "another process"
            raise UsageError(f"run directory {run_dir} is being written by {who} (a train or resume holding "
                             f"{self.path}); wait for it to end, or stop it, before writing this run") from None
        if left and left != os.getpid():
            self.stale = left
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def _holder(self) -> int | None:
        assert self._fd is not None
        text = os.pread(self._fd, 32, 0).decode(errors="replace").strip()
        return int(text) if text.isdigit() else None

    def release(self) -> None:
        import fcntl

        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:  # the directory was removed (a run discarded), or the disk is read-only now
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _make_directory(path: Path, exist_ok: bool) -> None:
    """``mkdir -p``, with a user's mistake (a file where a directory must go, no permission, a full
    or read-only disk) as one sentence."""
    try:
        path.mkdir(parents=True, exist_ok=exist_ok)
    except FileExistsError:
        if not exist_ok:
            raise
        raise UsageError(f"cannot create run directory {path}: a file of that name is in the way") from None
    except NotADirectoryError:
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), path.parent)
        raise UsageError(f"cannot create run directory {path}: {blocker} is a file, not a directory") from None
    except OSError as exc:
        raise UsageError(f"cannot create run directory {path}: {exc.strerror or exc}") from None


def payload(trainer: Trainer, prep: Prepared, cfg: Config, finished: bool, weights=None) -> dict:
    model = trainer.model
    state = {k: v.detach().cpu().clone() for k, v in (weights or model.state_dict()).items()}
    return {
        "model": state,
        "model_class": type(model).__name__,
        "model_args": model.constructor_args(),
        "kind": cfg.model.kind,
        "standardizer": prep.standardizer.state_dict(),
        "schema": prep.schema.to_dict(),
        "classes": list(prep.classes),
        "config": cfg.to_dict(),
        "data_fingerprint": prep.fingerprint,
        "trainer": trainer.state_dict(),
        "step": trainer.step,
        "epoch": trainer.epoch,
        "rng": {"torch": torch.get_rng_state()},
        "finished": finished,
    }


class CheckpointWriter(Callback):
    """``checkpoint.pt`` every ``every`` epochs (never with non-finite weights) and
    ``best.pt`` whenever the validation loss has improved since the last write."""

    def __init__(self, run_dir: Path, every: int, prep: Prepared, cfg: Config) -> None:
        self.run_dir, self.every, self.prep, self.cfg = run_dir, every, prep, cfg
        self._best_written = None

    def write(self, state: TrainState, finished: bool = False) -> bool:
        trainer = state.trainer
        if not all(bool(torch.isfinite(p).all()) for p in trainer.model.parameters()):
            return False
        save_checkpoint(self.run_dir / "checkpoint.pt", payload(trainer, self.prep, self.cfg, finished))
        best = trainer.history.best_epoch
        if best is not None and best != self._best_written and trainer.best_state is not None:
            save_checkpoint(self.run_dir / "best.pt", payload(trainer, self.prep, self.cfg, finished, trainer.best_state))
            self._best_written = best
        return True

    def on_epoch_end(self, state: TrainState) -> None:
        if state.epoch % self.every == 0 and not (state.checked and not np.isfinite(state.train_objective)):
            self.write(state)


class StopOnInterrupt(Callback):
    """The first Ctrl-C (SIGINT) or SIGTERM (what ``kill`` and job schedulers send) ends the run at
    the end of the current epoch, so the checkpoint is consistent; a second one interrupts at once.
    :attr:`signal` says which came."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self.signal = signal.SIGINT
        self._previous: dict = {}

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested, self.signal = True, signum

    def on_train_begin(self, state: TrainState) -> None:
        try:
            self._previous = {s: signal.signal(s, self._handler) for s in self.SIGNALS}
        except ValueError:  # not the main thread: leave the signals alone
            self._previous = {}

    def on_epoch_end(self, state: TrainState) -> None:
        if self.requested:
            state.stop_reason = "interrupted"

    def on_train_end(self, state: TrainState) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        self._previous = {}


def load_run(run_dir: str | Path, which: str = "checkpoint.pt") -> tuple[Path, dict, Config]:
    path = Path(run_dir)
    if not path.is_dir():
        raise UsageError(f"run directory {path} does not exist")
    payload = load_checkpoint(path / which)
    try:
        cfg = config_from_dict(payload["config"])
        if payload["model_class"] not in MODELS:
            raise KeyError(payload["model_class"])
        _check_parts(payload)
    except KeyError as exc:
        raise UsageError(f"checkpoint {path / which} is incomplete or from another program (its part {exc.args[0]!r} "
                         "is missing)") from None
    except (TypeError, AttributeError, ValueError, IndexError) as exc:
        raise UsageError(f"checkpoint {path / which} is incomplete or from another program ({exc})") from None
    return path, payload, cfg


def _check_parts(payload: dict) -> None:
    """Every part a command reads, read once here, so a damaged one is named before any work."""
    from .ingest import Schema

    schema = Schema.of_run(payload)
    std = payload["standardizer"]
    mean, scale = std["mean"], std["scale"]
    if not (isinstance(mean, Tensor) and isinstance(scale, Tensor) and mean.dim() == 1 and mean.shape == scale.shape):
        raise ValueError("the standardizer is not two vectors of one length")
    if not bool(torch.isfinite(mean).all() and (scale > 0).all()):
        raise ValueError("the standardizer holds a non-finite mean or a scale that is not positive")
    if mean.shape[0] not in (schema.n_features, payload["model_args"]["n_features"]):
        raise ValueError(f"the standardizer has {mean.shape[0]} columns, the model {payload['model_args']['n_features']}")
    if not isinstance(payload["classes"], list) or not all(isinstance(c, str) for c in payload["classes"]):
        raise ValueError("the class names are not a list of strings")
    if not isinstance(payload["kind"], str):
        raise ValueError("the model kind is not a name")
    trainer = payload["trainer"]
    for key in ("epoch", "step", "last_good", "history", "generator"):
        trainer[key]  # noqa: B018 (a KeyError names the missing part)
    rng = payload["rng"]["torch"]
    if not (isinstance(rng, Tensor) and rng.dtype == torch.uint8):
        raise ValueError("the random-number state is not a byte tensor")


def model_from_checkpoint(payload: dict, device=None, dtype=None):
    model = MODELS[payload["model_class"]](**payload["model_args"])
    saved = next(iter(payload["model"].values()), None)
    if isinstance(saved, Tensor) and saved.is_floating_point():
        model.to(saved.dtype)  # load at the saved precision: float64 weights must not pass through float32
    try:
        model.load_state_dict(payload["model"])
    except (RuntimeError, KeyError) as exc:
        raise UsageError(f"checkpoint weights do not fit a {payload['model_class']}({payload['model_args']}): {exc}") from None
    return model.to(device=device, dtype=dtype).eval()  # a run's model predicts; the loop switches to training
