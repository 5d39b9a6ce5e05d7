"""Reading the user's files safely, and knowing them again later.

Every data and config file the commands read goes through :func:`check_source` first: it must
be a regular file (a device such as ``/dev/zero`` or a FIFO would be read without end or block)
no larger than a stated limit, checked from ``stat`` before a byte is read. :func:`read_bytes`
then reads it whole (never past the limit) and :func:`fingerprint` gives what a run saves about
its data: the size, the modification time and the SHA-256 of the bytes, so that ``evaluate``,
``resume`` and ``predict`` can say when the file has changed since training.
"""

from __future__ import annotations

import hashlib
import os
import stat
import zipfile
import zlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ...errors import UsageError

DEFAULT_MAX_BYTES = 2 << 30  # data.max_bytes: the largest data file read (2 GiB)
NO_LIMIT = 1 << 62  # check_source without a size limit (a file of which one part is read)
CONFIG_MAX_BYTES = 1 << 20  # a config file is a few hundred bytes; one of a megabyte is not a config
CHUNK = 1 << 20


def size_text(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def check_source(path: Path, max_bytes: int, what: str = "data file",
                 limit_key: str | None = "data.max_bytes") -> os.stat_result:
    """``stat`` of ``path`` once it is known to be a readable regular file of at most
    ``max_bytes``; otherwise a :class:`UsageError` that says which of these it is not."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist") from None
    except NotADirectoryError:
        raise UsageError(f"{what} {path} does not exist (a part of the path is a file, not a directory)") from None
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{what} {path} is a directory; give the path of a file")
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{what} {path} is not a regular file (a device, FIFO or socket), which could be read "
                         "without end; give the path of a file")
    if st.st_size > max_bytes:
        raise UsageError(f"{what} {path} is {size_text(st.st_size)}, more than the limit of {size_text(max_bytes)}"
                         + (f" ({limit_key}); raise {limit_key} if this machine has the memory for it" if limit_key
                            else f" for a {what}"))
    if not os.access(path, os.R_OK):
        raise UsageError(f"cannot read {what} {path}: permission denied")
    return st


def read_bytes(path: Path, max_bytes: int, what: str = "data file",
               limit_key: str | None = "data.max_bytes") -> tuple[bytes, dict]:
    """The whole content of ``path`` (checked by :func:`check_source`) and its fingerprint."""
    st = check_source(path, max_bytes, what, limit_key)
    try:
        with open(path, "rb") as fh:
            content = fh.read(max_bytes + 1)  # never more than the limit, even if the file grew meanwhile
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(content) > max_bytes:
        raise UsageError(f"{what} {path} grew past the limit of {size_text(max_bytes)} while it was read")
    return content, {"path": str(path), "size": len(content), "mtime_ns": st.st_mtime_ns,
                     "sha256": hashlib.sha256(content).hexdigest()}


def fingerprint(path: Path, max_bytes: int) -> dict:
    """Size, modification time and SHA-256 of ``path``, streamed (the file is not held in memory)."""
    st = check_source(path, max_bytes)
    digest, size = hashlib.sha256(), 0
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise UsageError(f"cannot read data file {path}: {exc.strerror or exc}") from None
    return {"path": str(path), "size": size, "mtime_ns": st.st_mtime_ns, "sha256": digest.hexdigest()}


def _when(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def change(saved: dict | None, now: dict | None) -> str | None:
    """How the file behind ``now`` differs from the one the run saved, in words; ``None`` when
    its content is the same (a file touched but not changed is the same data)."""
    if not saved or not now or saved.get("sha256") == now.get("sha256"):
        return None
    parts = []
    if saved.get("size") != now.get("size"):
        parts.append(f"{saved.get('size')} bytes then, {now.get('size')} now")
    else:
        parts.append("same size, other content")
    if saved.get("mtime_ns") != now.get("mtime_ns") and saved.get("mtime_ns") and now.get("mtime_ns"):
        parts.append(f"modified {_when(now['mtime_ns'])}, trained on the version of {_when(saved['mtime_ns'])}")
    return "; ".join(parts)


def numpy_error(exc: Exception) -> str:
    """Why NumPy could not read a file, in words for the user: NumPy's own advice for a file it
    takes for a pickle (to load it unsafely) is the opposite of what to do with a data file."""
    if isinstance(exc, (zipfile.BadZipFile, EOFError, zlib.error)):
        return "it is truncated or damaged (not a complete .npy / .npz file)"
    if "pickled" in str(exc) or "allow_pickle" in str(exc):
        return "it is not an array saved by numpy.save / numpy.savez (NumPy would have to unpickle it)"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def open_npz(fh, path: Path, max_bytes: int):
    """``np.load`` of an open .npz whose arrays, unpacked, stay within ``max_bytes`` (a small
    compressed archive can unpack to any size)."""
    archive = np.load(fh)
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise UsageError(f"{path} is a single array, not an .npz archive; name it .npy")
    unpacked = sum(info.file_size for info in archive.zip.infolist())
    if unpacked > max_bytes:
        archive.close()
        raise UsageError(f"{path} unpacks to {unpacked} bytes, more than data.max_bytes = {max_bytes}; raise "
                         "data.max_bytes if this machine has the memory for it")
    return archive


def target_column(target: str, width: int, path: Path, what: str) -> int:
    """The column ``data.target`` names in a ``width``-column ``what`` (a .npy array or a sparse
    .npz matrix): an index, negative from the end, the last one when ``target`` is empty."""
    if not target:
        return width - 1
    try:
        col = int(target)
    except ValueError:
        raise UsageError(f"{path}: for {what} data.target is a column index, got {target!r}") from None
    if not -width <= col < width:
        raise UsageError(f"{path}: target column {col} is outside the {width} columns")
    return col % width
