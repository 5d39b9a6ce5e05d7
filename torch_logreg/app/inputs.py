"""New data for ``evaluate`` and ``predict``: a CSV / Parquet / .npy / .npz / svmlight file read
and encoded the way the run's training data was."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import UsageError
from . import data as data_lib
from .fitting import fit_targets
from .tables import read_table


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


@dataclass
class NewData:
    """Rows of a file for ``evaluate`` or ``predict``, encoded like the training data."""

    X: Tensor  # (N, D) float64 features, before the standardizer (a CSR tensor for sparse data)
    y: np.ndarray | None  # the raw target, when the file has it
    kept: dict[str, list[str]] = field(default_factory=dict)  # columns copied to predict's output, as written


def target_name(schema: data_lib.Schema) -> str:
    """The target column's name in a CSV: the training file's, or "target" for a built-in set
    (as scikit-learn's ``as_frame=True`` names it)."""
    return schema.target or "target"


def read_inputs(path: Path, schema: data_lib.Schema, need_target: bool, max_bytes: int, keep: list[str] = (),
                ignore_extra: bool = False) -> NewData:
    """Features (and the target, if present) of a CSV / .npy / .npz file, encoded like training,
    with the ``keep`` columns (CSV only) as written; no file larger than ``max_bytes`` is read.
    A CSV column the model does not use is refused (predict: it may be meant for ``--keep``)
    unless ``ignore_extra`` (evaluate, whose output is the metrics alone)."""
    path = path.expanduser()
    suffix = path.suffix.lower()
    sparse_file = suffix not in (".csv", ".txt", "") and data_lib.is_sparse_file(path)
    if schema.sparse_width or sparse_file:
        return _read_sparse(path, schema, need_target, max_bytes, keep, sparse_file)
    if suffix in (".npy", ".npz"):
        if keep:
            raise UsageError(f"{path}: --keep names CSV columns; a NumPy file has none")
        if need_target:  # as train reads it: an .npz with X and y, or a .npy with the target in its last column
            ds = data_lib.load_numpy(path, "", max_bytes)
            X, y = ds.X, ds.y
        else:
            arr, _ = data_lib.read_numpy(path, max_bytes, need_y=False)
            X, y = data_lib.as_features(arr, path), None
        expected = len(schema.columns)
        if X.ndim != 2 or X.shape[1] != expected:
            raise UsageError(f"{path}: expected {expected} feature columns as in training, got shape {tuple(X.shape)}")
        if schema.add_radius:
            X = data_lib.with_radius(X)
        return NewData(X, y)
    table = read_table(path, max_bytes)
    header = table.header
    target = target_name(schema)
    missing = [c for c in keep if c not in header]
    if missing:
        raise UsageError(f"{path}: --keep column {missing[0]!r} is not in the header ({data_lib.listed(header)})")
    allowed = set(schema.columns) | {target, schema.weight} | set(keep)
    extra = [c for c in header if c not in allowed]
    if extra and not ignore_extra:
        raise UsageError(f"{path}: column {extra[0]!r} was not used in training; pass --keep {extra[0]} to copy it to the "
                         f"output, or remove it (the model's columns: {data_lib.listed(schema.columns)})")
    X = data_lib.encode_table(schema, table)
    y = None
    if target in header:
        y = table.text(target).astype(str)
    elif need_target:
        raise UsageError(f"{path}: the target column {target!r} is needed to evaluate (columns: {data_lib.listed(header)})")
    kept = {c: table.raw(c) for c in keep}
    return NewData(X, y, kept)


def _read_sparse(path: Path, schema: data_lib.Schema, need_target: bool, max_bytes: int, keep, sparse_file: bool) -> NewData:
    """New rows for a model trained on a sparse file: an svmlight file (read with training's index
    base) or a scipy sparse .npz with the model's columns, plus the target's where it has one."""
    from . import sparse_data

    if not schema.sparse_width:
        raise UsageError(f"{path} is a sparse file, but the model was trained on {schema.n_features} named columns; "
                         "give a CSV or NumPy file with them")
    if not sparse_file:
        raise UsageError(f"{path}: the model was trained on a sparse file ({schema.sparse_width} columns); give an "
                         f"svmlight ({', '.join(sparse_data.SVMLIGHT_SUFFIXES)}) or scipy sparse .npz file")
    if keep:
        raise UsageError(f"{path}: --keep names CSV columns; a sparse file has none")
    width = schema.sparse_width
    if path.suffix.lower() in sparse_data.SVMLIGHT_SUFFIXES:
        X, y, _, _ = sparse_data.read_svmlight(path, max_bytes, base=schema.svmlight_base, width=width)
        return NewData(X, y)
    matrix, _ = sparse_data.read_scipy_npz(path, max_bytes)
    y = None
    if matrix.shape[1] == width + 1:
        matrix, y = sparse_data.split_target(matrix, schema.target, path)
    elif matrix.shape[1] != width or need_target:
        expected = f"{width + 1} columns (the features and the target)" if need_target else \
            f"{width} feature columns, or {width + 1} with the target"
        raise UsageError(f"{path}: expected {expected} as in training, got shape {matrix.shape}")
    X = sparse_data.to_torch(matrix)
    sparse_data.check_finite(X, path)
    return NewData(X, y)
