"""The names this module had before the file checks moved to :mod:`torch_logreg.app.ingest.files`,
kept for code that imports them from here."""

from .ingest.files import (
    CONFIG_MAX_BYTES,
    DEFAULT_MAX_BYTES,
    NO_LIMIT,
    change,
    check_source,
    fingerprint,
    numpy_error,
    open_npz,
    read_bytes,
    size_text,
)

__all__ = ["CONFIG_MAX_BYTES", "DEFAULT_MAX_BYTES", "NO_LIMIT", "change", "check_source", "fingerprint",
           "numpy_error", "open_npz", "read_bytes", "size_text"]
