"""The kernels' software prefetch is a hint only: it changes no value, never faults, and takes
only C-contiguous arrays."""

import numpy as np
import pytest

from torch_logreg.steps import fused_cpu

pytestmark = pytest.mark.skipif(not fused_cpu.available(), reason="numba is not importable")


def _kernels():
    from numba import njit

    from torch_logreg.steps.prefetch import LINE_BYTES, prefetch

    @njit
    def touch_all(a, beyond):
        """Asks for every line of ``a`` and ``beyond`` lines past its end, then sums it."""
        line = LINE_BYTES // a.itemsize
        for k in range(0, a.size + beyond * line, line):
            prefetch(a, k)
        return a.sum()

    @njit
    def touch_view(a):
        prefetch(a, 0)

    return touch_all, touch_view


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
@pytest.mark.parametrize("shape", [(1,), (7,), (33, 5), (2, 3, 4)])
def test_prefetch_changes_nothing_even_past_the_end(dtype, shape):
    touch_all, _ = _kernels()
    a = np.arange(np.prod(shape), dtype=dtype).reshape(shape)
    before = a.copy()
    assert touch_all(a, 1000) == before.sum()
    assert np.array_equal(a, before)


def test_prefetch_takes_only_c_contiguous_arrays():
    from numba.core.errors import TypingError

    _, touch_view = _kernels()
    touch_view(np.zeros((4, 3)))
    with pytest.raises(TypingError):
        touch_view(np.zeros((4, 3)).T)  # its memory order is not its index order
