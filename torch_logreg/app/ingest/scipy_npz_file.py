"""scipy sparse matrices (``.npz`` written by ``scipy.sparse.save_npz``): the target is one of
its columns, the last unless ``data.target`` gives its index, as for a ``.npy`` array. New rows
have the model's columns, with or without the target's."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from ...errors import UsageError
from . import files
from .reader import Reader, Request
from .svmlight_file import check_finite
from .table import SparseTable

#: the arrays scipy.sparse.save_npz writes
SCIPY_NPZ_KEYS = {"format", "shape", "data", "indices", "indptr"}


class ScipyNpzReader(Reader):
    name = "scipy sparse .npz"
    suffixes = (".npz",)
    sparse = True
    options = ()

    def accepts(self, path: Path) -> bool:
        """Whether the archive holds a matrix written by ``scipy.sparse.save_npz`` (False for one
        that cannot be opened: the NumPy reader then says why)."""
        try:
            with zipfile.ZipFile(path) as archive:
                names = {name.removesuffix(".npy") for name in archive.namelist()}
        except (OSError, zipfile.BadZipFile, zlib.error):
            return False
        return SCIPY_NPZ_KEYS <= names

    def read(self, path: Path, request: Request) -> SparseTable:
        matrix, print_ = read_matrix(path, request.max_bytes)
        schema, y = request.schema, None
        if schema is None:
            matrix, y = split_target(matrix, request.target, path)
        elif matrix.shape[1] == schema.sparse_width + 1:  # the target where training had it
            matrix, y = split_target(matrix, schema.target if schema.target.lstrip("-").isdigit() else "", path)
        elif matrix.shape[1] != schema.sparse_width or request.need_target:
            width = schema.sparse_width
            expected = f"{width + 1} columns (the features and the target)" if request.need_target else \
                f"{width} feature columns, or {width + 1} with the target"
            raise UsageError(f"{path}: expected {expected} as in training, got shape {matrix.shape}")
        matrix = matrix.tocsr()
        check_finite(matrix, path)
        if y is not None and not np.isfinite(y).all():
            raise UsageError(f"{path}: the target has a non-finite value at row {int(np.nonzero(~np.isfinite(y))[0][0])}")
        return SparseTable(path, matrix, y, print_)


def read_matrix(path: Path, max_bytes: int):
    """The scipy sparse matrix (CSR) of a ``save_npz`` file and its fingerprint."""
    import scipy.sparse

    files.check_source(path, max_bytes)
    print_ = files.fingerprint(path, max_bytes)
    try:
        with open(path, "rb") as fh:
            files.open_npz(fh, path, max_bytes).close()  # the unpacked size, before scipy unpacks it
            fh.seek(0)
            matrix = scipy.sparse.load_npz(fh)
    except UsageError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, TypeError) as exc:
        raise UsageError(f"{path} is not a readable scipy sparse .npz file: {files.numpy_error(exc)}") from None
    if matrix.ndim != 2 or matrix.dtype.kind not in "fiub":
        raise UsageError(f"{path}: expected a 2-D numeric sparse matrix, got {matrix.ndim} dimensions of dtype "
                         f"{matrix.dtype}")
    return scipy.sparse.csr_matrix(matrix, dtype=np.float64), print_


def split_target(matrix, target: str, path: Path):
    """``(features, y)``: the target column (``target`` an index; default the last) taken out."""
    if matrix.shape[1] < 2:
        raise UsageError(f"{path}: the matrix needs the target in one column and at least one feature, got shape "
                         f"{matrix.shape}")
    col = files.target_column(target, matrix.shape[1], path, "a sparse .npz file")
    csc = matrix.tocsc()
    y = np.asarray(csc[:, col].toarray()).ravel()
    keep = np.delete(np.arange(matrix.shape[1]), col)
    return csc[:, keep], y
