"""A training file larger than ``data.memory_budget``, never read into memory whole: its rows as
one float64 memory map.

A ``.npy`` file is its own memory map (:meth:`~.npy_file.NpyReader.memory_map`). A file whose
reader gives blocks of rows (Parquet: a row group at a time) is read twice: once for its labels,
row weights and categories, once to encode each block's rows into a temporary ``.npy`` file
(float64, in the system's temporary folder, removed when the command ends), which is then
memory-mapped in its place; each block must fit in the budget.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import UsageError
from . import files
from .reader import Request
from .registry import reader_for
from .schema import Schema, infer_schema, merge_levels, row_weights


@dataclass
class Source:
    """A file's rows as the streamed run reads them."""

    X: np.ndarray  # (N, D) float features: a memory map (of the file, or of the encoded rows)
    y: np.ndarray  # (N,) raw labels
    weight: np.ndarray | None  # (N,) row weights (data.weight), or None
    schema: Schema
    fingerprint: dict
    keep: object = None  # what must live as long as X (the temporary folder of encoded rows)


def open_source(data_cfg) -> Source:
    """The streamed rows of ``data.path`` (see the module docstring)."""
    path = Path(data_cfg.path).expanduser()
    reader = reader_for(path)
    reader.refuse_column_options(path, data_cfg)
    why = f"{path} is larger than data.memory_budget, so it is streamed from encoded dense rows"
    if data_cfg.hash:
        raise UsageError(f"{why}; data.hash makes sparse features: raise data.memory_budget or leave data.hash out")
    request = Request(data_cfg.target, data_cfg.memory_budget)
    if hasattr(reader, "memory_map"):
        if data_cfg.categorical:
            raise UsageError(f"{path} is larger than data.memory_budget, so it is streamed from its memory map as "
                             "stored; data.categorical needs its columns encoded: raise data.memory_budget or leave "
                             "data.categorical out")
        X, y, print_ = reader.memory_map(path, request, data_cfg.memory_budget)
        return Source(X, y, None, Schema([f"x{i + 1}" for i in range(X.shape[1])], target=data_cfg.target), print_)
    return _encoded(reader, path, data_cfg, request)


def _encoded(reader, path: Path, data_cfg, request: Request) -> Source:
    """Two passes over the reader's blocks: labels, weights and categories, then the encoded rows
    written to a temporary .npy file."""
    levels: dict[str, set] = {}
    labels, weights, sizes, schema = [], [], [], None
    for table in reader.blocks(path, request):  # pass 1: the labels, weights and each categorical column's levels
        schema = infer_schema(table, data_cfg, combine_levels=lambda found: _collect(levels, found))
        labels.append(schema.labels(table))
        weights.append(row_weights(table, schema.weight, whole=False))
        sizes.append(table.n_rows)
    if schema is None:
        raise UsageError(f"{path} has no rows")
    weight = None if weights[0] is None else np.concatenate(weights)
    if weight is not None and not (weight > 0).any():
        raise UsageError(f"{path}: every row weight in column {data_cfg.weight!r} is 0; at least one row must count")
    schema.categorical = merge_levels([{c: sorted(v) for c, v in levels.items()}])
    firsts = np.concatenate([[0], np.cumsum(sizes)]).astype(int).tolist()
    folder = tempfile.TemporaryDirectory(prefix="torch_logreg-stream-")
    X = np.lib.format.open_memmap(Path(folder.name) / "X.npy", mode="w+", dtype=np.float64,
                                  shape=(firsts[-1], schema.n_features))
    for g, table in enumerate(reader.blocks(path, request)):  # pass 2: the rows, encoded with every level known
        X[firsts[g] : firsts[g + 1]] = schema.features(table).numpy()
    X.flush()
    return Source(X, np.concatenate(labels), weight, schema, files.fingerprint(path, files.NO_LIMIT), folder)


def _collect(levels: dict[str, set], found: dict[str, list[str]]) -> dict[str, list[str]]:
    for c, values in found.items():
        levels.setdefault(c, set()).update(values)
    return found
