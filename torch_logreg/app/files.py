"""Atomic file writes: a temporary file in the same directory, fsynced, then renamed, so a
crash at any moment leaves either the old file or the new one, never a torn one."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", **open_kwargs):
    """``with atomic_write(path, "wb") as fh: ...`` writes ``path`` all at once or not at all."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise cannot_write(path, exc) from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from other users
        with os.fdopen(fd, mode, **open_kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in USER_FIXABLE:
            raise cannot_write(path, exc) from None
        raise


# a full disk or quota, a read-only file system, a permission: the user's to fix, not a bug
USER_FIXABLE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def cannot_write(path: Path, exc: OSError):
    """The :class:`UsageError` for a write to ``path`` that failed with ``exc`` (a full disk...)."""
    from ..errors import UsageError

    kept = "the previous file is kept unchanged" if path.exists() else "nothing was written"
    return UsageError(f"cannot write {path}: {exc.strerror or exc}; {kept}")


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def json_text(obj) -> str:
    """``obj`` as strict JSON text (indented, newline-terminated): NaN and infinities, which JSON
    has no words for, are written as null."""
    import json
    import math

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(obj), indent=2, allow_nan=False) + "\n"


def check_output(output: str | Path, *, run_dir: str | Path | None = None, inputs=(), force: bool = False) -> Path:
    """The one check before a command writes a file the user named (``predict``, ``export``):
    it refuses, in one sentence and before anything is written, a path that is a directory, a
    symbolic link or another non-regular file (a device, a FIFO), one whose directory does not
    exist, one of the command's own inputs, a file of the run, and an existing file unless
    ``force``. The write itself then goes through :func:`atomic_write`."""
    import stat

    from ..errors import UsageError

    output = Path(output).expanduser()
    if output.is_symlink():
        raise UsageError(f"cannot write {output}: it is a symbolic link; give the path of a regular file")
    if output.is_dir():
        raise UsageError(f"cannot write {output}: it is a directory; give a file name")
    if not output.parent.exists():
        raise UsageError(f"cannot write {output}: directory {output.parent} does not exist")
    if not output.parent.is_dir():
        raise UsageError(f"cannot write {output}: {output.parent} is not a directory")
    if output.exists():
        if not stat.S_ISREG(output.stat().st_mode):
            raise UsageError(f"cannot write {output}: it is not a regular file")
        target = output.resolve()
        for source in inputs:
            if Path(source).expanduser().resolve() == target:
                raise UsageError(f"cannot write {output}: it is this command's input; choose another output file")
        if run_dir is not None and Path(run_dir).resolve() in target.parents:
            raise UsageError(f"cannot write {output}: it is a file of the run {run_dir}, which is never overwritten")
        if not force:
            raise UsageError(f"{output} exists; pass --force to replace it")
    return output
