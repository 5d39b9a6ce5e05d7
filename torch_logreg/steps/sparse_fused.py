"""Fused step on sparse CSR X on CPU, compiled with numba: one output, no transpose.

For a model with one output (logistic regression, or linear regression) and a CSR X ``(N, D)``
with ``nnz`` stored entries, the step

    z_i = sum_j x_ij w_j + b,   r_i = s_i (h(z_i) - y_i),   loss = sum_i s_i loss(z_i, y_i) / N,
    dw  = X^T r / N   (D,),     db = sum_i r_i / N

(``s_i`` the sample weight, 1 without; ``h`` the sigmoid or the identity; ``loss`` the binary
cross-entropy ``max(z, 0) - y z + log1p(exp(-|z|))`` or the half squared error ``(z - y)^2 / 2``)
takes two sparse products in the torch path (``X w``, then ``X^T r`` through a CSR transpose).
Two kernels here, neither needing the transpose:

* the row pass (:class:`SparseFused`, any CSR X: mini-batches, unbound data): each row read once,
  its dot product, loss and residual, then ``r_i x_ij`` scattered into a gradient buffer while the
  row is in cache. The rows are split into ``C`` contiguous chunks of about equal stored entries
  (``C`` the thread count, fewer for small batches: :func:`n_chunks`), each with its own float64
  buffer of length D, summed afterwards in chunk order (in parallel over blocks of columns). The
  chunk boundaries depend only on X's row pointers and ``C``: bit-identical results from call to
  call with the same thread count.
* the blocked pass (:class:`BlockedFused`, the full batch bound to the step, D over 2^16): with
  D = 2^20 the weights (4 MiB) and a gradient buffer (8 MiB) are larger than a core's L2, and
  every stored entry costs a gather and a scatter from L3 (measured: the row pass is then
  slower than torch's two products). So X's entries are regrouped once, by column block of
  2^16 columns and then by chunk of ``ROW_CHUNK`` = 2^14 rows (uint16 row within the chunk,
  uint16 column within the block, value: 8 bytes an entry for float32, against the CSR's 12;
  float64 values that are all float32 numbers, as counts, indicators and data converted from
  float32 are, are kept as float32 too: the same numbers, 8 bytes an entry against 12),
  and within a block and chunk by column (a counting sort). The forward walks each chunk of
  rows block by block (the block's weights and the chunk's float64 logits in cache), then the
  loss and residual of the chunk's rows; the backward walks each column block's entries into a
  float64 block gradient (in cache). Each logit sums its row's entries in column order, each
  gradient entry its column's entries in row order, whatever the thread count: results are
  bit-identical for any thread count. The pass also runs as its three parts (``margins``,
  ``terms``, ``gradient``, the same bits in a row), for L-BFGS's line search in margin space.

Numerics (both): each product ``x_ij w_j`` is formed in float64 (exact for float32 data) and
summed in float64; the link, loss and residual are float64 (the C library's ``exp`` and
``log1p``), and so are the gradient buffers; the loss and residual (bias gradient) sums over
the rows are compensated (Neumaier), so their error does not grow with N: line searches that
compare the losses of nearby points (the proximal solver's) see no summation noise. Only the final means
are rounded to X's dtype. Tests pin both kernels to the reference
(:meth:`StackedModel.objective_and_grad` on the densified X): float64 to 1e-12 relative, float32
to a few float32 roundings. NaN and infinity propagate into the loss (an infinite loss may read
as NaN through the compensated sum; no fast-math flags are used), so the loop's divergence
check still sees them.

Column indices are not bounds-checked: a torch CSR tensor from
:func:`~torch_logreg.validation.as_sparse_csr` has its invariants checked, and
:func:`~torch_logreg.functional.csr_rows` keeps them. int32 and int64 indices are both taken
(numba compiles one kernel per index type). numba is a runtime dependency; where it cannot be
imported, :func:`available` is False and the step keeps the torch path (``sparse.py``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..models import single_linear
from . import batch_fused, jit

jit.threads_as_torch()  # before numba's import (jit.threads_as_torch says why)
try:  # pragma: no branch - numba is installed with the package; guard for a broken install
    import numba
    from numba import njit, prange
except ImportError:  # pragma: no cover
    numba = None

#: stored entries per chunk at least (and at least D, the cost of zeroing and summing one more
#: D-long buffer): smaller batches run in fewer chunks, a mini-batch of a few rows in one
MIN_CHUNK_ENTRIES = 1 << 16
#: columns per block of the final sum over the chunks' buffers
COLUMN_BLOCK = 1 << 14
#: fast-math flags: none. Reassociation would undo the compensated sums, and neither it nor
#: contraction (FMA) gains anything measurable here (the gathers and scatters dominate); plain
#: IEEE arithmetic also keeps the products and sums rounded as the torch path rounds them
_FLAGS: set[str] = set()
#: columns per block of the regrouped copy of bound X: 2^16 (a uint16 column index; the block's
#: float64 gradient, 512 KiB, and float32 weights stay in L2)
BLOCK_SHIFT = 16
#: rows per chunk of the forward pass over the regrouped copy (their float64 logits, 128 KiB,
#: stay in cache while the blocks are walked)
ROW_CHUNK = 1 << 14
#: link codes of the kernel
SIGMOID, IDENTITY = 0, 1
_LINK_CODES = {"sigmoid": SIGMOID, "identity": IDENTITY}


def available() -> bool:
    return numba is not None


def supports_model(model) -> bool:
    """True where the model suits the fused kernel: numba importable, one ``Linear`` layer with
    one sigmoid or identity output."""
    return available() and single_linear(model) is not None and model.n_outputs == 1 and model.link in _LINK_CODES


def supports_data(X: Tensor, W: Tensor) -> bool:
    """True where the data suits it: X a float32/float64 sparse CSR tensor on the CPU, of the
    weights' dtype."""
    return (X.layout == torch.sparse_csr and X.device.type == "cpu" and X.dtype in (torch.float32, torch.float64)
            and W.dtype == X.dtype and W.device.type == "cpu")


def supports(model, X: Tensor) -> bool:
    """:func:`supports_model` and :func:`supports_data` for the model's weights."""
    layer = single_linear(model)
    return layer is not None and supports_model(model) and supports_data(X, layer.weight)


def n_chunks(nnz: int, d: int, n_threads: int) -> int:
    """Chunks of rows for ``nnz`` stored entries and D = ``d``: one per thread, fewer where a
    chunk would hold under ``max(MIN_CHUNK_ENTRIES, d)`` entries (one extra buffer costs a
    D-long zeroing and sum)."""
    return max(1, min(n_threads, nnz // max(MIN_CHUNK_ENTRIES, d)))


def chunk_starts(crow: np.ndarray, chunks: int) -> np.ndarray:
    """Row boundaries ``(chunks + 1,)`` splitting the rows into ``chunks`` contiguous runs of
    about ``nnz / chunks`` stored entries each (a function of the row pointers alone)."""
    n, nnz = crow.shape[0] - 1, int(crow[-1])
    targets = (np.arange(chunks + 1, dtype=np.float64) * (nnz / chunks)).astype(crow.dtype)
    starts = np.searchsorted(crow, targets, side="left").astype(np.int64)
    starts[0], starts[-1] = 0, n
    return np.minimum(np.maximum.accumulate(starts), n)


if numba is not None:
    from .batch_fused import compensated_add  # Neumaier's sum, one home for the kernels

    @njit(fastmath=_FLAGS, cache=True, inline="always")
    def _row_terms(z, yi, link, weighted, si, n):
        """One row's loss term ``s_i loss(z_i, y_i)`` and residual ``r_i = s_i (h(z_i) - y_i) / n``."""
        if link == SIGMOID:
            e = math.exp(-abs(z))
            li = max(z, 0.0) - yi * z + math.log1p(e)
            r = (1.0 if z > 0.0 else e) / (1.0 + e) - yi
        else:
            r = z - yi
            li = 0.5 * r * r
        if weighted:
            li *= si
            r *= si
        return li, r / n

    @njit(fastmath=_FLAGS, cache=True, inline="always")
    def _chunk_total(sums):
        """The chunks' ``[sum r, sum loss]`` rows of ``sums`` added in chunk order (compensated)."""
        out = np.zeros(2, dtype=np.float64)
        comp = np.zeros(2, dtype=np.float64)
        for c in range(sums.shape[0]):
            out[0], comp[0] = compensated_add(out[0], comp[0], sums[c, 0])
            out[1], comp[1] = compensated_add(out[1], comp[1], sums[c, 1])
        return out + comp

    @njit(parallel=True, fastmath=_FLAGS, cache=True)
    def _kernel(crow, col, val, y, s, weighted, w, b, starts, link, scratch, n, grad):
        """One pass over the rows: ``grad[:] = X^T r`` in ``grad``'s dtype, with
        ``r_i = s_i (h(z_i) - y_i) / N`` as the torch path rounds it, and the float64
        ``[sum_i r_i, sum_i s_i loss_i]`` returned. ``scratch`` ``(C, D)`` float64 holds each
        chunk's ``X^T r`` (zeroed here); ``starts`` ``(C + 1,)`` the chunks' row boundaries."""
        C = starts.shape[0] - 1
        D = grad.shape[0]
        sums = np.zeros((C, 2), dtype=np.float64)
        for c in prange(C):
            g = scratch[c]
            for j in range(D):
                g[j] = 0.0
            loss, loss_c, rsum, rsum_c = 0.0, 0.0, 0.0, 0.0
            for i in range(starts[c], starts[c + 1]):
                lo, hi = crow[i], crow[i + 1]
                z = 0.0
                for k in range(lo, hi):  # unsigned: no test for a negative index (columns are checked)
                    z += np.float64(val[k]) * np.float64(w[np.uint64(col[k])])
                z += b
                li, r = _row_terms(z, np.float64(y[i]), link, weighted, np.float64(s[i]), n)
                loss, loss_c = compensated_add(loss, loss_c, li)
                rsum, rsum_c = compensated_add(rsum, rsum_c, r)
                for k in range(lo, hi):
                    g[np.uint64(col[k])] += r * np.float64(val[k])
            sums[c, 0], sums[c, 1] = rsum + rsum_c, loss + loss_c
        # the chunks' buffers summed in chunk order, column block by column block
        n_blocks = (D + COLUMN_BLOCK - 1) // COLUMN_BLOCK
        for blk in prange(n_blocks):
            for j in range(blk * COLUMN_BLOCK, min(D, (blk + 1) * COLUMN_BLOCK)):
                acc = scratch[0, j]
                for c in range(1, C):
                    acc += scratch[c, j]
                grad[j] = acc
        return _chunk_total(sums)


    @njit(cache=True)
    def _exact_in_float32(val):
        """Whether every value of ``val`` is a float32 number (converts to float32 and back unchanged)."""
        for k in range(val.shape[0]):
            if np.float64(np.float32(val[k])) != val[k]:
                return False
        return True

    @njit(parallel=True, cache=True)
    def _build_blocks(crow, col, val, shift, n_blocks, rows_per_chunk):
        """The entries of X regrouped by column block, then by chunk of rows, rows ascending
        (:func:`_sort_segments` then orders each segment by column): ``off``
        ``(n_blocks, n_chunks + 1)`` where block ``b``'s entries of chunk ``c`` start, and per entry
        its row within the chunk and its column within the block (uint16) and its value. The chunks
        of rows are counted and placed in parallel: each writes only its own segments, so the
        layout is the same on any number of threads."""
        n = crow.shape[0] - 1
        n_row_chunks = (n + rows_per_chunk - 1) // rows_per_chunk
        count = np.zeros((n_row_chunks + 1, n_blocks), dtype=np.int64)  # a chunk's counts side by side
        for c in prange(n_row_chunks):
            for i in range(c * rows_per_chunk, min(n, (c + 1) * rows_per_chunk)):
                for k in range(crow[i], crow[i + 1]):
                    count[c, col[k] >> shift] += 1
        off = np.empty((n_blocks, n_row_chunks + 1), dtype=np.int64)
        pos = 0
        for b in range(n_blocks):
            for c in range(n_row_chunks + 1):
                off[b, c] = pos
                pos += count[c, b]
        rows = np.empty(col.shape[0], dtype=np.uint16)
        local = np.empty(col.shape[0], dtype=np.uint16)
        values = np.empty(col.shape[0], dtype=val.dtype)
        mask = (1 << shift) - 1
        for c in prange(n_row_chunks):
            cursor = off[:, c].copy()
            first = c * rows_per_chunk
            for i in range(first, min(n, first + rows_per_chunk)):
                for k in range(crow[i], crow[i + 1]):
                    b = col[k] >> shift
                    p = cursor[b]
                    rows[p] = i - first
                    local[p] = col[k] & mask
                    values[p] = val[k]
                    cursor[b] = p + 1
        return off, rows, local, values

    @njit(parallel=True, cache=True)
    def _sort_segments(off, rows, local, values, width):
        """Each (block, chunk) segment's entries ordered by column, stably (a counting sort):
        the forward then reads the block's weights in order and scatters into the chunk's
        logits, with no chain of updates of one logit."""
        n_blocks, n_chunks1 = off.shape
        for b in prange(n_blocks):
            count = np.empty(width + 1, dtype=np.int64)
            for c in range(n_chunks1 - 1):
                lo, hi = off[b, c], off[b, c + 1]
                if hi - lo < 2:
                    continue
                count[:] = 0
                for k in range(lo, hi):
                    count[local[k] + 1] += 1
                for j in range(width):
                    count[j + 1] += count[j]
                r, lc, v = rows[lo:hi].copy(), local[lo:hi].copy(), values[lo:hi].copy()
                for k in range(hi - lo):
                    p = lo + count[lc[k]]
                    count[lc[k]] += 1
                    rows[p] = r[k]
                    local[p] = lc[k]
                    values[p] = v[k]

    @njit(fastmath=_FLAGS, cache=True, inline="always")
    def _chunk_margins(off, rows, local, values, shift, c, w, b, zc):
        """``zc[:]``: ``b`` plus the products of chunk ``c``'s rows with ``w``, block by block. The
        chunk's logits and the block's weights are indexed through slices by the unsigned uint16 row
        and column, which numba reads without the test for a negative index that a signed one gets
        (the forward pass 1.6x faster, benchmarks/README.md)."""
        for i in range(zc.shape[0]):
            zc[i] = b
        for blk in range(off.shape[0]):
            wb = w[blk << shift:(blk + 1) << shift]
            for k in range(off[blk, c], off[blk, c + 1]):
                zc[rows[k]] += np.float64(values[k]) * np.float64(wb[local[k]])

    @njit(fastmath=_FLAGS, cache=True, inline="always")
    def _chunk_terms(z, r, lo, hi, y, s, weighted, link, n_rows):
        """``r[i]`` for the rows ``lo:hi`` from their logits ``z[i]`` (``r`` may be ``z``), and the
        chunk's ``(sum r, sum loss)``, compensated."""
        loss, loss_c, rsum, rsum_c = 0.0, 0.0, 0.0, 0.0
        for i in range(lo, hi):
            li, ri = _row_terms(z[i], np.float64(y[i]), link, weighted, np.float64(s[i]), n_rows)
            loss, loss_c = compensated_add(loss, loss_c, li)
            rsum, rsum_c = compensated_add(rsum, rsum_c, ri)
            r[i] = ri
        return rsum + rsum_c, loss + loss_c

    @njit(fastmath=_FLAGS, cache=True, inline="always")
    def _block_gradient(off, rows, local, values, shift, rows_per_chunk, blk, r, grad):
        """``grad``'s entries of column block ``blk``: ``X^T r`` there, the rows in order."""
        n, width = r.shape[0], 1 << shift
        acc = np.zeros(width, dtype=np.float64)
        for c in range(off.shape[1] - 1):
            rc = r[c * rows_per_chunk:min(n, (c + 1) * rows_per_chunk)]
            for k in range(off[blk, c], off[blk, c + 1]):
                acc[local[k]] += rc[rows[k]] * np.float64(values[k])
        base = blk << shift
        for j in range(min(width, grad.shape[0] - base)):
            grad[base + j] = acc[j]

    @njit(parallel=True, fastmath=_FLAGS, cache=True)
    def _blocked_kernel(off, rows, local, values, shift, rows_per_chunk, y, s, weighted, w, b, link, z, n_rows, grad):
        """The step on X regrouped by :func:`_build_blocks`: ``grad[:] = X^T r``, ``r`` as in
        :func:`_kernel`, and the float64 ``[sum_i r_i, sum_i s_i loss_i]`` returned. ``z`` ``(N,)``
        float64 scratch. Forward per chunk of rows (its logits stay in cache), then its rows' terms;
        backward per column block (its gradient stays in cache)."""
        n_row_chunks, n = off.shape[1] - 1, z.shape[0]
        sums = np.zeros((n_row_chunks, 2), dtype=np.float64)
        for c in prange(n_row_chunks):
            lo, hi = c * rows_per_chunk, min(n, (c + 1) * rows_per_chunk)
            _chunk_margins(off, rows, local, values, shift, c, w, b, z[lo:hi])
            sums[c, 0], sums[c, 1] = _chunk_terms(z, z, lo, hi, y, s, weighted, link, n_rows)
        for blk in prange(off.shape[0]):
            _block_gradient(off, rows, local, values, shift, rows_per_chunk, blk, z, grad)
        return _chunk_total(sums)

    @njit(parallel=True, fastmath=_FLAGS, cache=True)
    def _blocked_margins(off, rows, local, values, shift, rows_per_chunk, w, b, z):
        """``z[:] = X w + b``, as :func:`_blocked_kernel` forms its logits."""
        n = z.shape[0]
        for c in prange(off.shape[1] - 1):
            _chunk_margins(off, rows, local, values, shift, c, w, b, z[c * rows_per_chunk:min(n, (c + 1) * rows_per_chunk)])

    @njit(parallel=True, fastmath=_FLAGS, cache=True)
    def _blocked_terms(z, r, rows_per_chunk, y, s, weighted, link, n_rows):
        """``r`` from the logits ``z``, and the float64 ``[sum_i r_i, sum_i s_i loss_i]``, summed
        as :func:`_blocked_kernel` sums them."""
        n = z.shape[0]
        n_row_chunks = (n + rows_per_chunk - 1) // rows_per_chunk
        sums = np.zeros((n_row_chunks, 2), dtype=np.float64)
        for c in prange(n_row_chunks):
            sums[c, 0], sums[c, 1] = _chunk_terms(z, r, c * rows_per_chunk, min(n, (c + 1) * rows_per_chunk), y, s,
                                                  weighted, link, n_rows)
        return _chunk_total(sums)

    @njit(parallel=True, fastmath=_FLAGS, cache=True)
    def _blocked_gradient(off, rows, local, values, shift, rows_per_chunk, r, grad):
        """``grad[:] = X^T r``, as :func:`_blocked_kernel` forms it."""
        for blk in prange(off.shape[0]):
            _block_gradient(off, rows, local, values, shift, rows_per_chunk, blk, r, grad)


class BlockedFused:
    """The fused pass on one bound CSR X, regrouped once by column block (see the module
    docstring): ``(y, s, w, b) -> (grad_weight (D,), [sum r / N, sum loss])``."""

    def __init__(self, link: str, X: Tensor, shift: int | None = None) -> None:
        shift = BLOCK_SHIFT if shift is None else shift
        if not available():
            raise TypeError("the fused sparse step needs numba")
        if not 0 < shift <= 16 or not 0 < ROW_CHUNK <= 1 << 16:
            raise ValueError("column blocks of 2^1 .. 2^16 columns, chunks of 1 .. 2^16 rows")
        self._link = _LINK_CODES[link]
        self.shift = shift
        self._row_chunk = ROW_CHUNK
        self.shape = tuple(X.shape)
        n, d = self.shape
        n_blocks = max(1, -(-d >> shift))
        numba.set_num_threads(batch_fused.threads())
        values = X.values().numpy()
        if values.dtype == np.float64 and _exact_in_float32(values):  # the same numbers in fewer bytes
            values = values.astype(np.float32)
        self._off, self._rows, self._local, self._values = _build_blocks(
            X.crow_indices().numpy(), X.col_indices().numpy(), values, shift, n_blocks, self._row_chunk)
        _sort_segments(self._off, self._rows, self._local, self._values, 1 << shift)  # called from here: a cached
        # kernel that calls a parallel one crashes when loaded from numba's cache
        self._z = np.empty(n, dtype=np.float64)
        self.nbytes = sum(a.nbytes for a in (self._off, self._rows, self._local, self._values, self._z))

    def __call__(self, y: Tensor, s: Tensor | None, w: Tensor, b: float) -> tuple[Tensor, np.ndarray]:
        n, d = self.shape
        grad = torch.empty(d, dtype=w.dtype)
        yv = y.numpy()
        sv = yv if s is None else s.numpy()
        numba.set_num_threads(batch_fused.threads())
        sums = _blocked_kernel(self._off, self._rows, self._local, self._values, self.shift, self._row_chunk, yv, sv,
                               s is not None, w.numpy(), float(b), self._link, self._z, float(n), grad.numpy())
        return grad, sums

    # the pass in three parts, for a line search along a direction (``solvers/lbfgs.py``): each
    # rounds as the fused pass does, so the three in a row give its result

    def margins(self, w: Tensor, b: float) -> np.ndarray:
        """``X w + b`` ``(N,)`` float64, a new array."""
        z = np.empty(self.shape[0], dtype=np.float64)
        numba.set_num_threads(batch_fused.threads())
        _blocked_margins(self._off, self._rows, self._local, self._values, self.shift, self._row_chunk, w.numpy(),
                         float(b), z)
        return z

    def terms(self, z: np.ndarray, y: Tensor, s: Tensor | None) -> tuple[np.ndarray, np.ndarray]:
        """From the logits ``z``: the residuals ``r`` ``(N,)`` (a new array) and the float64
        ``[sum r / N, sum loss]``."""
        r = np.empty_like(z)
        yv = y.numpy()
        numba.set_num_threads(batch_fused.threads())
        sums = _blocked_terms(z, r, self._row_chunk, yv, yv if s is None else s.numpy(), s is not None, self._link,
                              float(self.shape[0]))
        return r, sums

    def gradient(self, r: np.ndarray, dtype: torch.dtype) -> Tensor:
        """``X^T r`` ``(D,)`` in ``dtype``, a new tensor."""
        grad = torch.empty(self.shape[1], dtype=dtype)
        numba.set_num_threads(batch_fused.threads())
        _blocked_gradient(self._off, self._rows, self._local, self._values, self.shift, self._row_chunk, r,
                          grad.numpy())
        return grad


def use_blocks(X: Tensor) -> bool:
    """The rule for bound X: regrouped by column block where D spans more than one block (the
    row pass would gather from and scatter into vectors larger than the cache)."""
    return X.shape[1] > (1 << BLOCK_SHIFT)


class SparseFused:
    """The row pass for one model: ``(X, y, s, w, b) -> (grad_weight (D,), [sum r / N, sum loss])``.

    Keeps the float64 scratch buffers ``(C, D)`` from call to call (made for the largest ``C``
    needed so far); the chunk boundaries are found afresh for each X (a search of C + 1 values)."""

    def __init__(self, link: str) -> None:
        if not available():
            raise TypeError("the fused sparse step needs numba")
        self._link = _LINK_CODES[link]
        self._scratch: np.ndarray | None = None

    def __call__(self, X: Tensor, y: Tensor, s: Tensor | None, w: Tensor, b: float) -> tuple[Tensor, np.ndarray]:
        """``X`` CSR ``(N, D)``, ``y`` ``(N,)``, ``s`` ``(N,)`` or None, ``w`` ``(D,)``, ``b`` the bias
        (0 without): the new ``X^T r / N`` ``(D,)`` in X's dtype and the float64
        ``[sum_i r_i / N, sum_i s_i loss_i]``."""
        n, d = X.shape
        crow, col, val = X.crow_indices().numpy(), X.col_indices().numpy(), X.values().numpy()
        starts = chunk_starts(crow, n_chunks(val.shape[0], d, batch_fused.threads()))
        C = starts.shape[0] - 1
        if self._scratch is None or self._scratch.shape[0] < C or self._scratch.shape[1] != d:
            self._scratch = np.empty((C, d), dtype=np.float64)
        grad = torch.empty(d, dtype=X.dtype)
        yv = y.numpy()
        sv = yv if s is None else s.numpy()
        numba.set_num_threads(batch_fused.threads())
        sums = _kernel(crow, col, val, yv, sv, s is not None, w.numpy(), float(b), starts, self._link,
                       self._scratch, float(n), grad.numpy())
        return grad, sums
