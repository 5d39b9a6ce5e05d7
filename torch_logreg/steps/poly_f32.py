"""float32 ``exp`` and ``log1p`` as polynomials the compiler vectorises, for numba kernels.

The C library's ``exp`` and ``log1p`` are scalar calls, one element at a time; these are plain
arithmetic on whole arrays, which the compiler turns into SIMD code:

* :func:`exp_neg_abs` ``e[i] = exp(-|z[i]|)`` over ``m`` entries: range reduction by ln 2 (in two
  parts, so ``k ln 2`` is exact) and a degree-7 Taylor polynomial, within 1.5 ulp; arguments below
  -87 give ``exp(-87)``, still a normal float32. For ``z <= 0`` it is ``exp(z)``.
* :func:`log1p_unit` ``log1p(e)`` for ``e`` in [0, 1]: ``2 atanh(e / (2 + e))`` as an odd series,
  within 3 ulp.

Tests measure both bounds (``tests/test_fused_cpu.py``). Used by the binary fused pass
(``fused_cpu``) and the ``K``-output kernels' softmax (``batch_fused``). numba's on-disk cache
checks only the calling kernel's source file: after a change here run ``make clean-kernels``, or
the kernels keep the old code.
"""

from __future__ import annotations

import numpy as np

from .jit import ERROR_MODEL

try:  # pragma: no branch - numba is installed with the package; guard for a broken install
    from numba import njit
except ImportError:  # pragma: no cover
    njit = None

#: contraction (FMA) only: reassociation would fold the two-part ln 2 back together
FLAGS = {"contract"}

if njit is not None:

    @njit(fastmath=FLAGS, error_model=ERROR_MODEL, cache=True)
    def exp_neg_abs(z, e, kbuf, m):
        """``e[i] = exp(-|z[i]|)`` for float32, vectorised: ``2^k * exp(r)``, ``|r| <= ln2 / 2``."""
        log2e = np.float32(1.4426950408889634)
        ln2_hi = np.float32(0.693359375)  # ln 2 split in two so k * ln2_hi is exact
        ln2_lo = np.float32(-2.1219444005469057e-4)
        one = np.float32(1.0)
        for i in range(m):
            a = max(-abs(z[i]), np.float32(-87.0))  # exp(-87) is still a normal float32
            k = np.floor(a * log2e + np.float32(0.5))
            r = a - k * ln2_hi - k * ln2_lo
            p = one + r * (one + r * (np.float32(1 / 2) + r * (np.float32(1 / 6) + r * (
                np.float32(1 / 24) + r * (np.float32(1 / 120) + r * (np.float32(1 / 720)
                                                                   + r * np.float32(1 / 5040)))))))
            kbuf[i] = (np.int32(k) + np.int32(127)) << np.int32(23)  # the float32 bits of 2^k
            e[i] = p
        scale = kbuf.view(np.float32)
        for i in range(m):
            e[i] = e[i] * scale[i]

    @njit(fastmath=FLAGS, error_model=ERROR_MODEL, cache=True)
    def log1p_unit(e):
        """``log1p(e)`` for float32 ``e`` in [0, 1]: ``2 (s + s^3/3 + ... + s^15/15)``, ``s = e/(2+e)``."""
        s = e / (np.float32(2.0) + e)
        s2 = s * s
        return np.float32(2.0) * s * (np.float32(1.0) + s2 * (np.float32(1 / 3) + s2 * (np.float32(1 / 5) + s2 * (
            np.float32(1 / 7) + s2 * (np.float32(1 / 9) + s2 * (np.float32(1 / 11) + s2 * (
                np.float32(1 / 13) + s2 * np.float32(1 / 15))))))))
