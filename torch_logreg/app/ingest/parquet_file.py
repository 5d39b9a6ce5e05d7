"""Parquet files (``.parquet``, ``.pq``), read by ``pyarrow.parquet``: numeric columns as they are
stored, any other column as text once the model asks for it (see :mod:`.table`). Rows are named
by their 0-based index (a Parquet file has no lines).

Under torchrun a file's row groups are dealt out in order, a rank reading those whose first row
falls in its block of rows; a file larger than the memory budget is read a row group at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...distributed import shard_bounds
from ...errors import UsageError
from . import files
from .reader import Reader, Request
from .table import ArrowTable, Table, nfc


class ParquetReader(Reader):
    name = "Parquet"
    suffixes = (".parquet", ".pq")

    def read(self, path: Path, request: Request) -> Table:
        return read_parquet(path, request.max_bytes)

    def read_part(self, path: Path, request: Request, rank: int, world_size: int) -> Table:
        """The row groups whose first row is in this rank's block of rows."""
        sizes = group_sizes(path)
        groups, first_row = row_groups(sizes, rank, world_size)
        if not all(row_groups(sizes, r, world_size)[0] for r in range(world_size)):  # every rank finds the same
            raise UsageError(f"{path} has {len(sizes)} row group(s) of {sum(sizes)} rows, which cannot give each of the "
                             f"{world_size} processes a part; write it with smaller row groups (pyarrow.parquet."
                             "write_table(..., row_group_size=...)) or run fewer processes")
        return read_parquet(path, request.max_bytes, row_groups=groups, first_row=first_row, fingerprint=rank == 0)

    def unpacked_bytes(self, path: Path) -> int | None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            with pq.ParquetFile(path) as handle:
                return unpacked_bytes(handle)
        except (pa.ArrowException, OSError, ValueError):
            return 0  # not readable: reading it whole says why

    def blocks(self, path: Path, request: Request):
        """One row group at a time, each unpacking to at most ``request.max_bytes`` (the streamed
        run's ``data.memory_budget``): every group's size is checked before the first is read."""
        import pyarrow.parquet as pq

        sizes = group_sizes(path)
        with pq.ParquetFile(path) as handle:
            unpacked = [unpacked_bytes(handle, [g]) for g in range(len(sizes))]
        budget = request.max_bytes
        for g, size in enumerate(unpacked):
            if size > budget:
                fits = max(1, sizes[g] * budget // size // 2)  # rows of half the budget: room for their encoding
                raise UsageError(
                    f"{path}: row group {g} holds {sizes[g]:,} rows that unpack to {files.size_text(size)}, more than "
                    f"data.memory_budget = {budget} bytes, and a file larger than the budget is streamed a row group "
                    f"at a time; rewrite it with smaller row groups (import pyarrow.parquet as pq; pq.write_table("
                    f"pq.read_table({str(path)!r}), 'smaller.parquet', row_group_size={fits})) or raise "
                    "data.memory_budget")
        firsts = np.concatenate([[0], np.cumsum(sizes)]).astype(int).tolist()
        for g in range(len(sizes)):
            yield read_parquet(path, budget, row_groups=[g], first_row=firsts[g], fingerprint=False)


def group_sizes(path: Path) -> list[int]:
    """The number of rows of each row group."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files.check_source(path, files.NO_LIMIT)
    try:
        with pq.ParquetFile(path) as handle:
            return [handle.metadata.row_group(g).num_rows for g in range(handle.metadata.num_row_groups)]
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise UsageError(f"{path} is not a readable Parquet file: {str(exc).splitlines()[0] if str(exc) else exc}") \
            from None


def row_groups(sizes: list[int], rank: int, world_size: int) -> tuple[list[int], int]:
    """``(groups, first_row)``: the row groups (of ``sizes`` rows each) of rank ``rank``, those whose
    first row is in its block of rows (:func:`~torch_logreg.distributed.shard_bounds`), and the
    file's row number of the first of them. Each group is one rank's; a rank may get none."""
    n = sum(sizes)
    lo, hi = shard_bounds(n, rank, world_size)
    firsts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int).tolist() if sizes else []
    groups = [g for g, f in enumerate(firsts) if lo <= f < hi]
    return groups, firsts[groups[0]] if groups else 0


def unpacked_bytes(handle, row_groups: list[int] | None = None) -> int:
    """What a Parquet file's columns (in ``row_groups``, default all) take in memory once read: rows
    times the width of each fixed-width column (a run of zeros is stored in a few bytes), and the
    uncompressed size of each other column."""
    meta, schema = handle.metadata, handle.schema_arrow
    groups = range(meta.num_row_groups) if row_groups is None else row_groups
    rows = sum(meta.row_group(i).num_rows for i in groups)
    total = 0
    for j, field in enumerate(schema):
        try:
            total += rows * max(1, field.type.bit_width // 8)
        except ValueError:  # not fixed-width: text, binary, nested
            total += sum(meta.row_group(i).column(j).total_uncompressed_size for i in groups)
    return total


def read_parquet(path: Path, max_bytes: int, row_groups: list[int] | None = None, first_row: int = 0,
                 fingerprint: bool = True) -> Table:
    """A Parquet file's columns (only ``row_groups``, whose first row is the file's row
    ``first_row``, when given); what is read unpacks to at most ``max_bytes``. ``fingerprint``:
    hash the file for the run (False: a part read by one of several processes, the first of
    which hashes it)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        raise UsageError(f"{path}: reading Parquet needs the pyarrow package: pip install pyarrow") from None
    files.check_source(path, max_bytes if row_groups is None else files.NO_LIMIT)
    print_ = files.fingerprint(path, files.NO_LIMIT) if fingerprint else None
    try:
        with pq.ParquetFile(path) as handle:
            unpacked = unpacked_bytes(handle, row_groups)
            if unpacked > max_bytes:
                what = f"{path} unpacks" if row_groups is None else f"{path}: this process's row groups unpack"
                raise UsageError(f"{what} to {unpacked} bytes, more than data.max_bytes = {max_bytes}; raise "
                                 "data.max_bytes if this machine has the memory for it")
            arrow = handle.read() if row_groups is None else handle.read_row_groups(row_groups)
    except UsageError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise UsageError(f"{path} is not a readable Parquet file: {str(exc).splitlines()[0] if str(exc) else exc}") \
            from None
    names = [nfc(str(n).strip()) for n in arrow.column_names]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise UsageError(f"{path}: column {twice!r} appears twice; rename one so each column is read")
    if arrow.num_rows == 0:
        raise UsageError(f"{path} has no rows")
    columns = {name: column.combine_chunks() for name, column in zip(names, arrow.columns, strict=True)}
    return ArrowTable(path, names, columns, print_, first_row=first_row)
