"""New rows for ``evaluate`` and ``predict``: a file of any format, read by its reader with what
the run's schema says of it (an array's raw columns and target index, an svmlight file's index
base and width) and encoded by that schema, exactly as the training rows were."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import Tensor

from ...errors import UsageError
from .reader import Request
from .registry import READERS, reader_for
from .schema import Schema
from .table import listed


@dataclass
class NewData:
    """Rows of a file for ``evaluate`` or ``predict``, encoded like the training data."""

    X: Tensor  # (N, D) float64 features, before the standardizer (a CSR tensor for sparse data)
    y: np.ndarray | None  # the raw target, when the file has it
    kept: dict[str, list[str]] = field(default_factory=dict)  # columns copied to predict's output, as written
    offset: np.ndarray | None = None  # (N,) the data.offset column, for a run trained with one


def read_new(path: Path, schema: Schema, need_target: bool, max_bytes: int, keep: list[str] = (),
             ignore_extra: bool = False) -> NewData:
    """Features (and the target, if present) of ``path``, encoded like training, with the ``keep``
    columns as written; no file larger than ``max_bytes`` is read. A column the model does not use
    is refused (predict: it may be meant for ``--keep``) unless ``ignore_extra`` (evaluate, whose
    output is the metrics alone); it is never read."""
    path = path.expanduser()
    reader = reader_for(path)
    if reader.sparse and not schema.sparse_width:
        raise UsageError(f"{path} is a sparse file, but the model was trained on {schema.n_features} named columns; "
                         "give a CSV or NumPy file with them")
    if schema.sparse_width and not reader.sparse:
        sparse = " or ".join(f"{r.name} ({', '.join(r.suffixes)})" for r in READERS if r.sparse)
        raise UsageError(f"{path}: the model was trained on a sparse file ({schema.sparse_width} columns); give a "
                         f"{sparse} file")
    table = reader.read(path, Request(schema.target, max_bytes, schema, need_target))
    if keep and not table.named:
        raise UsageError(f"{path}: --keep names columns of a CSV or Parquet file; a {reader.name} file has none")
    if table.named:
        header = table.header
        missing = [c for c in keep if c not in header]
        if missing:
            raise UsageError(f"{path}: --keep column {missing[0]!r} is not in the header ({listed(header)})")
        targets = schema.target if isinstance(schema.target, list) else [table.target_name(schema.target or "target")]
        allowed = set(schema.columns) | {*targets, schema.weight, schema.offset} | set(keep)
        extra = [c for c in header if c not in allowed]
        if extra and not ignore_extra:
            raise UsageError(f"{path}: column {extra[0]!r} was not used in training; pass --keep {extra[0]} to copy it to "
                             f"the output, or remove it (the model's columns: {listed(schema.columns)})")
    X = schema.features(table)
    return NewData(X, schema.labels(table, need_target), {c: table.raw(c) for c in keep}, schema.offsets(table))
