"""The numba kernels of :mod:`~torch_logreg.solvers.coordinate` (imported when that solver runs, so importing
the package does not load numba): the logits, the per-row derivatives, the gradient, the curvatures and
the coordinate-descent passes on X held by columns (CSC arrays ``indptr``, ``indices``, ``data``), all in
float64 on one thread."""

from __future__ import annotations

import math

import numpy as np

from ..steps import jit

jit.threads_as_torch()  # before numba's import (jit.threads_as_torch says why)
try:  # pragma: no branch - numba is installed with the package; guard for a broken install
    import numba
    from numba import njit
except ImportError:  # pragma: no cover
    numba = None

#: added to every coordinate's curvature (newGLMNET's nu), so a column on which the curvature vanishes
#: (saturated probabilities, an empty column without l2) still has a finite update
NU = 1e-12


def available() -> bool:
    """Whether numba can be imported (the inner loops need it)."""
    return numba is not None


if numba is not None:

    @njit(cache=True)
    def logits(indptr, indices, data, w, b, z):
        """``z = X w + b`` from the columns with a nonzero weight."""
        z[:] = b
        for j in range(w.shape[0]):
            wj = w[j]
            if wj != 0.0:
                for p in range(indptr[j], indptr[j + 1]):
                    z[indices[p]] += wj * data[p]

    @njit(cache=True)
    def derivatives(z, t, v, sigmoid, r, h):
        """The weighted loss ``sum_n v_n loss_n`` (``v`` holds ``w_n / N``) and, per row, ``r`` and ``h``."""
        total = 0.0
        for n in range(z.shape[0]):
            zn = z[n]
            if sigmoid:
                if zn >= 0:
                    e = math.exp(-zn)
                    p = 1.0 / (1.0 + e)
                    loss = math.log1p(e) + zn - t[n] * zn
                else:
                    e = math.exp(zn)
                    p = e / (1.0 + e)
                    loss = math.log1p(e) - t[n] * zn
                r[n] = v[n] * (p - t[n])
                h[n] = v[n] * p * (1.0 - p)
            else:
                res = zn - t[n]
                loss = 0.5 * res * res
                r[n] = v[n] * res
                h[n] = v[n]
            total += v[n] * loss
        return total

    @njit(cache=True)
    def trial_loss(z, dz, db, step, t, v, sigmoid):
        """``sum_n v_n loss(z_n + step (dz_n + db), t_n)``: a line-search trial in ``O(N)``."""
        total = 0.0
        for n in range(z.shape[0]):
            zn = z[n] + step * (dz[n] + db)
            if sigmoid:
                if zn >= 0:
                    loss = math.log1p(math.exp(-zn)) + zn - t[n] * zn
                else:
                    loss = math.log1p(math.exp(zn)) - t[n] * zn
            else:
                res = zn - t[n]
                loss = 0.5 * res * res
            total += v[n] * loss
        return total

    @njit(cache=True)
    def gradient(indptr, indices, data, r, g):
        """``g_j = sum_n x_nj r_n`` for every column."""
        for j in range(g.shape[0]):
            s = 0.0
            for p in range(indptr[j], indptr[j + 1]):
                s += data[p] * r[indices[p]]
            g[j] = s

    @njit(cache=True)
    def curvatures(indptr, indices, data, h, work, l2, hd, hx):
        """For the working columns: ``hd_j = sum_n h_n x_nj^2 + l2 + NU`` and ``hx_j = sum_n h_n x_nj``."""
        for i in range(work.shape[0]):
            j = work[i]
            s2 = 0.0
            s1 = 0.0
            for p in range(indptr[j], indptr[j + 1]):
                hv = h[indices[p]] * data[p]
                s1 += hv
                s2 += hv * data[p]
            hd[j] = s2 + l2 + NU
            hx[j] = s1

    @njit(cache=True)
    def cd_pass(cols, m, indptr, indices, data, h, g, hd, hx, w, u, dz, state, l1, l2, gb, hb, bias):
        """One cyclic pass over ``cols[:m]`` (then the bias); ``state`` holds ``[d_b, sum_n h_n dz_n]``.
        Returns the largest ``H_j |change|``."""
        db = state[0]
        hdz = state[1]
        big = 0.0
        for i in range(m):
            j = cols[i]
            s = 0.0
            for p in range(indptr[j], indptr[j + 1]):
                k = indices[p]
                s += data[p] * h[k] * dz[k]
            grad = g[j] + s + db * hx[j] + l2 * (u[j] - w[j])
            hj = hd[j]
            a = hj * u[j] - grad
            if a > l1:
                new = (a - l1) / hj
            elif a < -l1:
                new = (a + l1) / hj
            else:
                new = 0.0
            delta = new - u[j]
            if delta != 0.0:
                u[j] = new
                for p in range(indptr[j], indptr[j + 1]):
                    dz[indices[p]] += delta * data[p]
                hdz += delta * hx[j]
                change = hj * abs(delta)
                if change > big:
                    big = change
        if bias:
            delta = -(gb + hdz + db * hb) / hb
            db += delta
            change = hb * abs(delta)
            if change > big:
                big = change
        state[0] = db
        state[1] = hdz
        return big

    @njit(cache=True)
    def coordinate_descent(work, indptr, indices, data, h, g, hd, hx, w, u, dz, state, l1, l2, gb, hb, bias, tol,
                           max_passes):
        """Cyclic passes over the working set until a full pass changes no coordinate by more than ``tol``
        (as ``H_j |change|``); between full passes, passes over its nonzero coordinates until they settle.
        Returns the number of passes."""
        nw = work.shape[0]
        nonzero = np.empty(nw, dtype=work.dtype)
        passes = 0
        while passes < max_passes:
            big = cd_pass(work, nw, indptr, indices, data, h, g, hd, hx, w, u, dz, state, l1, l2, gb, hb, bias)
            passes += 1
            if big <= tol:
                break
            na = 0
            for i in range(nw):
                if u[work[i]] != 0.0:
                    nonzero[na] = work[i]
                    na += 1
            while passes < max_passes:
                big = cd_pass(nonzero, na, indptr, indices, data, h, g, hd, hx, w, u, dz, state, l1, l2, gb, hb, bias)
                passes += 1
                if big <= tol:
                    break
        return passes

    @njit(cache=True)
    def csr_to_csc(crow, col, values, n_cols):
        """The CSC arrays ``(indptr, indices, data)`` of a CSR matrix (a counting sort by column, ``O(nnz)``;
        the rows of each column come out in increasing order)."""
        nnz = col.shape[0]
        indptr = np.zeros(n_cols + 1, dtype=np.int64)
        for p in range(nnz):
            indptr[col[p] + 1] += 1
        for j in range(n_cols):
            indptr[j + 1] += indptr[j]
        fill = indptr[:-1].copy()
        indices = np.empty(nnz, dtype=np.int64)
        data = np.empty(nnz, dtype=np.float64)
        for i in range(crow.shape[0] - 1):
            for p in range(crow[i], crow[i + 1]):
                q = fill[col[p]]
                indices[q] = i
                data[q] = values[p]
                fill[col[p]] = q + 1
        return indptr, indices, data

    @njit(cache=True)
    def softmax_derivatives(Z, T, v, k, r, h):
        """Softmax: the weighted loss ``sum_n v_n (s_n lse(z_n) - t_n^T z_n)`` (``s_n = sum_j t_nj``) of the logits
        ``Z`` ``(K, N)`` and, per row, class ``k``'s ``r = v (s p_k - t_k)`` and curvature ``h = v s p_k (1 - p_k)``."""
        n_classes = Z.shape[0]
        total = 0.0
        for n in range(Z.shape[1]):
            m = Z[0, n]
            for j in range(1, n_classes):
                m = max(m, Z[j, n])
            s = 0.0
            tsum = 0.0
            tz = 0.0
            for j in range(n_classes):
                s += math.exp(Z[j, n] - m)
                tsum += T[j, n]
                tz += T[j, n] * Z[j, n]
            lse = m + math.log(s)
            p = math.exp(Z[k, n] - lse)
            r[n] = v[n] * (tsum * p - T[k, n])
            h[n] = v[n] * tsum * p * (1.0 - p)
            total += v[n] * (tsum * lse - tz)
        return total

    @njit(cache=True)
    def softmax_trial_loss(Z, k, dz, db, step, T, v):
        """The softmax loss with class ``k``'s logits moved to ``Z[k] + step (dz + db)``, in ``O(N K)``."""
        n_classes = Z.shape[0]
        total = 0.0
        for n in range(Z.shape[1]):
            shift = step * (dz[n] + db)
            m = Z[0, n] + (shift if k == 0 else 0.0)
            for j in range(1, n_classes):
                m = max(m, Z[j, n] + (shift if j == k else 0.0))
            s = 0.0
            tsum = 0.0
            tz = 0.0
            for j in range(n_classes):
                zj = Z[j, n] + (shift if j == k else 0.0)
                s += math.exp(zj - m)
                tsum += T[j, n]
                tz += T[j, n] * zj
            total += v[n] * (tsum * (m + math.log(s)) - tz)
        return total
