"""The full-batch step of a single-``Linear`` model in row blocks: each block of X read from
memory once.

The row-major step computes the logits ``Z = X W^T + b`` over all N rows, then the gradient
``G^T X``: two passes over X, and the second finds nothing of X left in cache. Where the skinny
products are memory-bound (an AVX2 CPU with MKL: there the logits product alone can cost several
reads of X), :class:`BlockedStep` walks X in blocks of ``R`` rows and does
both products on a block while it is in cache:

    for each block B of R rows (X_B (R, D)):
        Z_B^T = W X_B^T + b 1^T                 (K, R)   the block is read from memory here
        E_B   = the link's loss terms           (K, R)   Z_B^T becomes G_B^T = h(Z_B^T) - T_B^T
        dW   += G_B^T X_B / N                   (K, D)   ... and from cache here
    loss = (the link's sum of E) / N,   db = G^T 1 / N      once each, after the loop

The maths is the reference's in another summation order; tests pin the two together (float64,
1e-12 relative). There is no copy of X (the blocks are views). The blocks' logits are
class-major, as in the feature-major step, so the softmax runs along the leading dimension
(several times faster than along rows of K entries); the logits, the loss terms and the targets
(copied once into that layout) are flat ``(K N,)`` buffers made once, so the loss and the bias
gradient are one reduction each after the loop, not one per block.

Block size (:func:`block_rows`): a block of X plus its rows of logits and loss terms should stay
in the threads' L2 caches until the gradient product has read it: the BLAS splits a block between
its threads, so the budget is half of one core's L2 (``/sys``; 1 MiB where unknown) times the
threads, leaving the other half for W, the gradient and the prefetched next block; rows = budget /
bytes per row (``(D + 2K) x itemsize``), rounded down to a multiple of 64 and at least
:data:`MIN_ROWS`.

Where it wins, where it loses (figures: benchmarks/README.md): it wins where the skinny products
are memory-bound (an AVX2 AMD EPYC with MKL); on an AVX-512 Intel Xeon with MKL they run near the
memory bound anyway, and the feature-major step (or, with one output, the fused kernel) is
faster. Its many small BLAS calls (two per block) are also what suffers most when other
processes share the cores: each call's threads wait at a barrier for one that was descheduled.
So it is never the fixed rule's choice: "auto" measures it on the CPU where the fused kernel does
not apply, and ``step = "blocked"`` forces it.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import Tensor

from .. import penalty
from ..models import single_linear
from .base import Step
from .common import LINKS

#: fewest rows of a block: below it the fixed cost of a block's five or six calls into torch
#: (each BLAS call starting its threads) outweighs the reuse (figures: benchmarks/README.md)
MIN_ROWS = 512
#: one core's L2 where the system does not say (recent x86 server cores have 1-2 MiB, AVX2 Zen 2/3 0.5)
DEFAULT_L2_BYTES = 1 << 20


@functools.cache
def l2_bytes() -> int:
    """One core's L2 cache in bytes (``/sys/devices/system/cpu/cpu0/cache``), else :data:`DEFAULT_L2_BYTES`."""
    try:
        for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
            if (index / "level").read_text().strip() == "2" and (index / "type").read_text().strip() != "Instruction":
                size = (index / "size").read_text().strip().upper()
                scale = {"K": 1 << 10, "M": 1 << 20}.get(size[-1:], 1)
                return int(size.rstrip("KM")) * scale
    except (OSError, ValueError):
        pass
    return DEFAULT_L2_BYTES


def block_rows(n_features: int, n_outputs: int, itemsize: int, threads: int | None = None,
               cache_bytes: int | None = None) -> int:
    """Rows per block: ``cache_bytes`` (default: half of :func:`l2_bytes` times ``threads``, default
    ``torch.get_num_threads()``) over ``(n_features + 2 n_outputs) * itemsize`` bytes a row,
    rounded down to a multiple of 64, at least :data:`MIN_ROWS`."""
    if cache_bytes is None:
        cache_bytes = l2_bytes() // 2 * (threads or torch.get_num_threads())
    rows = cache_bytes // ((n_features + 2 * n_outputs) * itemsize)
    return max(MIN_ROWS, rows // 64 * 64)


class BlockedStep(Step):
    """``step(X, T, l2) -> (loss, grads)`` on fixed full-batch data, like ``objective_and_grad``.

    ``rows``: the rows per block (default :func:`block_rows`). The logits, the loss terms and the
    gradients live in buffers made here, once; the returned gradient tensors are those buffers, so
    the next ``step`` overwrites them: copy them to keep them.

    Each block's logits are class-major, ``Z_B^T = W X_B^T`` ``(K, R)``: the softmax then runs
    along the leading dimension, several times faster than along rows of K entries (as in the
    feature-major step), and the gradient product ``Z_B^T X_B`` takes both operands as stored. The
    blocks' ``(K, R)`` buffers lie one after another in flat ``(K N,)`` tensors, the targets
    copied into the same layout once, so the loss is one reduction over them.
    """

    grads: dict[str, Tensor]  # the buffers every step returns

    name = "blocked"

    def __init__(self, model, X: Tensor, T: Tensor, rows: int | None = None) -> None:
        if single_linear(model) is None:
            raise TypeError("the blocked step needs a model with a single Linear layer")
        (self.prefix, self.layer), = model.named_children()
        self._terms, self._total = LINKS[model.link]
        W, b = self.layer.weight, self.layer.bias
        k, d = W.shape
        n = X.shape[0]
        X = X.detach()  # the caller's rows: blocks are views, never copies
        T = T.detach().reshape(n, k)
        self.rows = rows or block_rows(d, k, X.element_size())
        self._z = X.new_empty(k * n)  # each block's logits (K, R), then its residual h(z) - t
        self._buf = X.new_empty(k * n)  # each entry's loss term, in the same layout
        self._T = X.new_empty(k * n)  # the targets, in the same layout
        self._zero = X.new_zeros(())
        self._grad_weight = torch.empty_like(W)
        self._grad_bias = None if b is None else torch.empty_like(b)
        self.grads = {f"{self.prefix}.weight": self._grad_weight}
        if self._grad_bias is not None:
            self.grads[f"{self.prefix}.bias"] = self._grad_bias
        self._inv_n, self._inv_n_tensor = 1.0 / n, X.new_full((), 1.0 / n)
        # the blocks' views, made once: a step then slices nothing
        self._blocks = []
        for start in range(0, n, self.rows):
            xb = X[start : start + self.rows]
            r = xb.shape[0]
            flat = slice(k * start, k * (start + r))
            zb, bufb, tb = (t[flat].view(k, r) for t in (self._z, self._buf, self._T))
            tb.copy_(T[start : start + r].T)
            self._blocks.append((xb, xb.T, tb, zb, zb[0], bufb))
        # the bias gradient sums each class over every block: the whole blocks as one (blocks, K, R)
        # view, the short last one apart
        whole = n // self.rows
        self._whole = self._z[: k * self.rows * whole].view(whole, k, self.rows)
        self._tail = self._blocks[-1][3] if n % self.rows else None

    @property
    def x_blocks(self) -> list[Tensor]:
        """The blocks of X, ``(R, D)`` each (the last may be shorter): views of the caller's X, not copies."""
        return [block[0] for block in self._blocks]

    @torch.no_grad()
    def step(self, X: Tensor, T: Tensor, l2: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
        """Bound to the data it was built for: ``X`` and ``T`` are that data (not read again)."""
        W, b = self.layer.weight, self.layer.bias
        terms, zero, inv_n, grad_weight = self._terms, self._zero, self._inv_n, self._grad_weight
        single = W.shape[0] == 1
        w, grad_w = W[0], grad_weight[0]
        bias_column = None if b is None else b[:, None]
        beta = 0  # the first block overwrites the gradient (ignoring whatever the buffer held)
        for xb, xbT, tb, zb, z0, bufb in self._blocks:
            # one output: matrix-vector products, the BLAS routine for a one-column product
            if single:
                if b is None:
                    torch.mv(xb, w, out=z0)
                else:
                    torch.addmv(b, xb, w, out=z0)
            elif bias_column is None:
                torch.mm(W, xbT, out=zb)
            else:
                torch.addmm(bias_column, W, xbT, out=zb)
            terms(zb, tb, bufb, zero, 0)  # zb: h(z) - t
            if single:
                torch.addmv(grad_w, xbT, z0, beta=beta, alpha=inv_n, out=grad_w)
            else:
                torch.addmm(grad_weight, zb, xb, beta=beta, alpha=inv_n, out=grad_weight)
            beta = 1
        loss = self._total(self._T, self._buf, self._z).mul_(self._inv_n_tensor)
        if self._grad_bias is not None:
            torch.sum(self._whole, dim=(0, 2), out=self._grad_bias)
            if self._tail is not None:
                self._grad_bias.add_(self._tail.sum(dim=1))
            self._grad_bias.mul_(self._inv_n_tensor)
        return penalty.add_in_place(loss, grad_weight, W, l2), self.grads
