"""The k-fold partition every cross-validation uses: the ``cv`` command, :func:`torch_logreg.path.regularization_path`,
the cross-validated classifier and :func:`torch_logreg.estimators.model_selection.cross_validate_grid`.

One function, so the same labels, ``n_splits`` and seed give the same held-out rows wherever they are scored.
"""

from __future__ import annotations

import numpy as np

from . import arguments
from .errors import UsageError

__all__ = ["kfold", "stratified_folds"]


def kfold(labels, n_splits: int, *, seed: int = 0, stratify: bool = True, shuffle: bool = True, name: str = "cv",
          class_names=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n_splits`` ``(train rows, held-out rows)`` pairs of sorted int64 index arrays; each row is held out once.

    ``labels`` ``(N,)`` class labels (any sortable values: ints, floats, strings). The rows of each class, in
    ``np.unique`` order, are shuffled (``numpy.random.default_rng(seed)``) and dealt to the folds in turn, the
    rotation continuing from class to class, so every fold holds ``floor`` or ``ceil`` of its share of each class
    and the fold sizes differ by at most one. Relabelling the classes without changing their order (names to their
    indices) gives the same folds.

    ``stratify=False`` deals all rows as one class: plain shuffled k-fold, for real or multilabel targets
    (``labels`` then only gives ``N``). ``shuffle=False`` keeps the rows in order and gives each fold a contiguous
    block of each class (of all rows without ``stratify``), the same fold sizes as the shuffled deal.

    Stratified, every class needs at least ``n_splits`` rows (each held-out fold holds one of each); else a
    :class:`~torch_logreg.errors.UsageError` naming the class (``class_names[i]`` for the ``i``-th class in
    ``np.unique`` order when given) and ``name``, the argument the caller knows ``n_splits`` by.
    """
    labels = np.asarray(labels).reshape(-1)
    n = labels.shape[0]
    n_splits = arguments.number(name, n_splits, low=2, integer=True)
    if stratify and n:
        classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        rare = int(counts.argmin())
        if counts[rare] < n_splits:
            shown = class_names[rare] if class_names is not None else classes[rare]
            raise UsageError(f"class {_shown(shown)} has {counts[rare]} rows, fewer than {name}={n_splits} folds: "
                             f"every fold needs a row of each class; lower {name}")
    else:
        classes, inverse = np.zeros(1), np.zeros(n, dtype=np.int64)
    if n_splits > n:
        raise UsageError(f"{name}={n_splits} folds need at least {n_splits} rows, got {n}")
    rng = np.random.default_rng(seed)
    fold_of = np.empty(n, dtype=np.int64)
    offset = 0
    for c in range(classes.shape[0]):
        rows = np.flatnonzero(inverse == c)
        deal = (offset + np.arange(rows.shape[0])) % n_splits
        if shuffle:
            rng.shuffle(rows)
        else:
            deal.sort()  # the same number of rows per fold, as contiguous blocks
        fold_of[rows] = deal
        offset += rows.shape[0]
    return [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in range(n_splits)]


def stratified_folds(labels, n_splits: int, *, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`kfold` stratified by ``labels`` and shuffled with ``seed`` (its first name)."""
    return kfold(labels, n_splits, seed=seed)


def _shown(label) -> str:
    """A class as a message names it: an integer-valued number plainly, anything else by its repr."""
    label = label.item() if isinstance(label, np.generic) else label
    if isinstance(label, (int, float)) and not isinstance(label, bool) and float(label).is_integer():
        return str(int(label))
    return repr(label)
