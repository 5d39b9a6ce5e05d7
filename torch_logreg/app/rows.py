"""The rows of a run's data as they are held, and its training rows as one source.

Before the split, :func:`open_data` holds the data one of three ways, behind one interface
(:class:`HeldData`: every row's label and weight, any rows' features by index, the
standardizer's statistics over the training rows, the training rows themselves):

- :class:`InMemory`: every row in memory (the common case; under torchrun, a file whose format
  has no parts, read whole by every process);
- :class:`RankPart`: under torchrun, this process's part of the file (a ``.npy`` block, an
  svmlight byte range, Parquet row groups). What every rank must share is agreed with
  collectives: the labels and row weights (N numbers, small next to the features) are gathered,
  so every rank draws the same split; the validation and test rows are gathered on every rank;
  the standardizer's statistics are sums over the ranks' training rows;
- :class:`Streamed`: a file larger than ``data.memory_budget``, as a memory map
  (:mod:`~.ingest.stream`): the held-out rows are read into memory, the training rows stay in
  the file, the standardizer's statistics are summed over them a chunk at a time.

After the split, the training rows are a :class:`TrainingRows` (in memory, this rank's slice, or
a memory-mapped stream). Its consumers never ask which: each kind builds its own loop
(:meth:`TrainingRows.trainer`), gives the logits of every training row for the final report
(:meth:`TrainingRows.logits`), its first rows for a gradient check (:meth:`TrainingRows.head`),
and all its rows as tensors where it holds them (:meth:`TrainingRows.tensors`).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import UsageError
from ..train import LoopConfig, Trainer, TrainingData
from . import ingest
from .ingest import Standardizer

#: rows per chunk when a pass over streamed training rows reads them (bounded by the budget too)
CHUNK_ROWS = 65536


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


# --- the training rows -------------------------------------------------------------------------


class TrainingRows(ABC):
    """The training split's rows, standardized, with their prepared targets ``T`` (N, K), row
    weights and offsets ``(N, 1)`` (data.offset; in memory only), each or None; see the module docstring."""

    #: (N, 1) the rows' offsets, added to their logits (data.offset), or None
    offset: Tensor | None = None

    def __init__(self, T: Tensor, weight: Tensor | None, n_features: int) -> None:
        self.T, self.weight, self.n_features = T, weight, n_features

    @abstractmethod
    def trainer(self, model, config: LoopConfig, callbacks=(), X_val: Tensor | None = None,
                y_val: Tensor | None = None, offset_val: Tensor | None = None) -> Trainer:
        """The loop over these rows, run as ``config`` says, with the held-out rows (and their
        offsets) for early stopping."""

    @abstractmethod
    def logits(self, model) -> tuple[Tensor, Tensor] | None:
        """The logits and targets of every training row, on rank 0 (None on other ranks); a
        collective call where the rows are spread over the ranks."""

    @abstractmethod
    def head(self, n: int) -> tuple[Tensor, Tensor]:
        """The features and targets of the first ``n`` training rows this process holds."""

    def tensors(self) -> tuple[Tensor, Tensor] | None:
        """``(X, T)`` of every training row, where this process holds them all in memory."""
        return None

    def in_memory(self, why: str) -> tuple[Tensor, Tensor]:
        """:meth:`tensors`, or a UsageError saying that ``why`` needs them."""
        held = self.tensors()
        if held is None:
            raise UsageError(self._not_held(why))
        return held

    def _not_held(self, why: str) -> str:
        return f"the training rows are not held in memory by one process; {why}"


class MemoryRows(TrainingRows):
    """Every training row in memory (``X`` (N, D)); ``spread``: under torchrun, each rank trains
    on its block of them."""

    def __init__(self, X: Tensor, T: Tensor, weight: Tensor | None = None, spread: bool = False,
                 offset: Tensor | None = None) -> None:
        super().__init__(T, weight, X.shape[1])
        self.X, self.spread, self.offset = X, spread, offset

    def trainer(self, model, config: LoopConfig, callbacks=(), X_val: Tensor | None = None,
                y_val: Tensor | None = None, offset_val: Tensor | None = None) -> Trainer:
        data = TrainingData(self.X, self.T, self.weight, X_val, y_val, self.offset,
                            offset_val if X_val is not None else None)
        if self.spread:
            from ..distributed import DistributedTrainer

            return DistributedTrainer(model, data, config, callbacks, shard=True)
        return Trainer(model, data, config, callbacks)

    def logits(self, model) -> tuple[Tensor, Tensor] | None:
        if world_size() > 1 and _rank() != 0:
            return None
        with torch.no_grad():
            z = model.logits(self.X)
            return (z if self.offset is None else z + self.offset), self.T

    def head(self, n: int) -> tuple[Tensor, Tensor]:
        if self.X.layout == torch.sparse_csr:  # a CSR tensor is not sliced: its first rows taken
            return ingest.take_rows(self.X, torch.arange(min(n, self.X.shape[0]))), self.T[:n]
        return self.X[:n], self.T[:n]

    def tensors(self) -> tuple[Tensor, Tensor]:
        return self.X, self.T


class RankRows(MemoryRows):
    """This rank's part of the training rows (under torchrun, each rank reading its part of the file)."""

    def trainer(self, model, config: LoopConfig, callbacks=(), X_val: Tensor | None = None,
                y_val: Tensor | None = None, offset_val: Tensor | None = None) -> Trainer:
        from ..distributed import DistributedTrainer

        data = TrainingData(self.X, self.T, self.weight, X_val, y_val)
        return DistributedTrainer(model, data, config, callbacks, shard=False)

    def logits(self, model) -> tuple[Tensor, Tensor] | None:
        import torch.distributed as dist

        with torch.no_grad():
            logits = model.logits(self.X) if self.X.shape[0] else self.X.new_zeros((0, model.n_outputs),
                                                                                   dtype=model.dtype)
        out = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
        dist.gather_object((logits.cpu(), self.T.cpu()), out, dst=0)
        if out is None:
            return None
        return torch.cat([z for z, _ in out]).to(self.X.device), torch.cat([t for _, t in out]).to(self.X.device)

    def tensors(self) -> None:
        return None  # a part of the training split is not the training split

    def _not_held(self, why: str) -> str:
        return f"under torchrun each process holds a part of the training rows; {why}"


class StreamRows(TrainingRows):
    """Training rows left in a memory-mapped file (``X`` (N_file, D), its rows ``rows`` in the
    split's order, every file row's encoded target in ``targets``), standardized as they are
    read by ``transform``; the loop's batch buffers take at most ``budget`` bytes."""

    def __init__(self, path: Path, X: np.ndarray, targets: np.ndarray, rows: np.ndarray, budget: int, transform,
                 T: Tensor, weight: Tensor | None, keep=None) -> None:
        super().__init__(T, weight, X.shape[1])
        self.path, self.X, self.targets, self.rows, self.budget = path, X, targets, rows, budget
        self.transform, self.keep = transform, keep

    def trainer(self, model, config: LoopConfig, callbacks=(), X_val: Tensor | None = None,
                y_val: Tensor | None = None, offset_val: Tensor | None = None) -> Trainer:
        from ..streaming import StreamingTrainer

        data = TrainingData(self.X, self.targets, self.weight, X_val, y_val)
        return StreamingTrainer(model, data, config, callbacks, memory_budget_bytes=self.budget, rows=self.rows,
                                transform=self.transform, validate=False)

    def chunks(self, rows: np.ndarray | None = None):
        """The float64 features of ``rows`` (default: the training rows), a chunk at a time."""
        yield from chunks(self.X, self.rows if rows is None else rows, self.budget)

    @torch.no_grad()
    def logits(self, model) -> tuple[Tensor, Tensor]:
        parts = [model.logits(self.transform(X).to(device=model.device, dtype=model.dtype)) for X in self.chunks()]
        return torch.cat(parts), self.T

    def head(self, n: int) -> tuple[Tensor, Tensor]:
        X = self.transform(next(self.chunks(self.rows[:n])))
        return X.to(device=self.T.device, dtype=self.T.dtype), self.T[:n]

    def _not_held(self, why: str) -> str:
        return f"{self.path} is larger than data.memory_budget; {why}: raise data.memory_budget or leave it out"


def chunks(X: np.ndarray, rows: np.ndarray, budget: int):
    """The float64 features of ``rows`` of a memory map, a chunk at a time."""
    step = max(1, min(CHUNK_ROWS, budget // max(1, 16 * X.shape[1])))
    for start in range(0, len(rows), step):
        yield read_rows(X, rows[start : start + step])


def read_rows(X: np.ndarray, rows: np.ndarray) -> Tensor:
    """Rows ``rows`` of the memory map, as float64 (read in sorted order, returned in ``rows``')."""
    order = np.argsort(rows, kind="stable")
    block = np.empty((len(rows), X.shape[1]), dtype=np.float64)
    block[order] = X[rows[order]]
    return torch.from_numpy(block)


def _rank() -> int:
    from ..distributed import get_rank

    return get_rank()


# --- the data as held before the split ---------------------------------------------------------


@dataclass
class Training:
    """What a split needs to make the training rows: their numbers, the standardizer, the
    prepared targets and weights, and the run's device and dtype."""

    index: Tensor  # the training rows' numbers among all rows
    standardizer: Standardizer
    T: Tensor  # (N_train, K) prepared targets, on the device
    fit_y: Tensor  # (N_train,) or (N_train, K): the targets as fit takes them (indices, one-hot rows or values)
    weight: Tensor | None
    device: torch.device
    dtype: torch.dtype
    cfg: object
    offset: Tensor | None = None  # (N_train, 1) on the device, or None


class HeldData(ABC):
    """The data set's rows as held before the split; see the module docstring."""

    #: (N,) every row's offset (data.offset; in memory only), or None
    offset: np.ndarray | None = None

    def __init__(self, y, weight: np.ndarray | None, schema: ingest.Schema, fingerprint: dict | None = None,
                 image_shape=None, true_weights: Tensor | None = None) -> None:
        self.y, self.weight, self.schema, self.fingerprint = y, weight, schema, fingerprint
        self.image_shape, self.true_weights = image_shape, true_weights

    n_features: int

    def held(self, index: Tensor) -> Tensor:
        """Which of the rows ``index`` this process trains on (all, but under torchrun a part)."""
        return torch.ones(len(index), dtype=torch.bool)

    @abstractmethod
    def rows(self, index: Tensor) -> Tensor:
        """The raw float64 features of rows ``index`` (numbers among all rows), on every process."""

    @abstractmethod
    def fit_standardizer(self, index: Tensor) -> Standardizer:
        """The standardizer of rows ``index`` (the training rows)."""

    @abstractmethod
    def training(self, t: Training) -> tuple[TrainingRows, Tensor | None]:
        """The training rows, and their raw features where this process holds them in memory."""

    def standardized(self, raw: Tensor, t: Training, rows: Tensor) -> Tensor:
        """``raw`` rows standardized, on the run's device and in its dtype; a value the dtype cannot
        hold once standardized is named (``rows``: their numbers, for the message)."""
        X = t.standardizer.transform(raw.to(device=t.device, dtype=torch.float64)).to(t.dtype)
        cfg = t.cfg
        ingest.check_standardized(X, raw, cfg.data.path or f"data set {cfg.data.name!r}", self.schema.feature_names,
                                  rows)
        return X


class InMemory(HeldData):
    def __init__(self, ds) -> None:
        super().__init__(ds.y, ds.weight, ds.schema, ds.fingerprint, ds.image_shape, ds.true_weights)
        self.X, self.n_features = ds.X, ds.X.shape[1]
        self.split = ds.split  # data.split_column's code of each row, or None
        self.offset = ds.offset

    def rows(self, index: Tensor) -> Tensor:
        return ingest.take_rows(self.X, index)

    def fit_standardizer(self, index: Tensor) -> Standardizer:
        return Standardizer.fit(self.rows(index))

    def training(self, t: Training) -> tuple[TrainingRows, Tensor]:
        raw = self.rows(t.index)
        X = self.standardized(raw, t, t.index)
        return MemoryRows(X, t.T, t.weight, spread=world_size() > 1, offset=t.offset), raw


class RankPart(HeldData):
    """This rank's part of the file (rows ``starts[rank]`` to ``starts[rank + 1] - 1`` of all), with
    every rank's labels and weights."""

    def __init__(self, ds, rank: int) -> None:
        from .ingest.collective import gather

        pieces = gather((np.asarray(ds.y), ds.weight))
        counts = [len(y) for y, _ in pieces]
        if sum(counts) == 0:
            raise UsageError("data.keep_classes matches no row")
        weight = None if pieces[0][1] is None else np.concatenate([w for _, w in pieces])
        if weight is not None and not (weight > 0).any():
            raise UsageError(f"every row weight in column {ds.schema.weight!r} is 0; at least one row must count")
        super().__init__(np.concatenate([y for y, _ in pieces]), weight, ds.schema, ds.fingerprint)
        self.X, self.n_features, self.rank = ds.X, ds.X.shape[1], rank
        self.starts = np.concatenate([[0], np.cumsum(counts)]).tolist()

    def local(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """``(mask, rows)``: which of the row numbers ``index`` this rank holds, and their
        positions among its rows, in ``index``'s order."""
        lo, hi = self.starts[self.rank], self.starts[self.rank + 1]
        mask = (index >= lo) & (index < hi)
        return mask, index[mask] - lo

    def held(self, index: Tensor) -> Tensor:
        return self.local(index)[0]

    def rows(self, index: Tensor) -> Tensor:
        """Each rank sends the rows of ``index`` it holds; every rank gets them all, in order."""
        from .ingest.collective import gather

        _, rows = self.local(index)
        mine = ingest.take_rows(self.X, rows)
        sparse = mine.layout == torch.sparse_csr
        pieces = gather((mine.crow_indices(), mine.col_indices(), mine.values()) if sparse else mine)
        if sparse:
            import scipy.sparse

            from ..validation import as_sparse_csr

            stacked = scipy.sparse.vstack([scipy.sparse.csr_matrix((v.numpy(), c.numpy(), r.numpy()),
                                                                   shape=(len(r) - 1, self.X.shape[1]))
                                           for r, c, v in pieces], format="csr")
            held = as_sparse_csr(stacked, "X", self.X.dtype)
        else:
            held = torch.cat(pieces)
        # the pieces came in rank order, each in ``index``'s order: put them in ``index``'s order
        owner = torch.bucketize(index, torch.tensor(self.starts[1:-1]), right=True)
        by_rank = torch.argsort(owner, stable=True)  # where each row of ``held`` is in ``index``
        inverse = torch.empty_like(by_rank)
        inverse[by_rank] = torch.arange(len(index))
        return ingest.take_rows(held, inverse)

    def fit_standardizer(self, index: Tensor) -> Standardizer:
        from .ingest.collective import Combine

        _, rows = self.local(index)
        return Standardizer.fit(ingest.take_rows(self.X, rows), Combine())

    def training(self, t: Training) -> tuple[TrainingRows, Tensor]:
        mask, rows = self.local(t.index)
        raw = ingest.take_rows(self.X, rows)
        X = self.standardized(raw, t, t.index[mask])
        weight = None if t.weight is None else t.weight[mask.to(t.weight.device)]
        return RankRows(X, t.T[mask.to(t.T.device)], weight), raw


class Streamed(HeldData):
    """A file's rows in a memory map (see :mod:`~.ingest.stream`), those data.keep_classes keeps
    numbered in order."""

    def __init__(self, cfg) -> None:
        path = Path(cfg.data.path).expanduser()
        if world_size() > 1:
            raise UsageError(f"{path} is larger than data.memory_budget, and a streamed run is one process; under "
                             "torchrun each process reads only its part of the file: leave data.memory_budget out")
        check_stream_settings(cfg, path)
        source = ingest.open_source(cfg.data)
        kept = np.arange(len(source.y))
        if cfg.data.keep_classes:
            kept = np.nonzero(ingest.keep_mask(source.y, [str(c) for c in cfg.data.keep_classes]))[0]
            if not kept.size:
                raise UsageError(f"data.keep_classes {list(cfg.data.keep_classes)} matches no row of {path}")
        super().__init__(source.y[kept], None if source.weight is None else source.weight[kept], source.schema,
                         source.fingerprint)
        self.path, self.source, self.kept, self.n_features = path, source, kept, source.X.shape[1]
        self.budget = cfg.data.memory_budget

    def rows(self, index: Tensor) -> Tensor:
        return read_rows(self.source.X, self.kept[index.numpy()])

    def fit_standardizer(self, index: Tensor) -> Standardizer:
        return Standardizer.fit_parts(lambda: chunks(self.source.X, self.kept[index.numpy()], self.budget))

    def training(self, t: Training) -> tuple[TrainingRows, None]:
        held = (len(self.y) - len(t.index)) * self.n_features * (8 + torch.empty((), dtype=t.dtype).element_size())
        budget = batch_budget(t.cfg, held, self.n_features, t.T.shape[1], t.dtype)
        fit_y = t.fit_y.cpu().numpy()
        targets = np.zeros((len(self.source.y), *fit_y.shape[1:]), dtype=fit_y.dtype)
        rows = self.kept[t.index.numpy()]
        targets[rows] = fit_y
        return StreamRows(self.path, self.source.X, targets, rows, budget, t.standardizer.transform, t.T, t.weight,
                          self.source.keep), None


def open_data(cfg, device: torch.device) -> HeldData:
    """The config's data, held as its size and torchrun allow (see the module docstring)."""
    if ingest.streams(cfg.data):
        return Streamed(cfg)
    if world_size() > 1 and cfg.data.path:
        part = ingest.read_part(Path(cfg.data.path).expanduser(), cfg.data, _rank(), world_size())
        if part is not None:
            return RankPart(part[0], _rank())
    return InMemory(ingest.load_dataset(cfg.data, seed=cfg.train.seed, device=device))


def check_stream_settings(cfg, path: Path) -> None:
    """What a streamed run cannot do, said before anything is read."""
    from ..registry import EXACT_SOLVERS

    t = cfg.train
    why = f"{path} is larger than data.memory_budget = {ingest.size_text(cfg.data.memory_budget)}, so it is streamed"
    if t.solver in EXACT_SOLVERS:
        raise UsageError(f"{why}; train.solver = {t.solver!r} needs the training rows in memory: use a loop solver "
                         "(gd, momentum, nesterov, adam, ...) or raise data.memory_budget")
    if not t.batch_size:
        raise UsageError(f"{why} in mini-batches: set train.batch_size (e.g. 1024)")
    if cfg.data.add_radius or cfg.data.interactions or cfg.data.offset:
        key = next(f"data.{k}" for k in ("add_radius", "interactions", "offset") if getattr(cfg.data, k))
        raise UsageError(f"{why}; {key} computes features from columns held in memory")
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
