"""``predict``'s output table: the kept input columns, one probability column per class named
``p_<class>`` and the label (or ``prediction`` for regression), written as CSV or Parquet.

Numbers are written in the shortest form that reads back to the same value in the model's
dtype: a float32 model's probabilities carry about 7 significant digits, not 17 digits of which
10 are noise.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..errors import UsageError
from .files import atomic_write
from .ingest.registry import output_format

FORMATS = (".csv", ".parquet")


def check_format(output: Path) -> None:
    """Refuse, before any work, an output whose suffix names no format we write."""
    if output_format(output, FORMATS) is None:
        suffix = repr(output.suffix) if output.suffix else "a name without a suffix"
        raise UsageError(f"cannot write {output}: predictions are written as .csv or .parquet, not {suffix}")
    if output_format(output, FORMATS) == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UsageError(f"writing {output} needs pyarrow (pip install pyarrow); or name a .csv file") from None


def check_threshold(threshold: float | None, link: str, n_outputs: int) -> None:
    if threshold is None:
        return
    if link != "sigmoid" or n_outputs != 1:
        raise UsageError("--threshold applies to a binary classifier; this model's label is the most probable class"
                         if link != "identity" else "--threshold applies to a binary classifier, not to regression")
    if not 0.0 < threshold < 1.0:
        raise UsageError(f"--threshold must be between 0 and 1 (exclusive), got {threshold:g}")


def table(out: np.ndarray, link: str, classes: list[str], threshold: float | None, dtype) -> dict[str, np.ndarray]:
    """Output columns from the model's outputs ``out`` (N, K), in the model's numpy ``dtype``."""
    out = out.astype(dtype)
    if link == "identity":
        return {"prediction": out[:, 0]}
    if out.shape[1] == 1:  # binary: P(class 1); both probabilities, as predict_proba gives them
        p1 = out[:, 0]
        columns = {f"p_{classes[0]}": (1 - p1).astype(dtype), f"p_{classes[1]}": p1}
        labels = np.where(p1 >= (0.5 if threshold is None else threshold), classes[1], classes[0])
    else:
        columns = {f"p_{c}": out[:, k] for k, c in enumerate(classes)}
        labels = np.asarray(classes, dtype=object)[out.argmax(axis=1)]
    columns["label"] = labels
    return columns


def write(path: Path, kept: dict[str, list[str]], columns: dict[str, np.ndarray]) -> int:
    """Write the kept input columns, then ``columns``; returns the number of rows."""
    clash = sorted(set(kept) & set(columns))
    if clash:
        raise UsageError(f"--keep column {clash[0]!r} has the name of an output column; rename it in the input")
    names = [*kept, *columns]
    data = [*kept.values(), *columns.values()]
    n = len(next(iter(columns.values())))
    if output_format(path, FORMATS) == ".parquet":  # numbers as numbers, in the model's dtype
        import pyarrow as pa
        import pyarrow.parquet as pq

        arrays = [pa.array(np.asarray(v).astype(str) if np.asarray(v).dtype.kind not in "f" else v) for v in data]
        with atomic_write(path, "wb") as fh:
            pq.write_table(pa.table(arrays, names=names), fh)
        return n
    text = [np.asarray(v).astype(str) if np.asarray(v).dtype.kind == "f" else v for v in data]  # shortest round-trip form
    with atomic_write(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(names)
        w.writerows(zip(*text))
    return n
