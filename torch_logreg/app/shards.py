"""Under torchrun, each process (rank) reads only its rows of the data file, never the whole set.

- a ``.npy`` array is opened as a memory map, and a rank copies its contiguous block of rows;
- an svmlight file is cut into byte ranges, and a rank parses the lines that start in its range;
- a Parquet file's row groups are dealt out in order, a rank reading those whose first row falls
  in its block of rows.

What must be the same on every rank is agreed on with collectives, not by reading more of the
file: an svmlight file's index base and width, a Parquet file's categories, and the labels (and
row weights), N numbers that are small next to the features. With every label, every rank draws
the train / validation / test split one process draws from the same file, over the same global
row numbers. Each rank keeps the training rows of its block; the validation and test rows are
gathered on every rank, since the loop evaluates validation whole on each. The standardizer's
statistics are sums over the ranks' training rows (:meth:`Standardizer.fit` with a ``combine``),
and the training split's final metrics come from logits gathered on rank 0.

A rank so holds its block of rows while it reads, then its training rows and the held-out ones.
A full-batch run reaches the weights of one process (up to the order of sums); a mini-batch run
draws its batches from other rows than a run that reads the whole file and shards the training
split, since here each rank's rows are those of its block.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from ..distributed import shard_bounds
from ..errors import UsageError
from . import data as data_lib
from . import sources
from .sparse_data import SVMLIGHT_SUFFIXES
from .tables import PARQUET_SUFFIXES

#: the files each rank reads a part of
SHARDED_SUFFIXES = (".npy", *SVMLIGHT_SUFFIXES, *PARQUET_SUFFIXES)


def applies(data_cfg, world_size: int) -> bool:
    """Whether each of ``world_size`` processes reads only its part of ``data.path``."""
    return world_size > 1 and bool(data_cfg.path) and Path(data_cfg.path).suffix.lower() in SHARDED_SUFFIXES


class Combine:
    """Sums and maxima of tensors over the ranks (on the device the backend needs, back on the
    caller's), for :meth:`~.data.Standardizer.fit`."""

    def __init__(self) -> None:
        self.device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" \
            else torch.device("cpu")

    def _reduce(self, t: Tensor, op) -> Tensor:
        out = t.to(self.device, copy=True)
        dist.all_reduce(out, op=op)
        return out.to(t.device)

    def sum(self, t: Tensor) -> Tensor:
        return self._reduce(t, dist.ReduceOp.SUM)

    def max(self, t: Tensor) -> Tensor:
        return self._reduce(t, dist.ReduceOp.MAX)


def gather(obj) -> list:
    """``obj`` of every rank, in rank order, on every rank."""
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


@dataclass
class Part:
    """This rank's rows of the file, read and encoded as the whole file would be."""

    ds: data_lib.Dataset  # the rows (X, raw labels y, weights), the schema agreed by all ranks
    first_row: int  # the file's row number of the first row read (before data.keep_classes)


def read_part(data_cfg, rank: int, world_size: int) -> Part:
    """Rank ``rank``'s part of ``data.path`` (see the module docstring); a collective call."""
    path = Path(data_cfg.path).expanduser()
    suffix = path.suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        part = _parquet_part(path, data_cfg, rank, world_size)
    else:
        data_lib.refuse_table_options(path, data_cfg)
        part = _npy_part(path, data_cfg, rank, world_size) if suffix == ".npy" else \
            _svmlight_part(path, data_cfg, rank, world_size)
    part.ds = data_lib.finish_dataset(part.ds, data_cfg, whole=False)
    return part


def _too_few(path: Path, n: int, what: str, world_size: int) -> UsageError:
    return UsageError(f"{path} has {n} {what}, too few to give each of the {world_size} processes a part; run fewer "
                      "processes")


def _npy_part(path: Path, data_cfg, rank: int, world_size: int) -> Part:
    """A block of rows of a .npy array (target in a column), copied from its memory map."""
    array = sources.npy_map(path)
    if array.dtype.kind not in "fiub":
        raise UsageError(f"{path}: the array must be numeric, got dtype {array.dtype}")
    n, width = array.shape
    if n < world_size:
        raise _too_few(path, n, "rows", world_size)
    start, stop = shard_bounds(n, rank, world_size)
    size = (stop - start) * width * array.dtype.itemsize
    if size > data_cfg.max_bytes:
        raise UsageError(f"{path}: this process's {stop - start} rows take {sources.size_text(size)}, more than "
                         f"data.max_bytes ({sources.size_text(data_cfg.max_bytes)}); raise it if this machine has the "
                         "memory, or run more processes")
    col = sources.target_column(data_cfg.target, width, path, "a .npy file")
    block = np.array(array[start:stop])
    y = block[:, col].copy()
    X = np.delete(block, col, axis=1).astype(np.float64, copy=False)
    del block
    bad = ~np.isfinite(X)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise UsageError(f"{path}: row {start + r}, column {c}: {X[r, c]} is not a finite number")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise UsageError(f"{path}: the target has a non-finite value at row {start + int(np.nonzero(~np.isfinite(y))[0][0])}")
    print_ = sources.fingerprint(path, sources.NO_LIMIT) if rank == 0 else None
    schema = data_lib.Schema([f"x{i + 1}" for i in range(X.shape[1])])
    return Part(data_lib.Dataset(torch.from_numpy(X), y, schema, fingerprint=print_), start)


def _svmlight_part(path: Path, data_cfg, rank: int, world_size: int) -> Part:
    """The lines of an svmlight file that start in this rank's byte range."""
    from . import sparse_data

    if data_cfg.target:
        raise UsageError(f"{path}: an svmlight file has its label first on each line; leave data.target out")
    sources.check_source(path, sources.NO_LIMIT)
    content, start = byte_range(path, rank, world_size, data_cfg.max_bytes)

    def first_line() -> int:  # counted only to name a bad line
        return _lines_before(path, start) + 1

    if content.strip():
        matrix, y = sparse_data.parse_svmlight(content, path, first_line)
    else:
        import scipy.sparse

        matrix, y = scipy.sparse.csr_matrix((0, 0)), np.zeros(0)
    del content
    counts = gather((matrix.shape[0], matrix.shape[1], int(sparse_data.index_base(matrix) == 0)))
    if any(c[0] == 0 for c in counts):
        raise _too_few(path, sum(c[0] for c in counts), "lines", world_size)
    base = 0 if any(c[2] for c in counts) else 1
    width = max(c[1] for c in counts) - base
    if width <= 0:
        raise UsageError(f"{path}: no line has a feature; an svmlight line is 'label index:value ...'")
    first_row = sum(c[0] for c in counts[:rank])
    X, y = sparse_data.svmlight_features(matrix, y, path, base, width, first_row)
    print_ = sources.fingerprint(path, sources.NO_LIMIT) if rank == 0 else None
    schema = data_lib.Schema([], sparse_width=width, svmlight_base=base)
    return Part(data_lib.Dataset(X, y, schema, fingerprint=print_), first_row)


def byte_range(path: Path, rank: int, world_size: int, max_bytes: int) -> tuple[bytes, int]:
    """``(text, offset)``: the lines of ``path`` that start in rank ``rank``'s ``1 / world_size`` of
    its bytes, and the offset of the first. Every line is one rank's, whole, in file order."""
    size = path.stat().st_size
    begin, end = size * rank // world_size, size * (rank + 1) // world_size
    try:
        with open(path, "rb") as fh:
            if begin:
                fh.seek(begin - 1)
                fh.readline(max_bytes + 1)  # the line under way at ``begin`` is the previous rank's
            start = fh.tell()
            if start - begin > max_bytes:
                raise UsageError(f"{path}: a line near byte {begin} is longer than data.max_bytes")
            content = fh.read(end - start) if start < end else b""
            if content and not content.endswith(b"\n"):
                content += fh.readline(max_bytes + 1)  # the last line starts before ``end`` and ends past it
    except OSError as exc:
        raise UsageError(f"cannot read data file {path}: {exc.strerror or exc}") from None
    if len(content) > max_bytes:
        raise UsageError(f"{path}: this process's part is {sources.size_text(len(content))}, more than data.max_bytes "
                         f"({sources.size_text(max_bytes)}); raise it, or run more processes")
    return content, start


def _lines_before(path: Path, offset: int) -> int:
    count = 0
    with open(path, "rb") as fh:
        while offset > 0:
            chunk = fh.read(min(sources.CHUNK, offset))
            if not chunk:
                break
            count += chunk.count(b"\n")
            offset -= len(chunk)
    return count


def _parquet_part(path: Path, data_cfg, rank: int, world_size: int) -> Part:
    """The row groups of a Parquet file whose first row is in this rank's block of rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .tables import read_parquet

    sources.check_source(path, sources.NO_LIMIT)
    try:
        with pq.ParquetFile(path) as handle:
            sizes = [handle.metadata.row_group(g).num_rows for g in range(handle.metadata.num_row_groups)]
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise UsageError(f"{path} is not a readable Parquet file: {str(exc).splitlines()[0] if str(exc) else exc}") \
            from None
    groups, first_row = row_groups(sizes, rank, world_size)
    if not all(row_groups(sizes, r, world_size)[0] for r in range(world_size)):  # every rank finds the same
        raise UsageError(f"{path} has {len(sizes)} row group(s) of {sum(sizes)} rows, which cannot give each of the "
                         f"{world_size} processes a part; write it with smaller row groups (pyarrow.parquet.write_table("
                         "..., row_group_size=...)) or run fewer processes")
    table = read_parquet(path, data_cfg.max_bytes, row_groups=groups, first_row=first_row, fingerprint=rank == 0)
    ds = data_lib.load_table(path, data_cfg, table=table,
                             combine_levels=lambda levels: data_lib.merge_levels(gather(levels)))
    return Part(ds, first_row)


def row_groups(sizes: list[int], rank: int, world_size: int) -> tuple[list[int], int]:
    """``(groups, first_row)``: the row groups (of ``sizes`` rows each) of rank ``rank``, those whose
    first row is in its block of rows (:func:`~torch_logreg.distributed.shard_bounds`), and the
    file's row number of the first of them. Each group is one rank's; a rank may get none."""
    n = sum(sizes)
    lo, hi = shard_bounds(n, rank, world_size)
    firsts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int).tolist() if sizes else []
    groups = [g for g, f in enumerate(firsts) if lo <= f < hi]
    return groups, firsts[groups[0]] if groups else 0


@dataclass
class Labels:
    """Every rank's labels and weights, in file order, and where each rank's rows start in it."""

    y: np.ndarray  # (N,) raw labels of all rows
    weight: np.ndarray | None  # (N,) row weights, or None
    starts: list[int]  # rank r holds rows starts[r] to starts[r + 1] - 1


def gather_labels(part: Part) -> Labels:
    """The labels and row weights of all ranks (a collective call)."""
    pieces = gather((np.asarray(part.ds.y), part.ds.weight))
    counts = [len(y) for y, _ in pieces]
    if sum(counts) == 0:
        raise UsageError("data.keep_classes matches no row")
    weights = None if pieces[0][1] is None else np.concatenate([w for _, w in pieces])
    if weights is not None and not (weights > 0).any():
        raise UsageError(f"every row weight in column {part.ds.schema.weight!r} is 0; at least one row must count")
    return Labels(np.concatenate([y for y, _ in pieces]), weights, np.concatenate([[0], np.cumsum(counts)]).tolist())


def local_rows(index: Tensor, labels: Labels, rank: int) -> tuple[Tensor, Tensor]:
    """``(mask, rows)``: which of the global row numbers ``index`` this rank holds, and their
    positions among its rows, in ``index``'s order."""
    lo, hi = labels.starts[rank], labels.starts[rank + 1]
    mask = (index >= lo) & (index < hi)
    return mask, index[mask] - lo


def gather_rows(X: Tensor, index: Tensor, labels: Labels, rank: int) -> Tensor:
    """The rows of the global row numbers ``index`` (in that order) on every rank, each rank
    sending those it holds of its part ``X`` (dense or CSR)."""
    _, rows = local_rows(index, labels, rank)
    mine = data_lib.take_rows(X, rows)
    sparse = mine.layout == torch.sparse_csr
    payload = (mine.crow_indices(), mine.col_indices(), mine.values()) if sparse else mine
    pieces = gather(payload)
    if sparse:
        import scipy.sparse

        from ..validation import as_sparse_csr

        stacked = scipy.sparse.vstack([scipy.sparse.csr_matrix((v.numpy(), c.numpy(), r.numpy()), shape=(len(r) - 1, X.shape[1]))
                                       for r, c, v in pieces], format="csr")
        held = as_sparse_csr(stacked, "X", X.dtype)
    else:
        held = torch.cat(pieces)
    # the pieces came in rank order, each in ``index``'s order: put them in ``index``'s order
    owner = torch.bucketize(index, torch.tensor(labels.starts[1:-1]), right=True)
    by_rank = torch.argsort(owner, stable=True)  # where each row of ``held`` is in ``index``
    inverse = torch.empty_like(by_rank)
    inverse[by_rank] = torch.arange(len(index))
    return data_lib.take_rows(held, inverse)


def gather_logits(model, X: Tensor, T: Tensor) -> tuple[Tensor, Tensor] | None:
    """Rank 0: the logits and targets of every rank's ``X``, ``T`` (its training rows), on rank
    0's device; the other ranks send theirs and get None (a collective call)."""
    with torch.no_grad():
        logits = model.logits(X) if X.shape[0] else X.new_zeros((0, model.n_outputs), dtype=model.dtype)
    out = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object((logits.cpu(), T.cpu()), out, dst=0)
    if out is None:
        return None
    return torch.cat([z for z, _ in out]).to(X.device), torch.cat([t for _, t in out]).to(X.device)
