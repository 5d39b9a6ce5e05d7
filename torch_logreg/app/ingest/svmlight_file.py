"""svmlight / libsvm files (``.svm``, ``.svmlight``, ``.libsvm``): ``label index:value ...``
lines, read by scikit-learn's parser (``load_svmlight_file``); ``qid:`` fields are ignored, ``#``
starts a comment. Indices may start at 0 or 1: a file with no index 0 is read as one-based (as
libsvm writes it). The base training found is saved with the run, so a new file is read the same
way. Under torchrun the file is cut into byte ranges, and a rank parses the lines that start in
its range; the ranks agree on the base and the width.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ...errors import UsageError
from . import files
from .reader import Reader, Request
from .table import SparseTable


class SvmlightReader(Reader):
    name = "svmlight"
    suffixes = (".svm", ".svmlight", ".libsvm")
    sparse = True
    options = ()

    def read(self, path: Path, request: Request) -> SparseTable:
        self._no_target(path, request)
        content, print_ = files.read_bytes(path, request.max_bytes)
        if not content.strip():
            raise UsageError(f"{path} is empty")
        matrix, y = parse_svmlight(content, path)
        del content
        schema = request.schema
        base = index_base(matrix) if schema is None else schema.svmlight_base
        matrix = features(matrix, y, path, base, None if schema is None else schema.sparse_width)
        return SparseTable(path, matrix, y, print_, base)

    def read_part(self, path: Path, request: Request, rank: int, world_size: int) -> SparseTable:
        """The lines that start in this rank's byte range, on the base and width all ranks agree on."""
        import scipy.sparse

        from .collective import gather

        self._no_target(path, request)
        files.check_source(path, files.NO_LIMIT)
        content, start = byte_range(path, rank, world_size, request.max_bytes)
        if content.strip():
            matrix, y = parse_svmlight(content, path, lambda: _lines_before(path, start) + 1)
        else:
            matrix, y = scipy.sparse.csr_matrix((0, 0)), np.zeros(0)
        del content
        counts = gather((matrix.shape[0], matrix.shape[1], int(index_base(matrix) == 0)))
        if any(c[0] == 0 for c in counts):
            raise UsageError(f"{path} has {sum(c[0] for c in counts)} lines, too few to give each of the "
                             f"{world_size} processes a part; run fewer processes")
        base = 0 if any(c[2] for c in counts) else 1
        width = max(c[1] for c in counts) - base
        if width <= 0:
            raise UsageError(f"{path}: no line has a feature; an svmlight line is 'label index:value ...'")
        first_row = sum(c[0] for c in counts[:rank])
        matrix = features(matrix, y, path, base, width, first_row)
        print_ = files.fingerprint(path, files.NO_LIMIT) if rank == 0 else None
        return SparseTable(path, matrix, y, print_, base, first_row)

    @staticmethod
    def _no_target(path: Path, request: Request) -> None:
        if request.schema is None and request.target:
            raise UsageError(f"{path}: an svmlight file has its label first on each line; leave data.target out")


def _bad_line(content: bytes) -> tuple[int, str] | None:
    """The first line of an svmlight file the parser refused, and why (found again in Python,
    only once reading has failed, so that the message can name the line)."""
    for number, raw in enumerate(content.splitlines(), start=1):
        text = raw.split(b"#", 1)[0].strip()
        if not text:
            continue
        label, *pairs = text.split()
        try:
            float(label)
        except ValueError:
            return number, f"the label {label.decode(errors='replace')!r} is not a number"
        last = -1
        for pair in pairs:
            key, sep, value = pair.partition(b":")
            if key == b"qid":
                continue
            try:
                index, _ = int(key), float(value)
            except ValueError:
                return number, f"{pair.decode(errors='replace')!r} is not index:value"
            if not sep:
                return number, f"{pair.decode(errors='replace')!r} is not index:value"
            if index <= last:
                return number, "the feature indices must increase along a line"
            last = index
    return None


def parse_svmlight(content: bytes, path: Path, first_line=lambda: 1):
    """``(matrix, y)`` of svmlight text: a scipy CSR matrix indexed as written (column ``j`` is
    index ``j``) and the float64 labels. ``first_line()`` is the file's line number of the text's
    first line, asked only to name a bad line (a part of a file starts further down)."""
    from sklearn.datasets import load_svmlight_file

    try:
        matrix, y = load_svmlight_file(io.BytesIO(content), zero_based=True, query_id=False, dtype=np.float64)
    except ValueError as exc:
        where = _bad_line(content)
        if where is not None:
            raise UsageError(f"{path}, line {where[0] + first_line() - 1}: {where[1]}") from None
        raise UsageError(f"{path} is not a readable svmlight / libsvm file: {exc}") from None
    return matrix.tocsr(), y


def index_base(matrix) -> int:
    """Where a file's feature indices start: 0 when index 0 occurs, else 1 (as libsvm writes)."""
    return 0 if matrix.nnz and bool((matrix.indices == 0).any()) else 1


def features(matrix, y: np.ndarray, path: Path, base: int, width: int | None, first_row: int = 0):
    """The parsed CSR ``matrix`` as the model's features, index ``base`` being column 0 and
    ``width`` columns (None: as many as it uses), values and labels checked finite (rows named
    from ``first_row``). The indices are shifted in place; nothing else is copied."""
    import scipy.sparse

    n_cols = max(matrix.shape[1] - base, 0)
    if base == 1 and matrix.nnz:
        zero = np.nonzero(matrix.indices == 0)[0]
        if zero.size:
            row = int(np.searchsorted(matrix.indptr, zero[0], side="right")) - 1 + first_row
            raise UsageError(f"{path}: row {row} has feature index 0, but training read its file as one-based (indices "
                             "from 1); write the file with the indices training used")
        matrix.indices -= 1
    if width is not None:
        if n_cols > width:
            last = int(matrix.indices.max()) + base
            raise UsageError(f"{path}: feature index {last} is beyond the {width} columns the model was trained on")
        n_cols = width
    elif n_cols == 0:
        raise UsageError(f"{path}: no line has a feature; an svmlight line is 'label index:value ...'")
    matrix = scipy.sparse.csr_matrix((matrix.data, matrix.indices, matrix.indptr), shape=(matrix.shape[0], n_cols),
                                     copy=False)
    check_finite(matrix, path, first_row)
    if not np.isfinite(y).all():
        raise UsageError(f"{path}: the label of row {int(np.nonzero(~np.isfinite(y))[0][0]) + first_row} is not a "
                         "finite number")
    return matrix


def check_finite(matrix, path, first_row: int = 0) -> None:
    """Every stored value of a CSR ``matrix`` finite; the first that is not is named by row
    (counted from ``first_row``) and column."""
    bad = ~np.isfinite(matrix.data)
    if bad.any():
        k = int(np.nonzero(bad)[0][0])
        row = int(np.searchsorted(matrix.indptr, k, side="right")) - 1 + first_row
        raise UsageError(f"{path}: row {row}, column {int(matrix.indices[k])}: {matrix.data[k]} is not a finite number")


def byte_range(path: Path, rank: int, world_size: int, max_bytes: int) -> tuple[bytes, int]:
    """``(text, offset)``: the lines of ``path`` that start in rank ``rank``'s ``1 / world_size`` of
    its bytes, and the offset of the first. Every line is one rank's, whole, in file order."""
    size = path.stat().st_size
    begin, end = size * rank // world_size, size * (rank + 1) // world_size
    try:
        with open(path, "rb") as fh:
            if begin:
                fh.seek(begin - 1)
                fh.readline(max_bytes + 1)  # the line under way at ``begin`` is the previous rank's
            start = fh.tell()
            if start - begin > max_bytes:
                raise UsageError(f"{path}: a line near byte {begin} is longer than data.max_bytes")
            content = fh.read(end - start) if start < end else b""
            if content and not content.endswith(b"\n"):
                content += fh.readline(max_bytes + 1)  # the last line starts before ``end`` and ends past it
    except OSError as exc:
        raise UsageError(f"cannot read data file {path}: {exc.strerror or exc}") from None
    if len(content) > max_bytes:
        raise UsageError(f"{path}: this process's part is {files.size_text(len(content))}, more than data.max_bytes "
                         f"({files.size_text(max_bytes)}); raise it, or run more processes")
    return content, start


def _lines_before(path: Path, offset: int) -> int:
    count = 0
    with open(path, "rb") as fh:
        while offset > 0:
            chunk = fh.read(min(files.CHUNK, offset))
            if not chunk:
                break
            count += chunk.count(b"\n")
            offset -= len(chunk)
    return count
