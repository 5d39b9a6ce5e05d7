"""The file formats, and the one place a file's suffix is read: :func:`reader_for`.

A new format is one module with a :class:`~.reader.Reader` and one line in :data:`READERS`.
Where two formats share a suffix, the first whose :meth:`~.reader.Reader.accepts` takes the
file reads it (scipy's sparse ``.npz`` before NumPy's dense one).
"""

from __future__ import annotations

from pathlib import Path

from ...errors import UsageError
from .csv_file import CsvReader
from .npy_file import NpyReader
from .npz_file import NpzReader
from .parquet_file import ParquetReader
from .reader import Reader
from .scipy_npz_file import ScipyNpzReader
from .svmlight_file import SvmlightReader

#: every format, in the order a shared suffix is tried
READERS: tuple[Reader, ...] = (CsvReader(), ParquetReader(), NpyReader(), ScipyNpzReader(), NpzReader(),
                               SvmlightReader())


def suffix_of(path: Path) -> str:
    """The suffix a file's format is known by (lower case; ``""`` for none)."""
    return Path(path).suffix.lower()


def reader_for(path: Path) -> Reader:
    """The reader of ``path``'s format, by its suffix; a UsageError listing those read."""
    suffix = suffix_of(path)
    for reader in READERS:
        if suffix in reader.suffixes and reader.accepts(path):
            return reader
    known = ", ".join(dict.fromkeys(s for r in READERS for s in r.suffixes if s and s != ".txt"))
    raise UsageError(f"data file {path}: unsupported type {suffix!r}; use {known}")


def output_format(path: Path, formats: tuple[str, ...]) -> str | None:
    """Which of ``formats`` (suffixes) an output file ``path`` is written as, or None."""
    suffix = suffix_of(path)
    return suffix if suffix in formats else None
