"""When the hand-written loop stops: its stopping rules in one object.

At each check (by default each epoch) the loop reads back, in one transfer, the epoch's training
objective ``f``, the norm of its mean gradient ``|g|``, the sum of the parameters' entries and,
with held-out rows, their loss ``v``; :meth:`Stopping.decide` then applies, in this order:

- divergence: ``f``, ``|g|`` or the parameter sum is not finite (one NaN or infinity anywhere in
  the parameters makes the sum non-finite), or ``f > EXPLODED * max(f_0, 1)`` with ``f_0`` the
  run's first checked objective: the parameters go back to the last checked finite ones
  ("diverged");
- patience (``patience > 0``): the metric ``v`` (with held-out rows) or ``f`` (without) has not
  fallen below ``best - min_delta`` for ``patience`` epochs: "early_stopping" (the best held-out
  weights are restored when the run ends, :meth:`restore_best`) or "plateau";
- tolerance: ``|g| < tol``: "converged".

The object also keeps what the rules need between checks, all of it in a checkpoint: the last
finite parameters, the best held-out parameters, the best metric and the epochs without progress.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: the objective counts as diverged above this multiple of its first value (or of 1, if larger)
EXPLODED = 1e3


def flat_buffer(params: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    """One zeroed flat tensor with room for every parameter, and a view of it shaped like each."""
    first = next(iter(params.values()))
    flat = torch.zeros(sum(p.numel() for p in params.values()), dtype=first.dtype, device=first.device)
    views, offset = {}, 0
    for k, p in params.items():
        views[k] = flat[offset : offset + p.numel()].view(p.shape)
        offset += p.numel()
    return flat, views


class Stopping:
    """The stopping rules of one run (see the module docstring) and the state they keep.

    ``params`` (name -> tensor) are the model's parameters: their current values are the first
    "last good" copy. ``check_every`` is the epochs between checks, which patience counts in.
    """

    def __init__(self, params: dict[str, Tensor], *, tol: float, patience: int, min_delta: float,
                 check_every: int) -> None:
        self.tol, self.patience, self.min_delta, self.check_every = float(tol), patience, float(min_delta), check_every
        # two copies of the parameters, each one flat buffer with a view per parameter, made once:
        # the last finite ones, and a spare that each check fills and then swaps in
        self._good_flat, self.last_good = flat_buffer(params)
        self._spare_flat, self._spare = flat_buffer(params)
        with torch.no_grad():
            for k, p in params.items():
                self.last_good[k].copy_(p)
        self.best_state: dict[str, Tensor] | None = None
        self.best_metric = math.inf
        self.bad_epochs = 0

    def parameter_sum(self, params: dict[str, Tensor]) -> Tensor:
        """Copy ``params`` into the spare buffer and return the sum of their entries (on the
        device, not read): non-finite exactly when some entry is."""
        for k, p in params.items():
            self._spare[k].copy_(p)
        return self._spare_flat.sum()

    def decide(self, params: dict[str, Tensor], history, epoch: int, train_objective: float, grad_norm: float,
               param_sum: float, val_loss: float | None) -> str | None:
        """The stop reason after the check of ``epoch`` (numbers read back, ``history`` already
        holding this check), or None to go on. Sets ``history.best_epoch`` on progress."""
        if not (math.isfinite(train_objective) and math.isfinite(grad_norm) and math.isfinite(param_sum)):
            self.restore(params, self.last_good)
            return "diverged"
        # an objective far above where the run started is divergence too, before it overflows: a
        # logistic model's objective grows only linearly in the weights, so a too-large step can
        # climb for a long time without ever reaching infinity
        if train_objective > EXPLODED * max(history.train_objective[0], 1.0):
            self.restore(params, self.last_good)
            return "diverged"
        # the spare now holds these finite parameters: it becomes the last good copy
        self._good_flat, self._spare_flat = self._spare_flat, self._good_flat
        self.last_good, self._spare = self._spare, self.last_good

        if self.patience:
            metric = val_loss if val_loss is not None else train_objective
            if metric < self.best_metric - self.min_delta:
                self.best_metric, self.bad_epochs = metric, 0
                history.best_epoch = epoch
                if val_loss is not None:
                    self.best_state = {k: p.detach().clone() for k, p in params.items()}
            else:
                self.bad_epochs += self.check_every
                if self.bad_epochs >= self.patience:
                    return "early_stopping" if val_loss is not None else "plateau"
        if grad_norm < self.tol:
            return "converged"
        return None

    def restore_best(self, params: dict[str, Tensor], stop_reason: str) -> None:
        """At the end of a run stopped early on held-out loss: back to the best weights."""
        if stop_reason == "early_stopping" and self.best_state is not None:
            self.restore(params, self.best_state)

    @staticmethod
    @torch.no_grad()
    def restore(params: dict[str, Tensor], state: dict[str, Tensor]) -> None:
        for k, p in params.items():
            p.copy_(state[k])

    # -- checkpointing: the Trainer's state_dict holds these keys --
    def state_dict(self) -> dict:
        return {
            "last_good": {k: v.detach().cpu().clone() for k, v in self.last_good.items()},
            "best_state": None if self.best_state is None else {k: v.cpu().clone() for k, v in self.best_state.items()},
            "best_metric": self.best_metric,
            "bad_epochs": self.bad_epochs,
        }

    def load_state_dict(self, state: dict, device, dtype) -> None:
        to = {"device": device, "dtype": dtype}
        for k, v in state["last_good"].items():
            self.last_good[k].copy_(v.to(**to))
        best = state["best_state"]
        self.best_state = None if best is None else {k: v.to(**to) for k, v in best.items()}
        self.best_metric = float(state["best_metric"])
        self.bad_epochs = int(state["bad_epochs"])
