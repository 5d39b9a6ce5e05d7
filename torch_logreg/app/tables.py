"""Tables of named columns: CSV and Parquet files as the data readers see them.

A :class:`Table` gives each column as text (``text``, cells stripped of surrounding blanks, as
the categorical, hashed and target columns need them) or as float64 numbers (``numbers``), and
names the line of any row (``line``), so a bad cell is reported at its line.

- **CSV** is parsed column by column by Apache Arrow's reader (``pyarrow.csv``), every column read
  as text and converted to numbers in Arrow, tens of times faster than a cell-by-cell parse in
  Python. Whatever Arrow refuses or reads differently (a cell that is not a number, a ragged row,
  a quote never closed, bytes that are not UTF-8, a cell Python reads as a number and Arrow does
  not) sends the file to the strict line-by-line reader (:func:`read_csv_table`), which
  either reads it or raises the error that names the line. A file is thus read the same way by
  both; the fast path is only faster.
- **Parquet** (``.parquet``, ``.pq``) is read by ``pyarrow.parquet``: numeric columns as they are
  stored, any other column as text; a missing value (null) is an error naming the row and column.
  Rows are named by their 0-based index there (a Parquet file has no lines).
"""

from __future__ import annotations

import codecs
import csv
import io
import math
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from ..errors import UsageError
from . import sources

#: file suffixes read as Parquet
PARQUET_SUFFIXES = (".parquet", ".pq")


class Table(ABC):
    """Named columns of equal length, read from ``path``; see the module docstring."""

    def __init__(self, path: Path, header: list[str], n_rows: int, fingerprint: dict | None) -> None:
        self.path, self.header, self.n_rows, self.fingerprint = path, header, n_rows, fingerprint

    @abstractmethod
    def text(self, name: str) -> np.ndarray:
        """The stripped cells of column ``name`` as an object array of str."""

    @abstractmethod
    def raw(self, name: str) -> list[str]:
        """The cells of column ``name`` exactly as written."""

    @abstractmethod
    def numbers(self, name: str) -> np.ndarray:
        """Column ``name`` as finite float64 numbers; a cell that is not one is a UsageError
        naming its line."""

    @abstractmethod
    def where(self, row: int) -> str:
        """Where row ``row`` (0-based) is in the file, for a message: ``"line 7"`` or ``"row 5"``."""


def _parse_float(text: str, path: Path, where: str, column: str) -> float:
    if text.strip() == "":
        raise UsageError(f"{path}, {where}, column {column!r}: empty cell")
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{path}, {where}, column {column!r}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise UsageError(f"{path}, {where}, column {column!r}: {text!r} is not a finite number")
    return value


class RowsTable(Table):
    """A table from the strict line-by-line reader: ``(line, cells)`` rows."""

    def __init__(self, path: Path, header: list[str], rows: list[tuple[int, list[str]]], fingerprint: dict | None):
        super().__init__(path, header, len(rows), fingerprint)
        self.rows = rows
        self._index = {name: i for i, name in enumerate(header)}

    def raw(self, name: str) -> list[str]:
        i = self._index[name]
        return [cells[i] for _, cells in self.rows]

    def text(self, name: str) -> np.ndarray:
        i = self._index[name]
        out = np.empty(len(self.rows), dtype=object)
        out[:] = [cells[i].strip() for _, cells in self.rows]
        return out

    def numbers(self, name: str) -> np.ndarray:
        i = self._index[name]
        return np.array([_parse_float(cells[i].strip(), self.path, f"line {line}", name) for line, cells in self.rows],
                        dtype=np.float64)

    def where(self, row: int) -> str:
        return f"line {self.rows[row][0]}"


class ArrowTable(Table):
    """A table held as pyarrow arrays (a CSV read by Arrow, or a Parquet file). ``slow`` reads the
    same file line by line, for the messages that name a line (None for Parquet). ``first_row``:
    the file's row number of the table's first row (a part of a Parquet file starts further down)."""

    def __init__(self, path: Path, header: list[str], columns: dict, fingerprint: dict | None, slow=None,
                 first_row: int = 0):
        n = len(next(iter(columns.values()))) if columns else 0
        super().__init__(path, header, n, fingerprint)
        self.columns, self._slow, self._slow_table = columns, slow, None
        self.first_row = first_row

    def _strict(self) -> RowsTable:
        if self._slow_table is None:
            self._slow_table = self._slow()
        return self._slow_table

    def raw(self, name: str) -> list[str]:
        import pyarrow as pa

        column = self.columns[name]
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            return column.to_pylist()
        return [_number_text(v) for v in column.to_pylist()]

    def text(self, name: str) -> np.ndarray:
        import pyarrow as pa
        import pyarrow.compute as pc

        column = self.columns[name]
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            values = pc.utf8_trim_whitespace(column).to_pylist()
        else:
            values = [_number_text(v) for v in column.to_pylist()]
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out

    def numbers(self, name: str) -> np.ndarray:
        import pyarrow as pa
        import pyarrow.compute as pc

        column = self.columns[name]
        try:
            if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                column = pc.cast(pc.utf8_trim_whitespace(column), pa.float64())
            elif pa.types.is_boolean(column.type) or pa.types.is_integer(column.type) or \
                    pa.types.is_floating(column.type) or pa.types.is_decimal(column.type):
                column = pc.cast(column, pa.float64())
            else:
                raise UsageError(f"{self.path}: column {name!r} holds {column.type} values, not numbers")
            values = column.to_numpy(zero_copy_only=False)
        except pa.ArrowException:  # a cell Arrow cannot read as a number: the strict reader says which
            values = None
        if values is not None and np.isfinite(values).all():
            return values.astype(np.float64, copy=False)
        if self._slow is not None:  # the strict reader reads the cell Arrow refused, or names its line
            return self._strict().numbers(name)
        bad = 0 if values is None else int(np.nonzero(~np.isfinite(values))[0][0])
        if values is None:
            cells = self.text(name)
            bad = next(i for i, v in enumerate(cells) if not _is_number(v))
            raise UsageError(f"{self.path}, {self.where(bad)}, column {name!r}: {cells[bad]!r} is not a number")
        raise UsageError(f"{self.path}, {self.where(bad)}, column {name!r}: {values[bad]} is not a finite number")

    def where(self, row: int) -> str:
        return self._strict().where(row) if self._slow is not None else f"row {row + self.first_row}"


def _number_text(v) -> str:
    """A stored number as text (a categorical or target column of a Parquet file)."""
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


# --- readers -------------------------------------------------------------------------------------


def read_csv_table(path: Path, max_bytes: int = sources.DEFAULT_MAX_BYTES) -> tuple[list[str], list[tuple[int, list[str]]], dict]:
    """Header, (line number, cells) rows and the file's fingerprint; ragged rows, a quote that is
    never closed, bytes that are not UTF-8 and empty files are errors that name the line."""
    content, print_ = sources.read_bytes(path, max_bytes)
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
    header = [h.strip() for h in header]
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



def read_table(path: Path, max_bytes: int) -> Table:
    """The table of a CSV (or ``.txt``) or Parquet file; see the module docstring."""
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return read_parquet(path, max_bytes)
    return read_csv(path, max_bytes)


def read_csv(path: Path, max_bytes: int) -> Table:
    """A CSV file through Arrow, or through the strict reader where Arrow cannot read it alike."""

    def strict() -> RowsTable:
        header, rows, print_ = read_csv_table(path, max_bytes)
        return RowsTable(path, header, rows, print_)

    content, print_ = sources.read_bytes(path, max_bytes)
    table = _arrow_csv(path, content, print_, strict)
    return table if table is not None else strict()


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
    names = [h.strip() for h in first]
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
    sources.check_source(path, max_bytes if row_groups is None else sources.NO_LIMIT)
    print_ = sources.fingerprint(path, sources.NO_LIMIT) if fingerprint else None
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
    names = [str(n).strip() for n in arrow.column_names]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise UsageError(f"{path}: column {twice!r} appears twice; rename one so each column is read")
    if arrow.num_rows == 0:
        raise UsageError(f"{path} has no rows")
    columns = {}
    for name, column in zip(names, arrow.columns, strict=True):
        column = column.combine_chunks()
        if column.null_count:
            import pyarrow.compute as pc

            row = int(pc.index(pc.is_null(column), True).as_py())
            raise UsageError(f"{path}, row {row + first_row}, column {name!r}: a missing value (null)")
        if pa.types.is_dictionary(column.type):
            column = column.dictionary_decode()
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type) or
                pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or
                pa.types.is_boolean(column.type) or pa.types.is_decimal(column.type)):
            column = column.cast(pa.string())
        columns[name] = column
    return ArrowTable(path, names, columns, print_, first_row=first_row)
