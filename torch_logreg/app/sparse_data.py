"""Sparse data: svmlight / libsvm files, scipy ``.npz`` matrices and hashed CSV columns.

Each becomes a torch sparse CSR tensor (float64), so a data set with a million columns and a few
dozen non-zeros a row never takes the memory of its dense form.

- **svmlight / libsvm** (``.svm``, ``.libsvm``, ``.svmlight``): ``label index:value ...`` lines,
  read by scikit-learn's parser; ``qid:`` fields are ignored, ``#`` starts a comment. Indices
  may start at 0 or 1: a file with no index 0 is read as one-based (as libsvm writes it). The
  base training found is saved with the run, so a new file is read the same way.
- **scipy .npz** (written by ``scipy.sparse.save_npz``): the target is one of its columns, the
  last unless ``data.target`` gives its index, as for a ``.npy`` array.
- **hashed CSV columns** (``data.hash``): each cell is split on whitespace and every token
  ``t`` of column ``c`` adds ``±1`` to column ``h("c=t") mod 2**hash_bits`` of a shared block,
  the sign from the hash as well (signed hashing, so collisions cancel on average; scikit-learn's
  ``FeatureHasher`` with MurmurHash3, the same on every machine and in every process).
"""

from __future__ import annotations

import io
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import UsageError
from ..validation import as_sparse_csr
from . import sources

#: file suffixes read as svmlight / libsvm text
SVMLIGHT_SUFFIXES = (".svm", ".svmlight", ".libsvm")
#: the arrays scipy.sparse.save_npz writes
SCIPY_NPZ_KEYS = {"format", "shape", "data", "indices", "indptr"}
#: data.hash_bits: the hash block's width is 2**bits
HASH_BITS_RANGE = (1, 30)


def to_torch(matrix) -> Tensor:
    """A scipy sparse matrix as a float64 torch CSR tensor."""
    return as_sparse_csr(matrix, "X", torch.float64)


def check_finite(X: Tensor, path, first_row: int = 0) -> None:
    """Every stored value of a CSR ``X`` finite; the first that is not is named by row (counted
    from ``first_row``) and column."""
    values = X.values()
    bad = ~torch.isfinite(values)
    if bool(bad.any()):
        k = int(bad.nonzero()[0, 0])
        row = int(torch.searchsorted(X.crow_indices(), torch.tensor(k), right=True)) - 1 + first_row
        raise UsageError(f"{path}: row {row}, column {int(X.col_indices()[k])}: {values[k].item()} is not a finite number")


# --- svmlight ------------------------------------------------------------------------------------


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


def read_svmlight(path: Path, max_bytes: int, base: int | None = None, width: int | None = None):
    """``(X, y, base, fingerprint)`` of an svmlight file: X a float64 torch CSR tensor, y the labels
    (float64). ``base`` (0 or 1) fixes where indices start (None: 1 unless index 0 occurs);
    ``width`` is the number of columns a new file must fit (None: as many as the file uses)."""
    content, print_ = sources.read_bytes(path, max_bytes)
    if not content.strip():
        raise UsageError(f"{path} is empty")
    matrix, y = parse_svmlight(content, path)
    del content
    if base is None:
        base = index_base(matrix)
    X, y = svmlight_features(matrix, y, path, base, width)
    return X, y, base, print_


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


def svmlight_features(matrix, y: np.ndarray, path: Path, base: int, width: int | None, first_row: int = 0):
    """``(X, y)``: the parsed CSR ``matrix`` as the model's features, index ``base`` being column 0
    and ``width`` columns (None: as many as it uses), values and labels checked finite (rows named
    from ``first_row``). The indices are shifted in place; nothing else is copied before the
    torch tensor is made."""
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
    X = to_torch(matrix)
    check_finite(X, path, first_row)
    if not np.isfinite(y).all():
        raise UsageError(f"{path}: the label of row {int(np.nonzero(~np.isfinite(y))[0][0]) + first_row} is not a "
                         "finite number")
    return X, y


# --- scipy .npz ----------------------------------------------------------------------------------


def is_scipy_npz(path: Path) -> bool:
    """Whether an .npz file holds a matrix written by ``scipy.sparse.save_npz`` (False for a file
    that cannot be opened: the NumPy reader then says why)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = {name.removesuffix(".npy") for name in archive.namelist()}
    except (OSError, zipfile.BadZipFile, zlib.error):
        return False
    return SCIPY_NPZ_KEYS <= names


def read_scipy_npz(path: Path, max_bytes: int):
    """The scipy sparse matrix (CSR) of a ``save_npz`` file and its fingerprint."""
    import scipy.sparse

    sources.check_source(path, max_bytes)
    print_ = sources.fingerprint(path, max_bytes)
    try:
        with open(path, "rb") as fh:
            sources.open_npz(fh, path, max_bytes).close()  # the unpacked size, before scipy unpacks it
            fh.seek(0)
            matrix = scipy.sparse.load_npz(fh)
    except UsageError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, TypeError) as exc:
        raise UsageError(f"{path} is not a readable scipy sparse .npz file: {sources.numpy_error(exc)}") from None
    if matrix.ndim != 2 or matrix.dtype.kind not in "fiub":
        raise UsageError(f"{path}: expected a 2-D numeric sparse matrix, got {matrix.ndim} dimensions of dtype "
                         f"{matrix.dtype}")
    return scipy.sparse.csr_matrix(matrix), print_


def split_target(matrix, target: str, path: Path):
    """``(features, y)``: the target column (``target`` an index; default the last) taken out."""
    if matrix.shape[1] < 2:
        raise UsageError(f"{path}: the matrix needs the target in one column and at least one feature, got shape "
                         f"{matrix.shape}")
    col = sources.target_column(target, matrix.shape[1], path, "a sparse .npz file")
    csc = matrix.tocsc()
    y = np.asarray(csc[:, col].toarray()).ravel()
    keep = np.delete(np.arange(matrix.shape[1]), col)
    return csc[:, keep], y


# --- hashing -------------------------------------------------------------------------------------


def hash_block(columns: dict, bits: int) -> Tensor:
    """The ``(N, 2**bits)`` signed hash block of ``columns`` (name -> the column's stripped cells):
    the whitespace tokens of each cell, as ``"name=token"``."""
    from sklearn.feature_extraction import FeatureHasher

    hasher = FeatureHasher(n_features=1 << bits, input_type="string", alternate_sign=True)
    names = list(columns)
    cells = [columns[c] for c in names]
    tokens = ([f"{c}={t}" for c, cell in zip(names, row) for t in cell.split()] for row in zip(*cells))
    return to_torch(hasher.transform(tokens))


def join_dense(dense: Tensor, block: Tensor) -> Tensor:
    """``[dense, block]`` as one CSR tensor: the dense columns' non-zeros, then the block's."""
    import scipy.sparse

    left = scipy.sparse.csr_matrix(dense.numpy())
    right = scipy.sparse.csr_matrix((block.values().numpy(), block.col_indices().numpy(), block.crow_indices().numpy()),
                                    shape=tuple(block.shape))
    return to_torch(scipy.sparse.hstack([left, right], format="csr"))
