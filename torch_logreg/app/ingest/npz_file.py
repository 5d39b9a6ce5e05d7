"""Dense NumPy archives (``.npz`` with arrays ``X``, the features, and ``y``, the target), as
``numpy.savez`` writes them; see :mod:`.arrays` for how the columns are named."""

from __future__ import annotations

from pathlib import Path

from . import arrays, files
from .reader import Reader, Request
from .table import ArrayTable


class NpzReader(Reader):
    name = "NumPy .npz"
    suffixes = (".npz",)
    options = arrays.OPTIONS

    def read(self, path: Path, request: Request) -> ArrayTable:
        X, y = arrays.read_numpy(path, request.max_bytes, need_y=request.need_target, npz=True)
        return arrays.array_table(path, X, y, request, files.fingerprint(path, request.max_bytes))
