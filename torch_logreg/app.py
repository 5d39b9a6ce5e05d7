"""The training application: a config in, a run directory out.

``train`` prepares the data, builds the model, runs the hand-written loop with TensorBoard,
progress and checkpoint callbacks, and writes ``config.toml``, the events file,
``checkpoint.pt``, ``best.pt`` and ``metrics.json``. ``resume``, ``evaluate``, ``predict`` and
``gradcheck`` work from a run directory or a config. User mistakes raise :class:`UsageError`.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from . import data as data_lib
from . import fastpath
from . import metrics as metrics_lib
from .checkpoint import load_checkpoint, save_checkpoint
from .config import Config, config_from_dict
from .devices import resolve_device, resolve_dtype
from .errors import UsageError
from .files import atomic_write, write_text_atomic
from .gradients import compare_gradients
from .models import MODELS, LinearRegression, LogisticRegression, SoftmaxRegression
from .progress import Progress
from .solvers import SOLVERS as EXACT_SOLVERS
from .train import Callback, Trainer, TrainingDiverged, TrainState

SPLITS = ("train", "val", "test")


# --- data and model ---------------------------------------------------------------------------


@dataclass
class Prepared:
    """The three splits on the run's device, ready for the model, and what produced them."""

    X: dict[str, Tensor]  # standardized features per split
    T: dict[str, Tensor]  # prepared targets (N, K) per split
    y: dict[str, Tensor]  # encoded labels (class indices) or values per split
    plane: dict[str, np.ndarray] | None  # raw 2-D coordinates per split, for the probability map
    schema: data_lib.Schema
    classes: list[str]
    standardizer: data_lib.Standardizer
    image_shape: tuple[int, int] | None
    true_weights: Tensor | None


def run_device(name: str) -> torch.device:
    try:
        return resolve_device(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def build_model(kind: str, n_features: int, n_classes: int, bias: bool = True):
    if kind == "linear":
        return LinearRegression(n_features, bias=bias)
    if n_classes < 2:
        raise UsageError(f"the target has only {n_classes} class; a classifier needs at least two")
    if kind == "logistic":
        if n_classes != 2:
            raise UsageError(
                f"the target has {n_classes} classes but model.kind = 'logistic' is binary; "
                "use model.kind = 'softmax' (or 'multilabel') for K classes"
            )
        return LogisticRegression(n_features, bias=bias)
    if kind == "multilabel":
        return LogisticRegression(n_features, n_outputs=n_classes, bias=bias)
    return SoftmaxRegression(n_features, n_classes, bias=bias)


def fit_targets(kind: str, y: Tensor, n_classes: int) -> Tensor:
    """What ``fit`` takes as ``y``: indices, one-hot rows (one sigmoid per class) or values."""
    if kind == "multilabel":
        return torch.nn.functional.one_hot(y, n_classes)
    return y


def prepare(cfg: Config, device: torch.device, dtype: torch.dtype,
            standardizer: data_lib.Standardizer | None = None) -> Prepared:
    ds = data_lib.load_dataset(cfg.data, seed=cfg.train.seed, device=device)
    kind = cfg.model.kind
    y, classes = data_lib.encode_labels(ds.y, kind)
    if kind != "linear" and len(classes) < 2:
        raise UsageError(f"the target has only one class ({classes[0]!r}); a classifier needs at least two")
    build_model(kind, ds.X.shape[1], len(classes))  # fail early on labels that do not fit the kind
    n = ds.X.shape[0]
    idx = dict(zip(SPLITS, data_lib.split_indices(y, n, cfg.data.val_fraction, cfg.data.test_fraction,
                                                  cfg.train.seed, stratify=kind != "linear")))
    if len(idx["train"]) == 0:
        raise UsageError("the training split is empty; lower data.val_fraction or data.test_fraction")
    X_split = {s: ds.X.index_select(0, i.to(ds.X.device)) for s, i in idx.items()}
    y_split = {s: y.index_select(0, i.to(y.device)) for s, i in idx.items()}
    plane = None
    if len(ds.schema.columns) == 2 and not ds.schema.categorical:
        plane = {s: X_split[s][:, :2].double().cpu().numpy() for s in SPLITS}
    if standardizer is None:
        standardizer = (data_lib.Standardizer.fit(X_split["train"]) if cfg.data.standardize
                        else data_lib.Standardizer.identity(ds.X.shape[1]))
    X_out, T_out, y_out = {}, {}, {}
    probe = build_model(kind, ds.X.shape[1], len(classes)).to(device=device, dtype=dtype)
    for s in SPLITS:
        X_out[s] = standardizer.transform(X_split[s].to(device=device, dtype=torch.float64)).to(dtype)
        y_out[s] = y_split[s].to(device)
        T_out[s] = probe.targets(fit_targets(kind, y_out[s], len(classes)), len(y_out[s]))
    return Prepared(X_out, T_out, y_out, plane, ds.schema, classes, standardizer, ds.image_shape, ds.true_weights)


# --- run directory and checkpoints ------------------------------------------------------------


def new_run_dir(cfg: Config, name: str, run_dir: str | None) -> Path:
    """A fresh directory: an existing run is never overwritten."""
    if run_dir:
        path = Path(run_dir)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise UsageError(f"run directory {path} already exists and is not empty; choose another --run-dir")
        path.mkdir(parents=True, exist_ok=True)
        return path
    root = Path(cfg.log.dir)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        path = root / (f"{name}-{stamp}" + (f"-{i}" if i else ""))
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise UsageError(f"cannot create a new run directory under {root}")


def _payload(trainer: Trainer, prep: Prepared, cfg: Config, finished: bool, weights=None) -> dict:
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
        save_checkpoint(self.run_dir / "checkpoint.pt", _payload(trainer, self.prep, self.cfg, finished))
        best = trainer.history.best_epoch
        if best is not None and best != self._best_written and trainer.best_state is not None:
            save_checkpoint(self.run_dir / "best.pt", _payload(trainer, self.prep, self.cfg, finished, trainer.best_state))
            self._best_written = best
        return True

    def on_epoch_end(self, state: TrainState) -> None:
        if state.epoch % self.every == 0 and not (state.checked and not np.isfinite(state.train_loss)):
            self.write(state)


class StopOnInterrupt(Callback):
    """The first Ctrl-C ends the run at the end of the current epoch (so the checkpoint is
    consistent); a second one interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def on_train_begin(self, state: TrainState) -> None:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            self._previous = None

    def on_epoch_end(self, state: TrainState) -> None:
        if self.requested:
            state.stop_reason = "interrupted"

    def on_train_end(self, state: TrainState) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


# --- train / resume ---------------------------------------------------------------------------


@dataclass
class RunResult:
    run_dir: Path | None  # None on ranks other than 0
    metrics: dict
    interrupted: bool = False


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _start_distributed(cfg: Config) -> tuple[torch.device, bool]:
    """Under torchrun (WORLD_SIZE > 1) join the process group: returns (device, is rank 0)."""
    if _world_size() <= 1:
        return run_device(cfg.train.device), True
    from .distributed import init_distributed

    if cfg.train.grad_check_every:
        raise UsageError("train.grad_check_every is not available with several processes; run the check in one")
    if cfg.train.solver in EXACT_SOLVERS:
        raise UsageError(f"train.solver = {cfg.train.solver!r} runs in one process; use gd, momentum or nesterov "
                         "under torchrun")
    if cfg.train.device not in ("auto", "cpu", "cuda"):
        raise UsageError(f"with several processes train.device must be auto, cpu or cuda (each rank takes "
                         f"cuda:LOCAL_RANK), got {cfg.train.device!r}")
    info = init_distributed(device=cfg.train.device)
    return info.device, info.rank == 0


def check_cuda_graph(cfg: Config, model, device: torch.device) -> None:
    """UsageError unless ``train.cuda_graph`` is off or this run can use it."""
    t = cfg.train
    if not t.cuda_graph:
        return
    if device.type != "cuda":
        raise UsageError(f"train.cuda_graph = true needs a CUDA device; this run is on {device}")
    if t.batch_size or t.grad_check_every or t.solver in EXACT_SOLVERS or not fastpath.supports(model) \
            or _world_size() > 1:
        raise UsageError("train.cuda_graph = true needs full-batch training (batch_size = 0) with gd, momentum "
                         "or nesterov, grad_check_every = 0, a model without hidden layers, and one process")


def _trainer(cfg: Config, model, prep: Prepared, device, dtype, callbacks) -> Trainer:
    t = cfg.train
    check_cuda_graph(cfg, model, device)
    has_val = prep.X["val"].shape[0] > 0
    trainer_cls = Trainer
    if _world_size() > 1:
        from .distributed import DistributedTrainer as trainer_cls  # each rank keeps its shard of the rows
    return trainer_cls(
        model, prep.X["train"], prep.T["train"],
        # for newton / lbfgs the Trainer only holds the prepared data and the checkpoint state
        solver=t.solver if t.solver not in EXACT_SOLVERS else "gd",
        lr=t.lr, epochs=t.epochs, batch_size=t.batch_size, l2=t.l2, momentum=t.momentum, tol=t.tol,
        patience=t.patience, grad_check_every=t.grad_check_every, check_every=t.check_every,
        cuda_graph=t.cuda_graph, seed=t.seed, device=device, dtype=dtype,
        fast_path=t.solver not in EXACT_SOLVERS,  # the exact solvers make their own
        X_val=prep.X["val"] if has_val else None,
        y_val=prep.T["val"] if has_val else None,
        callbacks=callbacks,
    )


def _predict_proba_raw(model, prep: Prepared):
    """Raw 2-D points -> probabilities (M, K), through the radius feature and the standardizer."""

    def fn(points: np.ndarray) -> np.ndarray:
        X = torch.from_numpy(points)
        if prep.schema.add_radius:
            X = data_lib.with_radius(X)
        X = prep.standardizer.transform(X).to(device=model.device, dtype=model.dtype)
        with torch.no_grad():
            return model(X).double().cpu().numpy()

    return fn


def _final_report(writer, model, prep: Prepared, cfg: Config, history, run_dir: Path, device) -> dict:
    result = {s: metrics_lib.evaluate(model, prep.X[s], prep.T[s]) for s in SPLITS}
    out = {
        **{s: result[s] for s in SPLITS},
        "solver": cfg.train.solver,
        "epochs": history.n_epochs,
        "steps": history.n_steps,
        "stop_reason": history.stop_reason,
        "best_epoch": history.best_epoch,
        "wall_time_s": history.wall_time,  # training time, summed over resumed sessions
        "device": str(device),
        "dtype": str(model.dtype).replace("torch.", ""),
        "grad_check_max_rel_error": history.grad_check_max_rel_error,
        "classes": prep.classes,
    }
    if prep.true_weights is not None and model.link == "sigmoid" and model.n_outputs == 1:
        # compare with the generating model, on the standardized scale the model sees
        scale = prep.standardizer.scale.to(prep.true_weights)
        w_true = prep.true_weights[:-1] * scale
        w = model.linear.weight.detach()[0].double().cpu()
        out["true_weights_cosine"] = float(torch.dot(w, w_true) / (w.norm() * w_true.norm()))
    write_text_atomic(run_dir / "metrics.json", json.dumps(out, indent=2) + "\n")
    if writer is not None:
        from .plots import probability_map, weight_images
        from .tensorboard import write_hparams

        final = {f"{s}/{k}": v for s in SPLITS for k, v in result[s].items()}
        hp = {f"{sec}.{k}": v for sec, body in cfg.to_dict().items() if sec in ("model", "train") for k, v in body.items()}
        hp["data"] = cfg.data.path or cfg.data.name
        write_hparams(writer, hp, final, history.n_steps)
        X_test = prep.X["test"] if prep.X["test"].shape[0] else prep.X["train"]
        T_test = prep.T["test"] if prep.X["test"].shape[0] else prep.T["train"]
        if model.link != "identity":
            with torch.no_grad():
                probs = model(X_test).cpu()
            truth = T_test.cpu()
            if model.n_outputs == 1:
                writer.add_pr_curve("test/pr_curve", truth[:, 0].long(), probs[:, 0], history.n_steps)
            else:
                for k in range(min(model.n_outputs, 10)):
                    writer.add_pr_curve(f"test/pr_curve/class_{prep.classes[k]}", truth[:, k].long(), probs[:, k],
                                        history.n_steps)
        if prep.plane is not None and model.link != "identity":
            split = "test" if prep.plane["test"].shape[0] else "train"
            img = probability_map(_predict_proba_raw(model, prep), prep.plane[split], prep.y[split].cpu().numpy())
            writer.add_image("probability_map", img, history.n_steps, dataformats="HWC")
        if prep.image_shape is not None:
            names = prep.classes if model.n_outputs > 1 else [prep.classes[-1]]
            for name, img in zip(names, weight_images(model.linear.weight, prep.image_shape)):
                writer.add_image(f"weights/class_{name}", img, history.n_steps)
        writer.flush()
    return out


def _run(cfg: Config, run_dir: Path | None, prep: Prepared, model, device, dtype, quiet: bool,
         resume_state: dict | None = None) -> RunResult:
    if run_dir is None:  # a rank other than 0: train, but log and write nothing
        trainer = _trainer(cfg, model, prep, device, dtype, [StopOnInterrupt()])
        if resume_state is not None:
            trainer.load_state_dict(resume_state["trainer"])
        try:
            history = trainer.run()
        except TrainingDiverged as exc:
            raise UsageError(str(exc)) from None
        return RunResult(None, {"stop_reason": history.stop_reason, "epochs": trainer.epoch},
                         interrupted=history.stop_reason == "interrupted")

    from torch.utils.tensorboard import SummaryWriter

    purge = resume_state["step"] + 1 if resume_state else None
    writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge)
    if resume_state is None:
        writer.add_text("config", "```toml\n" + cfg.to_toml() + "\n```", 0)
    from .tensorboard import TensorBoardLogger

    interrupt = StopOnInterrupt()
    has_val = prep.X["val"].shape[0] > 0
    logger = TensorBoardLogger(writer, every=cfg.log.every,
                               histograms_every=cfg.log.histograms_every or cfg.log.checkpoint_every,
                               lr=cfg.train.lr, train_eval=(prep.X["train"], prep.T["train"]),
                               val_eval=(prep.X["val"], prep.T["val"]) if has_val else None)
    ckpt = CheckpointWriter(run_dir, cfg.log.checkpoint_every, prep, cfg)
    callbacks: list[Callback] = [logger, ckpt, interrupt]
    if not quiet:
        callbacks.append(Progress(cfg.train.epochs))
    trainer = _trainer(cfg, model, prep, device, dtype, callbacks)
    if resume_state is not None:
        trainer.load_state_dict(resume_state["trainer"])
        torch.set_rng_state(resume_state["rng"]["torch"])
    try:
        if cfg.train.solver in EXACT_SOLVERS:
            history = _fit_exact(cfg, trainer, writer, interrupt, quiet)
        else:
            history = trainer.run()
    except TrainingDiverged as exc:
        writer.close()
        raise UsageError(
            f"{exc} The last good checkpoint is in {run_dir}/checkpoint.pt"
            if (run_dir / "checkpoint.pt").exists() else str(exc)
        ) from None
    except KeyboardInterrupt:
        writer.close()
        raise
    state = TrainState(model=model, trainer=trainer, epoch=trainer.epoch, step=trainer.step)
    interrupted = history.stop_reason == "interrupted"
    ckpt.write(state, finished=not interrupted)
    if interrupted:
        writer.close()
        return RunResult(run_dir, {"stop_reason": "interrupted", "epochs": trainer.epoch}, interrupted=True)
    if trainer.best_state is None:  # no validation data: the final weights are the best we have
        save_checkpoint(run_dir / "best.pt", _payload(trainer, prep, cfg, True))
    metrics = _final_report(writer, model, prep, cfg, history, run_dir, device)
    writer.close()
    return RunResult(run_dir, metrics)




def _fit_exact(cfg: Config, trainer: Trainer, writer, interrupt: StopOnInterrupt, quiet: bool):
    """Newton or L-BFGS on the analytic derivatives instead of the loop; returns a History.

    Each iterate's objective goes to TensorBoard (``train/loss`` by iteration); a first Ctrl-C
    stops at the next iterate and saves the weights; ``resume`` then solves again from them
    (to the same optimum, though not along a bit-identical path). A convergence or separation
    warning is printed as one line.
    """
    import warnings

    from .solvers import fit_exact

    t = cfg.train
    state = TrainState(model=trainer.model, trainer=trainer)
    interrupt.on_train_begin(state)

    def on_iterate(n_iter: int, objective: float) -> bool:
        writer.add_scalar("train/loss", objective, n_iter)
        if not quiet:
            print(f"{t.solver} iteration {n_iter}  objective {objective:.10g}", file=sys.stderr, flush=True)
        return interrupt.requested

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit_exact(trainer.model, trainer.X, trainer.T, solver=t.solver, l2=t.l2, l1=t.l1,
                           max_iter=t.epochs, tol=t.tol, callback=on_iterate)
    interrupt.on_train_end(state)
    for w in caught:
        print(f"torch-logreg: warning: {w.message}", file=sys.stderr)
    for i, g in enumerate(result.grad_norms):
        writer.add_scalar("grad_norm", g, i)
    history = trainer.history
    history.epochs = list(range(len(result.losses)))
    history.train_loss, history.grad_norm = list(result.losses), list(result.grad_norms)
    history.stop_reason = "interrupted" if result.stop_reason == "callback" else result.stop_reason
    history.n_epochs = history.n_steps = trainer.epoch = trainer.step = result.n_iter
    history.wall_time = result.wall_time
    return history


def train(cfg: Config, run_dir: str | None = None, quiet: bool = False, name: str | None = None) -> RunResult:
    """Train from ``cfg`` into a new run directory. Under torchrun every rank trains on its
    shard and only rank 0 creates the directory, logs and writes checkpoints."""
    device, rank0 = _start_distributed(cfg)
    dtype = resolve_dtype(cfg.train.dtype)
    prep = prepare(cfg, device, dtype)
    model = build_model(cfg.model.kind, prep.X["train"].shape[1], len(prep.classes), cfg.model.bias)
    check_cuda_graph(cfg, model, device)  # before the run directory exists
    path = None
    if rank0:
        path = new_run_dir(cfg, name or (Path(cfg.data.path).stem if cfg.data.path else cfg.data.name), run_dir)
        write_text_atomic(path / "config.toml", cfg.to_toml())
    return _run(cfg, path, prep, model, device, dtype, quiet)


def _load_run(run_dir: str | Path, which: str = "checkpoint.pt") -> tuple[Path, dict, Config]:
    path = Path(run_dir)
    if not path.is_dir():
        raise UsageError(f"run directory {path} does not exist")
    payload = load_checkpoint(path / which)
    try:
        cfg = config_from_dict(payload["config"])
        if payload["model_class"] not in MODELS:
            raise KeyError(payload["model_class"])
    except (KeyError, TypeError, AttributeError, UsageError) as exc:
        raise UsageError(f"checkpoint {path / which} is incomplete or from another program ({exc})") from None
    return path, payload, cfg


def model_from_checkpoint(payload: dict, device=None, dtype=None):
    model = MODELS[payload["model_class"]](**payload["model_args"])
    saved = next(iter(payload["model"].values()), None)
    if isinstance(saved, Tensor) and saved.is_floating_point():
        model.to(saved.dtype)  # load at the saved precision: float64 weights must not pass through float32
    try:
        model.load_state_dict(payload["model"])
    except (RuntimeError, KeyError) as exc:
        raise UsageError(f"checkpoint weights do not fit a {payload['model_class']}({payload['model_args']}): {exc}") from None
    return model.to(device=device, dtype=dtype)


def resume(run_dir: str | Path, quiet: bool = False, device: str | None = None) -> RunResult:
    path, payload, cfg = _load_run(run_dir)
    if payload.get("finished"):
        raise UsageError(f"run {path} already finished ({payload['trainer']['history']['stop_reason']}); "
                         "start a new one with train")
    if device:
        cfg.train.device = device
    dev, rank0 = _start_distributed(cfg)
    dtype = resolve_dtype(cfg.train.dtype)
    standardizer = data_lib.Standardizer.from_state_dict(payload["standardizer"])
    prep = prepare(cfg, dev, dtype, standardizer)
    model = model_from_checkpoint(payload, dev, dtype)
    return _run(cfg, path if rank0 else None, prep, model, dev, dtype, quiet, resume_state=payload)


# --- evaluate / predict / gradcheck -----------------------------------------------------------


def _labels_to_targets(model, kind: str, y_raw, classes: list[str], source: str) -> Tensor:
    if kind == "linear":
        y, _ = data_lib.encode_labels(y_raw, kind)
    else:
        names = [data_lib._label_name(v) for v in (y_raw.tolist() if hasattr(y_raw, "tolist") else y_raw)]
        unknown = sorted(set(names) - set(classes))
        if unknown:
            raise UsageError(f"{source}: label {unknown[0]!r} was not seen in training (classes: {', '.join(classes)})")
        y = torch.tensor([classes.index(v) for v in names], dtype=torch.int64)
    y = y.to(model.device)
    return model.targets(fit_targets(kind, y, len(classes)), len(y))


def evaluate(run_dir: str | Path, data_path: str | None = None) -> dict:
    path, payload, cfg = _load_run(run_dir)
    dev = run_device(cfg.train.device)
    dtype = resolve_dtype(cfg.train.dtype)
    model = model_from_checkpoint(payload, dev, dtype)
    standardizer = data_lib.Standardizer.from_state_dict(payload["standardizer"])
    if data_path is None:
        prep = prepare(cfg, dev, dtype, standardizer)
        return {s: metrics_lib.evaluate(model, prep.X[s], prep.T[s]) for s in SPLITS}
    schema = data_lib.Schema.from_dict(payload["schema"])
    X_raw, y_raw = _read_inputs(Path(data_path), schema, need_target=True)
    X = standardizer.transform(X_raw.to(dev)).to(dtype)
    T = _labels_to_targets(model, payload["kind"], y_raw, payload["classes"], data_path)
    return {"data": metrics_lib.evaluate(model, X, T)}


def _read_inputs(path: Path, schema: data_lib.Schema, need_target: bool):
    """Features (and the target, if present) of a CSV / .npy / .npz file, encoded like training."""
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        if suffix == ".npz" and need_target:
            ds = data_lib._load_numpy(path, "")
            X, y = ds.X, ds.y
        else:
            try:
                arr = np.load(path, mmap_mode="r") if suffix == ".npy" else np.load(path)["X"]
            except (OSError, ValueError, KeyError, FileNotFoundError) as exc:
                raise UsageError(f"{path} is not a readable NumPy file with features: {exc}") from None
            X = torch.from_numpy(np.asarray(arr, dtype=np.float64))
            y = None
        expected = len(schema.columns)
        if X.ndim != 2 or X.shape[1] != expected:
            raise UsageError(f"{path}: expected {expected} feature columns as in training, got shape {tuple(X.shape)}")
        if schema.add_radius:
            X = data_lib.with_radius(X)
        return X, y
    header, rows = data_lib.read_csv_table(path)
    allowed = set(schema.columns) | ({schema.target} if schema.target else set())
    extra = [c for c in header if c not in allowed]
    if extra:
        raise UsageError(f"{path}: column {extra[0]!r} was not used in training; expected columns "
                         f"{', '.join(schema.columns)}")
    X = data_lib.encode_rows(schema, header, rows, path)
    y = None
    if schema.target and schema.target in header:
        ti = header.index(schema.target)
        y = np.array([cells[ti].strip() for _, cells in rows])
    elif need_target:
        raise UsageError(f"{path}: the target column {schema.target or '(none)'!r} is needed to evaluate")
    return X, y


def predict(run_dir: str | Path, input_path: str, output_path: str) -> int:
    """Write probabilities and labels for every row of ``input_path``; returns the row count."""
    path, payload, cfg = _load_run(run_dir)
    dev = run_device(cfg.train.device)
    dtype = resolve_dtype(cfg.train.dtype)
    model = model_from_checkpoint(payload, dev, dtype)
    schema = data_lib.Schema.from_dict(payload["schema"])
    standardizer = data_lib.Standardizer.from_state_dict(payload["standardizer"])
    X_raw, _ = _read_inputs(Path(input_path), schema, need_target=False)
    X = standardizer.transform(X_raw.to(dev)).to(dtype)
    classes = payload["classes"]
    with torch.no_grad():
        out = model(X).double().cpu().numpy()
    if model.link == "identity":
        header, rows = ["prediction"], [[f"{v:.17g}"] for v in out[:, 0]]
    elif model.n_outputs == 1:
        labels = np.where(out[:, 0] >= 0.5, classes[1], classes[0])
        header = [f"probability_{classes[1]}", "label"]
        rows = [[f"{p:.17g}", lab] for p, lab in zip(out[:, 0], labels)]
    else:
        header = [f"probability_{c}" for c in classes] + ["label"]
        rows = [[f"{p:.17g}" for p in row] + [classes[int(row.argmax())]] for row in out]
    out_path = Path(output_path)
    if not out_path.parent.exists():
        raise UsageError(f"cannot write {out_path}: directory {out_path.parent} does not exist")
    with atomic_write(out_path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return len(rows)


def gradcheck(cfg: Config, max_rows: int = 2000):
    """The three-way gradient check on the configured data and model, at small random weights."""
    device = run_device(cfg.train.device)
    dtype = torch.float64
    prep = prepare(cfg, device, dtype)
    model = build_model(cfg.model.kind, prep.X["train"].shape[1], len(prep.classes), cfg.model.bias)
    model = model.to(device=device, dtype=dtype)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=gen, dtype=dtype))
    X, T = prep.X["train"][:max_rows], prep.T["train"][:max_rows]
    return compare_gradients(model, X, T, cfg.train.l2, seed=cfg.train.seed)
