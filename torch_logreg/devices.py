"""Device and dtype resolution, done once per run."""

from __future__ import annotations

import torch

from . import arguments
from .errors import UsageError

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` -> the first CUDA device if there is one, else the CPU.

    ``"cpu"``, ``"cuda"`` and ``"cuda:N"`` are checked against what this machine has, so a
    missing GPU is reported here, once, rather than deep inside a run.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, torch.device):
        arguments.device_name("device", device)
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                f"device {device!r} was requested but no CUDA GPU is available "
                "(torch.cuda.is_available() is False); use device='cpu' or 'auto'"
            )
        count = torch.cuda.device_count()
        index = 0 if dev.index is None else dev.index
        if index >= count:
            raise UsageError(
                f"device {device!r} was requested but this machine has {count} CUDA "
                f"device(s): cuda:0 .. cuda:{count - 1}"
            )
        return torch.device("cuda", index)
    if dev.type not in ("cpu", "meta"):
        raise UsageError(f"device must be {arguments.DEVICE_NAMES}, got {device!r}")
    return dev


#: mixed precision: the name -> (the dtype weights and data are kept in, the dtype autocast computes in);
#: float16 with dynamic loss scaling (``loss_scaling.py``), on CUDA only
MIXED = {"bfloat16": (torch.float32, torch.bfloat16), "float16": (torch.float32, torch.float16)}
#: the one sentence that refuses float16 off CUDA
FLOAT16_CUDA_ONLY = ("dtype 'float16' (float16 products with dynamic loss scaling) runs on a CUDA device only; on "
                     "the CPU use 'float32', 'float64' or 'bfloat16'")


def resolve_precision(dtype, default: torch.dtype = torch.float32,
                      device: torch.device | None = None) -> tuple[torch.dtype, torch.dtype | None]:
    """``(storage dtype, autocast dtype or None)``: ``"bfloat16"`` and ``"float16"`` keep float32
    master weights and data and compute the step under ``torch.autocast`` in that dtype (float16
    with loss scaling); every other name is :func:`resolve_dtype`'s, without autocast. ``device``:
    refuse one where it cannot run (float16 off CUDA)."""
    if isinstance(dtype, str) and dtype in MIXED:
        if dtype == "float16" and device is not None and device.type != "cuda":
            raise UsageError(FLOAT16_CUDA_ONLY)
        if device is not None and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UsageError(f"dtype 'bfloat16' needs a GPU with bfloat16 support; {torch.cuda.get_device_name(device)} "
                             "has none: use 'float32'")
        return MIXED[dtype]
    return resolve_dtype(dtype, default), None


def resolve_dtype(dtype: str | torch.dtype | None, default: torch.dtype = torch.float32) -> torch.dtype:
    """``"float32"`` / ``"float64"`` (or the torch dtypes themselves) -> a torch dtype."""
    if dtype is None:
        return default
    if isinstance(dtype, torch.dtype):
        if dtype in DTYPES.values():
            return dtype
    elif isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise TypeError(f"unsupported dtype {dtype!r}: use 'float32' or 'float64' (or 'bfloat16', or 'float16' on CUDA, "
                    "for the loop)")
