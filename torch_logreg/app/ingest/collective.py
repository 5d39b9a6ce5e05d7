"""What the processes of a torchrun job agree on while each reads its part of a file: objects
gathered from every rank, and sums and maxima of tensors over the ranks."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def gather(obj) -> list:
    """``obj`` of every rank, in rank order, on every rank."""
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class Combine:
    """Sums and maxima of tensors over the ranks (on the device the backend needs, back on the
    caller's), for :meth:`~.standardize.Standardizer.fit`."""

    def __init__(self) -> None:
        self.device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" \
            else torch.device("cpu")

    def _reduce(self, t: Tensor, op) -> Tensor:
        out = t.to(self.device, copy=True)
        dist.all_reduce(out, op=op)
        return out.to(t.device)

    def sum(self, t: Tensor) -> Tensor:
        return self._reduce(t, dist.ReduceOp.SUM)

    def max(self, t: Tensor) -> Tensor:
        return self._reduce(t, dist.ReduceOp.MAX)
