"""NumPy arrays (``.npy``): one 2-D array, the target one of its columns (``data.target`` its
index, the last by default); see :mod:`.arrays` for how the columns are named.

Under torchrun the file is opened as a memory map and each rank copies its contiguous block of
rows; a file larger than the memory budget is trained on from its memory map
(:meth:`NpyReader.memory_map`), never read whole.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...distributed import shard_bounds
from ...errors import UsageError
from . import arrays, files
from .reader import Reader, Request
from .table import ArrayTable

#: rows per chunk when the memory map is checked a chunk at a time
CHUNK_ROWS = 65536


class NpyReader(Reader):
    name = "NumPy .npy"
    suffixes = (".npy",)
    options = arrays.OPTIONS

    def read(self, path: Path, request: Request) -> ArrayTable:
        print_ = files.fingerprint(path, request.max_bytes)
        array, _ = arrays.read_numpy(path, request.max_bytes, need_y=True, npz=False)
        X, y = arrays.split_target(array, request, path)
        return arrays.array_table(path, X, y, request, print_)

    def read_part(self, path: Path, request: Request, rank: int, world_size: int) -> ArrayTable:
        """A block of rows copied from the memory map."""
        array = npy_map(path)
        if array.dtype.kind not in "fiub":
            raise UsageError(f"{path}: the array must be numeric, got dtype {array.dtype}")
        n, width = array.shape
        if n < world_size:
            raise UsageError(f"{path} has {n} rows, too few to give each of the {world_size} processes a part; run "
                             "fewer processes")
        start, stop = shard_bounds(n, rank, world_size)
        size = (stop - start) * width * array.dtype.itemsize
        if size > request.max_bytes:
            raise UsageError(f"{path}: this process's {stop - start} rows take {files.size_text(size)}, more than "
                             f"data.max_bytes ({files.size_text(request.max_bytes)}); raise it if this machine has the "
                             "memory, or run more processes")
        X, y = arrays.split_target(np.array(array[start:stop]), request, path)
        print_ = files.fingerprint(path, files.NO_LIMIT) if rank == 0 else None
        return arrays.array_table(path, X, y, request, print_, first_row=start)

    def unpacked_bytes(self, path: Path) -> int | None:
        return path.stat().st_size

    def memory_map(self, path: Path, request: Request, budget: int):
        """``(features, labels, fingerprint)``: a view of the file's memory map without the target
        column (the first or the last), and the target column read into memory. Every value is
        checked finite, a chunk of at most ``budget`` bytes at a time."""
        where = f"{path} ({files.size_text(path.stat().st_size)}, more than data.memory_budget = " \
                f"{files.size_text(budget)}, so streamed)"
        array = npy_map(path)
        if array.dtype.kind not in "fiu" or array.dtype.itemsize < 4 and array.dtype.kind == "f":
            raise UsageError(f"{where}: streaming reads float32, float64 or integer arrays, got dtype {array.dtype}")
        n, width = array.shape
        col = files.target_column(request.target, width, path, "a .npy file")
        if col not in (0, width - 1):
            raise UsageError(f"{where}: the target must be the first or the last column to be streamed (data.target = "
                             f"{request.target!r}); write the file with the target at one end")
        X = array[:, 1:] if col == 0 else array[:, :-1]
        if X.dtype.kind != "f":
            raise UsageError(f"{where}: the features must be floating-point to be streamed, got dtype {X.dtype}; save "
                             "the file as float32 or float64")
        y = np.array(array[:, col])
        step = max(1, min(CHUNK_ROWS, budget // max(1, 8 * width)))
        for start in range(0, n, step):
            chunk = np.asarray(array[start : start + step])
            bad = ~np.isfinite(chunk)
            if bad.any():
                r, c = np.argwhere(bad)[0]
                what = "the target" if c == col else f"column {c - int(col == 0)}"
                raise UsageError(f"{path}: row {start + r}, {what}: {chunk[r, c]} is not a finite number")
        return X, y, files.fingerprint(path, files.NO_LIMIT)


def npy_map(path: Path) -> np.ndarray:
    """The read-only memory map of a .npy file holding a 2-D array with the target in one of at
    least two columns (nothing of it is read yet)."""
    files.check_source(path, files.NO_LIMIT)
    try:
        array = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as exc:
        raise UsageError(f"{path} is not a readable NumPy file: {files.numpy_error(exc)}") from None
    if array.ndim != 2 or array.shape[1] < 2:
        raise UsageError(f"{path}: a .npy file must be a 2-D array with the target in one column, got shape {array.shape}")
    return array
