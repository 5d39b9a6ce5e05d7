"""What a reader gives: a file's rows as named columns (:class:`Table`), or as a sparse matrix of
unnamed columns (:class:`SparseTable`).

A :class:`Table` gives each column as text (``text``, cells stripped of surrounding blanks, as
the categorical, hashed and target columns need them), as written (``raw``), or as float64
numbers (``numbers``), and names where a row is (``where``), so a bad cell is reported at its
line or row. Nothing is converted before a column is asked for: a column the model does not use
(a list, a struct, bytes, missing values) is never read, and one it uses that cannot be read as
numbers or text is one sentence naming it.

- :class:`RowsTable`: the strict line-by-line CSV reader's ``(line, cells)`` rows.
- :class:`ArrowTable`: pyarrow arrays (a CSV read by Arrow, a Parquet file).
- :class:`ArrayTable`: the columns of a NumPy array, named by position (``x1`` ... in training,
  the model's raw column names once a schema is known), the target column apart.
"""

from __future__ import annotations

import math
import re
import unicodedata
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from ...errors import UsageError

#: the name a table gives the target column of a file whose columns have no names (an array)
ARRAY_TARGET = "<target>"


def nfc(text: str) -> str:
    """``text`` in Unicode normal form C: names, categories and labels are compared so, so that
    one spelled with a composed character and one with a combining accent are one."""
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def listed(items) -> str:
    """Names for a one-line message: as written, or quoted with escapes when not printable."""
    return ", ".join(v if v.isprintable() else repr(v) for v in map(str, items))


class Table(ABC):
    """Named columns of equal length, read from ``path``; see the module docstring.
    ``first_row``: the file's row number of the table's first row (a part of a file starts
    further down)."""

    sparse = False
    named = True  # the columns have names of their own (False: named by position, or by the schema)

    def __init__(self, path: Path, header: list[str], n_rows: int, fingerprint: dict | None,
                 first_row: int = 0) -> None:
        self.path, self.header, self.n_rows, self.fingerprint = path, header, n_rows, fingerprint
        self.first_row = first_row

    def target_name(self, target: str) -> str:
        """The column holding the target ``target`` names (``data.target``, or the schema's)."""
        return target

    @abstractmethod
    def text(self, name: str) -> np.ndarray:
        """The stripped cells of column ``name`` as an object array of str, in Unicode NFC."""

    @abstractmethod
    def raw(self, name: str) -> list[str]:
        """The cells of column ``name`` exactly as written."""

    @abstractmethod
    def numbers(self, name: str) -> np.ndarray:
        """Column ``name`` as finite float64 numbers; a cell that is not one is a UsageError
        naming its line."""

    def numbers_of(self, names: list[str]) -> np.ndarray:
        """``(N, len(names))``: the columns ``names`` as :meth:`numbers` reads each, in one block
        (a table of many columns reads them at once where it can)."""
        return np.stack([self.numbers(c) for c in names], axis=1) if names else np.zeros((self.n_rows, 0))

    def labels(self, name: str) -> np.ndarray:
        """Column ``name`` as target values: text (numbers keep their type in an array)."""
        return self.text(name).astype(str)

    def where(self, row: int) -> str:
        """Where row ``row`` (0-based) is in the file, for a message: ``"line 7"`` or ``"row 5"``."""
        return f"row {row + self.first_row}"


#: a number as a CSV cell writes it: ASCII digits, an optional sign, point and exponent (what
#: Python's float() accepts besides, such as "1_000" or other scripts' digits, is not a number
#: here), or one of the words for the non-finite values (refused as such where numbers are read)
NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:inf|infinity|nan)",
                    re.IGNORECASE)
#: the mantissa of a number that is not zero: a non-zero digit before any exponent
NONZERO = re.compile(r"^[^eE]*[1-9]")


def parse_number(text: str) -> float:
    """``text`` (stripped) as a float64 by :data:`NUMBER`'s grammar; a ValueError saying why not,
    including a non-zero number too small for float64, which would read as 0 (refused, not
    rounded: a value written is meant)."""
    if not NUMBER.fullmatch(text):
        raise ValueError(f"{text!r} is not a number")
    value = float(text)
    if value == 0.0 and NONZERO.match(text):
        raise ValueError(f"{text!r} is too small for a float64 (it would read as 0); write 0 if 0 is meant")
    return value


def _parse_float(text: str, path: Path, where: str, column: str) -> float:
    if text.strip() == "":
        raise UsageError(f"{path}, {where}, column {column!r}: empty cell")
    try:
        value = parse_number(text.strip())
    except ValueError as exc:
        raise UsageError(f"{path}, {where}, column {column!r}: {exc}") from None
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
        out[:] = [nfc(cells[i].strip()) for _, cells in self.rows]
        return out

    def numbers(self, name: str) -> np.ndarray:
        i = self._index[name]
        return np.array([_parse_float(cells[i].strip(), self.path, f"line {line}", name) for line, cells in self.rows],
                        dtype=np.float64)

    def numbers_of(self, names: list[str]) -> np.ndarray:
        # every cell in one Arrow array: a cost per cell, none per column (a file may have a million)
        import pyarrow as pa
        import pyarrow.compute as pc

        idx = [self._index[c] for c in names]
        cells = pa.array([row[i].strip() for _, row in self.rows for i in idx], type=pa.large_string())
        # ASCII only: the cells then read alike whoever strips them (Python's blanks and Arrow's differ)
        values = arrow_numbers(cells) if pc.all(pc.string_is_ascii(cells)).as_py() is not False else None
        if values is None or not np.isfinite(values).all():  # a cell to name: column by column, as numbers() does
            return super().numbers_of(names)
        return values.reshape(len(self.rows), len(names))

    def where(self, row: int) -> str:
        return f"line {self.rows[row][0]}"


def _is_text(pa, t) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_number(pa, t) -> bool:
    return pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


class ArrowTable(Table):
    """A table held as pyarrow arrays (a CSV read by Arrow, or a Parquet file). ``slow`` reads the
    same file line by line, for the messages that name a line (None for Parquet). A column is
    checked and converted only when asked for (see the module docstring)."""

    def __init__(self, path: Path, header: list[str], columns: dict, fingerprint: dict | None, slow=None,
                 first_row: int = 0):
        n = len(next(iter(columns.values()))) if columns else 0
        super().__init__(path, header, n, fingerprint, first_row)
        self.columns, self._slow, self._slow_table = columns, slow, None

    def _strict(self) -> RowsTable:
        if self._slow_table is None:
            self._slow_table = self._slow()
        return self._slow_table

    def _column(self, name: str, numeric: bool = False):
        """Column ``name``: text or numbers as stored (dictionaries decoded, other types as text
        where Arrow can write them so); a missing value or a type that is neither is a UsageError."""
        import pyarrow as pa
        import pyarrow.compute as pc

        column = self.columns[name]
        if column.null_count:
            row = int(pc.index(pc.is_null(column), True).as_py())
            raise UsageError(f"{self.path}, {self.where(row)}, column {name!r}: a missing value (null)")
        if pa.types.is_dictionary(column.type):
            column = column.dictionary_decode()
        if _is_text(pa, column.type) or _is_number(pa, column.type):
            return column
        if numeric:
            raise UsageError(f"{self.path}: column {name!r} holds {column.type} values, not numbers")
        try:
            return column.cast(pa.string())
        except (pa.ArrowException, ValueError):
            raise UsageError(f"{self.path}: column {name!r} holds {column.type} values, which are neither numbers "
                             "nor text; leave it out of the model's columns") from None

    def raw(self, name: str) -> list[str]:
        import pyarrow as pa

        column = self._column(name)
        if _is_text(pa, column.type):
            return column.to_pylist()
        return [_number_text(v) for v in column.to_pylist()]

    def text(self, name: str) -> np.ndarray:
        import pyarrow as pa
        import pyarrow.compute as pc

        column = self._column(name)
        if _is_text(pa, column.type):
            values = [nfc(v) for v in pc.utf8_trim_whitespace(column).to_pylist()]
        else:
            values = [_number_text(v) for v in column.to_pylist()]
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out

    def numbers(self, name: str) -> np.ndarray:
        import pyarrow as pa
        import pyarrow.compute as pc

        column = self._column(name, numeric=True)
        if _is_text(pa, column.type):
            values = arrow_numbers(column)
        else:
            try:
                values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
            except pa.ArrowException:  # a cell Arrow cannot read as a number: the strict reader says which
                values = None
        if values is not None and np.isfinite(values).all():
            return values.astype(np.float64, copy=False)
        if self._slow is not None:  # the strict reader reads the cell Arrow refused, or names its line
            return self._strict().numbers(name)
        if values is None:
            cells = self.text(name)
            return np.array([_parse_float(v, self.path, self.where(i), name) for i, v in enumerate(cells)],
                            dtype=np.float64)
        bad = int(np.nonzero(~np.isfinite(values))[0][0])
        raise UsageError(f"{self.path}, {self.where(bad)}, column {name!r}: {values[bad]} is not a finite number")

    def numbers_of(self, names: list[str]) -> np.ndarray:
        # the text columns read as one array: a cost per cell, not per column
        import pyarrow as pa

        columns = [self.columns[c] for c in names]
        if len(names) < 2 or len({c.type for c in columns}) > 1 or not _is_text(pa, columns[0].type) \
                or any(c.null_count for c in columns):
            return super().numbers_of(names)
        values = arrow_numbers(pa.chunked_array(columns).combine_chunks())
        if values is None or not np.isfinite(values).all():  # a cell to name: column by column, as numbers() does
            return super().numbers_of(names)
        return values.reshape(len(names), self.n_rows).T

    def where(self, row: int) -> str:
        return self._strict().where(row) if self._slow is not None else super().where(row)


def arrow_numbers(cells) -> np.ndarray | None:
    """A pyarrow text array as float64 numbers, each cell stripped of blanks and read by Arrow;
    None unless every cell is one by :data:`NUMBER`'s grammar and not a non-zero number read as 0
    (then the caller reads the cells one by one, to name the one that is not). Non-finite values
    (``nan``, ``inf``) are returned, for the caller to refuse."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        trimmed = pc.utf8_trim_whitespace(cells)
        column = pc.cast(trimmed, pa.float64())
    except pa.ArrowException:
        return None
    # Arrow's reading of a cell must be the grammar's (parse_number): every cell matches it, and a
    # zero is written as one (not a number too small for float64)
    grammar = pc.all(pc.match_substring_regex(trimmed, f"^({NUMBER.pattern})$", ignore_case=True))
    zeros = pc.filter(trimmed, pc.equal(column, 0.0))
    underflow = pc.any(pc.match_substring_regex(zeros, NONZERO.pattern))
    if grammar.as_py() is False or underflow.as_py():
        return None
    return column.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)


class ArrayTable(Table):
    """The columns of a 2-D numeric array (the features, ``n_rows`` x ``len(names)``) named
    ``names``, and the target values ``y`` (or None), under the name :data:`ARRAY_TARGET`."""

    named = False

    def __init__(self, path: Path, X: np.ndarray, names: list[str], y: np.ndarray | None, fingerprint: dict | None,
                 first_row: int = 0) -> None:
        super().__init__(path, [*names, *([ARRAY_TARGET] if y is not None else [])], X.shape[0], fingerprint,
                         first_row)
        self.X, self.y = X, y
        self._index = {name: j for j, name in enumerate(names)}

    def target_name(self, target: str) -> str:
        return ARRAY_TARGET

    def numbers(self, name: str) -> np.ndarray:
        return self.X[:, self._index[name]]

    def numbers_of(self, names: list[str]) -> np.ndarray:
        return self.X[:, [self._index[c] for c in names]]

    def labels(self, name: str) -> np.ndarray:
        return self.y

    def text(self, name: str) -> np.ndarray:
        values = self.y if name == ARRAY_TARGET else self.numbers(name)
        out = np.empty(len(values), dtype=object)
        out[:] = [_number_text(v) for v in values.tolist()]
        return out

    def raw(self, name: str) -> list[str]:
        return self.text(name).tolist()


class SparseTable:
    """A sparse file's rows: ``matrix`` (scipy CSR, ``n_rows`` x ``width``, unnamed columns) and
    the labels ``y`` (or None); ``base``: an svmlight file's first feature index (0 or 1)."""

    sparse = True
    named = False

    def __init__(self, path: Path, matrix, y: np.ndarray | None, fingerprint: dict | None, base: int = 0,
                 first_row: int = 0) -> None:
        self.path, self.matrix, self.y, self.fingerprint = path, matrix, y, fingerprint
        self.base, self.first_row, self.n_rows = base, first_row, matrix.shape[0]
        self.header: list[str] = []


def _number_text(v) -> str:
    """A stored number as text (a categorical or target column of a Parquet file or an array)."""
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


