"""What the NumPy formats (``.npy``, dense ``.npz``) share: reading an array safely, checking it
holds finite numbers, and naming its columns.

An array's columns have no names. In training they are ``x1`` to ``x<D>``, the features in order
once the target column is taken out. New rows (evaluate, predict) must have the raw columns the
model was trained on, in that order, and take their names: a model trained on a CSV's columns
``a, colour, b`` reads an array of the same three columns (``colour`` by its category codes as
numbers), then its one-hot encoding, hashing and radius as the CSV's.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from ...errors import UsageError
from . import files
from .reader import Request
from .table import ArrayTable, listed

#: options an array's columns take: named by position, they can be one-hot encoded or hashed, but
#: an array has no column set apart for row weights
OPTIONS = ("data.categorical", "data.hash")


def read_numpy(path: Path, max_bytes: int, need_y: bool, npz: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """The arrays of a .npy file (``(array, None)``) or, when ``npz``, of an .npz archive
    (``(X, y)``; ``y`` may be absent unless ``need_y``), checked to be numeric arrays; every
    failure names the file."""
    files.check_source(path, max_bytes)
    try:
        with open(path, "rb") as fh:  # our own handle: closed even when NumPy gives up half way
            if npz:
                with files.open_npz(fh, path, max_bytes) as archive:
                    missing = [k for k in ("X", "y") if k not in archive.files and (k == "X" or need_y)]
                    if missing:
                        raise UsageError(f"{path}: an .npz file needs arrays named 'X'" + (" and 'y'" if need_y else "")
                                         + f", found {listed(archive.files) or 'none'}")
                    X = archive["X"]
                    y = archive["y"] if "y" in archive.files else None
            else:
                X, y = np.load(fh), None
                if isinstance(X, np.lib.npyio.NpzFile):
                    X.close()
                    raise UsageError(f"{path} is an .npz archive, not a single array; name it .npz")
    except UsageError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, TypeError) as exc:
        raise UsageError(f"{path} is not a readable NumPy file: {files.numpy_error(exc)}") from None
    for name, arr in (("X", X), ("y", y)):
        if arr is None:
            continue
        what = "the array" if not npz else f"{name!r}"
        if not isinstance(arr, np.ndarray):
            raise UsageError(f"{path}: {what} is not a NumPy array (not saved by numpy.save / numpy.savez)")
        if arr.dtype.kind not in "fiub" and not (name == "y" and arr.dtype.kind in "US"):
            raise UsageError(f"{path}: {what} must be numeric, got dtype {arr.dtype}")
    return X, y


def as_features(X: np.ndarray, path: Path, first_row: int = 0) -> np.ndarray:
    """A numeric 2-D array as float64 features, every value finite (rows named from ``first_row``)."""
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise UsageError(f"{path}: the features must be a 2-D array with at least one row and one column, "
                         f"got shape {X.shape}")
    with np.errstate(invalid="ignore", over="ignore"):  # a signalling NaN or an overflow is reported below
        X = np.asarray(X, dtype=np.float64)
    bad = ~np.isfinite(X)
    if bad.any():
        r, c = (int(i) for i in np.argwhere(bad)[0])
        raise UsageError(f"{path}: row {r + first_row}, column {c}: {X[r, c]} is not a finite number")
    return X


def target_index(request: Request) -> str:
    """The target column of an array for ``request``: ``data.target`` in training, the index the
    run was trained with for new rows (the last column for a run trained on named columns)."""
    if request.schema is None:
        return request.target
    target = request.schema.target
    return target if target.lstrip("-").isdigit() else ""


def split_target(array: np.ndarray, request: Request, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``(features, target)`` of a .npy array, whose target is one of its columns: always in
    training; for new rows, when the array has one column more than the model's raw columns."""
    if array.ndim != 2 or array.shape[1] < 1 + (request.schema is None):
        raise UsageError(f"{path}: a .npy file must be a 2-D array with the target in one column, got shape "
                         f"{array.shape}")
    width = None if request.schema is None else len(request.schema.columns)
    if width is not None and array.shape[1] == width and not request.need_target:
        return array, None
    if width is not None and array.shape[1] != width + 1:
        raise UsageError(f"{path}: expected {width} feature columns as in training"
                         + (" and the target" if request.need_target else f" (or {width + 1} with the target)")
                         + f", got shape {tuple(array.shape)}")
    col = files.target_column(target_index(request), array.shape[1], path, "a .npy file")
    return np.delete(array, col, axis=1), np.asarray(array[:, col])


def array_table(path: Path, X: np.ndarray, y: np.ndarray | None, request: Request, fingerprint: dict | None,
                first_row: int = 0) -> ArrayTable:
    """The table of features ``X`` and target ``y`` (checked finite), its columns named as the
    module docstring says."""
    X = as_features(X, path, first_row)
    if request.schema is None:
        names = [f"x{j + 1}" for j in range(X.shape[1])]
    else:
        names = list(request.schema.columns)
        if X.shape[1] != len(names):
            raise UsageError(f"{path}: expected {len(names)} feature columns as in training, got shape "
                             f"{tuple(X.shape)}")
    if y is not None:
        if y.shape != (X.shape[0],):
            raise UsageError(f"{path}: y must have shape ({X.shape[0]},), got {y.shape}")
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            raise UsageError(f"{path}: the target has a non-finite value at row "
                             f"{int(np.nonzero(~np.isfinite(y))[0][0]) + first_row}")
    elif request.need_target:
        raise UsageError(f"{path}: the target is needed to evaluate; give the array with its target column")
    return ArrayTable(path, X, names, y, fingerprint, first_row)
