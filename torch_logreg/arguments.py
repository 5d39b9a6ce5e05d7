"""Scalar arguments (learning rates, penalties, counts, names), checked in one place.

Every boundary that takes such a value (the loop, the exact solvers, the streaming loop, the
estimator, the config file) checks it with these functions, so a mistake reads the same wherever
it is made and always raises ValueError. The config file prefixes where the value came from:
``--set train.lr=0: train.lr must be a finite number > 0, got 0.0``. No torch here: the command
line checks its config before it imports torch.
"""

from __future__ import annotations

import math
import numbers

from .errors import UsageError


def describe(*, low=None, high=None, low_open: bool = False, high_open: bool = False, integer: bool = False) -> str:
    """``"a finite number > 0"``, ``"an integer >= 1"``, ``"a finite number >= 0 and < 1"``."""
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        bounds.append(f"{'<' if high_open else '<='} {high:g}")
    kind = "an integer" if integer else "a finite number"
    return " ".join([kind, " and ".join(bounds)]).strip()


def number(name: str, value, *, low=None, high=None, low_open: bool = False, high_open: bool = False,
           integer: bool = False):
    """``value`` if it is a finite number (an int with ``integer``; never a bool) within the bounds
    (``low_open`` / ``high_open``: the bound itself excluded), as a float (an int with ``integer``);
    else ValueError ``"{name} must be {describe(...)}, got {value!r}"``."""
    if integer:  # int and NumPy's integers; never a bool
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    else:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low is None or (value > low if low_open else value >= low))
    ok = ok and (high is None or (value < high if high_open else value <= high))
    if not ok:
        what = describe(low=low, high=high, low_open=low_open, high_open=high_open, integer=integer)
        raise UsageError(f"{name} must be {what}, got {value!r}")
    return int(value) if integer else float(value)


def choice(name: str, value, choices):
    """``value`` if it is one of ``choices``; else ValueError ``"{name} must be one of [...], got ..."``."""
    if value not in tuple(choices):
        raise UsageError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


#: the device names a run can ask for; devices.resolve_device then checks what the machine has
DEVICE_NAMES = "'auto', 'cpu', 'cuda' or 'cuda:N'"


def device_name(name: str, value) -> str:
    """``value`` if it reads as a device name (:data:`DEVICE_NAMES`), else ValueError."""
    ok = isinstance(value, str) and (value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()))
    if not ok:
        raise UsageError(f"{name} must be {DEVICE_NAMES}, got {value!r}")
    return value
