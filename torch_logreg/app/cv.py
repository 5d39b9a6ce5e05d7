"""``torch-logreg cv``: stratified k-fold search over config values, on the cross-validation
engine of :mod:`torch_logreg.estimators.model_selection`.

``--grid train.l2=0,0.01,0.1 --grid train.lr=0.1,0.5`` tries every combination on the rows
outside the test split, each fold standardized on its own training part, trained the way the
config says (the loop, or newton / lbfgs; with ``patience``, early stopping reads a validation
part of the fold's training rows, as ``train`` does), and scored on the held-out fold (the folds of
:func:`torch_logreg.folds.kfold`, which ``path`` deals too for the same rows and seed). The table is
printed best first; a run directory keeps ``results.json`` and one TensorBoard hparams trial
per combination, so the HPARAMS dashboard compares them.
"""

from __future__ import annotations

import copy
import itertools
import math

import torch

from .. import folds as folds_lib
from ..errors import UsageError
from ..estimators import model_selection
from ..registry import EXACT_SOLVERS
from ..train import TrainingDiverged
from . import ingest as data_lib
from . import metrics as metrics_lib
from .config import Config, parse_value, set_value, validate
from .files import json_text, write_text_atomic
from .fitting import build_model, check_cuda_graph, fit, fit_targets, row_weights, run_device, storage_dtype, target_kind
from .runs import new_run_dir


def parse_grid(items: list[str], cfg: Config) -> dict[str, list]:
    """``["train.l2=0,0.01"]`` -> ``{"train.l2": [0, 0.01]}``, each value checked like ``--set``."""
    if not items:
        raise UsageError("give at least one --grid KEY=V1,V2,... (e.g. --grid train.l2=0,0.01,0.1)")
    grid: dict[str, list] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        values = [v.strip() for v in text.split(",") if v.strip()]
        if not sep or not values:
            raise UsageError(f"--grid expects KEY=V1,V2,... (e.g. train.l2=0,0.01), got {item!r}")
        if key in grid:
            raise UsageError(f"--grid names {key} twice")
        if (key.split(".")[0] in ("data", "log") and key != "data.standardize") or key == "model.kind":
            raise UsageError(f"--grid {key}: cv compares training settings on one data set and one kind of model "
                             f"(train.*, model.* but kind, data.standardize); run cv once per {key} instead")
        parsed = []
        for v in values:
            trial = copy.deepcopy(cfg)
            value = parse_value(v)
            set_value(trial, key, value, f"--grid {item}")
            validate(trial, {key: f"--grid {item}"})
            parsed.append(getattr(getattr(trial, key.split(".")[0]), key.split(".")[1]))
        grid[key] = parsed
    return grid


def cross_validate(cfg: Config, grid: dict[str, list], folds: int = 5, run_dir: str | None = None,
                   name: str = "cv", quiet: bool = False) -> tuple[list[dict], object]:
    """Score every combination of ``grid`` by ``folds``-fold cross-validation; rows best first."""
    if folds < 2:
        raise UsageError(f"--folds must be at least 2, got {folds}")
    device = run_device(cfg.train.device)
    dtype = storage_dtype(cfg)
    kind = target_kind(cfg.model)
    ds = data_lib.load_dataset(cfg.data, seed=cfg.train.seed, device=device)
    y, classes = data_lib.encode_labels(ds.y, kind)
    probe = build_model(cfg.model, ds.X.shape[1], len(classes))
    train_idx, val_idx, _ = data_lib.split_indices(y, ds.X.shape[0], cfg.data.val_fraction, cfg.data.test_fraction,
                                                   cfg.train.seed, stratify=kind != "linear", classes=classes)
    pool = torch.cat([train_idx, val_idx])  # the test split stays unseen
    X_pool, y_pool = data_lib.take_rows(ds.X, pool), y.index_select(0, pool.to(y.device))
    stratify = kind != "linear"
    splits = folds_lib.kfold(y_pool.cpu().numpy(), folds, seed=cfg.train.seed, stratify=stratify, name="--folds",
                             class_names=classes)

    keys = list(grid)
    trials = {}
    for values in itertools.product(*(grid[k] for k in keys)):  # every combination checked before any runs
        trial = copy.deepcopy(cfg)
        for k, v in zip(keys, values):
            setattr(getattr(trial, k.split(".")[0]), k.split(".")[1], v)
        validate(trial, {})
        check_cuda_graph(trial, probe, device)
        trials[values] = trial

    def rows_of(index) -> tuple:
        index = torch.from_numpy(index)
        return data_lib.take_rows(X_pool, index), y_pool.index_select(0, index.to(y_pool.device)).to(device)

    def fit_and_score(combo: dict, train, test) -> dict:
        trial = trials[tuple(combo[k] for k in keys)]
        (Xtr, ytr), (Xte, yte) = rows_of(train), rows_of(test)
        wtr = row_weights(trial, ds.weight, pool[torch.from_numpy(train)], ytr, len(classes))
        wtr = None if wtr is None else wtr.to(device=device, dtype=dtype)
        std = (data_lib.Standardizer.fit(Xtr) if trial.data.standardize
               else data_lib.Standardizer.identity(Xtr.shape[1]))
        Xtr = std.transform(Xtr.to(device, torch.float64)).to(dtype)
        Xte = std.transform(Xte.to(device, torch.float64)).to(dtype)
        model = build_model(trial.model, Xtr.shape[1], len(classes), trial.train.seed).to(device=device, dtype=dtype)
        Ttr = model.targets(fit_targets(kind, ytr, len(classes)), len(ytr))
        Tte = model.targets(fit_targets(kind, yte, len(classes)), len(yte))
        X_val = T_val = None
        share = trial.data.val_fraction / (1 - trial.data.test_fraction)
        if trial.train.patience and share > 0 and trial.train.solver not in EXACT_SOLVERS:
            # early stopping reads a validation part carved from this fold's training rows, as in train
            fit_rows, val_rows, _ = data_lib.split_indices(ytr, len(ytr), share, 0.0, trial.train.seed, stratify,
                                                                classes=classes)
            X_val, T_val = data_lib.take_rows(Xtr, val_rows), Ttr.index_select(0, val_rows.to(device))
            Xtr, Ttr = data_lib.take_rows(Xtr, fit_rows), Ttr.index_select(0, fit_rows.to(device))
            wtr = None if wtr is None else wtr.index_select(0, fit_rows.to(device))
        try:
            fit(trial, model, Xtr, Ttr, X_val=X_val, T_val=T_val, sample_weight=wtr)
            return {**metrics_lib.evaluate(model, Xte, Tte), "diverged": 0.0}
        except TrainingDiverged:  # recorded as such (mean_diverged: the share of folds), ranked last
            return {"loss": math.nan, "diverged": 1.0}

    def report(row: dict) -> None:
        if not quiet:
            done = ", ".join(f"{k}={row[k]}" for k in keys)
            print(f"cv {list(trials).index(tuple(row[k] for k in keys)) + 1}: {done}: held-out loss "
                  f"{row.get('mean_loss', math.nan):.5g}", flush=True)

    combos = [dict(zip(keys, values)) for values in trials]
    rows = model_selection.score_grid(combos, splits, fit_and_score, rank_by="loss", on_row=report)
    rows.sort(key=lambda r: r["rank"])  # printed and saved best first

    path = new_run_dir(cfg, f"cv-{name}", run_dir)
    write_text_atomic(path / "config.toml", cfg.to_toml())
    write_text_atomic(path / "results.json", json_text({"folds": folds, "grid": grid, "rows": rows}))
    from torch.utils.tensorboard import SummaryWriter

    from .tensorboard import config_hparams, write_hparams

    for i, row in enumerate(rows):
        with SummaryWriter(log_dir=str(path / f"trial-{i:03d}")) as writer:
            trial = trials[tuple(row[k] for k in keys)]
            means = {"trial/" + k.removeprefix("mean_"): v for k, v in row.items() if k.startswith("mean_")}
            write_hparams(writer, config_hparams(trial, f"{folds}-fold cv"), means)
    return rows, path


def table(rows: list[dict]) -> str:
    columns = ["rank", *[k for k in rows[0] if "." in k], *[k for k in rows[0] if k.startswith("mean_")]]
    return model_selection.format_table(rows, columns)
