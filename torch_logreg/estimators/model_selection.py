"""Stratified k-fold search over hyper-parameters, returned as rows of plain dicts.

:func:`cross_validate_grid` fits a :class:`~torch_logreg.estimator.LogisticRegressionClassifier`
for every combination of a parameter grid (``C``, ``penalty``, ``l1_ratio``, ``solver``,
``learning_rate`` for the first-order loops, ...) on every training split of a stratified
k-fold partition, and scores it on the held-out split. Each row is a flat dict (parameters,
then mean / std / per-split scores, fit time, iterations, warnings), ready to print with
:func:`format_table`, write as CSV or log as TensorBoard hyper-parameters.

Scores: ``log_loss`` (mean negative log-likelihood of the held-out labels, lower is better),
``accuracy``; ``rank`` orders the rows by mean held-out ``log_loss`` (1 = best).
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.base import clone
from sklearn.metrics import accuracy_score, log_loss

from .. import folds as folds_lib
from ..errors import UsageError
from ..solvers import ConvergenceWarning
from .estimator import LogisticRegressionClassifier

SCORES = ("log_loss", "accuracy")


def expand_grid(param_grid: Mapping | Sequence[Mapping]) -> list[dict]:
    """All combinations of a grid ``{name: [values]}`` (or a list of such grids), in order."""
    grids = [param_grid] if isinstance(param_grid, Mapping) else list(param_grid)
    combos: list[dict] = []
    for grid in grids:
        if not isinstance(grid, Mapping):
            raise TypeError(f"param_grid must be a dict of lists or a list of such dicts, got {type(grid).__name__}")
        names = list(grid)
        values = []
        for name in names:
            v = grid[name]
            if isinstance(v, (str, bytes)) or not isinstance(v, Sequence) or len(v) == 0:
                raise UsageError(f"param_grid[{name!r}] must be a non-empty list of values, got {v!r}")
            values.append(list(v))
        combos.extend(dict(zip(names, c)) for c in itertools.product(*values))
    return combos


def folds(y, n_splits: int, *, seed: int = 0, shuffle: bool = True, stratify: bool = True) -> list[tuple]:
    """``n_splits`` (train rows, held-out rows) index pairs, stratified by ``y``'s classes (or
    plain k-fold for real targets), seeded: :func:`torch_logreg.folds.kfold`."""
    return folds_lib.kfold(y, n_splits, seed=seed, shuffle=shuffle, stratify=stratify, name="n_splits")


def score_grid(combos: Sequence[Mapping], splits: Sequence[tuple], fit_and_score, *, rank_by: str,
               on_row=None) -> list[dict]:
    """The cross-validation engine: ``fit_and_score(combo, train_rows, held_out_rows)`` returns a
    dict of held-out scores for one fit; each combination's row holds its parameters, then
    ``split{i}_{score}``, ``mean_{score}`` and ``std_{score}`` of every score, and ``rank``
    (1 = lowest ``mean_{rank_by}``; NaN last). Rows come back in grid order; ``on_row(row)`` is
    called as each is done."""
    rows: list[dict] = []
    for combo in combos:
        row: dict = dict(combo)
        scores: dict[str, list[float]] = {}
        for i, (train, test) in enumerate(splits):
            for key, value in fit_and_score(combo, train, test).items():
                scores.setdefault(key, []).append(value)
                row[f"split{i}_{key}"] = value
        for key, values in scores.items():
            row[f"mean_{key}"] = float(np.mean(values))
            row[f"std_{key}"] = float(np.std(values))
        rows.append(row)
        if on_row is not None:
            on_row(row)
    key = f"mean_{rank_by}"
    order = sorted(range(len(rows)), key=lambda j: (math.isnan(rows[j].get(key, math.nan)), rows[j].get(key, math.nan)))
    for rank, j in enumerate(order, start=1):
        rows[j]["rank"] = rank
    return rows


def cross_validate_grid(
    X,
    y,
    param_grid: Mapping | Sequence[Mapping],
    *,
    n_splits: int = 5,
    shuffle: bool = True,
    seed: int = 0,
    base_params: Mapping | None = None,
    sample_weight=None,
) -> list[dict]:
    """Stratified ``n_splits``-fold cross-validation of every combination in ``param_grid``.

    ``X`` ``(N, D)``, ``y`` ``(N,)`` class labels; ``param_grid`` maps parameter names of
    :class:`~torch_logreg.estimator.LogisticRegressionClassifier` to lists of values, e.g.
    ``{"C": [0.1, 1, 10], "penalty": ["l2", "l1"]}`` or
    ``{"solver": ["gd"], "learning_rate": [0.1, 1.0]}``; a list of such dicts searches their
    union. ``base_params`` fixes the other parameters (``device``, ``dtype``, ``tol``...).
    ``sample_weight`` weighs the training fits (not the held-out scores).

    Every combination is validated before any fit, so an invalid one (an unknown name, an L1
    penalty with a solver that cannot handle it, ``C <= 0``...) fails at once with the
    estimator's error, prefixed by the offending combination.

    Returns one dict per combination, in grid order: the parameters, ``mean_log_loss``,
    ``std_log_loss``, ``mean_accuracy``, ``std_accuracy``, ``split{i}_log_loss``,
    ``split{i}_accuracy``, ``mean_fit_time`` (seconds), ``mean_n_iter``,
    ``n_convergence_warnings`` and ``rank`` (1 = lowest mean held-out log-loss).
    """
    if isinstance(n_splits, bool) or not isinstance(n_splits, int) or n_splits < 2:
        raise UsageError(f"n_splits must be an integer >= 2, got {n_splits!r}")
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim != 2:
        raise UsageError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
    if y.shape != (X.shape[0],):
        raise UsageError(f"y must have shape ({X.shape[0]},), got {y.shape}")
    sw = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    classes = np.unique(y)
    if len(classes) < 2:
        raise UsageError(f"y contains only one class ({classes[0]}); cross-validation needs at least 2 classes")
    splits = folds(y, n_splits, seed=seed, shuffle=shuffle)  # every class in every fold, checked before any fit

    base = LogisticRegressionClassifier(**dict(base_params or {}))
    valid = set(base.get_params())
    combos = expand_grid(param_grid)
    n_params_guess = (X.shape[1] + 1) * (1 if len(classes) == 2 else len(classes))
    for combo in combos:
        unknown = set(combo) - valid
        if unknown:
            raise UsageError(f"unknown parameter(s) {sorted(unknown)} in param_grid; valid: {sorted(valid)}")
        try:
            clone(base).set_params(**combo).resolve_params(n_params_guess)
        except ValueError as exc:
            raise UsageError(f"invalid combination {combo}: {exc}") from exc

    def fit_and_score(combo, train, test) -> dict:
        est = clone(base).set_params(**combo)
        fit_kwargs = {} if sw is None else {"sample_weight": sw[train]}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            start = time.perf_counter()
            est.fit(X[train], y[train], **fit_kwargs)
            fit_time = time.perf_counter() - start
        proba = est.predict_proba(X[test])
        return {
            "log_loss": float(log_loss(y[test], proba, labels=est.classes_)),
            "accuracy": float(accuracy_score(y[test], est.classes_[proba.argmax(axis=1)])),
            # bookkeeping, summarised below rather than per split
            "fit_time": fit_time,
            "n_iter": int(est.n_iter_[0]),
            "convergence_warnings": sum(issubclass(w.category, ConvergenceWarning) for w in caught),
        }

    rows = score_grid(combos, splits, fit_and_score, rank_by="log_loss")
    for row in rows:
        n_warn = sum(row.pop(f"split{i}_convergence_warnings") for i in range(len(splits)))
        for key in ("fit_time", "n_iter", "convergence_warnings"):
            for i in range(len(splits)):
                row.pop(f"split{i}_{key}", None)
            row.pop(f"std_{key}")
        row.pop("mean_convergence_warnings")
        row["n_convergence_warnings"] = n_warn
        row["rank"] = row.pop("rank")  # last, as before
    return rows


def best_row(rows: Sequence[Mapping]) -> dict:
    """The row ranked 1 (lowest mean held-out log-loss)."""
    if not rows:
        raise UsageError("no rows: the grid was empty")
    return dict(min(rows, key=lambda r: r["rank"]))


def format_table(rows: Sequence[Mapping], columns: Sequence[str] | None = None) -> str:
    """A fixed-width text table of ``rows``; by default the parameters and the mean scores."""
    if not rows:
        return "(no rows)"
    if columns is None:
        skip = ("split", "std_")
        columns = [c for c in rows[0] if not c.startswith(skip)]
    cells = [[_cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(str(c)), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(str(c).rjust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
