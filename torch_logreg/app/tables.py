"""The names this module had before the CSV and Parquet readers moved to
:mod:`torch_logreg.app.ingest`, kept for code that imports them from here."""

from pathlib import Path

from .ingest.csv_file import read_csv, read_csv_table
from .ingest.parquet_file import read_parquet, unpacked_bytes
from .ingest.reader import Request
from .ingest.registry import reader_for
from .ingest.table import ArrowTable, RowsTable, Table


def read_table(path: Path, max_bytes: int) -> Table:
    """The table of a CSV or Parquet file (any format's reader, by its suffix)."""
    return reader_for(path).read(path, Request(max_bytes=max_bytes))


__all__ = ["ArrowTable", "RowsTable", "Table", "read_csv", "read_csv_table", "read_parquet", "read_table",
           "unpacked_bytes"]
