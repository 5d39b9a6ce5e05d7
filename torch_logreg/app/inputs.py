"""New data for ``evaluate`` and ``predict``: a CSV / .npy / .npz file read and encoded the way
the run's training data was."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .. import validation
from ..errors import UsageError
from . import data as data_lib
from .fitting import fit_targets


def labels_to_targets(model, kind: str, y_raw, classes: list[str], source: str) -> Tensor:
    if model.link == "identity":
        kind = "linear"
        y, _ = data_lib.encode_labels(y_raw, kind)
    else:
        names = [data_lib.label_name(v) for v in (y_raw.tolist() if hasattr(y_raw, "tolist") else y_raw)]
        unknown = sorted(set(names) - set(classes))
        if unknown:
            raise UsageError(f"{source}: label {unknown[0]!r} was not seen in training (classes: {data_lib.listed(classes)})")
        y = torch.tensor([classes.index(v) for v in names], dtype=torch.int64)
    y = y.to(model.device)
    return model.targets(fit_targets(kind, y, len(classes)), len(y))


def read_inputs(path: Path, schema: data_lib.Schema, need_target: bool, max_bytes: int):
    """Features (and the target, if present) of a CSV / .npy / .npz file, encoded like training;
    no file larger than ``max_bytes`` (the run's data.max_bytes) is read."""
    path = path.expanduser()
    suffix = path.suffix.lower()
    if suffix in (".npy", ".npz"):
        if need_target:  # as train reads it: an .npz with X and y, or a .npy with the target in its last column
            ds = data_lib.load_numpy(path, "", max_bytes)
            X, y = ds.X, ds.y
        else:
            arr, _ = data_lib.read_numpy(path, max_bytes, need_y=False)
            X, y = data_lib.as_features(arr, path), None
        expected = len(schema.columns)
        if X.ndim != 2 or X.shape[1] != expected:
            raise UsageError(f"{path}: expected {expected} feature columns as in training, got shape {tuple(X.shape)}")
        where = validation.first_nonfinite(X)
        if where is not None:  # a prediction from NaN or infinity would be written as if it meant something
            raise UsageError(f"{path}: row {where[0]}, column {where[1]}: {X[where].item()} is not a finite number")
        if schema.add_radius:
            X = data_lib.with_radius(X)
        return X, y
    header, rows, _ = data_lib.read_csv_table(path, max_bytes)
    allowed = set(schema.columns) | ({schema.target} if schema.target else set())
    extra = [c for c in header if c not in allowed]
    if extra:
        raise UsageError(f"{path}: column {extra[0]!r} was not used in training; expected columns "
                         f"{data_lib.listed(schema.columns)}")
    X = data_lib.encode_rows(schema, header, rows, path)
    y = None
    if schema.target and schema.target in header:
        ti = header.index(schema.target)
        y = np.array([cells[ti].strip() for _, cells in rows])
    elif need_target:
        raise UsageError(f"{path}: the target column {schema.target or '(none)'!r} is needed to evaluate")
    return X, y
