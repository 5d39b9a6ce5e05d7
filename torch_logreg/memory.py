"""Sizes checked before they are allocated: the one memory bound of the package.

A width, a count or a shape that comes from a file or a setting (a feature index, ``hash_bits``,
a hidden width, a dense Hessian for a given solver) is turned into bytes here and compared with
the bound before anything of that size exists, so that a mistake is one sentence instead of an
allocation that fails minutes later (or succeeds and takes the machine down).

The bound: what one run may hold on a device is the device's memory, ``device_memory``: the
physical memory of the machine for the CPU, the GPU's total memory for CUDA. It is a property of
the machine, never of the moment (what other processes happen to use), so the same call is
refused or accepted alike each time on one machine.

What a model of ``P`` parameters over ``D`` features takes (:func:`model_bytes`): each feature's
standardizer mean and scale (float64, ``16 D`` bytes) and :data:`WEIGHT_COPIES` copies of every
parameter at the run's item size (the weights, their gradient, the best and the last good
weights, and up to two moments of the update rule).
"""

from __future__ import annotations

import os

import torch

from .errors import UsageError

#: copies of the parameters the loop may hold at once (see the module docstring)
WEIGHT_COPIES = 6


class MemoryBoundError(UsageError):
    """A size that does not fit :func:`device_memory`; the message names the setting that implies
    it, the size and what to do."""


def device_memory(device: torch.device | str | None = None) -> int:
    """The bytes a run may hold on ``device`` (None: the CPU): see the module docstring."""
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def size_text(n: float) -> str:
    """``n`` bytes for a message: ``"8.0 TB"`` (powers of 1000, as memory sizes are quoted)."""
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


def check(need: int, what: str, remedy: str, device: torch.device | str | None = None) -> None:
    """A :class:`MemoryBoundError` when ``need`` bytes exceed :func:`device_memory`: "``what``
    needs <size>, more than this machine's memory (<size>); ``remedy``"."""
    have = device_memory(device)
    if need > have:
        kind = "GPU" if torch.device(device or "cpu").type == "cuda" else "machine"
        raise MemoryBoundError(f"{what} needs {size_text(need)}, more than this {kind}'s memory ({size_text(have)}); "
                               f"{remedy}")


def model_bytes(n_features: int, n_parameters: int, itemsize: int = 4) -> int:
    """What a model of ``n_parameters`` over ``n_features`` inputs takes during a run (see the
    module docstring): ``16 n_features + WEIGHT_COPIES itemsize n_parameters``."""
    return 16 * n_features + WEIGHT_COPIES * itemsize * n_parameters


def linear_parameters(n_features: int, n_outputs: int, bias: bool = True) -> int:
    """The parameters of one linear layer: ``n_outputs (n_features + bias)``."""
    return n_outputs * (n_features + int(bias))


def mlp_parameters(n_features: int, hidden: list[int], n_outputs: int, bias: bool = True) -> int:
    """The parameters of an MLP ``n_features -> hidden[0] -> ... -> n_outputs``."""
    widths = [n_features, *hidden, n_outputs]
    return sum(linear_parameters(a, b, bias) for a, b in zip(widths[:-1], widths[1:], strict=False))
