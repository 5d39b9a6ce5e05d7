"""CSV files (``.csv``, ``.txt``, or no suffix): a header row of names, then one row a line.

The file is parsed column by column by Apache Arrow's reader (``pyarrow.csv``), every column read
as text and converted to numbers in Arrow, tens of times faster than a cell-by-cell parse in
Python. Whatever Arrow refuses or reads differently (a cell that is not a number, a ragged row, a
quote never closed, bytes that are not UTF-8, a cell Python reads as a number and Arrow does not)
sends the file to the strict line-by-line reader (:func:`read_csv_table`), which either reads it
or raises the error that names the line. A file is thus read the same way by both; the fast path
is only faster.

Arrow's reader holds about :data:`ARROW_COLUMN_BYTES` a column whatever the rows, the strict
reader about :data:`CELL_BYTES` a cell: a file of more than :data:`WIDE` columns is read by the
one that holds less (a file of a million columns and a few rows, line by line). What reading a
file holds is checked against the memory bound (:mod:`torch_logreg.memory`) before it is parsed.
"""

from __future__ import annotations

import codecs
import csv
import io
from pathlib import Path

from ... import memory
from ...errors import UsageError
from . import files
from .reader import Reader, Request
from .table import ArrowTable, RowsTable, Table, nfc

#: what Arrow's reader holds a column (its builders and arrays), and the strict reader a cell (a
#: Python string and its place in a row's list), in bytes: estimates for the memory bound
ARROW_COLUMN_BYTES = 10_000
CELL_BYTES = 100
#: columns beyond which the reader is chosen by what it holds (below, Arrow's columns take a few MB)
WIDE = 10_000


class CsvReader(Reader):
    name = "CSV"
    suffixes = (".csv", ".txt", "")

    def read(self, path: Path, request: Request) -> Table:
        return read_csv(path, request.max_bytes)


def read_csv_table(path: Path, max_bytes: int = files.DEFAULT_MAX_BYTES) -> tuple[list[str], list[tuple[int, list[str]]], dict]:
    """Header, (line number, cells) rows and the file's fingerprint; ragged rows, a quote that is
    never closed, bytes that are not UTF-8 and empty files are errors that name the line."""
    content, print_ = files.read_bytes(path, max_bytes)
    return _rows(path, content, print_)


def _rows(path: Path, content: bytes, print_: dict) -> tuple[list[str], list[tuple[int, list[str]]], dict]:
    """:func:`read_csv_table` of ``content``, the bytes of ``path``."""
    try:
        text = content.decode("utf-8-sig")  # a byte-order mark is accepted
    except UnicodeDecodeError as exc:
        line = content[: exc.start].count(b"\n") + 1
        raise UsageError(f"{path}, line {line}: byte {content[exc.start]:#04x} is not UTF-8 text; save the file "
                         "as UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    first = 1  # the line where the record being read starts

    def record():
        nonlocal first
        first = reader.line_num + 1
        try:
            return next(reader)
        except csv.Error as exc:
            if reader.line_num > first or "EOF" in str(exc) or "end of data" in str(exc):
                raise UsageError(f"{path}, line {first}: a quoted cell opened on this line is never closed") from None
            raise UsageError(f"{path}, line {reader.line_num}: not valid CSV: {exc}") from None

    try:
        header = record()
    except StopIteration:
        raise UsageError(f"{path} is empty") from None
    header = [nfc(h.strip()) for h in header]
    if not any(header):
        raise UsageError(f"{path}, line 1: the header row is empty")
    seen: dict[str, int] = {}
    for i, name in enumerate(header, start=1):
        if name in seen:
            raise UsageError(f"{path}, line 1: column {name!r} appears twice (columns {seen[name]} and {i}); "
                             "rename one so each column is read")
        seen[name] = i
    rows = []
    while True:
        try:
            cells = record()
        except StopIteration:
            break
        if not cells or all(c.strip() == "" for c in cells):
            continue
        if len(cells) != len(header):
            where = f"line {first}" if reader.line_num == first else f"lines {first}-{reader.line_num} (a quoted cell spans them)"
            raise UsageError(f"{path}, {where}: expected {len(header)} columns as in the header, found {len(cells)}")
        rows.append((first, cells))
    if not rows:
        raise UsageError(f"{path} has a header but no data rows")
    return header, rows, print_



def read_csv(path: Path, max_bytes: int) -> Table:
    """A CSV file through Arrow, or through the strict reader where Arrow cannot read it alike."""

    def strict() -> RowsTable:
        header, rows, print_ = read_csv_table(path, max_bytes)
        return RowsTable(path, header, rows, print_)

    content, print_ = files.read_bytes(path, max_bytes)
    # the rows: at most the lines
    n_columns, n_rows = _width(content), content.count(b"\n") + (not content.endswith(b"\n"))
    arrow = n_columns <= WIDE or ARROW_COLUMN_BYTES <= CELL_BYTES * n_rows
    held = (ARROW_COLUMN_BYTES * n_columns if arrow else CELL_BYTES * n_columns * n_rows)
    # the bytes, their text, and the float64 features twice while they are put together
    memory.check(held + 4 * len(content) + 16 * n_columns * n_rows,
                 f"reading {path} ({n_columns:,} columns, {n_rows:,} lines)",
                 "convert it to svmlight or a scipy sparse .npz if most cells are 0, or leave columns out with "
                 "data.drop or hash them with data.hash" if n_columns > WIDE else
                 "convert it to Parquet or .npy and set data.memory_budget to train streamed from disk")
    table = _arrow_csv(path, content, print_, strict) if arrow else None
    if table is not None:
        return table
    header, rows, _ = _rows(path, content, print_)
    return RowsTable(path, header, rows, print_)


def _width(content: bytes) -> int:
    """The cells of the header line (0 when it cannot be read: the strict reader says why)."""
    line = content[: content.find(b"\n") + 1 or len(content)]
    try:
        return len(next(csv.reader(io.StringIO(line.decode("utf-8-sig")), strict=True)))
    except (StopIteration, UnicodeDecodeError, csv.Error):
        return 0


def _arrow_csv(path: Path, content: bytes, print_: dict, strict) -> Table | None:
    """The Arrow reading of ``content``, or None where the strict reader must read it (including
    every file with something to report)."""
    try:
        import pyarrow as pa
        import pyarrow.csv as pacsv
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        return None
    if content.startswith(codecs.BOM_UTF8):
        content = content[len(codecs.BOM_UTF8):]
    try:
        first = next(csv.reader(io.StringIO(content[: content.find(b"\n") + 1 or len(content)].decode("utf-8")),
                                strict=True))
    except (StopIteration, UnicodeDecodeError, csv.Error):
        return None
    names = [nfc(h.strip()) for h in first]
    if not any(names) or len(set(names)) != len(names):  # the strict reader says what is wrong
        return None
    try:
        arrow = pacsv.read_csv(
            io.BytesIO(content),
            read_options=pacsv.ReadOptions(column_names=[f"c{i}" for i in range(len(first))], skip_rows=1,
                                           block_size=1 << 24),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(column_types={f"c{i}": pa.string() for i in range(len(first))},
                                                 strings_can_be_null=False, quoted_strings_can_be_null=False),
        )
    except (pa.ArrowException, UnicodeDecodeError):
        return None
    if arrow.num_rows == 0:
        return None
    columns = {name: arrow.column(i).combine_chunks() for i, name in enumerate(names)}
    # rows whose cells are all blank are skipped, as the strict reader skips them
    import pyarrow.compute as pc

    blank = None
    for column in columns.values():
        empty = pc.equal(pc.utf8_trim_whitespace(column), "")
        blank = empty if blank is None else pc.and_(blank, empty)
    if blank is not None and pc.any(blank).as_py():
        keep = pc.invert(blank)
        columns = {k: v.filter(keep) for k, v in columns.items()}
        if len(next(iter(columns.values()))) == 0:
            return None
    return ArrowTable(path, names, columns, print_, strict)


