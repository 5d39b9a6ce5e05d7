"""Two column roles of image-like tables (a CSV with one image a row, as the facial-expression
data set comes): a pixels column, and a column naming each row's split.

- ``data.pixels = "col"``: each cell of ``col`` holds ``W`` space-separated numbers, expanded to
  ``W`` features ``col1`` ... ``colW`` (row-major pixels); every row must hold as many as the
  first. A square ``W = s * s`` is read as an ``s x s`` image.
- ``data.split_column = "Usage"``: each row's split by name, :data:`SPLIT_NAMES`: the
  facial-expression file's ``Training`` / ``PublicTest`` / ``PrivateTest``, or ``train`` /
  ``val`` / ``test`` (also ``validation``).
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import UsageError
from .table import listed

#: split-column value -> split (0 train, 1 validation, 2 test)
SPLIT_NAMES = {"Training": 0, "PublicTest": 1, "PrivateTest": 2, "train": 0, "val": 1, "validation": 1, "test": 2}


def pixel_width(table, column: str) -> int:
    """The numbers in the first cell of ``column``: the width every row must have."""
    cells = table.text(column)
    width = len(str(cells[0]).split()) if len(cells) else 0
    if width == 0:
        raise UsageError(f"{table.path}, {table.where(0)}, column {column!r}: data.pixels needs space-separated "
                         "numbers, the cell is empty")
    return width


def expand_pixels(table, column: str, width: int) -> np.ndarray:
    """``(N, width)`` float64: each cell of ``column`` split on whitespace into ``width`` numbers.
    A row with another count, or a token that is not a finite number, is a UsageError naming its
    line."""
    import pyarrow as pa
    import pyarrow.compute as pc

    cells = [str(c) for c in table.text(column)]
    tokens = pc.utf8_split_whitespace(pa.array(cells, type=pa.large_string()))  # in C++, as Arrow reads CSVs
    counts = pc.list_value_length(tokens).to_numpy(zero_copy_only=False)
    bad = np.nonzero(counts != width)[0]
    if bad.size:
        r = int(bad[0])
        raise UsageError(f"{table.path}, {table.where(r)}, column {column!r}: {counts[r]} numbers where the first "
                         f"row has {width}; every row of data.pixels must have the same number")
    try:
        flat = pc.cast(pc.list_flatten(tokens), pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        flat = None
    if flat is None or not np.isfinite(flat).all():  # the first token that is not a finite number, named
        for r, cell in enumerate(cells):
            for token in cell.split():
                try:
                    ok = math.isfinite(float(token))
                except ValueError:
                    ok = False
                if not ok:
                    raise UsageError(f"{table.path}, {table.where(r)}, column {column!r}: {token!r} is not a finite "
                                     "number") from None
        flat = np.array([float(t) for cell in cells for t in cell.split()], dtype=np.float64)  # what Arrow did not read
    return flat.reshape(len(cells), width)


def square_shape(width: int) -> tuple[int, int] | None:
    """``(s, s)`` when ``width = s * s``, else None."""
    side = math.isqrt(width)
    return (side, side) if side * side == width and side > 1 else None


def split_codes(table, column: str) -> np.ndarray:
    """``(N,)`` int8: each row's split (0 train, 1 validation, 2 test) from ``column``; another
    value is a UsageError naming its line."""
    values = table.text(column)
    codes = np.fromiter((SPLIT_NAMES.get(str(v), -1) for v in values), dtype=np.int8, count=len(values))
    bad = np.nonzero(codes < 0)[0]
    if bad.size:
        r = int(bad[0])
        raise UsageError(f"{table.path}, {table.where(r)}, column {column!r}: {values[r]!r} names no split; "
                         f"data.split_column takes {listed(SPLIT_NAMES)}")
    return codes
