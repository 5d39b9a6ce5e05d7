"""numba's one-time cost in a process, and whether it has been paid.

Before the first numba kernel of a process runs, numba is imported and its CPU target initialised
(its implementations of NumPy and of the math library registered; SciPy's BLAS imported), whatever
the kernel: most of a second, paid once per process. Each kernel then loads from numba's on-disk
cache (``cache=True``) in far less; only its first-ever compile on a machine costs more (figures:
benchmarks/README.md). The selector (``select.py``) gives the kernels every run long enough to pay a
share of that load (``select.MIN_RUN_SECONDS``), whether or not this process has paid it already,
so that a call takes the same step in every process.

This module imports nothing heavy: :func:`ready` only looks at what is loaded.
"""

from __future__ import annotations

import logging
import os
import sys
import time

LOG = logging.getLogger("torch_logreg")

#: the ``error_model`` of a kernel whose vectorisable loops divide (``fused_cpu``'s float32 link).
#: numba's default ("python") tests each floating-point division for a zero divisor, to raise
#: ``ZeroDivisionError``, and that branch keeps the compiler from vectorising the loop: the
#: sigmoid's ``e / (1 + e)`` over a tile of 64 logits ran one element at a time (4.7 against 1.9
#: ns a row). "numpy" divides as IEEE 754 says (a zero divisor gives an infinity or NaN, which the
#: loop's divergence check sees); no divisor there can be zero, so no result changes except
#: through the order of the now-vectorised sums. The other kernels divide only in scalar code
#: (the float64 link through the C library, compensated sums) and keep numba's default.
ERROR_MODEL = "numpy"
#: a module numba imports when its CPU target is initialised (not on ``import numba``)
_TARGET_MODULE = "numba.np.arraymath"

_loaded = False


def imported() -> bool:
    """Whether numba is imported in this process."""
    return "numba" in sys.modules


def ready() -> bool:
    """Whether numba's CPU target is initialised in this process (by a kernel of this package or
    by anything else): a kernel then costs only its own load from the cache."""
    return _loaded or _TARGET_MODULE in sys.modules


def _probe(x):
    return x + 1


def threads_as_torch() -> None:
    """Before numba's first import in the process: its thread count set to torch's (where
    ``NUMBA_NUM_THREADS`` is not set already).

    numba takes the machine's logical CPUs by default, and its OpenMP threading layer, when a
    parallel kernel first starts it, sets OpenMP's thread count to that number. torch runs on the
    same OpenMP runtime, so where torch had fewer threads (``OMP_NUM_THREADS``, ``torch.set_num_threads``
    or its default of one a physical core) every later torch operation ran on more, summed in another
    order and gave other last bits: a fit's weights then depended on whether a kernel had run before
    it in the process. With the same count the start changes nothing."""
    if "numba" not in sys.modules and "NUMBA_NUM_THREADS" not in os.environ:
        import torch

        os.environ["NUMBA_NUM_THREADS"] = str(torch.get_num_threads())


def load() -> dict[str, float]:
    """Import numba and initialise its CPU target now (one call of a trivial cached kernel).
    Returns the seconds of each part done here: ``"import"`` (where numba was not imported yet)
    and ``"init"``; nothing where numba is ready already or cannot be imported."""
    global _loaded
    if ready():
        _loaded = True
        return {}
    seconds = {}
    was_imported, start = imported(), time.perf_counter()
    threads_as_torch()
    try:
        import numba
    except ImportError:
        return {}
    if not was_imported:
        seconds["import"] = time.perf_counter() - start
        start = time.perf_counter()
    numba.njit(cache=True)(_probe)(1)
    seconds["init"] = time.perf_counter() - start
    _loaded = True
    return seconds


def load_now() -> float:
    """Pay numba's load now (:func:`load`); returns the seconds it took (0 where paid already),
    logged at DEBUG on the ``torch_logreg`` logger."""
    seconds = sum(load().values())
    if seconds:
        LOG.debug("numba loaded in %.2f ms", seconds * 1e3)
    return seconds
