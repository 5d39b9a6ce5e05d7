"""Checkpoints: plain dicts of tensors and values, written atomically, read with
``weights_only=True`` (no arbitrary objects are unpickled)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..errors import UsageError
from .files import atomic_write

FORMAT = "torch_logreg.checkpoint/1"


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Write ``payload`` (plus the format marker) to ``path`` atomically."""
    with atomic_write(path, "wb") as fh:
        torch.save({"format": FORMAT, **payload}, fh)


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`; a missing, truncated, corrupt or
    foreign file is a :class:`UsageError` that says which."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise UsageError(f"checkpoint {path} is empty")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged or foreign files
        text = str(exc)
        if "Weights only load failed" in text:
            # torch's own advice here (load it with weights_only=False) is what must not be done with
            # a file of unknown origin: say what the file holds instead
            found = re.search(r"(?:unsupported|Unsupported) (?:global|GLOBAL):? ?(?:GLOBAL )?([\w.]+)", text)
            what = f" ({found.group(1)})" if found else ""
            raise UsageError(f"checkpoint {path} holds Python objects{what} besides tensors and plain values, which "
                             "torch_logreg never writes; it was not loaded, because unpickling it could run code") from None
        reason = text.splitlines()[0][:200] if text else type(exc).__name__
        raise UsageError(f"checkpoint {path} cannot be read (truncated, corrupt or not a PyTorch file): {reason}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UsageError(f"checkpoint {path} was not written by torch_logreg (no {FORMAT!r} marker)")
    return payload
