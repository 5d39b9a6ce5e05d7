"""The names this module had before reading one rank's part of a file moved to the readers
(:mod:`torch_logreg.app.ingest`) and the rows' collectives to :mod:`torch_logreg.app.rows`, kept
for code that imports them from here."""

from .ingest.collective import Combine, gather
from .ingest.parquet_file import row_groups
from .ingest.svmlight_file import byte_range

__all__ = ["Combine", "byte_range", "gather", "row_groups"]
