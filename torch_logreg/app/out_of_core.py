"""Training out of core from the command line: a ``.npy`` or Parquet file larger than
``data.memory_budget`` is never read into memory whole.

A ``.npy`` file is opened as a memory map. A Parquet file is read a row group at a time, twice:
once for its labels, row weights and categories, once to encode each group's rows into a
temporary ``.npy`` file (float64, in the system's temporary folder, removed when the command
ends), which is then memory-mapped in its place; each row group must fit in the budget. The
memory map's Its target column (N numbers) is read to draw the split;
the validation and test rows are read into memory (they must fit in the budget), and the
training rows stay in the file: the standardizer's statistics are summed over them in chunks,
and :class:`~torch_logreg.streaming.StreamingTrainer` gathers each mini-batch from the map,
standardizes it as it is read and trains on it, with at most ``data.memory_budget`` bytes of
buffers for the held-out rows and the batches together. The training split's final metrics
come from its logits, computed chunk by chunk. The batches are the in-memory run's (the same
permutation of the same training rows), so a streamed run reaches the in-memory run's weights.

The operating system's page cache, which backs the memory map, is not counted: the kernel
gives it back as other memory is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import UsageError
from . import sources
from .tables import PARQUET_SUFFIXES

#: rows per chunk when a pass over the training rows reads them (bounded by the budget too)
CHUNK_ROWS = 65536


def applies(data_cfg) -> bool:
    """Whether ``data.path`` is a .npy file larger than ``data.memory_budget`` (when set), or a
    Parquet file whose columns unpack to more."""
    if not data_cfg.memory_budget or not data_cfg.path:
        return False
    path = Path(data_cfg.path).expanduser()
    if not path.is_file():
        return False
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return _parquet_bytes(path) > data_cfg.memory_budget
    return path.suffix.lower() == ".npy" and path.stat().st_size > data_cfg.memory_budget


def _parquet_bytes(path: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .tables import unpacked_bytes

    try:
        with pq.ParquetFile(path) as handle:
            return unpacked_bytes(handle)
    except (pa.ArrowException, OSError, ValueError):
        return 0  # not readable: the in-memory reader says why


@dataclass
class Source:
    """A file's rows as the streamed run reads them."""

    X: np.ndarray  # (N, D) float features: a memory map (of the file, or of the encoded Parquet rows)
    y: np.ndarray  # (N,) raw labels
    weight: np.ndarray | None  # (N,) row weights (data.weight), or None
    schema: object  # data.Schema
    fingerprint: dict
    keep: object = None  # what must live as long as X (the temporary folder of encoded rows)


def open_source(data_cfg) -> Source:
    """The streamed rows of ``data.path`` (see the module docstring)."""
    path = Path(data_cfg.path).expanduser()
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return _parquet_source(path, data_cfg)
    from . import data as data_lib

    data_lib.refuse_table_options(path, data_cfg)
    X, y, print_ = open_npy(data_cfg)
    return Source(X, y, None, data_lib.Schema([f"x{i + 1}" for i in range(X.shape[1])]), print_)


def _parquet_source(path: Path, data_cfg) -> Source:
    """Two passes over the row groups: labels, weights and categories, then the encoded rows
    written to a temporary .npy file."""
    import tempfile

    import pyarrow.parquet as pq

    from . import data as data_lib
    from .tables import read_parquet

    if data_cfg.hash:
        raise UsageError(f"{path} is larger than data.memory_budget, so it is streamed from encoded dense rows; "
                         "data.hash makes sparse features: raise data.memory_budget or leave data.hash out")
    sources.check_source(path, sources.NO_LIMIT)
    with pq.ParquetFile(path) as handle:
        sizes = [handle.metadata.row_group(g).num_rows for g in range(handle.metadata.num_row_groups)]
    firsts = np.concatenate([[0], np.cumsum(sizes)]).astype(int).tolist()

    def groups():
        for g in range(len(sizes)):
            try:
                yield read_parquet(path, data_cfg.memory_budget, row_groups=[g], first_row=firsts[g], fingerprint=False)
            except UsageError as exc:
                raise UsageError(f"{exc} (row group {g}; a streamed Parquet file is read a row group at a time: write "
                                 "it with smaller row groups, pyarrow.parquet.write_table(..., row_group_size=...))") \
                    from None

    levels: dict[str, set] = {}
    labels, weights = [], []
    for table in groups():  # pass 1: the labels, weights and each categorical column's levels
        ds = data_lib.load_table(path, data_cfg, table=table,
                                 combine_levels=lambda found: _collect(levels, found))
        labels.append(ds.y)
        weights.append(ds.weight)
        schema = ds.schema
    if not labels:
        raise UsageError(f"{path} has no rows")
    weight = None if weights[0] is None else np.concatenate(weights)
    if weight is not None and not (weight > 0).any():
        raise UsageError(f"{path}: every row weight in column {data_cfg.weight!r} is 0; at least one row must count")
    schema.categorical = data_lib.merge_levels([{c: sorted(v) for c, v in levels.items()}])
    folder = tempfile.TemporaryDirectory(prefix="torch_logreg-stream-")
    X = None
    for g, table in enumerate(groups()):  # pass 2: the rows, encoded with every level known
        block = data_lib.encode_table(schema, table).numpy()
        if X is None:
            X = np.lib.format.open_memmap(Path(folder.name) / "X.npy", mode="w+", dtype=np.float64,
                                          shape=(firsts[-1], block.shape[1]))
        X[firsts[g] : firsts[g + 1]] = block
    X.flush()
    return Source(X, np.concatenate(labels), weight, schema, sources.fingerprint(path, sources.NO_LIMIT), folder)


def _collect(levels: dict[str, set], found: dict[str, list[str]]) -> dict[str, list[str]]:
    for c, values in found.items():
        levels.setdefault(c, set()).update(values)
    return found


@dataclass
class Stream:
    """The training rows of a memory-mapped ``.npy`` file and what the loop needs to read them."""

    path: Path
    X: np.ndarray  # (N, D) the features: a view of the memory map without the target column
    targets: np.ndarray  # (N,) or (N, K): every row's encoded target, as the streamed loop reads it
    rows: np.ndarray  # the training rows' numbers in the file, in the split's order
    budget: int  # bytes of batch buffers the loop may hold
    keep: object = None  # what must live as long as X (a temporary folder)

    def chunks(self, rows: np.ndarray | None = None):
        """The float64 features of ``rows`` (default: the training rows), a chunk at a time."""
        rows = self.rows if rows is None else rows
        step = max(1, min(CHUNK_ROWS, self.budget // max(1, 16 * self.X.shape[1])))
        for start in range(0, len(rows), step):
            yield read_rows(self.X, rows[start : start + step])

    @torch.no_grad()
    def logits(self, model, transform) -> Tensor:
        """The model's logits on the training rows (``transform``ed as in training), in order."""
        parts = [model.logits(transform(X).to(device=model.device, dtype=model.dtype)) for X in self.chunks()]
        return torch.cat(parts)


def read_rows(X: np.ndarray, rows: np.ndarray) -> Tensor:
    """Rows ``rows`` of the memory map, as float64 (read in sorted order, returned in ``rows``')."""
    order = np.argsort(rows, kind="stable")
    block = np.empty((len(rows), X.shape[1]), dtype=np.float64)
    block[order] = X[rows[order]]
    return torch.from_numpy(block)


def open_npy(data_cfg) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(features, labels, fingerprint)`` of a .npy file: a view of its memory map without the
    target column (the first or the last), and the target column read into memory. Every value
    is checked finite, a chunk at a time."""
    path = Path(data_cfg.path).expanduser()
    where = f"{path} ({sources.size_text(path.stat().st_size)}, more than data.memory_budget = " \
            f"{sources.size_text(data_cfg.memory_budget)}, so streamed)"
    array = sources.npy_map(path)
    if array.dtype.kind not in "fiu" or array.dtype.itemsize < 4 and array.dtype.kind == "f":
        raise UsageError(f"{where}: streaming reads float32, float64 or integer arrays, got dtype {array.dtype}")
    n, width = array.shape
    col = sources.target_column(data_cfg.target, width, path, "a .npy file")
    if col not in (0, width - 1):
        raise UsageError(f"{where}: the target must be the first or the last column to be streamed (data.target = "
                         f"{data_cfg.target!r}); write the file with the target at one end")
    X = array[:, 1:] if col == 0 else array[:, :-1]
    if X.dtype.kind != "f":
        raise UsageError(f"{where}: the features must be floating-point to be streamed, got dtype {X.dtype}; save the "
                         "file as float32 or float64")
    y = np.array(array[:, col])
    step = max(1, min(CHUNK_ROWS, data_cfg.memory_budget // max(1, 8 * width)))
    for start in range(0, n, step):
        chunk = np.asarray(array[start : start + step])
        bad = ~np.isfinite(chunk)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            what = "the target" if c == col else f"column {c - int(col == 0)}"
            raise UsageError(f"{path}: row {start + r}, {what}: {chunk[r, c]} is not a finite number")
    return X, y, sources.fingerprint(path, sources.NO_LIMIT)


def check_settings(cfg, path: Path) -> None:
    """What a streamed run cannot do, said before anything is read."""
    from ..registry import EXACT_SOLVERS

    t = cfg.train
    why = f"{path} is larger than data.memory_budget = {sources.size_text(cfg.data.memory_budget)}, so it is streamed"
    if t.solver in EXACT_SOLVERS:
        raise UsageError(f"{why}; train.solver = {t.solver!r} needs the training rows in memory: use a loop solver "
                         "(gd, momentum, nesterov, adam, ...) or raise data.memory_budget")
    if not t.batch_size:
        raise UsageError(f"{why} in mini-batches: set train.batch_size (e.g. 1024)")
    if cfg.data.add_radius:
        raise UsageError(f"{why}; data.add_radius applies to two columns held in memory")
    if t.grad_check_every:
        raise UsageError(f"{why}; train.grad_check_every needs the rows in memory (run `torch-logreg gradcheck`)")


def batch_budget(cfg, held_bytes: int, n_features: int, n_outputs: int, dtype: torch.dtype) -> int:
    """The bytes left for the loop's batch buffers once the held-out rows take ``held_bytes``; a
    UsageError in the config's words when two batches do not fit."""
    from ..streaming import BatchStreamer

    budget = cfg.data.memory_budget - held_bytes
    fake_X = np.empty((0, n_features), dtype=np.float64)
    slot, staging = BatchStreamer.sizes(fake_X, np.empty(0, dtype=np.float64), cfg.train.batch_size, n_outputs,
                                        dtype, transform=True)
    need = 2 * slot + staging
    if budget < need:
        raise UsageError(f"data.memory_budget = {cfg.data.memory_budget} bytes is too small: the validation and test "
                         f"rows take {held_bytes} and two batches of {cfg.train.batch_size} rows {need}; raise it, lower "
                         "train.batch_size, or lower data.val_fraction / data.test_fraction")
    return budget
