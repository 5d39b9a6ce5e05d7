"""The one interface every file format implements (:class:`Reader`), and what a reader is asked
for (:class:`Request`).

A reader turns a file into a :class:`~.table.Table` (named columns: the features, the target,
row weights) or a :class:`~.table.SparseTable` (an unnamed sparse matrix and its labels); the
:class:`~.schema.Schema` then encodes either into model features the same way for every command.
A reader may also give one process's part of the file (:meth:`Reader.read_part`, under
torchrun) and the file's rows a block at a time (:meth:`Reader.blocks`, for a file larger than
the memory budget); a format that cannot leaves them out, and its file is read whole.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ...errors import UsageError


@dataclass
class Request:
    """What is asked of a file: the target ``data.target`` names (a column name, or an index for
    a file whose columns have no names), the byte limit, and, for new rows (evaluate, predict),
    the ``schema`` training saved (the raw columns an array must have, an svmlight file's index
    base and width) and whether the target must be there."""

    target: str = ""
    max_bytes: int = 2 << 30
    schema: object = None  # Schema of the run the rows are for, or None in training
    need_target: bool = True


class Reader(ABC):
    """One file format (see the module docstring). ``sparse``: its features are an unnamed
    sparse matrix, so options that name columns (categorical, hashed, weight) do not apply."""

    name: str = ""
    suffixes: tuple[str, ...] = ()
    sparse: bool = False
    #: the config options that name its columns
    options: tuple[str, ...] = ("data.categorical", "data.hash", "data.weight")

    def accepts(self, path: Path) -> bool:
        """Whether this reader reads ``path`` among those of its suffixes (a second look where two
        formats share one, as NumPy's and scipy's ``.npz`` do)."""
        return True

    @abstractmethod
    def read(self, path: Path, request: Request):
        """The whole file as a Table (or SparseTable); every failure a UsageError naming it."""

    def read_part(self, path: Path, request: Request, rank: int, world_size: int):
        """Rank ``rank``'s part of the file (a collective call under torchrun), or None when every
        process reads the whole file."""
        return None

    def unpacked_bytes(self, path: Path) -> int | None:
        """The bytes the file's rows take in memory once read, or None when it is always read
        whole (no :meth:`blocks`)."""
        return None

    def blocks(self, path: Path, request: Request) -> Iterator | None:
        """The file's rows as Tables of consecutive rows, each small enough to hold, or None."""
        return None

    def refuse_column_options(self, path: Path, data_cfg) -> None:
        """A UsageError when the config names columns of a kind (categorical, hashed, weight) that
        a file of this format does not have (:attr:`options`)."""
        named = [k for k, v in (("data.categorical", data_cfg.categorical), ("data.hash", data_cfg.hash),
                                ("data.weight", data_cfg.weight)) if v and k not in self.options]
        if named:
            where = "CSV and Parquet files only" if self.sparse else "files with a column for it (CSV, Parquet)"
            raise UsageError(f"{named[0]} applies to {where}; {path} is a {self.name} file")
