"""Single-pass fused forward + backward on CUDA, as a Triton kernel.

The CUDA counterpart of ``fused_cpu.py``, for the same models (one Linear layer, one sigmoid or
identity output, full batch). Each program owns a contiguous range of rows and walks it in
tiles of ``BLOCK_N`` rows: the tile's logits ``z = X w + b`` over feature blocks of
``BLOCK_D``, the link and loss on those logits, then the same tile again (now in L1/L2) for
``sum_n r_n x_n``. The program adds its sums into its own row of a partial-sums buffer; torch
then sums those rows in float64 in a fixed order. No atomics, so a step is deterministic.

The plain path stays the reference: tests pin this kernel to it, through Triton's interpreter
(``TRITON_INTERPRET=1``, which runs the kernel on CPU tensors) everywhere and compiled on a GPU
where there is one. Triton ships with the CUDA builds of PyTorch; without it, or for anything
this kernel does not cover, the loop keeps the torch fast path.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from .base import Step
from .common import bind_single_pass, fusable, step_from_sums

try:
    import triton
    import triton.language as tl
except ImportError:  # the CPU builds of torch do not ship Triton
    triton = None

#: the selector takes the kernel from this many entries of X (16 MiB in float32). The GPU's own
#: threshold, kept apart from the CPU kernel's (which CPU caches set); the same value until it is
#: measured on GPUs
MIN_ENTRIES = 1 << 22
#: at most this many programs (rows of the partial-sums buffer) per step
MAX_PROGRAMS = 4096
#: rows per tile, and features per block of the inner loops
BLOCK_N = 64
MAX_BLOCK_D = 128


def available() -> bool:
    return triton is not None


def interpreted() -> bool:
    """True when Triton runs kernels in its interpreter (on CPU tensors), as the tests do."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def supports(model, X: Tensor) -> bool:
    """:func:`~torch_logreg.steps.common.fusable` (one Linear layer, one sigmoid or identity output, a contiguous
    float32/float64 X), X on a CUDA device (or on the CPU under Triton's interpreter), and
    Triton importable."""
    on_device = X.device.type == "cuda" or (X.device.type == "cpu" and interpreted())
    return available() and on_device and fusable(model, X)


if triton is not None:

    @triton.jit
    def _fused_kernel(X, y, w, b, partial, N, D, rows_per_program,
                      SIGMOID: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_N: tl.constexpr,
                      BLOCK_D: tl.constexpr):
        pid = tl.program_id(0).to(tl.int64)  # offsets below may pass 2^31
        first = pid * rows_per_program
        last = tl.minimum(first + rows_per_program, N)
        out = partial + pid * (D + 2)
        r_sum = tl.zeros([BLOCK_N], dtype=X.dtype.element_ty)
        loss_sum = tl.zeros([BLOCK_N], dtype=X.dtype.element_ty)
        for start in range(first, last, BLOCK_N):
            rows = start + tl.arange(0, BLOCK_N)
            row_ok = rows < last
            row_offsets = rows.to(tl.int64)[:, None] * D  # N x D may pass 2^31
            # forward: the tile's logits
            z = tl.zeros([BLOCK_N], dtype=X.dtype.element_ty)
            for d0 in range(0, D, BLOCK_D):
                cols = d0 + tl.arange(0, BLOCK_D)
                col_ok = cols < D
                x = tl.load(X + row_offsets + cols[None, :], mask=row_ok[:, None] & col_ok[None, :], other=0.0)
                wv = tl.load(w + cols, mask=col_ok, other=0.0)
                z += tl.sum(x * wv[None, :], axis=1)
            if HAS_BIAS:
                z += tl.load(b)
            t = tl.load(y + rows, mask=row_ok, other=0.0)
            if SIGMOID:
                e = tl.exp(-tl.abs(z))
                p = tl.where(z > 0, 1.0, e) / (1.0 + e)
                # log1p(e) as log(u) * e / (u - 1), u = 1 + e: exact to a few ulp, and e itself
                # where u rounds to 1
                u = 1.0 + e
                log1p_e = tl.where(u == 1.0, e, tl.log(u) * e / tl.where(u == 1.0, 1.0, u - 1.0))
                loss = tl.maximum(z, 0.0) - t * z + log1p_e
                r = p - t
            else:
                r = z - t
                loss = 0.5 * r * r
            r = tl.where(row_ok, r, 0.0)
            r_sum += r
            loss_sum += tl.where(row_ok, loss, 0.0)
            # backward: the same rows again, from cache, into this program's partial sums
            for d0 in range(0, D, BLOCK_D):
                cols = d0 + tl.arange(0, BLOCK_D)
                col_ok = cols < D
                x = tl.load(X + row_offsets + cols[None, :], mask=row_ok[:, None] & col_ok[None, :], other=0.0)
                g = tl.sum(x * r[:, None], axis=0)
                acc = tl.load(out + cols, mask=col_ok, other=0.0)
                tl.store(out + cols, acc + g, mask=col_ok)
        tl.store(out + D, tl.sum(r_sum, axis=0))
        tl.store(out + D + 1, tl.sum(loss_sum, axis=0))


class TritonStep(Step):
    """``step(X, T, l2) -> (loss, grads)`` on fixed full-batch data in one pass over X on the GPU,
    like ``objective_and_grad``; see the module docstring for where it applies."""

    name = "fused_triton"

    def __init__(self, model, X: Tensor, T: Tensor) -> None:
        if not supports(model, X):
            raise TypeError(
                "the Triton step needs Triton and a single-Linear model with one sigmoid or identity output "
                "on a contiguous float32/float64 CUDA tensor"
            )
        self.prefix, self.layer, self.X, self.y = bind_single_pass(model, X, T)
        n, d = X.shape
        self._sigmoid = model.link == "sigmoid"
        programs = max(1, min(MAX_PROGRAMS, triton.cdiv(n, BLOCK_N)))
        # whole tiles per program, so only the last tile of the last program is partial
        self._rows_per_program = triton.cdiv(triton.cdiv(n, programs), BLOCK_N) * BLOCK_N
        self._programs = triton.cdiv(n, self._rows_per_program)
        self._block_d = min(MAX_BLOCK_D, triton.next_power_of_2(d))
        self._partial = X.new_zeros(self._programs, d + 2)
        self._zero_bias = X.new_zeros(1)

    @property
    def programs(self) -> int:
        """The kernel's programs (at most ``MAX_PROGRAMS``), each summing its own rows."""
        return self._programs

    @property
    def rows_per_program(self) -> int:
        """The rows each program sums: whole tiles of ``BLOCK_N`` rows."""
        return self._rows_per_program

    @torch.no_grad()
    def step(self, X: Tensor, T: Tensor, l2: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
        """Bound to the data it was built for: ``X`` and ``T`` are that data (not read again)."""
        W, b = self.layer.weight, self.layer.bias
        n, d = self.X.shape
        self._partial.zero_()
        _fused_kernel[(self._programs,)](
            self.X, self.y, W.detach().reshape(-1), self._zero_bias if b is None else b.detach(), self._partial,
            n, d, self._rows_per_program,
            SIGMOID=self._sigmoid, HAS_BIAS=b is not None, BLOCK_N=BLOCK_N, BLOCK_D=self._block_d,
        )
        return step_from_sums(self.layer, self.prefix, self._partial.sum(dim=0, dtype=torch.float64) / n, l2)
