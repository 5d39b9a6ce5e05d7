"""``torch-logreg path``: the regularization path of a config's model, as glmnet and scikit-learn's
``LogisticRegressionCV`` give it.

On the training split (after the standardizer is fitted on it, as ``train`` fits it), a decreasing
sequence of penalties is fitted with warm starts and scored by k-fold cross-validation
(:func:`torch_logreg.path.regularization_path`; the penalty ``lambda`` is ``train.l1 = lambda *
l1_ratio`` and ``train.l2 = lambda * (1 - l1_ratio)`` in the config's terms). The run directory
gets ``path.csv`` and ``path.json`` (the table), TensorBoard pictures of the coefficients against
the penalty and of the cross-validation curve, and ``refit/``: an ordinary ``train`` run at the
chosen penalty (the best or the one-standard-error one), which ``evaluate`` and ``predict`` take.
``train.penalty_factor``, ``train.lower_bounds`` and ``train.upper_bounds`` hold at every penalty.
"""

from __future__ import annotations

import copy
import csv
import io
import sys
from pathlib import Path

import numpy as np
import torch

from ..errors import UsageError
from ..registry import EXACT_SOLVERS
from .config import Config
from .files import json_text, write_text_atomic
from .fitting import coefficient_options, prepare, run_device
from .progress import PathProgress
from .runs import new_run_dir

#: model.kind -> the path's kind
KINDS = {"logistic": "binary", "softmax": "softmax", "multilabel": "multilabel", "linear": "linear"}


def run_path(cfg: Config, *, folds: int = 5, n_penalties: int = 30, l1_ratio: float = 1.0,
             min_ratio: float = 1e-4, choice: str = "best", scoring: str | None = None, run_dir: str | None = None,
             name: str = "path", quiet: bool = False):
    """Fit, score and refit; returns the :class:`~torch_logreg.path.RegularizationPath`, the run
    directory and the refit run's :class:`~torch_logreg.app.runs.RunResult`."""
    from ..path import regularization_path
    from .commands import train

    if cfg.model.kind not in KINDS:
        raise UsageError(f"path fits one Linear layer (model.kind in {list(KINDS)}), not model.kind = "
                         f"{cfg.model.kind!r}")
    if folds < 2:
        raise UsageError(f"--folds must be at least 2, got {folds}")
    if n_penalties < 2:  # before any data is read (the library refuses it too)
        raise UsageError(f"--n-penalties {n_penalties}: a path needs at least 2 penalties (1 is only the largest, which "
                         "zeroes every weight: an intercept-only model)")
    device = run_device(cfg.train.device)
    prep = prepare(cfg, device, torch.float64)
    X, _ = prep.rows.in_memory("path fits each penalty exactly, with the training rows in memory")
    y = prep.y["train"]
    kind = KINDS[cfg.model.kind]
    if kind == "multilabel":
        y = torch.nn.functional.one_hot(y, len(prep.classes))
    solver = cfg.train.solver if cfg.train.solver in EXACT_SOLVERS else "auto"
    progress = None if quiet else PathProgress(folds + 1, n_penalties)
    result = regularization_path(
        X, y, kind=kind, l1_ratio=l1_ratio, n_penalties=n_penalties, penalty_min_ratio=min_ratio, cv=folds,
        scoring=scoring, choice=choice, sample_weight=prep.weight, solver=solver, tol=cfg.train.tol,
        max_iter=cfg.train.epochs, fit_intercept=cfg.model.bias,
        n_classes=len(prep.classes) if kind == "softmax" else None, seed=cfg.train.seed, device=device,
        dtype=torch.float64, progress=progress, **coefficient_options(cfg, prep.schema),
        offset=None if prep.rows.offset is None else prep.rows.offset[:, 0])
    if progress is not None:
        progress.close()

    path = new_run_dir(cfg, f"path-{name}", run_dir)
    write_text_atomic(path / "config.toml", cfg.to_toml())
    rows = result.table()
    write_text_atomic(path / "path.csv", _csv(rows))
    write_text_atomic(path / "path.json", json_text({
        "kind": kind, "l1_ratio": l1_ratio, "scoring": result.scoring, "folds": folds, "solver": result.solver,
        "choice": choice, "penalty": result.penalty, "best_penalty": float(result.penalties[result.best_index]),
        "one_se_penalty": float(result.penalties[result.one_se_index]), "rows": rows}))
    _log(path, result, prep.schema.feature_names if not prep.schema.sparse_width else None)

    refit = copy.deepcopy(cfg)
    refit.train.solver = result.solver
    refit.train.l1 = result.penalty * l1_ratio
    refit.train.l2 = result.penalty * (1.0 - l1_ratio)
    if not quiet:
        print(f"refitting at penalty {result.penalty:.6g} ({choice}) with {result.solver}", file=sys.stderr)
    return result, path, train(refit, run_dir=str(path / "refit"), quiet=True)


def _csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


#: path scalars are logged at step round(STEPS_PER_DECADE * log10(largest penalty / penalty)): TensorBoard's
#: x-axis is a step, so this makes it the penalty on a log scale (0 at the largest, 1000 a decade below)
STEPS_PER_DECADE = 1000


def _log(path: Path, result, names: list[str] | None) -> None:
    """TensorBoard: the pictures, and per penalty the score and the non-zeros, at steps that
    place each penalty on a log10 axis (:data:`STEPS_PER_DECADE`)."""
    from torch.utils.tensorboard import SummaryWriter

    from .plots import path_images

    coef = result.coef_path.detach().cpu().double().numpy()
    names = names or [f"x{j + 1}" for j in range(coef.shape[2])]
    coefficients, curve = path_images(result.penalties, coef, names, result.mean_scores, result.std_errors,
                                      result.scoring, result.best_index, result.one_se_index)
    with SummaryWriter(log_dir=str(path)) as writer:
        writer.add_image("path/coefficients", coefficients, 0, dataformats="HWC")
        writer.add_image("path/cross_validation", curve, 0, dataformats="HWC")
        top = float(np.max(result.penalties))
        for i, penalty in enumerate(result.penalties):
            step = round(STEPS_PER_DECADE * float(np.log10(top / penalty)))
            writer.add_scalar("path/log10_penalty", float(np.log10(penalty)), step)
            writer.add_scalar(f"path/mean_{result.scoring}", float(result.mean_scores[i]), step)
            writer.add_scalar("path/n_nonzero", float(result.n_nonzero[i]), step)
