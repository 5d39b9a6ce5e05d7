"""The commands: ``train``, ``resume``, ``evaluate``, ``predict`` and ``gradcheck`` (``cv`` is in
``cv.py``). A config in, a run directory out; user mistakes raise :class:`UsageError`.

``train`` prepares the data, builds the model, runs the hand-written loop (or an exact solver)
with TensorBoard, progress and checkpoint callbacks, and writes ``config.toml``, the events file,
``checkpoint.pt``, ``best.pt`` and ``metrics.json``. ``resume``, ``evaluate``, ``predict`` and
``gradcheck`` work from a run directory or a config.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..devices import resolve_precision
from ..errors import UsageError
from ..functional import LINKS
from ..gradients import compare_gradients
from ..registry import EXACT_SOLVERS
from ..train import Callback, TrainingDiverged, TrainState
from . import ingest
from . import metrics as metrics_lib
from .checkpoint import save_checkpoint
from .config import Config
from .files import USER_FIXABLE, check_output, write_text_atomic
from .fitting import (
    Prepared,
    build_model,
    check_cuda_graph,
    end_distributed,
    fit_exact_run,
    fit_targets,
    make_trainer,
    prepare,
    run_device,
    start_distributed,
    storage_dtype,
)
from .progress import Progress
from .report import epoch_pictures, final_report, split_metrics
from .rows import world_size
from .runs import (
    CheckpointWriter,
    RunLock,
    RunResult,
    StopOnInterrupt,
    load_run,
    model_from_checkpoint,
    new_run_dir,
    payload,
)


def _trainer(cfg: Config, model, prep: Prepared, device, dtype, callbacks, resume_state: dict | None = None):
    # the step a run saved by an earlier version with train.step = "auto" had measured: kept on resuming
    step = resume_state.get("step_choice") if resume_state else None
    return make_trainer(cfg, model, prep.rows, device, dtype, X_val=prep.X["val"], T_val=prep.T["val"],
                        callbacks=callbacks, step=step, schema=prep.schema,
                        offset_val=None if prep.offset is None else prep.offset["val"])


def _run(cfg: Config, run_dir: Path | None, prep: Prepared, model, device, dtype, quiet: bool,
         resume_state: dict | None = None) -> RunResult:
    result = _run_here(cfg, run_dir, prep, model, device, dtype, quiet, resume_state)
    end_distributed()
    return result


def _run_here(cfg: Config, run_dir: Path | None, prep: Prepared, model, device, dtype, quiet: bool,
              resume_state: dict | None = None) -> RunResult:
    if run_dir is None:  # a rank other than 0: train, but log and write nothing
        interrupt = StopOnInterrupt()
        trainer = _trainer(cfg, model, prep, device, dtype, [interrupt], resume_state)
        if resume_state is not None:
            trainer.load_state_dict(resume_state["trainer"])
        try:
            history = trainer.run()
        except TrainingDiverged as exc:
            raise UsageError(str(exc)) from None
        if history.stop_reason != "interrupted":
            prep.rows.logits(model)  # rank 0 reports the training split (a collective call where rows are spread)
        return RunResult(None, {"stop_reason": history.stop_reason, "epochs": trainer.epoch},
                         interrupted=history.stop_reason == "interrupted", signal=interrupt.signal)

    from torch.utils.tensorboard import SummaryWriter

    purge = resume_state["step"] + 1 if resume_state else None
    writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge)
    # the events file is closed however the run ends (its writer thread must not outlive the run);
    # a full disk met by TensorBoard's writer is reported like one met by a checkpoint
    try:
        result = _logged_run(cfg, run_dir, prep, model, device, dtype, quiet, resume_state, writer)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            writer.close()
        if isinstance(exc, OSError) and exc.errno in USER_FIXABLE:
            raise _events_failure(run_dir, exc) from None
        raise
    try:
        writer.close()
    except OSError as exc:
        if exc.errno not in USER_FIXABLE:
            raise
        raise _events_failure(run_dir, exc) from None
    return result


def _events_failure(run_dir: Path, exc: OSError) -> UsageError:
    kept = (f"the last checkpoint {run_dir / 'checkpoint.pt'} is whole; resume from it once the problem is fixed"
            if (run_dir / "checkpoint.pt").exists() else "no checkpoint was written")
    return UsageError(f"cannot write the TensorBoard events in {run_dir}: {exc.strerror or exc}; {kept}")


def _logged_run(cfg: Config, run_dir: Path, prep: Prepared, model, device, dtype, quiet: bool,
                resume_state: dict | None, writer) -> RunResult:
    from .tensorboard import TensorBoardLogger, config_text, pictures_every

    if resume_state is None:
        writer.add_text("config", config_text(cfg), 0)

    interrupt = StopOnInterrupt()
    has_val = prep.X["val"].shape[0] > 0
    train_eval, val_eval = prep.rows.tensors(), (prep.X["val"], prep.T["val"]) if has_val else None
    if prep.offset is not None:  # the per-epoch metrics add the rows' offsets, as the steps do
        train_eval = None if train_eval is None else (*train_eval, prep.offset["train"])
        val_eval = None if val_eval is None else (*val_eval, prep.offset["val"])
    logger = TensorBoardLogger(writer, every=cfg.log.every,
                               histograms_every=cfg.log.histograms_every or cfg.log.checkpoint_every,
                               lr=cfg.train.lr,
                               train_eval=train_eval,
                               val_eval=val_eval,
                               pictures=epoch_pictures(prep),
                               pictures_every=pictures_every(cfg.train.epochs, cfg.log.checkpoint_every))
    ckpt = CheckpointWriter(run_dir, cfg.log.checkpoint_every, prep, cfg)
    callbacks: list[Callback] = [logger, ckpt, interrupt]
    if not quiet:
        callbacks.append(Progress(cfg.train.epochs))
    trainer = _trainer(cfg, model, prep, device, dtype, callbacks, resume_state)
    if resume_state is not None:
        trainer.load_state_dict(resume_state["trainer"])
        torch.set_rng_state(resume_state["rng"]["torch"])
    try:
        if cfg.train.solver in EXACT_SOLVERS:  # the loop's callbacks do not run: the logger's ends are called here
            logger.on_train_begin(TrainState(model=model, trainer=trainer, epoch=trainer.epoch, step=trainer.step))
            history = fit_exact_run(cfg, trainer, writer, interrupt, quiet)
            logger.on_train_end(TrainState(model=model, trainer=trainer, epoch=trainer.epoch, step=trainer.step))
        else:
            history = trainer.run()
    except TrainingDiverged as exc:
        raise UsageError(
            f"{exc} The last good checkpoint is in {run_dir}/checkpoint.pt"
            if (run_dir / "checkpoint.pt").exists() else str(exc)
        ) from None
    state = TrainState(model=model, trainer=trainer, epoch=trainer.epoch, step=trainer.step)
    interrupted = history.stop_reason == "interrupted"
    ckpt.write(state, finished=not interrupted)
    if interrupted:
        return RunResult(run_dir, {"stop_reason": "interrupted", "epochs": trainer.epoch}, interrupted=True,
                         signal=interrupt.signal)
    if trainer.best_state is None:  # no validation data: the final weights are the best we have
        save_checkpoint(run_dir / "best.pt", payload(trainer, prep, cfg, True))
    metrics = final_report(writer, model, prep, cfg, history, run_dir, device, prep.rows.logits(model))
    return RunResult(run_dir, metrics)


def train(cfg: Config, run_dir: str | None = None, quiet: bool = False, name: str | None = None) -> RunResult:
    """Train from ``cfg`` into a new run directory. Under torchrun every rank trains on its
    shard and only rank 0 creates the directory, logs and writes checkpoints."""
    device, rank0 = start_distributed(cfg)
    resolve_precision(cfg.train.dtype, device=device)  # float16 off CUDA: refused before the data is read
    dtype = storage_dtype(cfg)
    prep = prepare(cfg, device, dtype)
    model = build_model(cfg.model, prep.n_features, len(prep.classes), cfg.train.seed)
    check_cuda_graph(cfg, model, device)  # before the run directory exists
    path, lock = None, None
    existed = run_dir is not None and Path(run_dir).exists()
    if rank0:
        path = new_run_dir(cfg, name or (Path(cfg.data.path).stem if cfg.data.path else cfg.data.name), run_dir)
    try:
        if path is not None:
            lock = RunLock(path)  # one writer per run directory
            write_text_atomic(path / "config.toml", cfg.to_toml())
        return _run(cfg, path, prep, model, device, dtype, quiet)
    except BaseException as exc:
        # a run directory is complete enough to resume (it has a checkpoint) or it is removed
        if path is None or (path / "checkpoint.pt").exists():
            raise
        _discard(path, keep_directory=existed)
        if not isinstance(exc, UsageError):  # Ctrl-C, or a bug: shown as what it is
            raise
        what = "what this run wrote in it was removed" if existed else "it was removed"
        raise UsageError(f"{exc} (no checkpoint was written to the run directory {path}, so {what})") from None
    finally:
        if lock is not None:
            lock.release()


def _discard(path: Path, keep_directory: bool) -> None:
    """Remove a run directory this command made (only the files in it, if it was there before)."""
    import shutil

    if not keep_directory:
        shutil.rmtree(path, ignore_errors=True)
        return
    for child in path.iterdir():
        shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)


# what resume --set may change: how long the run goes on, where, and how it is watched; the rest
# (data, model, solver, learning rate, penalties, seed) defines the run and stays as it started
RESUMABLE = ("train.epochs", "train.device", "train.tol", "train.patience", "train.check_every",
             "train.grad_check_every", "log.every", "log.checkpoint_every", "log.histograms_every")


def resume(run_dir: str | Path, quiet: bool = False, device: str | None = None, overrides: list[str] = (),
           allow_changed_data: bool = False) -> RunResult:
    """Continue a run from its checkpoint, on the same data and config; ``overrides``
    (``key=value``, keys of :data:`RESUMABLE`) extend or re-watch it, e.g. ``train.epochs=500``
    to go on after a run that stopped at its epoch limit. config.toml is rewritten with them. The
    run directory is locked while it is written (:class:`~.runs.RunLock`): one writer at a time."""
    path, payload, cfg = load_run(run_dir)
    lock = RunLock(path) if world_size() <= 1 or int(os.environ.get("RANK", "0") or 0) == 0 else None
    try:
        if lock is not None and lock.stale:
            _notice(f"{lock.path} was left by process {lock.stale}, which no longer runs; taking it over")
        return _resume(path, payload, cfg, quiet, device, overrides, allow_changed_data)
    finally:
        if lock is not None:
            lock.release()


def _resume(path: Path, payload: dict, cfg: Config, quiet: bool, device: str | None, overrides,
            allow_changed_data: bool) -> RunResult:
    from .config import apply_overrides

    _check_config_unchanged(path, cfg, "resume")
    changed = apply_overrides(cfg, overrides, allowed=RESUMABLE)
    if "train.epochs" in changed and cfg.train.epochs <= payload["epoch"]:
        raise UsageError(f"--set train.epochs={cfg.train.epochs}: run {path} is at epoch {payload['epoch']} already; "
                         "give a limit above that (config.toml is unchanged)")
    if device:
        cfg.train.device = device
    if payload.get("finished"):
        reason = payload["trainer"]["history"]["stop_reason"]
        more = reason == "max_epochs" and cfg.train.solver not in EXACT_SOLVERS and cfg.train.epochs > payload["epoch"]
        if not more:
            raise UsageError(f"run {path} already finished ({reason} at epoch {payload['epoch']}); "
                             + ("continue it with resume --set train.epochs=N (N > the epochs done) or "
                                if reason == "max_epochs" and cfg.train.solver not in EXACT_SOLVERS else "")
                             + "start a new one with train")
    dev, rank0 = start_distributed(cfg)
    dtype = storage_dtype(cfg)
    standardizer = ingest.Standardizer.from_state_dict(payload["standardizer"])
    prep = prepare(cfg, dev, dtype, standardizer)
    _check_data_unchanged(path, payload, prep, allow_changed_data, "resume would continue on other data")
    model = model_from_checkpoint(payload, dev, dtype)
    if changed and rank0:
        write_text_atomic(path / "config.toml", cfg.to_toml())  # the file keeps describing the run
    return _run(cfg, path if rank0 else None, prep, model, dev, dtype, quiet, resume_state=payload)


def _check_config_unchanged(path: Path, cfg: Config, command: str, allow: bool = False) -> None:
    """A run is used with the config in its checkpoint: an edited config.toml would no longer
    describe it, so it is refused rather than silently ignored (``evaluate`` and ``predict`` go
    on when ``allow``, saying so)."""
    from .config import load_config

    saved = path / "config.toml"
    if not saved.exists():
        return
    try:
        on_disk = load_config(saved).to_dict()
    except UsageError as exc:
        keys, reason = None, f"no longer reads as this run's config ({exc})"
    else:
        keys = [f"{s}.{k}" for s, body in cfg.to_dict().items() for k, v in body.items() if on_disk[s][k] != v]
        reason = f"was edited after the run started ({', '.join(keys)})"
        if not keys:
            return
    if command == "resume":
        raise UsageError(f"{saved} {reason}; resume continues the run as it was configured: restore the file "
                         f"(change {', '.join(RESUMABLE)} with resume --set), or start a new run with train --config")
    if not allow:
        raise UsageError(f"{saved} {reason}; {command} uses the configuration saved in the checkpoint: restore the "
                         "file, or pass --allow-changed-data to go on with the saved configuration")
    _notice(f"{saved} {reason}; using the configuration saved in the checkpoint")


def _check_data_unchanged(path: Path, payload: dict, prep: Prepared, allow: bool, consequence: str) -> None:
    """Refuse (or, when ``allow``, only say) that the data file differs from the one the run was
    trained on: the same seed would split other rows."""
    diff = ingest.change(payload.get("data_fingerprint"), prep.fingerprint)
    if diff is None:
        return
    what = f"data file {prep.fingerprint['path']} has changed since run {path} was trained on it ({diff})"
    if not allow:
        raise UsageError(f"{what}: {consequence}; restore the file, or pass --allow-changed-data to use it as it is now")
    _notice(f"{what}; using it as it is now")


def _notice(text: str) -> None:
    import sys

    print(f"torch-logreg: warning: {text}", file=sys.stderr)


def evaluate(run_dir: str | Path, data_path: str | None = None, allow_changed_data: bool = False) -> dict:
    path, payload, cfg = load_run(run_dir)
    _check_config_unchanged(path, cfg, "evaluate", allow_changed_data)
    dev = run_device(cfg.train.device)
    dtype = storage_dtype(cfg)
    model = model_from_checkpoint(payload, dev, dtype)
    standardizer = ingest.Standardizer.from_state_dict(payload["standardizer"])
    if data_path is None:
        prep = prepare(cfg, dev, dtype, standardizer)
        _check_data_unchanged(path, payload, prep, allow_changed_data,
                              "its train/validation/test splits would be other rows")
        return split_metrics(model, prep, payload["classes"] or None)
    schema = ingest.Schema.of_run(payload)
    new = ingest.read_new(Path(data_path), schema, need_target=True, max_bytes=cfg.data.max_bytes, ignore_extra=True)
    X_raw, y_raw, offset = new.X, new.y, new.offset
    if cfg.data.keep_classes and model.link != "identity":  # the rows training kept, and only those
        mask = ingest.keep_mask(y_raw, [str(c) for c in cfg.data.keep_classes])
        if not mask.any():
            raise UsageError(f"{data_path}: no row has a label of data.keep_classes ({ingest.listed(cfg.data.keep_classes)})")
        if not mask.all():
            _notice(f"{data_path}: {int((~mask).sum())} of {len(mask)} rows have labels outside data.keep_classes "
                    f"({ingest.listed(cfg.data.keep_classes)}) and are left out, as in training")
        X_raw, y_raw = ingest.take_rows(X_raw, torch.from_numpy(np.nonzero(mask)[0])), np.asarray(y_raw)[mask]
        offset = None if offset is None else offset[mask]
    X = standardizer.transform(X_raw.to(dev)).to(dtype)
    ingest.check_standardized(X, X_raw, data_path, schema.feature_names)
    with torch.no_grad():
        logits = model.logits(X) + (0 if offset is None else torch.tensor(offset[:, None]).to(device=dev, dtype=dtype))
    if isinstance(schema.target, list):  # several 0/1 target columns, read as they are
        T = model.targets(torch.as_tensor(np.asarray(y_raw)).to(dev), len(y_raw))
        return {"data": metrics_lib.evaluate(model, X, T, payload["classes"] or None, logits=logits, multilabel=True)}
    T = labels_to_targets(model, payload["kind"], y_raw, payload["classes"], data_path)
    return {"data": metrics_lib.evaluate(model, X, T, payload["classes"] or None, logits=logits)}


def labels_to_targets(model, kind: str, y_raw, classes: list[str], source: str) -> Tensor:
    """New rows' raw labels as the model's (N, K) targets: values for regression, else the
    training classes' indices (a label training did not see is named)."""
    if model.link == "identity":
        kind = "linear"
        y, _ = ingest.encode_labels(y_raw, kind)
    else:
        names = [ingest.label_name(v) for v in (y_raw.tolist() if hasattr(y_raw, "tolist") else y_raw)]
        classes = [ingest.label_name(c) for c in classes]  # in NFC, as the new labels are read
        unknown = sorted(set(names) - set(classes))
        if unknown:
            raise UsageError(f"{source}: label {unknown[0]!r} was not seen in training (classes: {ingest.listed(classes)})")
        y = torch.tensor([classes.index(v) for v in names], dtype=torch.int64)
    y = y.to(model.device)
    return model.targets(fit_targets(kind, y, len(classes)), len(y))


def predict(run_dir: str | Path, input_path: str, output_path: str, force: bool = False,
            allow_changed_data: bool = False, keep: list[str] = (), threshold: float | None = None,
            interval: float | None = None) -> int:
    """Write class probabilities (``p_<class>``) and labels, or regression predictions, for every
    row of ``input_path``, after the ``keep`` columns copied from it; returns the row count.
    ``interval`` (a level in (0, 1)) adds ``p_<class>_lower`` and ``p_<class>_upper`` after each
    ``p_<class>``: :func:`_interval_bounds`."""
    from . import predictions

    path, payload, cfg = load_run(run_dir)
    out_path = check_output(output_path, run_dir=path, inputs=[input_path], force=force)
    predictions.check_format(out_path)
    _check_config_unchanged(path, cfg, "predict", allow_changed_data)
    dev = run_device(cfg.train.device)
    dtype = storage_dtype(cfg)
    model = model_from_checkpoint(payload, dev, dtype)
    predictions.check_threshold(threshold, model.link, model.n_outputs)
    schema = ingest.Schema.of_run(payload)
    if interval is not None:
        _check_interval(cfg, schema, interval)
    standardizer = ingest.Standardizer.from_state_dict(payload["standardizer"])
    new = ingest.read_new(Path(input_path), schema, need_target=False, max_bytes=cfg.data.max_bytes, keep=list(keep))
    X = standardizer.transform(new.X.to(dev)).to(dtype)
    ingest.check_standardized(X, new.X, input_path, schema.feature_names)
    with torch.no_grad():
        z = model.logits(X)
        if new.offset is not None:  # the run's data.offset column, added to each row's logits as in training
            z = z + torch.tensor(new.offset[:, None]).to(device=dev, dtype=dtype)
        p = LINKS[model.link][0](z)
        out = p.float().cpu().numpy() if dtype != torch.float64 else p.cpu().numpy()
    columns = predictions.table(out, model.link, payload["classes"], threshold, out.dtype)
    if interval is not None:
        X64 = standardizer.transform(new.X.to(dev)).to(torch.float64)
        bounds = _interval_bounds(cfg, path, payload, dev, standardizer, X64, new.offset, interval, allow_changed_data)
        with_bounds: dict[str, np.ndarray] = {}
        for name, col in columns.items():  # each p_<class> followed by its bounds
            with_bounds[name] = col
            if name in bounds:
                with_bounds[f"{name}_lower"], with_bounds[f"{name}_upper"] = (b.astype(out.dtype) for b in bounds[name])
        columns = with_bounds
    return predictions.write(out_path, new.kept, columns)


def _check_interval(cfg: Config, schema, interval: float) -> None:
    """Refuse ``predict --interval`` where the run's fit has no covariance to give it (one sentence each)."""
    if not 0 < interval < 1:
        raise UsageError(f"--interval is a confidence level between 0 and 1 (exclusive), e.g. 0.95; got {interval:g}")
    kind = cfg.model.kind
    if kind not in ("logistic", "softmax"):
        raise UsageError(f"--interval needs a logistic or softmax run (model.kind), whose coefficients have a covariance "
                         f"from the likelihood; this run has model.kind = {kind!r}")
    if schema.sparse:
        raise UsageError("--interval needs dense features, and this run's are sparse (a sparse file or hashed columns)")
    t = cfg.train
    if t.lower_bounds or t.upper_bounds:
        raise UsageError("--interval needs a run without train.lower_bounds or train.upper_bounds: at a bound the "
                         "likelihood's curvature does not give the coefficients' covariance")
    if t.l1 > 0:
        raise UsageError(f"--interval needs a run without train.l1 (it is {t.l1:g}): the L1 penalty has no curvature "
                         "at the coefficients it sets to zero, so the objective gives them no covariance")
    if t.l2 > 0 and t.penalty_factor:
        raise UsageError("--interval takes train.l2 alone, without train.penalty_factor: the covariance adds the "
                         "curvature of the plain L2 penalty to the likelihood's")


def _interval_bounds(cfg: Config, path: Path, payload: dict, dev, standardizer, X, offset, interval: float,
                     allow_changed_data: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{p_<class>: (lower (M,), upper (M,))}`` at level ``interval`` for the standardized rows ``X`` ``(M, D)``
    (float64) with their offsets: :meth:`~torch_logreg.inference.InferenceResult.get_prediction` of the
    nonrobust inference of the run's model, in float64, on its training split (rows, weights and offsets) --
    the inverse observed information of the run's objective (the likelihood plus its L2 penalty) at the run's
    weights, which must minimise it; the interval is the one on each
    probability's logit, mapped back, so it stays inside (0, 1)."""
    from ..inference import infer

    model = model_from_checkpoint(payload, dev, torch.float64)
    prep = prepare(cfg, dev, torch.float64, standardizer)
    _check_data_unchanged(path, payload, prep, allow_changed_data, "its training split would be other rows")
    X_train, T = prep.rows.in_memory("predict --interval needs them")
    off = None if prep.rows.offset is None else prep.rows.offset[:, 0]
    classes = [str(c) for c in payload["classes"]]
    try:
        res = infer(model, X_train, T, prep.weight, offset=off, class_names=classes, l2=cfg.train.l2)
    except ValueError as exc:  # separation, a singular design, or weights away from the maximum likelihood
        raise UsageError(f"--interval: {exc}") from None
    alpha = 1 - interval
    if model.link == "sigmoid":
        pred = res.get_prediction(X.cpu().numpy(), offset=offset)
        ci = pred.conf_int(alpha)
        return {f"p_{classes[1]}": (ci[:, 0], ci[:, 1]), f"p_{classes[0]}": (1 - ci[:, 1], 1 - ci[:, 0])}
    ci = res.get_prediction(X.cpu().numpy()).conf_int(alpha)
    return {f"p_{c}": (ci[:, k, 0], ci[:, k, 1]) for k, c in enumerate(classes)}


#: gradcheck on sparse data: the rows checked are densified, at most this many entries (80 MB in float64)
GRADCHECK_DENSE_ENTRIES = 10_000_000


def gradcheck(cfg: Config, max_rows: int = 2000):
    """The three-way gradient check on the configured data and model, at small random weights.
    Autograd and finite differences take dense rows: sparse data (svmlight, scipy .npz, hashed
    columns) is checked on its first rows densified, as many as :data:`GRADCHECK_DENSE_ENTRIES`
    allows (a file wider than that is refused, before any row is densified)."""
    device = run_device(cfg.train.device)
    dtype = torch.float64
    prep = prepare(cfg, device, dtype)
    model = build_model(cfg.model, prep.n_features, len(prep.classes), cfg.train.seed)
    model = model.to(device=device, dtype=dtype)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=gen, dtype=dtype))
    if prep.schema.sparse:
        width = prep.n_features
        if width > GRADCHECK_DENSE_ENTRIES:
            raise UsageError(f"gradcheck densifies the rows it checks, and {width:,} columns of sparse data are more "
                             f"than its {GRADCHECK_DENSE_ENTRIES:,} entries; check a narrower file (fewer features, or "
                             "a smaller data.hash_bits)")
        max_rows = max(1, min(max_rows, GRADCHECK_DENSE_ENTRIES // width))
    X, T = prep.rows.head(max_rows)
    if X.layout == torch.sparse_csr:
        X = X.to_dense()
    return compare_gradients(model, X, T, cfg.train.l2, seed=cfg.train.seed)
