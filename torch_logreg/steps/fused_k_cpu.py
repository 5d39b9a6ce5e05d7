"""Single-pass fused step of a single-``Linear`` model with ``K`` outputs on CPU (numba).

For the full batch ``X (N, D)``, ``T (N, K)``, with ``h`` the softmax over the outputs (or each
output's sigmoid, or the identity):

    Z = X W^T + b,   R = h(Z) - T,   loss = mean_n loss(z_n, t_n),   dW = R^T X / N,   db = sum_n r_n / N

The torch steps make two passes over X (``X W^T``, then ``R^T X``); with ``K`` of ten or so these
are skinny matrix products that many BLAS run far below the CPU's peak. Here X is cut into chunks
of rows, the chunks are shared out among the threads, and each chunk runs
:mod:`.batch_fused`'s ``K``-output kernel: tiles of 64 rows whose logits, link, loss and gradient
are computed while the rows are in cache, so X is read from memory once, and no copy of it is
made (the feature-major step's transpose costs several steps at set-up). Each chunk sums into
its own float64 buffers; the chunks are added in a fixed order afterwards, and the chunk size
depends on the shape alone, so the result does not depend on the number of threads.

The maths is the reference's (:meth:`StackedModel.objective_and_grad`); tests pin the two together
(float64 to 1e-12 relative, float32 within a bound on the rounding of the sums).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .. import penalty
from ..models import single_linear
from . import batch_fused, jit
from .base import Step

jit.threads_as_torch()  # before numba's import (jit.threads_as_torch says why)
try:  # pragma: no branch - numba is installed with the package; guard for a broken install
    import numba
except ImportError:  # pragma: no cover
    numba = None

#: the fixed rule (``step="rule"``) takes this step, for several outputs, from this many features
#: and up to this many outputs: there it beat the feature-major step per step on the reference
#: Intel machine, with no copy of X to make; narrower X or more outputs favour feature-major
#: (figures: benchmarks/README.md). A run too short for the kernels keeps to the torch path
#: (``select.kernels_pay``).
RULE_MIN_FEATURES = 512
RULE_MAX_OUTPUTS = 16
#: for a float32 softmax or sigmoid link, whose exponentials the kernel takes a tile at a time
#: (vectorised; ``batch_fused._softmax_tile_f32``, ``_sigmoid_tile_f32``), from this many features:
#: there it beat feature-major per step for 3 to 16 outputs on the reference Intel machine, before
#: feature-major's copy of X; at 50 features it lost (figures: benchmarks/README.md)
RULE_MIN_FEATURES_VECTOR_LINK = 128
#: most chunks of rows a step is cut into (fewer for small N: at least one tile of rows each); a
#: fixed count, not one per thread, so the sums' order is the same on any machine
MAX_CHUNKS = 64


def rule_min_features(model, dtype: torch.dtype) -> int:
    """From how many features the fixed rule takes this step for ``model`` on X of ``dtype``."""
    vector = dtype == torch.float32 and model.link in ("softmax", "sigmoid")
    return RULE_MIN_FEATURES_VECTOR_LINK if vector else RULE_MIN_FEATURES


def problem(model, X: Tensor) -> str | None:
    """Why this step cannot run on ``X`` (the end of a sentence), or None."""
    if numba is None:
        return "needs numba, which cannot be imported here"
    if X.device.type != "cpu":
        return f"runs on the CPU for more than one output, not on {X.device}"
    if single_linear(model) is None or model.link not in batch_fused.LINKS:
        return "needs a model that is one Linear layer"
    if X.dtype not in (torch.float32, torch.float64) or X.dtype != model.dtype:
        return f"needs float32 or float64 data in the model's dtype, not {str(X.dtype).removeprefix('torch.')}"
    if X.dim() != 2 or not X.is_contiguous():
        return "needs X as one contiguous 2-D tensor"
    return None


class FusedKStep(Step):
    """``step(X, T, l2) -> (loss, grads)`` on fixed full-batch data in one pass over X, like
    ``objective_and_grad``, for any number of outputs (see the module docstring)."""

    name = "fused_k_cpu"

    def __init__(self, model, X: Tensor, T: Tensor) -> None:
        why = problem(model, X)
        if why is not None:
            raise TypeError(f"the fused K-output CPU step {why}")
        (self.prefix, self.layer), = model.named_children()
        n, k = X.shape[0], self.layer.weight.shape[0]
        self._x, self._y = X.detach().numpy(), T.detach().reshape(n, k).to(X.dtype).contiguous().numpy()
        self._rows = np.arange(n, dtype=np.int64)
        self._link = batch_fused.LINKS[model.link]
        self._n = n
        self._chunks = max(1, min(MAX_CHUNKS, -(-n // batch_fused.TILE)))
        self._width = self.layer.weight.numel() + (0 if self.layer.bias is None else k)
        self._zero_bias = np.zeros(k, dtype=self._x.dtype)
        self._threads = batch_fused.threads()

    @torch.no_grad()
    def step(self, X: Tensor, T: Tensor, l2: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
        """Bound to the data it was built for: ``X`` and ``T`` are that data (not read again)."""
        W, b = self.layer.weight, self.layer.bias
        numba.set_num_threads(self._threads)
        bias = self._zero_bias if b is None else b.detach().numpy()
        sums = batch_fused.chunks_kernel_k(self._x, self._y, self._rows, W.detach().numpy(), bias, self._link,
                                           self._chunks, self._width)
        means = torch.from_numpy(sums.sum(axis=0)) / self._n if self._n else torch.full((self._width + 1,), np.nan)
        if not self._n:
            means[:-1] = 0.0  # no rows: zero gradients and a NaN loss, as the reference
        k, d = W.shape
        grad_weight = means[: k * d].view(k, d).to(W.dtype)
        loss = penalty.add_in_place(means[-1].to(W.dtype), grad_weight, W, l2)
        grads = {f"{self.prefix}.weight": grad_weight}
        if b is not None:
            grads[f"{self.prefix}.bias"] = means[k * d : k * d + k].to(W.dtype)
        return loss, grads
