"""Targets and rows: class labels encoded, rows taken by index, data.keep_classes, the seeded
train / validation / test split, and balanced class weights."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ...errors import UsageError
from .schema import category_key


def take_rows(X: Tensor, index: Tensor) -> Tensor:
    """Rows ``index`` of a dense or CSR ``X``, in that order."""
    if X.layout == torch.sparse_csr:
        from ...functional import csr_rows

        return csr_rows(X, index.to(X.device))
    return X.index_select(0, index.to(X.device))


def _same_label(a: str, b: str) -> bool:
    try:
        return float(a) == float(b)
    except ValueError:
        return a == b


def keep_mask(y, keep: list[str]) -> np.ndarray:
    """Which rows data.keep_classes keeps: those whose label is one of ``keep`` (2 and 2.0 alike)."""
    labels = [str(v) for v in (y.cpu().numpy() if isinstance(y, Tensor) else np.asarray(y))]
    return np.array([any(_same_label(v, k) for k in keep) for v in labels], dtype=bool)


def balanced_weights(y: Tensor, n_classes: int, weight: Tensor | None = None) -> Tensor:
    """Each row's class weight under ``class_weight = "balanced"``: ``S / (K * S_c)`` for a row of
    class ``c``, where ``S`` is the total weight of the rows of ``y`` (class indices), ``S_c`` that
    of class ``c`` (row counts without ``weight``) and ``K`` the classes present, so every class
    carries the same total weight (scikit-learn's ``compute_class_weight``)."""
    y = y.cpu()
    w = torch.ones(y.shape[0], dtype=torch.float64) if weight is None else weight.to(torch.float64).cpu()
    totals = torch.zeros(n_classes, dtype=torch.float64).index_add_(0, y, w)
    present = int((totals > 0).sum())
    per_class = torch.where(totals > 0, w.sum() / (present * totals.clamp(min=1e-300)), torch.zeros_like(totals))
    return per_class[y]


def encode_labels(y, kind: str) -> tuple[Tensor, list[str]]:
    """Raw labels -> class indices (N,) int64 and the class names; regression -> float64 values."""
    if isinstance(y, Tensor):
        if kind == "linear":
            return y.to(torch.float64), []
        classes = torch.unique(y)
        return torch.searchsorted(classes, y), [str(int(c)) if float(c).is_integer() else str(float(c)) for c in classes.cpu()]
    y = np.asarray(y)
    if kind == "linear":
        try:
            values = y.astype(np.float64)
        except ValueError:
            bad = next(v for v in y if not _is_number(v))
            raise UsageError(f"model.kind = 'linear' needs a numeric target; found {bad!r}") from None
        if not np.isfinite(values).all():
            raise UsageError(f"the target has a non-finite value at row {int(np.nonzero(~np.isfinite(values))[0][0])}")
        return torch.from_numpy(values), []
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise UsageError(f"the target has a non-finite value at row {int(np.nonzero(~np.isfinite(y))[0][0])}")
    names = np.array([label_name(v) for v in y])
    classes = sorted(set(names.tolist()), key=category_key)
    lookup = {c: i for i, c in enumerate(classes)}
    return torch.tensor([lookup[v] for v in names], dtype=torch.int64), classes


def _is_number(v) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def label_name(v) -> str:
    """A class's name: a number as it reads (2.0 -> "2"); text exactly as written, so "02" and "2"
    stay two classes and "01" is not renamed "1"."""
    if isinstance(v, (str, np.str_)):
        return str(v).strip()
    if isinstance(v, (bool, np.bool_)):
        return str(int(v))
    try:
        f = float(v)
        return str(int(f)) if f.is_integer() else str(f)
    except (TypeError, ValueError, OverflowError):
        return str(v)


def split_indices(y: Tensor, n: int, val_fraction: float, test_fraction: float, seed: int, stratify: bool,
                  classes: list[str] | None = None):
    """Seeded train / val / test row indices; stratified by class when ``stratify`` (``classes``
    names the class indices in messages)."""
    if n < 3 and (val_fraction or test_fraction):
        raise UsageError(f"the data has only {n} rows: too few to split into train, validation and test sets")
    if not stratify or n > 2_000_000:
        gen = torch.Generator().manual_seed(seed)
        perm = torch.randperm(n, generator=gen)
        n_test, n_val = int(round(n * test_fraction)), int(round(n * val_fraction))
        return perm[n_test + n_val :], perm[n_test : n_test + n_val], perm[:n_test]
    from sklearn.model_selection import train_test_split

    labels = y.cpu().numpy()
    counts = np.bincount(labels)
    if counts.min() < 3 and (val_fraction or test_fraction):
        rare = int(np.argmin(counts))
        name = repr(classes[rare]) if classes else str(rare)
        raise UsageError(f"class {name} has only {counts.min()} row(s): too few for a stratified train/validation/test "
                         "split; drop its rows (data.keep_classes) or add more")
    idx = np.arange(n)
    try:
        rest, test = (idx, idx[:0]) if not test_fraction else train_test_split(
            idx, test_size=test_fraction, stratify=labels, random_state=seed)
        if val_fraction:
            train, val = train_test_split(rest, test_size=val_fraction / (1 - test_fraction), stratify=labels[rest],
                                          random_state=seed + 1)
        else:
            train, val = rest, rest[:0]
    except ValueError:  # a split smaller than the number of classes cannot hold one row of each
        raise UsageError(f"the data has {n} rows in {len(counts)} classes: too few for a stratified split with "
                         f"data.val_fraction = {val_fraction:g} and data.test_fraction = {test_fraction:g} (each part "
                         "needs a row of every class); add rows or set the fractions to 0") from None
    return (torch.from_numpy(np.sort(train)), torch.from_numpy(np.sort(val)), torch.from_numpy(np.sort(test)))


