"""Data-parallel training with ``torch.distributed``, one process per device, under torchrun.

Each process (rank) holds a shard of the rows, computes the manual gradient of its batch and
all-reduces it before the hand-written update, so every rank applies the same step to the same
weights. The combination is exact: with ``n_r`` rows in rank r's batch and ``B = sum_r n_r``,

    loss = sum_r (n_r / B) loss_r,    grad = sum_r (n_r / B) grad_r

is the objective (and gradient) of the union of the batches, l2 term included, because each
``loss_r`` is a mean over its rows plus the same penalty. The epoch-loss and gradient-norm
accumulators behind the stopping checks are reduced the same way, so every rank takes the same
decision at the same epoch.

``batch_size`` is per rank (a global batch holds up to ``world_size * batch_size`` rows). Ranks
whose shard runs out of batches before the others contribute empty batches, so the number of
collective calls always matches. Validation data, when given, is evaluated whole on every rank.

    # torchrun --nproc_per_node=2 train.py
    from torch_logreg.distributed import DistributedTrainer, init_distributed, is_rank0
    info = init_distributed()                 # gloo on CPU, NCCL on GPU
    trainer = DistributedTrainer(model, X, y, lr=0.1, epochs=100)   # X, y: the full data set
    history = trainer.run()
    if is_rank0():
        save(model, trainer.state_dict())
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from .errors import UsageError
from .train import History, LoopConfig, Trainer, TrainState, trainer_arguments


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: global rank, world size, rank on its node, device, backend."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str


def init_distributed(backend: str | None = None, device: str | torch.device | None = "auto") -> DistInfo:
    """Join the process group that torchrun describes in the environment (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).

    ``backend`` defaults to NCCL when the run's device is CUDA and gloo otherwise; ``device``
    "auto" picks ``cuda:LOCAL_RANK`` when CUDA is available, else the CPU. Without torchrun's
    variables it starts a group of one (rank 0), so the same script runs standalone. Calling it
    again returns the existing group's description.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None or device == "auto":
        dev = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    else:
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if backend is None:
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        if "RANK" not in os.environ:  # standalone: a group of one
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", str(_free_port()))
            dist.init_process_group(backend, rank=0, world_size=1)
        else:
            kwargs: dict[str, Any] = {"device_id": dev} if dev.type == "cuda" else {}
            dist.init_process_group(backend, **kwargs)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dev, dist.get_backend())


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_rank0() -> bool:
    """True on the process that should log and write files (and outside a process group)."""
    return get_rank() == 0


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group (call once at the end of the script)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of rank ``rank``: contiguous blocks whose sizes differ by at most one."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def shard_rows(data, rank: int | None = None, world_size: int | None = None):
    """This rank's contiguous block of the rows of ``data`` (tensor, array or memory map)."""
    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    start, stop = shard_bounds(len(data), rank, world_size)
    return data[start:stop]


class DistributedTrainer(Trainer):
    """:class:`~torch_logreg.train.Trainer` whose ``reduce`` all-reduces each batch's loss and
    gradient across the ranks, weighted by local batch size over the global batch size.

    ``X``, ``y``: the full data set, the same on every rank, of which this rank keeps its shard
    (``shard=True``, the default), or already this rank's shard (``shard=False``). The initial
    parameters are broadcast from rank 0, so randomly initialised models start equal. ``data``,
    ``config`` and ``callbacks`` (or the keyword form) are the Trainer's; ``device`` defaults to
    the process group's device.
    """

    data_parallel = True

    def __init__(self, model, data, config: LoopConfig | None = None, callbacks=(), *, shard: bool = True, group=None,
                 **settings) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("DistributedTrainer needs a process group: call init_distributed() first")
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        data, config, callbacks = trainer_arguments(data, config, callbacks, settings)
        if config.device in ("auto", None):
            config = replace(config, device=_group_device())
        if shard:
            part = {"X": data.X, "y": data.y, "sample_weight": data.sample_weight}
            data = replace(data, **{k: v if v is None else shard_rows(v, self.rank, self.world_size)
                                    for k, v in part.items()})
        if config.grad_check_every:
            raise UsageError("grad_check_every is not supported by DistributedTrainer; check gradients in one process")
        super().__init__(model, data, config, callbacks)
        self.local_n = int(self.X.shape[0])
        counts = torch.tensor([self.local_n, math.ceil(self.local_n / self.batch_size)], dtype=torch.float64,
                              device=self.device)
        total = counts.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
        dist.all_reduce(counts, op=dist.ReduceOp.MAX, group=group)
        self.global_n = int(total[0].item())
        # steps per epoch: the most any rank needs; the others pad with empty batches
        self.steps_per_epoch = int(counts[1].item())
        with torch.no_grad():
            for p in self.model.parameters():
                dist.broadcast(p.data, src=_global_rank0(group), group=group)
            for k, p in self.model.named_parameters():
                self.last_good[k].copy_(p)

    @property
    def n_samples(self) -> int:
        """Rows over all ranks."""
        return self.global_n

    # -- batches: the same count on every rank --
    def _batches(self):
        count = 0
        for Xb, Tb in super()._batches():
            count += 1
            yield Xb, Tb
        while count < self.steps_per_epoch:
            count += 1
            yield self.X[:0], self.T[:0]

    # -- the all-reduce --
    def _flat_reduce(self, parts: list[Tensor]) -> list[Tensor]:
        flat = torch.cat([p.reshape(-1) for p in parts])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)
        out, i = [], 0
        for p in parts:
            out.append(flat[i : i + p.numel()].view_as(p))
            i += p.numel()
        return out

    def reduce(self, loss: Tensor, grads: dict[str, Tensor], batch_size: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Weighted sums over the ranks: each rank's loss and gradient times ``n_r / B``."""
        names = list(grads)
        nb = torch.full((), float(batch_size), dtype=loss.dtype, device=loss.device)
        if batch_size == 0:  # padding step: contribute nothing (its mean over 0 rows is NaN)
            parts = [torch.zeros_like(loss), *(torch.zeros_like(grads[k]) for k in names), nb]
        else:
            parts = [loss * batch_size, *(grads[k] * batch_size for k in names), nb]
        reduced = self._flat_reduce(parts)
        total = reduced[-1]
        loss = reduced[0] / total
        return loss, {k: g / total for k, g in zip(names, reduced[1:-1])}

    def _check(self, params: dict[str, Tensor], epoch_loss: Tensor, epoch_penalty: Tensor,
               state: TrainState) -> str | None:
        # The loop weighted each batch by local rows / local N; reweighting by local N / global N
        # and summing gives the global epoch mean, identical on every rank.
        w = self.local_n / self.global_n
        names = list(self.grad_mean)
        reduced = self._flat_reduce([epoch_loss * w, epoch_penalty * w, *(self.grad_mean[k] * w for k in names)])
        epoch_loss, epoch_penalty = reduced[0], reduced[1]
        for k, g in zip(names, reduced[2:]):
            self.grad_mean[k].copy_(g)
        return super()._check(params, epoch_loss, epoch_penalty, state)


def _group_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _global_rank0(group) -> int:
    return 0 if group is None else dist.get_global_rank(group, 0)


def fit_distributed(model, X, y, **kwargs) -> History:
    """Train ``model`` data-parallel over the current process group; see :class:`DistributedTrainer`."""
    return DistributedTrainer(model, X, y, **kwargs).run()
