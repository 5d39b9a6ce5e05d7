"""``torch-logreg cv``: stratified k-fold search over config values, on the cross-validation
engine of :mod:`torch_logreg.estimators.model_selection`.

``--grid train.l2=0,0.01,0.1 --grid train.lr=0.1,0.5`` tries every combination on the rows
outside the test split, each fold standardized on its own training part, trained the way the
config says (the loop, or newton / lbfgs; with ``patience``, early stopping reads a validation
part of the fold's training rows, as ``train`` does), and scored on the held-out fold (the folds of
:func:`torch_logreg.folds.kfold`, which ``path`` deals too for the same rows and seed). The table is
printed best first; a run directory keeps ``results.json`` and one TensorBoard hparams trial
per combination, so the HPARAMS dashboard compares them.

``--random N --space train.lr=log:1e-4:1e-1 --space model.hidden=int:8:128`` draws ``N``
combinations instead (random search), each key from its range: ``log`` log-uniformly (both ends
> 0), ``uniform`` uniformly, ``int`` an integer uniformly with both ends included; floats are kept
to 6 significant digits. The draws are seeded by ``train.seed``: the same command draws the same
trials. They are scored, ranked and saved as the grid's are (a draw repeated is tried once).
"""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
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
from .fitting import (
    build_model,
    check_cuda_graph,
    fit,
    fit_targets,
    row_weights,
    run_device,
    split_data,
    storage_dtype,
    target_kind,
)
from .rows import InMemory
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
        _searchable(key, "--grid")
        parsed = []
        for v in values:
            trial = copy.deepcopy(cfg)
            value = parse_value(v)
            set_value(trial, key, value, f"--grid {item}")
            validate(trial, {key: f"--grid {item}"})
            parsed.append(getattr(getattr(trial, key.split(".")[0]), key.split(".")[1]))
        grid[key] = parsed
    return grid


#: how --space draws a key's values
SCALES = ("log", "uniform", "int")


def _searchable(key: str, flag: str) -> None:
    if (key.split(".")[0] in ("data", "log") and key != "data.standardize") or key == "model.kind":
        raise UsageError(f"{flag} {key}: cv compares training settings on one data set and one kind of model "
                         f"(train.*, model.* but kind, data.standardize); run cv once per {key} instead")


def parse_space(items: list[str], cfg: Config) -> dict[str, tuple[str, float, float]]:
    """``["train.lr=log:1e-4:1e-1"]`` -> ``{"train.lr": ("log", 1e-4, 0.1)}``; both ends checked
    like ``--set`` (``model.hidden`` takes ``int``: one hidden layer of the drawn width)."""
    if not items:
        raise UsageError("--random needs at least one --space KEY=log|uniform|int:LO:HI (e.g. "
                         "--space train.lr=log:1e-4:1e-1)")
    space: dict[str, tuple[str, float, float]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key, parts = key.strip(), text.split(":")
        if not sep or len(parts) != 3 or parts[0] not in SCALES:
            raise UsageError(f"--space expects KEY=SCALE:LO:HI with SCALE one of {', '.join(SCALES)} (e.g. "
                             f"train.lr=log:1e-4:1e-1), got {item!r}")
        if key in space:
            raise UsageError(f"--space names {key} twice")
        _searchable(key, "--space")
        scale = parts[0]
        try:
            lo, hi = float(parts[1]), float(parts[2])
        except ValueError:
            raise UsageError(f"--space {item}: LO and HI must be numbers") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise UsageError(f"--space {item}: needs finite LO <= HI")
        if scale == "log" and lo <= 0:
            raise UsageError(f"--space {item}: a log scale needs LO > 0")
        if scale == "int" and not (lo.is_integer() and hi.is_integer()):
            raise UsageError(f"--space {item}: an int scale needs integer ends")
        for end in (lo, hi):  # each end must be a value the key takes
            trial = copy.deepcopy(cfg)
            set_value(trial, key, _value(key, scale, end, cfg), f"--space {item}")
            validate(trial, {key: f"--space {item}"})
        space[key] = (scale, lo, hi)
    return space


def _value(key: str, scale: str, x: float, cfg: Config):
    """A drawn number as the key's value: an int for an int scale (a list of one for model.hidden)."""
    if scale != "int":
        return x
    return [int(x)] if isinstance(getattr(getattr(cfg, key.split(".")[0]), key.split(".")[1]), list) else int(x)


def draw(space: dict[str, tuple[str, float, float]], n: int, seed: int, cfg: Config) -> list[dict]:
    """``n`` combinations drawn from ``space`` with NumPy's generator seeded by ``seed``."""
    if n < 1:
        raise UsageError(f"--random must be at least 1, got {n}")
    rng = np.random.default_rng(seed)
    combos = []
    for _ in range(n):
        combo = {}
        for key, (scale, lo, hi) in space.items():
            if scale == "int":
                x = float(rng.integers(int(lo), int(hi) + 1))
            else:
                u = rng.uniform(math.log(lo), math.log(hi)) if scale == "log" else rng.uniform(lo, hi)
                x = min(max(float(f"{math.exp(u) if scale == 'log' else u:.6g}"), lo), hi)
            combo[key] = _value(key, scale, x, cfg)
        combos.append(combo)
    return combos


def cross_validate(cfg: Config, grid: dict[str, list], folds: int = 5, run_dir: str | None = None,
                   name: str = "cv", quiet: bool = False, draws: list[dict] | None = None) -> tuple[list[dict], object]:
    """Score every combination of ``grid`` (or each of ``draws``, a random search's combinations,
    ``grid`` then its space, saved as such) by ``folds``-fold cross-validation; rows best first."""
    if folds < 2:
        raise UsageError(f"--folds must be at least 2, got {folds}")
    device = run_device(cfg.train.device)
    dtype = storage_dtype(cfg)
    kind = target_kind(cfg.model)
    if isinstance(cfg.data.target, list):
        raise UsageError("cv folds are stratified by one class a row; data.target lists several columns (use train)")
    data, y, classes, idx = split_data(cfg, device)  # as train reads, labels and splits them
    if not isinstance(data, InMemory):
        raise UsageError(f"cv refits on every fold and needs the rows in memory; {cfg.data.path} is larger than "
                         "data.memory_budget: raise it, or cross-validate on a sample")
    probe = build_model(cfg.model, data.n_features, len(classes))
    pool = torch.cat([idx["train"], idx["val"]])  # the test split stays unseen
    if cfg.data.split_column:  # its train and validation rows in the file's order
        pool = pool.sort().values
    X_pool, y_pool = data.rows(pool), y.index_select(0, pool.to(y.device))
    # (N_pool, 1) the pool's data.offset values, added to every logit of a row in fitting and scoring
    o_pool = None if data.offset is None else torch.from_numpy(data.offset[pool.numpy()][:, None]).to(device, dtype)
    stratify = kind != "linear"
    splits = folds_lib.kfold(y_pool.cpu().numpy(), folds, seed=cfg.train.seed, stratify=stratify, name="--folds",
                             class_names=classes)

    keys = list(grid)
    trials = {}
    combinations = (itertools.product(*(grid[k] for k in keys)) if draws is None
                    else [tuple(d[k] for k in keys) for d in draws])
    for values in combinations:  # every combination checked before any runs
        values = _hashable(values)
        trial = copy.deepcopy(cfg)
        for k, v in zip(keys, values):
            setattr(getattr(trial, k.split(".")[0]), k.split(".")[1], list(v) if isinstance(v, tuple) else v)
        validate(trial, {})
        check_cuda_graph(trial, probe, device)
        trials[values] = trial

    def rows_of(index) -> tuple:
        index = torch.from_numpy(index)
        o = None if o_pool is None else o_pool.index_select(0, index.to(device))
        return data_lib.take_rows(X_pool, index), y_pool.index_select(0, index.to(y_pool.device)).to(device), o

    def fit_and_score(combo: dict, train, test) -> dict:
        trial = trials[_hashable(combo[k] for k in keys)]
        (Xtr, ytr, otr), (Xte, yte, ote) = rows_of(train), rows_of(test)
        wtr = row_weights(trial, data.weight, pool[torch.from_numpy(train)], ytr, len(classes))
        wtr = None if wtr is None else wtr.to(device=device, dtype=dtype)
        std = (data_lib.Standardizer.fit(Xtr) if trial.data.standardize
               else data_lib.Standardizer.identity(Xtr.shape[1]))
        Xtr = std.transform(Xtr.to(device, torch.float64)).to(dtype)
        Xte = std.transform(Xte.to(device, torch.float64)).to(dtype)
        model = build_model(trial.model, Xtr.shape[1], len(classes), trial.train.seed).to(device=device, dtype=dtype)
        Ttr = model.targets(fit_targets(kind, ytr, len(classes)), len(ytr))
        Tte = model.targets(fit_targets(kind, yte, len(classes)), len(yte))
        X_val = T_val = o_val = None
        share = trial.data.val_fraction / (1 - trial.data.test_fraction)
        if trial.train.patience and share > 0 and trial.train.solver not in EXACT_SOLVERS:
            # early stopping reads a validation part carved from this fold's training rows, as in train
            fit_rows, val_rows, _ = data_lib.split_indices(ytr, len(ytr), share, 0.0, trial.train.seed, stratify,
                                                                classes=classes)
            X_val, T_val = data_lib.take_rows(Xtr, val_rows), Ttr.index_select(0, val_rows.to(device))
            Xtr, Ttr = data_lib.take_rows(Xtr, fit_rows), Ttr.index_select(0, fit_rows.to(device))
            if otr is not None:
                o_val, otr = otr.index_select(0, val_rows.to(device)), otr.index_select(0, fit_rows.to(device))
            wtr = None if wtr is None else wtr.index_select(0, fit_rows.to(device))
        try:
            fit(trial, model, Xtr, Ttr, X_val=X_val, T_val=T_val, sample_weight=wtr, schema=data.schema, offset=otr,
                offset_val=o_val)
            if ote is None:
                return {**metrics_lib.evaluate(model, Xte, Tte), "diverged": 0.0}
            with torch.no_grad():  # the held-out rows scored with their offsets, as evaluate scores them
                z = model.logits(Xte) + ote
            return {**metrics_lib.evaluate(model, None, Tte, logits=z), "diverged": 0.0}
        except TrainingDiverged:  # recorded as such (mean_diverged: the share of folds), ranked last
            return {"loss": math.nan, "diverged": 1.0}

    def report(row: dict) -> None:
        if not quiet:
            done = ", ".join(f"{k}={row[k]}" for k in keys)
            print(f"cv {list(trials).index(_hashable(row[k] for k in keys)) + 1}: {done}: held-out loss "
                  f"{row.get('mean_loss', math.nan):.5g}", flush=True)

    combos = [dict(zip(keys, values)) for values in trials]
    rows = model_selection.score_grid(combos, splits, fit_and_score, rank_by="loss", on_row=report)
    rows.sort(key=lambda r: r["rank"])  # printed and saved best first
    for row in rows:  # lists again (model.hidden), as the config writes them
        row.update({k: list(row[k]) for k in keys if isinstance(row[k], tuple)})

    path = new_run_dir(cfg, f"cv-{name}", run_dir)
    write_text_atomic(path / "config.toml", cfg.to_toml())
    search = {"grid": grid} if draws is None else {"random": len(draws), "space": grid, "seed": cfg.train.seed}
    write_text_atomic(path / "results.json", json_text({"folds": folds, **search, "rows": rows}))
    from torch.utils.tensorboard import SummaryWriter

    from .tensorboard import config_hparams, write_hparams

    for i, row in enumerate(rows):
        with SummaryWriter(log_dir=str(path / f"trial-{i:03d}")) as writer:
            trial = trials[_hashable(row[k] for k in keys)]
            means = {"trial/" + k.removeprefix("mean_"): v for k, v in row.items() if k.startswith("mean_")}
            write_hparams(writer, config_hparams(trial, f"{folds}-fold cv"), means)
    return rows, path


def _hashable(values) -> tuple:
    """A combination's values as a dictionary key: a list value (model.hidden) as a tuple."""
    return tuple(tuple(v) if isinstance(v, list) else v for v in values)


def table(rows: list[dict]) -> str:
    columns = ["rank", *[k for k in rows[0] if "." in k], *[k for k in rows[0] if k.startswith("mean_")]]
    return model_selection.format_table(rows, columns)
