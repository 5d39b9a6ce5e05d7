"""Pure tensor maths: links, losses on logits and their closed-form gradients.

Nothing here holds state or calls autograd. Every loss takes logits ``z`` of shape ``(N, K)``
and targets ``t`` of the same shape and returns ``(loss, grad)`` where

* ``loss`` is a 0-dim tensor: the mean over the N samples of the per-sample loss, the
  per-sample loss being summed over the K outputs;
* ``grad`` is ``d loss / d z``, shape ``(N, K)``.

For every link/loss pair the gradient has the same shape, ``(h(z) - t) / N`` with ``h`` the
link (sigmoid, softmax or identity). That shared form is what lets one ``Linear`` layer and one
update loop serve logistic, multi-label, softmax and linear regression.

Numerics: ``log(sigmoid(z))`` and ``log(1 - sigmoid(z))`` are never formed. The binary
cross-entropy is written as ``max(z, 0) - t*z + log1p(exp(-|z|))`` and the categorical one
through ``log_softmax``, so logits of +-1e4 give finite losses and exact gradients.
"""

from __future__ import annotations

import torch
from torch import Tensor

# --- links -----------------------------------------------------------------------------------


def sigmoid(z: Tensor) -> Tensor:
    """``1 / (1 + exp(-z))``, elementwise; saturates to exactly 0 or 1 without overflow."""
    return torch.sigmoid(z)


def softmax(z: Tensor) -> Tensor:
    """Softmax over the last dimension (the K classes) of ``z`` with shape ``(N, K)``."""
    return torch.softmax(z, dim=-1)


def identity(z: Tensor) -> Tensor:
    return z


def log_sigmoid(z: Tensor) -> Tensor:
    """``log(sigmoid(z)) = -softplus(-z) = min(z, 0) - log1p(exp(-|z|))``, stable for any z."""
    return torch.clamp(z, max=0) - torch.log1p(torch.exp(-torch.abs(z)))


# --- losses on logits ------------------------------------------------------------------------


def _samples(z: Tensor, sample_weight: Tensor | None, class_dim: int) -> tuple[int, Tensor | None]:
    """Number of samples N, and the weights shaped to broadcast against ``z``.

    ``class_dim`` says where the K outputs are: 1 (or -1) for the usual ``(N, K)`` logits, 0 for
    the class-major ``(K, N)`` layout the full-batch fast path uses.
    """
    if class_dim in (1, -1):
        return z.shape[0], None if sample_weight is None else sample_weight[:, None]
    return z.shape[1], None if sample_weight is None else sample_weight[None, :]


def binary_cross_entropy(
    z: Tensor, t: Tensor, sample_weight: Tensor | None = None, class_dim: int = 1
) -> tuple[Tensor, Tensor]:
    """Negative log-likelihood of independent Bernoulli outputs ``p = sigmoid(z)``.

    Per element: ``-t log p - (1 - t) log(1 - p) = max(z, 0) - t z + log1p(exp(-|z|))``.
    Gradient: ``(sigmoid(z) - t) / N``. With ``sample_weight`` ``w`` of shape ``(N,)`` the loss
    is ``(1/N) sum_n w_n loss_n`` and the gradient ``w_n (sigmoid(z_n) - t_n) / N``.
    """
    n, w = _samples(z, sample_weight, class_dim)
    # softplus(z) = log(1 + e^z) = logaddexp(z, 0), evaluated stably as max(z, 0) + log1p(e^-|z|)
    # in one pass; the in-place update is safe for autograd (logaddexp's backward needs only its
    # inputs), so these losses can also be differentiated twice, e.g. to check Hessians.
    per_element = torch.logaddexp(z, z.new_zeros(())).addcmul_(t, z, value=-1)
    residual = torch.sigmoid(z) - t
    if w is not None:
        per_element, residual = per_element * w, residual * w
    loss = per_element.sum() / n
    grad = residual / n
    return loss, grad


def categorical_cross_entropy(
    z: Tensor, t: Tensor, sample_weight: Tensor | None = None, class_dim: int = 1
) -> tuple[Tensor, Tensor]:
    """Negative log-likelihood of a categorical output ``p = softmax(z)``.

    ``t`` holds one-hot rows (or probability rows summing to one). Per sample:
    ``-sum_k t_k log p_k``. Gradient: ``(softmax(z) - t) / N``. With ``sample_weight`` ``w``
    ``(N,)``, sample ``n``'s loss and gradient row are multiplied by ``w_n``.
    """
    n, w = _samples(z, sample_weight, class_dim)
    log_p = torch.log_softmax(z, dim=class_dim)
    per_element = t * log_p
    residual = torch.exp(log_p) - t
    if w is not None:
        per_element, residual = per_element * w, residual * w
    loss = -per_element.sum() / n
    grad = residual / n
    return loss, grad


def half_squared_error(
    z: Tensor, t: Tensor, sample_weight: Tensor | None = None, class_dim: int = 1
) -> tuple[Tensor, Tensor]:
    """Gaussian negative log-likelihood up to constants: ``0.5 * sum_k (z_k - t_k)^2``.

    Gradient: ``(z - t) / N``; with ``sample_weight`` ``w`` ``(N,)`` both scale by ``w_n``.
    """
    n, w = _samples(z, sample_weight, class_dim)
    residual = z - t
    if w is None:
        loss = 0.5 * (residual * residual).sum() / n
        grad = residual / n
    else:
        loss = 0.5 * (w * residual * residual).sum() / n
        grad = w * residual / n
    return loss, grad


#: link name -> (link function, loss on logits)
LINKS = {
    "sigmoid": (sigmoid, binary_cross_entropy),
    "softmax": (softmax, categorical_cross_entropy),
    "identity": (identity, half_squared_error),
}


# --- curvature (second derivatives) of the losses on logits ---------------------------------
#
# The Newton solver needs d^2 loss / d theta^2 for a single linear layer ``z = x~ Theta^T`` with
# the augmented input ``x~ = [1, x]`` (shape ``(N, A)``, A = D + 1 with a bias, D without) and
# ``Theta = [b, W]`` of shape ``(K, A)``. Writing ``d^2 loss_n / dz_n^2 = S_n`` (K x K), the
# Hessian of the mean loss is ``sum_n w_n / N  S_n (x) x~_n x~_n^T`` (Kronecker product), i.e.
# ``H[k, a, l, c] = sum_n w_n S_n[k, l] x~_na x~_nc / N``. For sigmoid and identity outputs
# ``S_n`` is diagonal (the K outputs are independent, so H is block diagonal); for softmax
# ``S_n = diag(p_n) - p_n p_n^T``.


def diagonal_curvature(link: str, z: Tensor, sample_weight: Tensor | None = None) -> Tensor:
    """Per-sample diagonal curvature ``s`` ``(N, K)`` of a sigmoid or identity loss, divided by N.

    sigmoid: ``s = w p (1 - p) / N`` with ``p = sigmoid(z)``, computed as ``e / (1 + e)^2`` with
    ``e = exp(-|z|)``: ``1 - p`` loses its digits where ``p`` is near 1 (all of them from ``z`` of
    about 37 in float64, where ``p (1 - p)`` would be 0); identity: ``s = w / N``. (Newton's kernel,
    ``solvers/hessian_rows.py``, computes the same.)
    """
    n = z.shape[0]
    if link == "sigmoid":
        e = torch.exp(-z.abs())
        s = e / (1 + e).square()
    elif link == "identity":
        s = torch.ones_like(z)
    else:
        raise ValueError(f"diagonal_curvature: link must be 'sigmoid' or 'identity', got {link!r}")
    if sample_weight is not None:
        s = s * sample_weight[:, None]
    return s / n


#: bytes of X in a block of rows of :func:`gram` on the CPU: the block and its scaled copy stay in
#: the core's caches from the scaling to the product, and no ``(N, D)`` temporary is made
ROW_BLOCK_BYTES = 1 << 21
#: the fewest rows in such a block (a wide X): fewer would leave the product too short a sum
MIN_BLOCK_ROWS = 256


def row_blocks(x: Tensor) -> list[tuple[int, int]]:
    """The ranges ``(start, stop)`` of rows in which :func:`gram` forms ``x^T diag(s) x`` for a dense
    ``x`` ``(N, D)``: blocks of about :data:`ROW_BLOCK_BYTES` (at least :data:`MIN_BLOCK_ROWS` rows)
    on the CPU, in row order; the whole of ``x`` on other devices, where blocks would only add
    kernel launches. Fixed by the shape, so the sums' order does not depend on the thread count."""
    n, d = x.shape
    if x.device.type != "cpu":
        return [(0, n)]
    rows = max(MIN_BLOCK_ROWS, ROW_BLOCK_BYTES // max(1, d * x.element_size()))
    return [(start, min(n, start + rows)) for start in range(0, n, rows)] or [(0, 0)]


def row_block_buffer(x: Tensor, blocks: list[tuple[int, int]]) -> Tensor:
    """An empty buffer like ``x`` with the rows of the largest of ``blocks`` (:func:`row_blocks`),
    for a block of ``x`` scaled row by row."""
    return x.new_empty(max(stop - start for start, stop in blocks), x.shape[1])


def gram(x: Tensor, s: Tensor, bias: bool = False) -> Tensor:
    """``x~^T diag(s) x~`` ``(A, A)`` for x ``(N, D)`` dense or CSR and ``s`` ``(N,)``, where
    ``x~ = [1, x]`` (``A = D + 1``) when ``bias``, else ``x`` itself: the column of ones is never
    made for dense ``x``; its row and column are ``sum(s)`` and ``x^T s``.

    A dense ``x`` is summed in blocks of rows (:func:`row_blocks`): each block is scaled into a
    small buffer and its product added while both are in the CPU's caches, so X is read from
    memory once and no ``(N, D)`` copy of it is made (forming one cost about half as much as the
    product: benchmarks/README.md). A CSR ``x`` (with its column of
    ones prepended) takes :func:`weighted_gram`'s sparse product."""
    if x.layout != torch.strided:
        return weighted_gram(csr_prepend_ones(x) if bias else x, s)
    blocks = row_blocks(x)
    buffer = row_block_buffer(x, blocks) if len(blocks) > 1 else None
    inner: Tensor | None = None
    border: Tensor | None = None
    for start, stop in blocks:
        xb, sb = x[start:stop], s[start:stop]
        scaled = xb * sb[:, None] if buffer is None else torch.mul(xb, sb[:, None], out=buffer[: stop - start])
        if inner is None:
            inner = xb.T @ scaled
            border = xb.T @ sb if bias else None
        else:
            inner.addmm_(xb.T, scaled)
            if border is not None:
                border.addmv_(xb.T, sb)
    assert inner is not None  # row_blocks gives at least one block
    return inner if border is None else bordered(inner, s.sum(), border)


def bordered(inner: Tensor, corner, border: Tensor) -> Tensor:
    """``[[corner, border^T], [border, inner]]`` ``(D + 1, D + 1)``: a Gram matrix of ``[1, x]``
    from its parts (:func:`gram` sums them, and so do Newton's other products)."""
    h = inner.new_empty(inner.shape[0] + 1, inner.shape[1] + 1)
    h[1:, 1:] = inner
    h[0, 0] = corner
    h[1:, 0] = border
    h[0, 1:] = border
    return h


def block_diagonal_hessian(x: Tensor, s: Tensor, bias: bool = False) -> Tensor:
    """``H_k = x~^T diag(s[:, k]) x~`` for each output k: x ``(N, D)``, s ``(N, K)`` -> ``(K, A, A)``,
    with ``x~`` as in :func:`gram` (``[1, x]`` when ``bias``), each block by :func:`gram`.

    The Hessian of a sigmoid/identity loss on ``z = x~ Theta^T``, one ``(A, A)`` block per output
    (:func:`diagonal_curvature` gives ``s``).
    """
    return torch.stack([gram(x, s[:, k], bias) for k in range(s.shape[1])])


def softmax_hessian(
    x: Tensor, p: Tensor, sample_weight: Tensor | None = None, chunk_size: int | None = None
) -> Tensor:
    """Full Hessian of the mean categorical cross-entropy with respect to ``Theta`` ``(K, A)``.

    ``H[k, a, l, c] = sum_n w_n (p_nk delta_kl - p_nk p_nl) x_na x_nc / N`` with x ``(N, A)``
    and ``p = softmax(z)`` ``(N, K)``; returned as ``(K, A, K, A)``. The rank-one part
    ``sum_n (p_n (x) x_n)(p_n (x) x_n)^T`` is one ``(KA, KA)`` matrix product per chunk of rows
    (``chunk_size`` rows at a time, chosen so the ``(chunk, K*A)`` buffer stays near 16M entries).
    Cost ``O(N K^2 A^2)``. A CSR ``x`` is never densified: each block ``(k, l)``, ``l >= k``, is
    :func:`weighted_gram` of the weights ``w (p_k delta_kl - p_k p_l)``.
    """
    n, a = x.shape
    k = p.shape[1]
    w = p.new_full((n,), 1.0 / n) if sample_weight is None else sample_weight / n
    pw = p * w[:, None]
    h = torch.zeros(k, a, k, a, dtype=x.dtype, device=x.device)
    if x.layout != torch.strided:
        # sparse x: block (j, l) is x^T diag(w (p_j delta_jl - p_j p_l)) x, a sparse product each
        xt = csr_transpose(x)
        for j in range(k):
            for m in range(j, k):
                v = pw[:, j] * ((1.0 if j == m else 0.0) - p[:, m])
                h[j, :, m, :] = weighted_gram(x, v, xt)
                if m != j:
                    h[m, :, j, :] = h[j, :, m, :].T
        return h
    for j in range(k):
        h[j, :, j, :] = x.T @ (x * pw[:, j : j + 1])
    if chunk_size is None:
        chunk_size = max(1, (1 << 24) // (k * a))
    flat = h.view(k * a, k * a)
    for start in range(0, n, chunk_size):
        xs, ps, ws = x[start : start + chunk_size], p[start : start + chunk_size], w[start : start + chunk_size]
        u = (ps[:, :, None] * xs[:, None, :]).reshape(xs.shape[0], k * a)
        flat.sub_((u * ws[:, None]).T @ u)
    return h


# --- sparse CSR helpers (int64 indices, as validation.as_sparse_csr makes them) ----------------


def csr_row_indices(x: Tensor) -> Tensor:
    """The row of each stored entry of the CSR tensor ``x``, ``(nnz,)`` int64 (no host sync)."""
    crow = x.crow_indices()
    counts = crow[1:] - crow[:-1]
    rows = torch.arange(x.shape[0], device=x.device)
    return torch.repeat_interleave(rows, counts, output_size=x.values().shape[0])


def csr_transpose(x: Tensor) -> Tensor:
    """``x^T`` ``(D, N)`` as a CSR tensor (the CSC view of ``x``, converted once)."""
    return x.t().to_sparse_csr()


def csr_scale_rows(x: Tensor, v: Tensor) -> Tensor:
    """``diag(v) x`` for a CSR ``x`` ``(N, D)`` and ``v`` ``(N,)``: the same pattern, scaled values."""
    values = x.values() * v[csr_row_indices(x)]
    return torch.sparse_csr_tensor(x.crow_indices(), x.col_indices(), values, size=x.shape, check_invariants=False)


def csr_rows(x: Tensor, index: Tensor) -> Tensor:
    """The rows ``index`` ``(B,)`` of a CSR ``x`` as a ``(B, D)`` CSR tensor, in that order (torch has
    no ``index_select`` for CSR): each row's slice of ``col_indices`` and ``values`` gathered.
    Reads the batch's entry count back from the device once."""
    crow = x.crow_indices()
    starts, counts = crow[:-1][index], (crow[1:] - crow[:-1])[index]
    new_crow = torch.zeros(index.shape[0] + 1, dtype=crow.dtype, device=x.device)
    torch.cumsum(counts, 0, out=new_crow[1:])
    nnz = int(new_crow[-1])
    # entry e of output row i sits at starts[i] + (e - new_crow[i]) in x
    pos = torch.repeat_interleave(starts - new_crow[:-1], counts, output_size=nnz) + torch.arange(nnz, device=x.device)
    size = (index.shape[0], x.shape[1])
    return torch.sparse_csr_tensor(new_crow, x.col_indices()[pos], x.values()[pos], size=size, check_invariants=False)


def csr_prepend_ones(x: Tensor) -> Tensor:
    """``[1, x]`` ``(N, D + 1)`` for a CSR ``x``: a stored 1 at the start of each row, the columns
    shifted by one (the augmented input of the exact solvers, still sparse)."""
    n = x.shape[0]
    crow, col, values = x.crow_indices(), x.col_indices(), x.values()
    new_crow = crow + torch.arange(n + 1, dtype=crow.dtype, device=x.device)
    size = values.shape[0] + n
    ones_at = new_crow[:-1]
    rest = torch.ones(size, dtype=torch.bool, device=x.device)
    rest[ones_at] = False
    new_col = torch.zeros(size, dtype=col.dtype, device=x.device)
    new_col[rest] = col + 1
    new_values = torch.ones(size, dtype=values.dtype, device=x.device)
    new_values[rest] = values
    return torch.sparse_csr_tensor(new_crow, new_col, new_values, size=(n, x.shape[1] + 1), check_invariants=False)


def weighted_gram(x: Tensor, v: Tensor, xt: Tensor | None = None) -> Tensor:
    """``x^T diag(v) x`` ``(A, A)``, dense, for x ``(N, A)`` dense or CSR and ``v`` ``(N,)``.

    For a CSR ``x`` it is the sparse product ``x^T (diag(v) x)`` (``xt``: ``csr_transpose(x)``
    if already made), densified only as the ``(A, A)`` result."""
    if x.layout == torch.strided:
        return x.T @ (x * v[:, None])
    if xt is None:
        xt = csr_transpose(x)
    return torch.sparse.mm(xt, csr_scale_rows(x, v)).to_dense()


# --- layer maths (forward and backward side by side) -----------------------------------------


def linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``x W^T + b``: x ``(N, D)``, weight ``(K, D)``, bias ``(K,)`` -> ``(N, K)``."""
    if bias is None:
        return x @ weight.T
    return torch.addmm(bias, x, weight.T)


def linear_backward(
    grad_output: Tensor, x: Tensor, weight: Tensor, has_bias: bool, need_input_grad: bool = True
) -> tuple[Tensor | None, Tensor, Tensor | None]:
    """Gradients of ``linear`` given ``grad_output = dL/dy`` of shape ``(N, K)``.

    Returns ``(dL/dx = g W, dL/dW = g^T x, dL/db = sum_n g)``; ``dL/dx`` is skipped (None) when
    not needed, which for the first layer saves an (N, D) product.
    """
    if x.layout != torch.strided:  # sparse x (CSR): a dense-sparse product, no strided view of x
        grad_weight = grad_output.T @ x
    elif grad_output.shape[1] == 1:  # one output: a matrix-vector product reads x a little faster
        grad_weight = torch.mv(x.T, grad_output[:, 0])[None, :]
    else:
        grad_weight = grad_output.T @ x
    grad_bias = grad_output.sum(dim=0) if has_bias else None
    grad_input = grad_output @ weight if need_input_grad else None
    return grad_input, grad_weight, grad_bias


def sigmoid_backward(grad_output: Tensor, y: Tensor) -> Tensor:
    """``d sigmoid / dz = y (1 - y)`` written in terms of the output ``y = sigmoid(z)``."""
    return grad_output * y * (1 - y)


def tanh_backward(grad_output: Tensor, y: Tensor) -> Tensor:
    """``d tanh / dz = 1 - y^2`` written in terms of the output ``y = tanh(z)``."""
    return grad_output * (1 - y * y)


def relu_backward(grad_output: Tensor, y: Tensor) -> Tensor:
    """``d relu / dz = 1[z > 0]``; ``y > 0`` exactly where ``z > 0``."""
    return grad_output * (y > 0).to(grad_output.dtype)


def batch_norm_forward(x: Tensor, mean: Tensor, var: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """``(xhat, inv_std)``: ``xhat = (x - mean) inv_std``, ``inv_std = 1 / sqrt(var + eps)``.

    ``x`` ``(N, C)``; ``mean`` and ``var`` ``(C,)``: the batch's own (training, ``var`` the
    biased one, ``mean_n (x - mean)^2``) or the running statistics (evaluation).
    """
    inv_std = torch.rsqrt(var + eps)
    return (x - mean) * inv_std, inv_std


def batch_norm_backward(
    grad_output: Tensor, xhat: Tensor, inv_std: Tensor, weight: Tensor | None, batch_stats: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of ``y = weight xhat + bias`` (no weight: ``weight = 1``) given ``g = dL/dy``
    ``(N, C)``: ``dL/dweight = sum_n g xhat``, ``dL/dbias = sum_n g``, and

    * batch statistics (training), where the mean and variance depend on every row:
      ``dL/dx = weight inv_std (g - (sum_n g + xhat sum_n g xhat) / N)``;
    * fixed statistics (evaluation): ``dL/dx = weight inv_std g``.

    Returns ``(dL/dx, dL/dweight, dL/dbias)``, each ``(N, C)`` or ``(C,)``.
    """
    grad_weight = (grad_output * xhat).sum(dim=0)
    grad_bias = grad_output.sum(dim=0)
    g = grad_output
    if batch_stats:
        g = g - (grad_bias + xhat * grad_weight) / grad_output.shape[0]
    scale = inv_std if weight is None else weight * inv_std
    return g * scale, grad_weight, grad_bias
