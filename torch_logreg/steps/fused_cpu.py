"""Single-pass fused forward + backward on CPU, compiled with numba.

For a model with one output (logistic regression, or linear regression) the full-batch step

    z = X w + b,   r = h(z) - y,   loss = mean(loss(z, y)),   dw = X^T r / N,   db = sum(r) / N

reads X twice in the reference path (one matrix-vector product for z, one for X^T r), and a
large X does not fit in any cache, so the step costs two trips to main memory. Here each thread
walks its own rows in tiles (:func:`tile_rows`): the dot products of a tile, then the link and the
loss on the tile's logits, then the tile's rows added into the thread's gradient while they are
still in cache. X is read from memory once. While a tile is computed on, the next one's cache
lines are asked for (``prefetch.py``), so the reads overlap the arithmetic instead of waiting
for it.

The exponential and ``log1p`` of the binary loss are evaluated on a whole tile at a time. For
float32 they are polynomials that the compiler vectorises (``poly_f32.py``: exp within 1.5 ulp,
log1p within 3 ulp); float64 uses the C library's ``exp`` and ``log1p``.
Sums over rows go into float64 accumulators, tile by tile.

The maths is the reference's (:meth:`StackedModel.objective_and_grad`); a test pins the two
together (float64 1e-12 relative, float32 a few float32 roundings). NaN and infinity propagate
into the loss (the floating-point flags used allow reassociation, not "no NaNs"), so the loop's
divergence check still sees them.

numba is a runtime dependency; where it cannot be imported, :func:`available` is False and the
loop keeps the torch fast path (``feature_major.py``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from . import batch_fused, jit
from .base import Step
from .common import bind_single_pass, fusable, step_from_sums
from .jit import ERROR_MODEL
from .prefetch import LINE_BYTES

jit.threads_as_torch()  # before numba's import (jit.threads_as_torch says why)
try:  # pragma: no branch - numba is installed with the package; guard for a broken install
    import numba
    from numba import njit, prange

    from .poly_f32 import exp_neg_abs, log1p_unit
    from .prefetch import prefetch
except ImportError:  # pragma: no cover
    numba = None

#: bytes of X per tile: the tile's rows are read again by the backward half right after the
#: forward half, and the next tile's are asked for meanwhile; the two fit a first-level cache of
#: 32 KiB (figures for 8-32 KiB and for 64-row tiles: benchmarks/README.md)
TILE_BYTES = 16 * 1024
#: rows per tile: at least four (one group of the kernel's loops), at most this many (narrow rows)
MAX_TILE_ROWS = 256
#: rows wider than this many bytes (384 float32 features) make long sequential streams that the
#: hardware prefetcher follows alone: they go in tiles of ``WIDE_TILE_ROWS`` rows, not asked for
WIDE_ROW_BYTES = 1536
WIDE_TILE_ROWS = 64
#: entries of X per chunk, the unit of work of one thread (at least one tile of rows): set by
#: the shape alone, so the order of the floating-point sums (and so every result bit) does not
#: depend on how many threads run
CHUNK_ENTRIES = 1 << 19
#: the loop takes the kernel from this many entries of X (16 MiB in float32) and this many
#: features: smaller X stays in cache, where the two passes of the torch path cost little, and
#: with fewer features the per-row work of the kernel outweighs what it saves. The first call in a
#: process loads the compiled kernel from numba's on-disk cache (compiling it the first time ever
#: on a machine takes longer; figures: benchmarks/README.md).
MIN_ENTRIES = 1 << 22
MIN_FEATURES = 32
#: fast-math flags for the kernel: reassociation (vectorised sums) and contraction (FMA); NaN
#: and infinity keep their meaning
_FLAGS = {"reassoc", "contract", "nsz"}


def available() -> bool:
    return numba is not None


def tile_rows(features: int, itemsize: int) -> tuple[int, bool]:
    """``(rows per tile, whether the kernel asks for the next tile)`` for rows of ``features``
    entries of ``itemsize`` bytes: a function of the shape and dtype alone, so the order of the
    sums (and so every result bit) is the call's."""
    row_bytes = max(1, features) * itemsize
    if row_bytes > WIDE_ROW_BYTES:
        return WIDE_TILE_ROWS, False
    return min(MAX_TILE_ROWS, max(4, TILE_BYTES // row_bytes // 4 * 4)), True


def supports(model, X: Tensor) -> bool:
    """True where the fused kernel applies: :func:`~torch_logreg.steps.common.fusable` (one Linear layer, one
    sigmoid or identity output, a contiguous float32/float64 X), X on the CPU, numba importable."""
    return available() and X.device.type == "cpu" and fusable(model, X)


if numba is not None:

    @njit(fastmath=_FLAGS, error_model=ERROR_MODEL, cache=True, inline="always")
    def _bce_tile_f32(z, y, s, m, e, kbuf):
        """Binary cross-entropy on a tile: residual ``sigmoid(z) - y`` into ``z``; returns the
        tile's summed loss ``max(z, 0) - y z + log1p(exp(-|z|))`` and summed residual."""
        exp_neg_abs(z, e, kbuf, m)
        one, zero = np.float32(1.0), np.float32(0.0)
        loss, rsum = zero, zero
        for i in range(m):
            zi, ei, yi = z[i], e[i], y[s + i]
            p = (one if zi > zero else ei) / (one + ei)
            loss += max(zi, zero) - yi * zi + log1p_unit(ei)
            r = p - yi
            z[i] = r
            rsum += r
        return loss, rsum

    @njit(fastmath=_FLAGS, error_model=ERROR_MODEL, cache=True, inline="always")
    def _bce_tile_f64(z, y, s, m, e, kbuf):
        loss, rsum = 0.0, 0.0
        for i in range(m):
            zi, yi = z[i], y[s + i]
            ei = math.exp(-abs(zi))
            p = (1.0 if zi > 0.0 else ei) / (1.0 + ei)
            loss += max(zi, 0.0) - yi * zi + math.log1p(ei)
            r = p - yi
            z[i] = r
            rsum += r
        return loss, rsum

    @njit(fastmath=_FLAGS, error_model=ERROR_MODEL, cache=True, inline="always")
    def _squared_tile(z, y, s, m, e, kbuf):
        """Half squared error on a tile: residual ``z - y`` into ``z``; returns sums of
        ``(z - y)^2 / 2`` and of the residual."""
        loss, rsum = 0.0, 0.0
        for i in range(m):
            r = z[i] - y[s + i]
            z[i] = r
            loss += r * r / 2
            rsum += r
        return loss, rsum

    #: which tile function the kernel applies (one compiled kernel per dtype serves all three)
    BCE_POLY, BCE_LIBM, SQUARED = 0, 1, 2

    @njit(parallel=True, fastmath=_FLAGS, error_model=ERROR_MODEL, cache=True)
    def _kernel(X, y, w, b, n_chunks, link, tile, ahead):
        """Per chunk of rows: ``[sum_n r_n x_n (D), sum_n r_n, sum_n loss_n]`` in float64, in
        tiles of ``tile`` rows, asking for the next tile's cache lines if ``ahead``.

        The chunks are independent and summed afterwards in a fixed order, so the result does
        not depend on the number of threads or on which thread ran which chunk."""
        N, D = X.shape
        out = np.zeros((n_chunks, D + 2), dtype=np.float64)
        per = (N + n_chunks - 1) // n_chunks
        line = LINE_BYTES // X.itemsize  # entries of X per cache line
        groups = 2 * (tile // 4)  # groups of four rows a tile, in the two halves
        share = (tile * D + groups - 1) // groups  # entries of the next tile each group asks for
        for c in prange(n_chunks):
            g = np.zeros(D, dtype=np.float64)
            g_tile = np.empty(D, dtype=X.dtype)
            z = np.empty(tile, dtype=X.dtype)
            e = np.empty(tile, dtype=X.dtype)
            kbuf = np.empty(tile, dtype=np.int32)
            zero = np.zeros(1, dtype=X.dtype)[0]  # a typed 0: the dot products stay in X's dtype
            loss, rsum = 0.0, 0.0
            hi = min(N, (c + 1) * per)
            for s in range(c * per, hi, tile):
                m = min(tile, hi - s)
                # each group of four rows, in either half, asks for its share of the next tile's
                # cache lines (module docstring)
                p = (s + tile) * D
                p_end = min(hi, s + 2 * tile) * D if ahead else p
                # forward: the tile's logits, four rows at a time (four independent sums)
                i = 0
                while i + 4 <= m:
                    q = min(p + share, p_end)
                    while p < q:
                        prefetch(X, p)
                        p += line
                    a0, a1, a2, a3 = zero, zero, zero, zero
                    for d in range(D):
                        wd = w[d]
                        a0 += X[s + i, d] * wd
                        a1 += X[s + i + 1, d] * wd
                        a2 += X[s + i + 2, d] * wd
                        a3 += X[s + i + 3, d] * wd
                    z[i], z[i + 1], z[i + 2], z[i + 3] = a0 + b[0], a1 + b[0], a2 + b[0], a3 + b[0]
                    i += 4
                while i < m:
                    acc = zero
                    for d in range(D):
                        acc += X[s + i, d] * w[d]
                    z[i] = acc + b[0]
                    i += 1
                if link == BCE_POLY:
                    tile_loss, tile_rsum = _bce_tile_f32(z, y, s, m, e, kbuf)
                elif link == BCE_LIBM:
                    tile_loss, tile_rsum = _bce_tile_f64(z, y, s, m, e, kbuf)
                else:
                    tile_loss, tile_rsum = _squared_tile(z, y, s, m, e, kbuf)
                loss += tile_loss
                rsum += tile_rsum
                g_tile[:] = 0
                # backward: the same rows, still in cache, four at a time
                i = 0
                while i + 4 <= m:
                    q = min(p + share, p_end)
                    while p < q:
                        prefetch(X, p)
                        p += line
                    r0, r1, r2, r3 = z[i], z[i + 1], z[i + 2], z[i + 3]
                    for d in range(D):
                        g_tile[d] += r0 * X[s + i, d] + r1 * X[s + i + 1, d] + r2 * X[s + i + 2, d] \
                            + r3 * X[s + i + 3, d]
                    i += 4
                while i < m:
                    r = z[i]
                    for d in range(D):
                        g_tile[d] += r * X[s + i, d]
                    i += 1
                while p < p_end:
                    prefetch(X, p)
                    p += line
                for d in range(D):
                    g[d] += g_tile[d]
            out[c, :D] = g
            out[c, D] = rsum
            out[c, D + 1] = loss
        return out

    _LINK_CODES = {
        ("sigmoid", torch.float32): BCE_POLY,
        ("sigmoid", torch.float64): BCE_LIBM,
        ("identity", torch.float32): SQUARED,
        ("identity", torch.float64): SQUARED,
    }


class FusedStep(Step):
    """``step(X, T, l2) -> (loss, grads)`` on fixed full-batch data in one pass over X, like
    ``objective_and_grad``; see the module docstring for where it applies."""

    name = "fused_cpu"

    def __init__(self, model, X: Tensor, T: Tensor) -> None:
        if not supports(model, X):
            raise TypeError(
                "the fused CPU step needs numba and a single-Linear model with one sigmoid or identity "
                "output on a contiguous float32/float64 CPU tensor"
            )
        self.prefix, self.layer, self.X, y = bind_single_pass(model, X, T)
        self._x, self._y = self.X.numpy(), y.numpy()
        self._link = _LINK_CODES[(model.link, X.dtype)]
        self._threads = batch_fused.threads()
        self._tile, self._ahead = tile_rows(X.shape[1], X.element_size())
        rows = max(self._tile, -(-CHUNK_ENTRIES // max(1, X.shape[1])))
        self._chunks = max(1, -(-X.shape[0] // rows))
        self._zero_bias = np.zeros(1, dtype=self._x.dtype)

    @property
    def threads(self) -> int:
        """The numba threads a step runs on (torch's thread count when the step was built)."""
        return self._threads

    @property
    def chunks(self) -> int:
        """The blocks of rows the kernel sums separately, in a fixed order: the result does not
        depend on :attr:`threads`."""
        return self._chunks

    @torch.no_grad()
    def step(self, X: Tensor, T: Tensor, l2: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
        """Bound to the data it was built for: ``X`` and ``T`` are that data (not read again)."""
        W, b = self.layer.weight, self.layer.bias
        n = self.X.shape[0]
        numba.set_num_threads(self._threads)
        bias = self._zero_bias if b is None else b.detach().numpy()
        sums = _kernel(self._x, self._y, W.detach().numpy()[0], bias, self._chunks, self._link,
                       self._tile, self._ahead)
        return step_from_sums(self.layer, self.prefix, torch.from_numpy(sums.sum(axis=0)) / n, l2)
