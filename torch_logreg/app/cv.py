"""``torch-logreg cv``: stratified k-fold search over config values.

``--grid train.l2=0,0.01,0.1 --grid train.lr=0.1,0.5`` tries every combination on the rows
outside the test split, each fold standardized on its own training part, trained the way the
config says (the loop, or newton / lbfgs), and scored on the held-out fold. The table is
printed best first; a run directory keeps ``results.json`` and one TensorBoard hparams trial
per combination, so the HPARAMS dashboard compares them.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import statistics

import torch

from ..devices import resolve_dtype
from ..errors import UsageError
from ..estimators.model_selection import format_table
from ..train import TrainingDiverged
from . import data as data_lib
from . import metrics as metrics_lib
from .config import Config, parse_value, set_value, validate
from .files import write_text_atomic
from .fitting import build_model, check_cuda_graph, fit, fit_targets, run_device
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
    dtype = resolve_dtype(cfg.train.dtype)
    kind = cfg.model.kind
    ds = data_lib.load_dataset(cfg.data, seed=cfg.train.seed, device=device)
    y, classes = data_lib.encode_labels(ds.y, kind)
    probe = build_model(kind, ds.X.shape[1], len(classes))
    train_idx, val_idx, _ = data_lib.split_indices(y, ds.X.shape[0], cfg.data.val_fraction, cfg.data.test_fraction,
                                                   cfg.train.seed, stratify=kind != "linear")
    pool = torch.cat([train_idx, val_idx])  # the test split stays unseen
    X_pool, y_pool = ds.X.index_select(0, pool.to(ds.X.device)), y.index_select(0, pool.to(y.device))
    from sklearn.model_selection import KFold, StratifiedKFold

    splitter = (KFold if kind == "linear" else StratifiedKFold)(n_splits=folds, shuffle=True, random_state=cfg.train.seed)
    labels = y_pool.cpu().numpy()
    if kind != "linear" and min(labels.tolist().count(c) for c in set(labels.tolist())) < folds:
        raise UsageError(f"a class has fewer rows than --folds={folds}; lower --folds")
    fold_idx = [(torch.from_numpy(a), torch.from_numpy(b)) for a, b in splitter.split(labels.reshape(-1, 1), labels)]

    keys = list(grid)
    rows = []
    trials = []
    for values in itertools.product(*(grid[k] for k in keys)):  # every combination checked before any runs
        trial = copy.deepcopy(cfg)
        for k, v in zip(keys, values):
            setattr(getattr(trial, k.split(".")[0]), k.split(".")[1], v)
        validate(trial, {})
        check_cuda_graph(trial, probe, device)
        trials.append((values, trial))
    for values, trial in trials:
        scores: dict[str, list[float]] = {}
        for tr, te in fold_idx:
            Xtr, Xte = X_pool.index_select(0, tr.to(X_pool.device)), X_pool.index_select(0, te.to(X_pool.device))
            std = (data_lib.Standardizer.fit(Xtr) if trial.data.standardize
                   else data_lib.Standardizer.identity(Xtr.shape[1]))
            Xtr = std.transform(Xtr.to(device, torch.float64)).to(dtype)
            Xte = std.transform(Xte.to(device, torch.float64)).to(dtype)
            model = build_model(kind, Xtr.shape[1], len(classes), trial.model.bias).to(device=device, dtype=dtype)
            ytr, yte = (y_pool.index_select(0, i.to(y_pool.device)).to(device) for i in (tr, te))
            Ttr = model.targets(fit_targets(kind, ytr, len(classes)), len(ytr))
            Tte = model.targets(fit_targets(kind, yte, len(classes)), len(yte))
            try:
                fit(trial, model, Xtr, Ttr)
                m = metrics_lib.evaluate(model, Xte, Tte)
            except TrainingDiverged:
                m = {"loss": math.nan}
            for metric, value in m.items():
                scores.setdefault(metric, []).append(value)
        row = {k: v for k, v in zip(keys, values)}
        for metric, vals in scores.items():
            row[f"mean_{metric}"] = statistics.fmean(vals)
            row[f"std_{metric}"] = statistics.pstdev(vals) if len(vals) > 1 else 0.0
        rows.append(row)
        if not quiet:
            done = ", ".join(f"{k}={v}" for k, v in zip(keys, values))
            print(f"cv {len(rows)}: {done}: held-out loss {row['mean_loss']:.5g}", flush=True)
    rows.sort(key=lambda r: (math.isnan(r["mean_loss"]), r["mean_loss"]))
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank

    path = new_run_dir(cfg, f"cv-{name}", run_dir)
    write_text_atomic(path / "config.toml", cfg.to_toml())
    write_text_atomic(path / "results.json", json.dumps({"folds": folds, "grid": grid, "rows": rows}, indent=2) + "\n")
    from torch.utils.tensorboard import SummaryWriter

    from .tensorboard import write_hparams

    for i, row in enumerate(rows):
        with SummaryWriter(log_dir=str(path / f"trial-{i:03d}")) as writer:
            hp = {k: row[k] for k in keys}
            write_hparams(writer, hp, {k: v for k, v in row.items() if k.startswith("mean_")})
    return rows, path


def table(rows: list[dict]) -> str:
    columns = ["rank", *[k for k in rows[0] if "." in k], *[k for k in rows[0] if k.startswith("mean_")]]
    return format_table(rows, columns)
