"""The mini-batch step of a single-``Linear`` model in one numba call: gather, forward, loss, backward.

For a batch of rows ``idx`` (``B`` of them) of the in-memory data ``X (N, D)``, ``T (N, K)``:

    z_n = W x_n + b  (K,),   r_n = h(z_n) - t_n,   loss = (1/B) sum_n loss(z_n, t_n),
    dW = (1/B) sum_n r_n x_n^T  (K, D),   db = (1/B) sum_n r_n  (K,),          n in idx

with ``h`` the sigmoid of each output (binary cross-entropy, in its log-sum-exp form), the
softmax over the outputs (categorical cross-entropy, ``-t . log_softmax(z)``) or the identity
(half squared error): the maths of :meth:`StackedModel.objective_and_grad` on ``X[idx]``. One
output (``K = 1``, the usual logistic or linear regression) has a kernel of its own.

Why a kernel: at ``B = 64`` rows of 100 features a step is a few thousand multiply-adds, and the
torch path (two ``index_select`` gathers into buffers, then about a dozen small operations) spent
most of its time in per-operation dispatch, not in arithmetic. Here the rows are read in place
through ``idx`` (no gather copy), in tiles of ``TILE`` rows: the tile's logits (dot products in
X's dtype, four rows at a time, so each weight is loaded once for four rows; with several outputs,
four rows by three outputs, so each loaded entry of X also serves three outputs), then the link
and the loss of each row (summed in float64), then the tile's rows added into the gradient while
still in cache (four rows at a time; by two outputs with several). Sums over tiles go into float64
accumulators, and everything runs on one thread in a fixed order, so the result does not depend
on the number of threads. Blocking the outputs this way makes fewer loads per multiply-add
(figures: benchmarks/README.md). The means
are written straight into the caller's buffers (the gradient in the model's parameter order, and
the loss).

The link of one output, and of float64 data, is computed a row at a time with the C library's
float64 ``exp`` and ``log1p``: a few exponentials per row against ``D`` multiply-adds. With several
float32 softmax or sigmoid outputs, the exponentials of a row are ``K`` scalar calls, a large part
of the step; there the link takes the whole tile at once, its exponentials (and ``log1p``) by the
vectorised float32 polynomials of ``poly_f32``, each row's loss still summed in float64
(``_softmax_tile_f32``, ``_sigmoid_tile_f32``; the most gained on a narrow X). One thread serves
batches of one output up to ``MAX_WORK``; larger ones go to torch's multi-threaded BLAS.

A batch of no rows gives a NaN loss and zero gradients, as the reference's means over nothing.
NaN and infinity propagate into the loss (the flags allow reassociation, not "no NaNs").

Tests pin the kernels to the reference step: float64 to 1e-12 relative, float32 within a few
roundings of the sums (never bit for bit: the two order their sums differently).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..models import single_linear
from . import jit

jit.threads_as_torch()  # before numba's import (jit.threads_as_torch says why)
try:  # pragma: no branch - numba is installed with the package; guard for a broken install
    import numba
    from numba import njit, prange

    from .jit import ERROR_MODEL
    from .poly_f32 import exp_neg_abs, log1p_unit
except ImportError:  # pragma: no cover
    numba = njit = None

#: one thread serves batches up to this much work (rows x features x outputs); above it, a batch
#: is large enough that one thread loses to torch's multi-threaded BLAS (figures:
#: benchmarks/README.md). Larger batches of several outputs are cut into chunks of ``CHUNK_ROWS``
#: rows run on all threads, still faster than the torch path; one output keeps the torch path there
MAX_WORK = 1 << 21
#: rows per chunk of a large batch of several outputs: a count fixed by the batch's size, not by
#: the threads, so the order of the sums (and every result bit) is the same on any machine. More,
#: smaller chunks cost more than they balance (each sums into a gradient of its own)
CHUNK_ROWS = 512
#: rows per tile: the backward half reads the tile's rows again right after the forward half,
#: from L1 or L2 for the usual widths
TILE = 64
#: fast-math flags: reassociation (vectorised sums) and contraction (FMA); NaN and infinity keep
#: their meaning (as in ``fused_cpu``)
FLAGS = {"reassoc", "contract", "nsz"}
#: the link the kernels apply, by the model's link name
SIGMOID, IDENTITY, SOFTMAX = 0, 1, 2
LINKS = {"sigmoid": SIGMOID, "identity": IDENTITY, "softmax": SOFTMAX}


def available() -> bool:
    return njit is not None


def applies(model, dtype: torch.dtype, device: torch.device, batch_size: int) -> bool:
    """True where a kernel serves a model's batches of up to ``batch_size`` rows: numba
    importable, the CPU, one ``Linear`` layer (any of the three links), float32 or float64, and,
    for one sigmoid or identity output, at most ``MAX_WORK`` rows x features (several outputs
    take any batch: above ``MAX_WORK`` it is cut into chunks run on all threads). (The data must
    also be a contiguous 2-D tensor of that dtype: the caller checks that.)"""
    layer = single_linear(model)
    if not (available() and device.type == "cpu" and layer is not None and model.link in LINKS
            and dtype in (torch.float32, torch.float64)):
        return False
    return not _one_output(model) or one_thread(batch_size, layer.weight.numel())


def one_thread(rows: int, row_work: int) -> bool:
    """Whether a batch of ``rows`` rows of ``row_work`` multiply-adds each (features x outputs)
    runs on one thread: at most ``MAX_WORK`` in all."""
    return rows * row_work <= MAX_WORK


def _one_output(model) -> bool:
    """Whether the one-output kernel serves the model (it knows the sigmoid and the identity; a
    softmax takes the K-output kernel)."""
    layer = single_linear(model)
    return layer is not None and layer.weight.shape[0] == 1 and LINKS[model.link] != SOFTMAX


def threads() -> int:
    """Threads the parallel kernels run on: torch's count, at most numba's."""
    return max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))


if njit is not None:

    # fastmath=False is written out: a function without the argument, first compiled as a callee of
    # a kernel, takes the kernel's flags (and is cached so)

    @njit(fastmath=False, cache=True)
    def compensated_add(s, c, x):
        """Neumaier's compensated sum ``(s, c) + x`` (the total is ``s + c``), in plain IEEE
        arithmetic: under the kernels' reassociation the compensation would simplify to zero.
        The loss is summed this way so its error does not grow with the batch: a line search
        comparing the losses of nearby points (the proximal solver's, within 8 eps) would
        otherwise stall on summation noise. ``sparse_fused``'s kernels call it too: numba's on-disk
        cache checks only the calling kernel's source file, so after a change here run
        ``make clean-kernels`` (it removes the compiled kernels) or the sparse kernels keep the old code."""

        t = s + x
        if abs(s) >= abs(x):
            c += (s - t) + x
        else:
            c += (x - t) + s
        return t, c

    @njit(fastmath=False, cache=True)
    def _sigmoid_row(z, t):
        """One output's binary cross-entropy ``softplus(z) - t z`` and residual ``sigmoid(z) - t``,
        from ``exp(-|z|)`` alone (finite for any z), in plain IEEE arithmetic as the reference
        computes it."""
        e = math.exp(-abs(z))
        return max(z, 0.0) - t * z + math.log1p(e), (1.0 if z > 0.0 else e) / (1.0 + e) - t

    @njit(fastmath=FLAGS, cache=True)
    def _rows_kernel(X, y, rows, w, b, link, grad, loss_out):
        """The step of one output on rows ``X[rows]``, ``y[rows]`` (``y (N, 1)``, ``w (D,)``):
        ``grad[:D] = X^T r / B``, ``grad[D] = sum(r) / B`` (when ``grad`` has room for a bias),
        ``loss_out[0]`` the mean loss; ``b`` has one entry (0 for a layer without bias)."""
        B = rows.shape[0]
        D = X.shape[1]
        g = np.zeros(D, dtype=np.float64)
        g_tile = np.empty(D, dtype=X.dtype)
        z = np.empty(TILE, dtype=X.dtype)
        zero = np.zeros(1, dtype=X.dtype)[0]  # a typed 0: the dot products stay in X's dtype
        loss, comp, rsum = 0.0, 0.0, 0.0
        for s in range(0, B, TILE):
            m = min(TILE, B - s)
            # forward: the tile's logits, four rows at a time (four independent sums)
            i = 0
            while i + 4 <= m:
                r0, r1, r2, r3 = rows[s + i], rows[s + i + 1], rows[s + i + 2], rows[s + i + 3]
                a0, a1, a2, a3 = zero, zero, zero, zero
                for d in range(D):
                    wd = w[d]
                    a0 += X[r0, d] * wd
                    a1 += X[r1, d] * wd
                    a2 += X[r2, d] * wd
                    a3 += X[r3, d] * wd
                z[i], z[i + 1], z[i + 2], z[i + 3] = a0 + b[0], a1 + b[0], a2 + b[0], a3 + b[0]
                i += 4
            while i < m:
                r0 = rows[s + i]
                acc = zero
                for d in range(D):
                    acc += X[r0, d] * w[d]
                z[i] = acc + b[0]
                i += 1
            # the link, per row in float64: z becomes the residual h(z) - t
            for i in range(m):
                zi, ti = np.float64(z[i]), np.float64(y[rows[s + i], 0])
                if link == SIGMOID:
                    # softplus(z) - t z and sigmoid(z) from exp(-|z|) alone: finite for any z
                    li, r = _sigmoid_row(zi, ti)
                    loss, comp = compensated_add(loss, comp, li)
                else:
                    r = zi - ti
                    loss, comp = compensated_add(loss, comp, 0.5 * r * r)
                z[i] = r
                rsum += r
            # backward: the same rows, still in cache, four at a time
            g_tile[:] = 0
            i = 0
            while i + 4 <= m:
                r0, r1, r2, r3 = rows[s + i], rows[s + i + 1], rows[s + i + 2], rows[s + i + 3]
                q0, q1, q2, q3 = z[i], z[i + 1], z[i + 2], z[i + 3]
                for d in range(D):
                    g_tile[d] += q0 * X[r0, d] + q1 * X[r1, d] + q2 * X[r2, d] + q3 * X[r3, d]
                i += 4
            while i < m:
                r0, q0 = rows[s + i], z[i]
                for d in range(D):
                    g_tile[d] += q0 * X[r0, d]
                i += 1
            for d in range(D):
                g[d] += g_tile[d]
        # means over the batch; over no rows: a NaN loss and zero gradients (sums over nothing)
        scale = 1.0 / B if B else 0.0
        for d in range(D):
            grad[d] = g[d] * scale
        if grad.shape[0] > D:
            grad[D] = rsum * scale
        loss_out[0] = (loss + comp) / B if B else np.nan


    @njit(fastmath=FLAGS, cache=True)
    def _tile_logits_k(X, rows, s, m, W, b, Z):
        """``Z[:m] = X[rows[s:s+m]] W^T + b``, four rows by three outputs at a time: twelve
        independent sums, each loaded entry of X serving three products and each weight four
        (then four rows by one output for the outputs left over, and single rows last)."""
        K, D = W.shape
        zero = np.zeros(1, dtype=X.dtype)[0]  # a typed 0: the dot products stay in X's dtype
        i = 0
        while i + 4 <= m:
            x0, x1, x2, x3 = X[rows[s + i]], X[rows[s + i + 1]], X[rows[s + i + 2]], X[rows[s + i + 3]]
            k = 0
            while k + 3 <= K:
                w0, w1, w2 = W[k], W[k + 1], W[k + 2]
                a00, a01, a02, a10, a11, a12 = zero, zero, zero, zero, zero, zero
                a20, a21, a22, a30, a31, a32 = zero, zero, zero, zero, zero, zero
                for d in range(D):
                    u0, u1, u2 = w0[d], w1[d], w2[d]
                    v0, v1, v2, v3 = x0[d], x1[d], x2[d], x3[d]
                    a00 += v0 * u0
                    a01 += v0 * u1
                    a02 += v0 * u2
                    a10 += v1 * u0
                    a11 += v1 * u1
                    a12 += v1 * u2
                    a20 += v2 * u0
                    a21 += v2 * u1
                    a22 += v2 * u2
                    a30 += v3 * u0
                    a31 += v3 * u1
                    a32 += v3 * u2
                Z[i, k], Z[i + 1, k], Z[i + 2, k], Z[i + 3, k] = a00 + b[k], a10 + b[k], a20 + b[k], a30 + b[k]
                k1, k2 = k + 1, k + 2
                Z[i, k1], Z[i + 1, k1], Z[i + 2, k1], Z[i + 3, k1] = a01 + b[k1], a11 + b[k1], a21 + b[k1], a31 + b[k1]
                Z[i, k2], Z[i + 1, k2], Z[i + 2, k2], Z[i + 3, k2] = a02 + b[k2], a12 + b[k2], a22 + b[k2], a32 + b[k2]
                k += 3
            while k < K:
                wk = W[k]
                a0, a1, a2, a3 = zero, zero, zero, zero
                for d in range(D):
                    wd = wk[d]
                    a0 += x0[d] * wd
                    a1 += x1[d] * wd
                    a2 += x2[d] * wd
                    a3 += x3[d] * wd
                Z[i, k], Z[i + 1, k], Z[i + 2, k], Z[i + 3, k] = a0 + b[k], a1 + b[k], a2 + b[k], a3 + b[k]
                k += 1
            i += 4
        while i < m:
            x0 = X[rows[s + i]]
            for k in range(K):
                wk = W[k]
                acc = zero
                for d in range(D):
                    acc += x0[d] * wk[d]
                Z[i, k] = acc + b[k]
            i += 1

    @njit(fastmath=FLAGS, cache=True)
    def _tile_gradient_k(X, rows, s, m, Z, G):
        """``G += Z[:m]^T X[rows[s:s+m]]`` (``G (K, D)``), four rows by three outputs at a time (then
        two, then one): each loaded entry of X serves three outputs, each load and store of ``G``
        four rows. Each entry of ``G`` gets the same sums whatever the grouping of the outputs: by
        threes it is the same bits as by twos, and about 20% faster on AVX2 code (benchmarks/README.md)."""
        K, D = G.shape
        i = 0
        while i + 4 <= m:
            x0, x1, x2, x3 = X[rows[s + i]], X[rows[s + i + 1]], X[rows[s + i + 2]], X[rows[s + i + 3]]
            k = 0
            while k + 3 <= K:
                q00, q10, q20, q30 = Z[i, k], Z[i + 1, k], Z[i + 2, k], Z[i + 3, k]
                q01, q11, q21, q31 = Z[i, k + 1], Z[i + 1, k + 1], Z[i + 2, k + 1], Z[i + 3, k + 1]
                q02, q12, q22, q32 = Z[i, k + 2], Z[i + 1, k + 2], Z[i + 2, k + 2], Z[i + 3, k + 2]
                g0, g1, g2 = G[k], G[k + 1], G[k + 2]
                for d in range(D):
                    v0, v1, v2, v3 = x0[d], x1[d], x2[d], x3[d]
                    g0[d] += q00 * v0 + q10 * v1 + q20 * v2 + q30 * v3
                    g1[d] += q01 * v0 + q11 * v1 + q21 * v2 + q31 * v3
                    g2[d] += q02 * v0 + q12 * v1 + q22 * v2 + q32 * v3
                k += 3
            while k + 2 <= K:
                q00, q10, q20, q30 = Z[i, k], Z[i + 1, k], Z[i + 2, k], Z[i + 3, k]
                q01, q11, q21, q31 = Z[i, k + 1], Z[i + 1, k + 1], Z[i + 2, k + 1], Z[i + 3, k + 1]
                g0, g1 = G[k], G[k + 1]
                for d in range(D):
                    v0, v1, v2, v3 = x0[d], x1[d], x2[d], x3[d]
                    g0[d] += q00 * v0 + q10 * v1 + q20 * v2 + q30 * v3
                    g1[d] += q01 * v0 + q11 * v1 + q21 * v2 + q31 * v3
                k += 2
            if k < K:
                q0, q1, q2, q3 = Z[i, k], Z[i + 1, k], Z[i + 2, k], Z[i + 3, k]
                gk = G[k]
                for d in range(D):
                    gk[d] += q0 * x0[d] + q1 * x1[d] + q2 * x2[d] + q3 * x3[d]
            i += 4
        while i < m:
            x0 = X[rows[s + i]]
            for k in range(K):
                q0 = Z[i, k]
                gk = G[k]
                for d in range(D):
                    gk[d] += q0 * x0[d]
            i += 1


    @njit(fastmath=FLAGS, cache=True)
    def _softmax_tile_f32(Z, Y, rows, s, m, flat, e, kbuf, gb, loss, comp):
        """The softmax link on a float32 tile of logits ``Z[:m]`` (``(TILE, K)``; ``flat`` is the same
        memory as one row): each row's maximum taken out, then the exponentials of the whole tile at
        once by :func:`~torch_logreg.steps.poly_f32.exp_neg_abs` (vectorised, within 1.5 ulp; the C
        library's ``exp`` is a call per entry), then per row in float64 its sum, its loss
        ``-t . log_softmax(z)`` added to the compensated total ``(loss, comp)``, returned, and the
        residuals ``softmax(z) - t`` into ``Z`` and summed into ``gb``."""
        K = Z.shape[1]
        for i in range(m):
            zmax = Z[i, 0]
            for k in range(1, K):
                zmax = max(zmax, Z[i, k])
            for k in range(K):
                Z[i, k] -= zmax
        exp_neg_abs(flat, e, kbuf, m * K)  # every shifted logit is <= 0: exp(-|z|) = exp(z)
        for i in range(m):
            row = rows[s + i]
            total = 0.0
            for k in range(K):
                total += e[i * K + k]
            log_total, inv_total = math.log(total), 1.0 / total
            row_loss = 0.0
            for k in range(K):
                tk = np.float64(Y[row, k])
                row_loss += tk * (log_total - np.float64(Z[i, k]))
                r = e[i * K + k] * inv_total - tk
                Z[i, k] = r
                gb[k] += r
            loss, comp = compensated_add(loss, comp, row_loss)
        return loss, comp

    @njit(fastmath=FLAGS, error_model=ERROR_MODEL, cache=True)
    def _sigmoid_tile_f32(Z, Y, rows, s, m, flat, t, e, kbuf, gb, loss, comp):
        """Independent sigmoid outputs on a float32 tile of logits ``Z[:m]`` (``flat`` its memory as
        one row), the whole tile at once: the targets gathered into ``t``, ``exp(-|z|)`` and
        ``log1p`` by the vectorised polynomials of ``poly_f32``, each entry's loss
        ``softplus(z) - t z`` into ``e`` and residual ``sigmoid(z) - t`` into ``Z``; then per row in
        float64 its loss added to the compensated total ``(loss, comp)``, returned, and the residuals
        summed into ``gb``. (The numpy error model lets the division vectorise: ``jit.ERROR_MODEL``.)"""
        K = Z.shape[1]
        n = m * K
        for i in range(m):
            row = rows[s + i]
            for k in range(K):
                t[i * K + k] = Y[row, k]
        exp_neg_abs(flat, e, kbuf, n)
        one, zero = np.float32(1.0), np.float32(0.0)
        for j in range(n):
            zj, ej, tj = flat[j], e[j], t[j]
            p = (one if zj > zero else ej) / (one + ej)
            e[j] = max(zj, zero) - tj * zj + log1p_unit(ej)
            flat[j] = p - tj
        for i in range(m):
            row_loss = 0.0
            for k in range(K):
                row_loss += np.float64(e[i * K + k])
                gb[k] += np.float64(flat[i * K + k])
            loss, comp = compensated_add(loss, comp, row_loss)
        return loss, comp

    @njit(fastmath=FLAGS, cache=True)
    def rows_kernel_k(X, Y, rows, W, b, link, grad, loss_out):
        """The step of ``K >= 2`` outputs on rows ``X[rows]``, ``Y[rows]`` (``Y (N, K)``):
        ``grad[:K*D] = (R^T X / B)`` row-major, ``grad[K*D:] = sum(R) / B`` (when ``grad`` has
        room for a bias), ``loss_out[0]`` the mean loss; ``b`` has ``K`` entries (zeros for a layer
        without bias). Softmax: the loss of a row is ``-t . log_softmax(z)``, the residual
        ``softmax(z) - t``; sigmoid and identity: each output as in the one-output kernel."""
        B = rows.shape[0]
        K, D = W.shape
        g = np.zeros((K, D), dtype=np.float64)
        g_tile = np.empty((K, D), dtype=X.dtype)
        gb = np.zeros(K, dtype=np.float64)
        Z = np.empty((TILE, K), dtype=X.dtype)  # the tile's logits, then its residuals
        z = np.empty(K, dtype=np.float64)  # a row's logits
        e = np.empty(K, dtype=np.float64)  # and their exponentials (softmax)
        # a float32 softmax or sigmoid link takes the whole tile at once (_softmax_tile_f32,
        # _sigmoid_tile_f32), its exponentials vectorised
        vector = X.itemsize == 4 and link != IDENTITY
        flat = Z.reshape(TILE * K)
        e_tile = np.empty(TILE * K if vector else 0, dtype=X.dtype)
        t_tile = np.empty(TILE * K if vector and link == SIGMOID else 0, dtype=X.dtype)
        kbuf = np.empty(TILE * K if vector else 0, dtype=np.int32)
        loss, comp = 0.0, 0.0
        for s in range(0, B, TILE):
            m = min(TILE, B - s)
            _tile_logits_k(X, rows, s, m, W, b, Z)
            if vector and link == SOFTMAX:
                loss, comp = _softmax_tile_f32(Z, Y, rows, s, m, flat, e_tile, kbuf, gb, loss, comp)
            elif vector:
                loss, comp = _sigmoid_tile_f32(Z, Y, rows, s, m, flat, t_tile, e_tile, kbuf, gb, loss, comp)
            # else the link per row in float64: Z becomes the residual h(z) - t
            for i in range(0 if vector else m):
                row = rows[s + i]
                for k in range(K):
                    z[k] = np.float64(Z[i, k])
                # the row's loss terms are summed first, then added to the total once (compensated)
                row_loss = 0.0
                if link == SOFTMAX:
                    zmax = z[0]
                    for k in range(1, K):
                        zmax = max(zmax, z[k])
                    # the maximum taken out first, as the reference does: a confident row's loss
                    # is then not the difference of two large numbers
                    total = 0.0
                    for k in range(K):
                        z[k] -= zmax
                        e[k] = math.exp(z[k])
                        total += e[k]
                    log_total, inv_total = math.log(total), 1.0 / total
                    for k in range(K):
                        # -t log_softmax(z), and the residual softmax(z) - t from the same exponentials
                        tk = np.float64(Y[row, k])
                        row_loss += tk * (log_total - z[k])
                        r = e[k] * inv_total - tk
                        Z[i, k] = r
                        gb[k] += r
                elif link == SIGMOID:
                    for k in range(K):
                        li, r = _sigmoid_row(z[k], np.float64(Y[row, k]))
                        row_loss += li
                        Z[i, k] = r
                        gb[k] += r
                else:
                    for k in range(K):
                        r = z[k] - np.float64(Y[row, k])
                        row_loss += 0.5 * r * r
                        Z[i, k] = r
                        gb[k] += r
                loss, comp = compensated_add(loss, comp, row_loss)
            # backward: the same rows, still in cache
            g_tile[:] = 0
            _tile_gradient_k(X, rows, s, m, Z, g_tile)
            for k in range(K):
                for d in range(D):
                    g[k, d] += g_tile[k, d]
        scale = 1.0 / B if B else 0.0
        for k in range(K):
            for d in range(D):
                grad[k * D + d] = g[k, d] * scale
        if grad.shape[0] > K * D:
            for k in range(K):
                grad[K * D + k] = gb[k] * scale
        loss_out[0] = (loss + comp) / B if B else np.nan


    # The full-batch step's kernel (``fused_k_cpu``) lives here, beside the kernel it calls: numba's
    # on-disk cache is checked against the caller's source file only, so a kernel compiled from
    # another module would keep running a changed ``rows_kernel_k`` from its stale cache.

    @njit(parallel=True, fastmath=FLAGS, cache=True)
    def chunks_kernel_k(X, Y, rows, W, b, link, n_chunks, width):
        """``rows`` cut into ``n_chunks`` chunks shared among the threads, each through
        :func:`rows_kernel_k`: per chunk ``[sum_n r_n x_n^T (K D, row-major), sum_n r_n (K, with a
        bias), sum_n loss_n]`` in float64, one row of the result per chunk."""
        n = rows.shape[0]
        out = np.zeros((n_chunks, width + 1), dtype=np.float64)
        per = (n + n_chunks - 1) // n_chunks
        for c in prange(n_chunks):
            lo = c * per
            hi = min(n, lo + per)
            if hi > lo:
                rows_kernel_k(X, Y, rows[lo:hi], W, b, link, out[c, :width], out[c, width:])
                for j in range(width + 1):  # the chunk's means back to sums
                    out[c, j] *= hi - lo
        return out


class RowsKernel:
    """The kernel for one layer (the one-output kernel or the ``K``-output one), writing into the
    caller's buffers: ``grad`` (``K D`` or ``K D + K`` entries: the weight row-major, then the
    bias, the model's parameter order) and ``loss`` (one entry), which each call overwrites."""

    def __init__(self, model, grad: Tensor, loss: Tensor) -> None:
        (_, self.layer), = model.named_children()
        self._link = LINKS[model.link]
        self._one = _one_output(model)
        self._grad, self._loss = grad.numpy(), loss.numpy()
        self._row_work = self.layer.weight.numel()  # multiply-adds of a row's logits
        self._zero_bias = np.zeros(self.layer.weight.shape[0], dtype=self._grad.dtype)
        self._ptrs: tuple | None = None  # the parameters' storage, checked each call: a replaced one is re-read

    @staticmethod
    def data(X: Tensor, T: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """``X (N, D)`` and the targets ``T (N, K)`` as the kernels read them: NumPy views, the
        targets contiguous in X's dtype (a copy only where T is not that)."""
        return X.detach().numpy(), T.detach().to(X.dtype).contiguous().numpy()

    def __call__(self, x: np.ndarray, y: np.ndarray, rows: np.ndarray) -> None:
        """One step on the rows ``rows`` (1-D int64 row numbers) of ``x``, ``y`` (as :meth:`data`)."""
        W, b = self.layer.weight, self.layer.bias
        ptrs = (W.data_ptr(), None if b is None else b.data_ptr())
        if ptrs != self._ptrs:  # NumPy views made once per parameter storage, not once per step
            self._ptrs = ptrs
            self._w = W.detach().numpy()
            self._w0 = self._w[0]
            self._b = self._zero_bias if b is None else b.detach().numpy()
        if self._one:
            _rows_kernel(x, y, rows, self._w0, self._b, self._link, self._grad, self._loss)
        elif one_thread(rows.shape[0], self._row_work):
            rows_kernel_k(x, y, rows, self._w, self._b, self._link, self._grad, self._loss)
        else:  # a large batch: chunks of rows on all threads, their sums added in a fixed order
            n, width = rows.shape[0], self._grad.shape[0]
            numba.set_num_threads(threads())
            sums = chunks_kernel_k(x, y, rows, self._w, self._b, self._link, -(-n // CHUNK_ROWS), width).sum(axis=0)
            np.multiply(sums[:width], 1.0 / n, out=self._grad, casting="same_kind")
            self._loss[0] = sums[width] / n
