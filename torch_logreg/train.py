"""The hand-written update loop.

Per step: a step's objective and manual gradient on a batch (``steps/``), then an in-place
update of the parameters under ``torch.no_grad()`` by the chosen update rule (``optimizers/``:
gd, momentum, nesterov, adagrad, rmsprop, adam, adamw, each written out and equal to its
``torch.optim`` namesake) at the epoch's learning rate (``schedules.py``). No ``torch.optim`` and
no ``loss.backward()``.

Host synchronisation (reading a number back from the device) happens only at stopping checks,
every ``check_every`` epochs, and in callbacks that choose to read values; never in the step.

Stopping rules, tested at each check: the gradient norm falls below ``tol`` ("converged");
with validation data, the validation loss has not improved for ``patience`` epochs
("early_stopping", best weights restored); without it, the training loss has not improved for
``patience`` epochs ("plateau"); the epoch budget runs out ("max_epochs"); a callback sets
``state.stop_reason`` (which becomes the run's stop reason, e.g. "interrupted"). A non-finite
objective, or one above ``EXPLODED`` times its first value (or 1), restores the last good weights
and raises :class:`TrainingDiverged`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields

import torch
from torch import Tensor

from . import arguments, optimizers, penalty, validation
from . import functional as F
from .devices import resolve_device, resolve_precision
from .errors import UsageError
from .gradients import compare_gradients
from .registry import L1_LOOP_SOLVERS
from .registry import LOOP_SOLVERS as SOLVERS
from .schedules import Schedule
from .steps import select

#: the objective counts as diverged above this multiple of its first value (or of 1, if larger)
EXPLODED = 1e3


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite; the model holds the last finite weights."""

    def __init__(self, message: str, history: History) -> None:
        super().__init__(message)
        self.history = history


class GradientCheckFailed(AssertionError):
    """A periodic gradient check found the manual gradient outside its tolerance."""

    def __init__(self, message: str, report) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class History:
    """What happened during a run. Lists hold one entry per stopping check (by default each
    epoch); ``epochs`` says which epoch (1-based) each entry belongs to.

    ``train_objective`` is what the steps minimised (the epoch's mean of each step's objective:
    mean negative log-likelihood plus the L2 penalty); ``train_loss`` and ``val_loss`` are the
    mean negative log-likelihood alone, so the two are comparable."""

    epochs: list[int] = field(default_factory=list)
    train_objective: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    grad_checks: list[tuple[int, float]] = field(default_factory=list)  # (step, max rel error)
    stop_reason: str = ""
    n_epochs: int = 0
    n_steps: int = 0
    best_epoch: int | None = None
    wall_time: float = 0.0

    @property
    def grad_check_max_rel_error(self) -> float | None:
        return max((e for _, e in self.grad_checks), default=None)

    def to_dict(self) -> dict:
        # shallow copies: dataclasses.asdict deep-copies, which grows with the run at every checkpoint
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        for key in ("epochs", "train_objective", "train_loss", "val_loss", "grad_norm"):
            d[key] = list(d[key])
        d["grad_checks"] = [list(x) for x in self.grad_checks]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> History:
        d = dict(d)
        d["grad_checks"] = [tuple(x) for x in d.get("grad_checks", [])]
        if "train_objective" not in d:  # saved before the two were told apart: train_loss held the objective
            d["train_objective"] = list(d.get("train_loss", []))
        return cls(**d)


@dataclass
class TrainState:
    """What callbacks see. Tensors here live on the run's device; reading them (``.item()``)
    is a host sync, so a callback should do it only at its own logging interval."""

    model: torch.nn.Module
    trainer: Trainer
    epoch: int = 0  # epochs completed
    step: int = 0  # steps completed
    loss: Tensor | None = None  # objective on the last batch
    grads: dict[str, Tensor] | None = None  # gradient of the last batch
    batch_size: int = 0
    lr: float | None = None  # the learning rate of the current epoch (the schedule's)
    checked: bool = False  # whether this epoch ran a stopping check (metrics below are fresh)
    train_objective: float | None = None  # mean NLL + penalty, what the steps minimise
    train_loss: float | None = None  # mean NLL, comparable with val_loss
    val_loss: float | None = None
    grad_norm: float | None = None
    stop_reason: str | None = None  # a callback sets this to stop the run

    @property
    def history(self) -> History:
        return self.trainer.history


class Callback:
    """Hooks called by the loop; override what you need."""

    def on_train_begin(self, state: TrainState) -> None: ...

    def on_step(self, state: TrainState) -> None: ...

    def on_epoch_end(self, state: TrainState) -> None: ...

    def on_train_end(self, state: TrainState) -> None: ...


def _flat_buffer(params: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    """One zeroed flat tensor with room for every parameter, and a view of it shaped like each."""
    first = next(iter(params.values()))
    flat = torch.zeros(sum(p.numel() for p in params.values()), dtype=first.dtype, device=first.device)
    views, offset = {}, 0
    for k, p in params.items():
        views[k] = flat[offset : offset + p.numel()].view(p.shape)
        offset += p.numel()
    return flat, views


class Trainer:
    """The loop's state, so that a run can be checkpointed and resumed exactly.

    Most users call :func:`fit`; the application keeps a ``Trainer`` to save
    :meth:`state_dict` in checkpoints and to :meth:`load_state_dict` when resuming.
    """

    #: subclasses that read batches from disk (no full batch in memory) set this
    streams_data = False
    #: subclasses whose :meth:`reduce` combines gradients across processes set this
    data_parallel = False

    def __init__(
        self,
        model,
        X,
        y,
        *,
        solver: str = "gd",
        lr: float = 0.1,
        epochs: int = 100,
        batch_size: int = 0,
        l2: float = 0.0,
        l1: float = 0.0,
        momentum: float = 0.9,
        betas: tuple[float, float] = optimizers.DEFAULTS["betas"],
        eps: float | None = None,
        alpha: float = optimizers.DEFAULTS["alpha"],
        weight_decay: float = optimizers.DEFAULTS["weight_decay"],
        schedule: str = "constant",
        step_size: int = 1,
        gamma: float = 0.1,
        warmup_epochs: int = 0,
        warmup_start_factor: float = 1.0 / 3.0,
        tol: float = 1e-6,
        patience: int = 0,
        min_delta: float = 0.0,
        grad_check_every: int = 0,
        grad_check_coords: int = 32,
        check_every: int = 1,
        fast_path: bool = True,
        cuda_graph: bool = False,
        step: str = "rule",
        seed: int = 0,
        device: str | torch.device | None = "auto",
        dtype: str | torch.dtype | None = None,
        X_val=None,
        y_val=None,
        callbacks: list[Callback] | tuple[Callback, ...] = (),
        sample_weight=None,
    ) -> None:
        arguments.choice("solver", solver, SOLVERS)
        arguments.number("lr", lr, low=0, low_open=True)
        arguments.number("epochs", epochs, low=1, integer=True)
        arguments.number("batch_size", batch_size, low=0, integer=True)
        arguments.number("l2", l2, low=0)
        arguments.number("l1", l1, low=0)
        if l1 and solver not in L1_LOOP_SOLVERS:
            raise UsageError(f"l1 > 0 in the loop takes a proximal step after the update of solver in "
                             f"{list(L1_LOOP_SOLVERS)}, not {solver!r}; for an accelerated or exact L1 fit use "
                             "fit_exact(solver='proximal' or 'newton')")
        if l1 and cuda_graph:
            raise UsageError("l1 > 0 does not combine with cuda_graph (the graph captures the update without the "
                             "proximal step)")
        arguments.number("tol", tol, low=0)
        arguments.number("patience", patience, low=0, integer=True)
        arguments.number("min_delta", min_delta, low=0)
        arguments.number("grad_check_every", grad_check_every, low=0, integer=True)
        arguments.number("grad_check_coords", grad_check_coords, low=1, integer=True)
        arguments.number("check_every", check_every, low=1, integer=True)
        arguments.number("seed", seed, low=0, integer=True)
        if (X_val is None) != (y_val is None):
            raise UsageError("X_val and y_val must be given together")

        self.device = resolve_device(device)
        #: the dtype of the weights and data, and the one autocast computes the step in (bfloat16) or None
        self.dtype, self.autocast = resolve_precision(dtype, next(model.parameters()).dtype, self.device)
        if lr > torch.finfo(self.dtype).max:  # the update would multiply by infinity
            raise UsageError(f"lr={lr:g} is larger than the largest {str(self.dtype).replace('torch.', '')} "
                             f"({torch.finfo(self.dtype).max:.3g})")
        self.model = model.to(device=self.device, dtype=self.dtype)
        self.X, self.T = self._prepare(X, y, "X", "y")
        #: (N,) weights of the rows, each row's loss multiplied by its weight; None = all 1
        self.sample_weight = validation.sample_weights(sample_weight, self.n_rows, self.dtype, self.device)
        self.X_val = self.T_val = None
        if X_val is not None:
            self.X_val, self.T_val = self._prepare(X_val, y_val, "X_val", "y_val")

        self.solver, self.lr, self.epochs, self.l2, self.l1 = solver, float(lr), epochs, float(l2), float(l1)
        self.schedule = Schedule(schedule, epochs=epochs, step_size=step_size, gamma=gamma, warmup_epochs=warmup_epochs,
                                 warmup_start_factor=warmup_start_factor)
        self.lr_now = self.lr  # the learning rate of the current epoch
        self.tol, self.patience, self.min_delta = float(tol), patience, float(min_delta)
        self.grad_check_every, self.grad_check_coords = grad_check_every, grad_check_coords
        self.check_every, self.seed = check_every, seed
        n = self.n_rows
        self.batch_size = n if batch_size in (0, None) or batch_size >= n else batch_size
        #: steps in an epoch (a data-parallel subclass may pad its shard with empty batches to more)
        self.steps_per_epoch = math.ceil(n / self.batch_size) if n else 1
        self.callbacks = list(callbacks)

        params = dict(self.model.named_parameters())
        self.optimizer = optimizers.make(solver, params, momentum=momentum, betas=betas, eps=eps, alpha=alpha,
                                         weight_decay=weight_decay)
        # the epoch's mean gradient and two copies of the parameters (the last finite ones, and a
        # spare the check fills), each one flat buffer with a view per parameter, made once
        self._grad_flat, self.grad_mean = _flat_buffer(params)
        self._good_flat, self.last_good = _flat_buffer(params)
        self._spare_flat, self._spare = _flat_buffer(params)
        with torch.no_grad():
            for k, p in params.items():
                self.last_good[k].copy_(p)
        self.best_state: dict[str, Tensor] | None = None
        self.best_metric = math.inf
        self.bad_epochs = 0
        self._step_penalty = torch.zeros((), dtype=self.dtype, device=self.device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        # the one decision of which step computes a batch (steps/select.py)
        self.stepper = select.training_step(
            self.model, self.X, self.T, batch_size=self.batch_size, dtype=self.dtype, device=self.device,
            fast_path=fast_path, grad_check=bool(grad_check_every), in_memory=not self.streams_data,
            cuda_graph=cuda_graph, data_parallel=self.data_parallel, autocast=self.autocast,
            update=lambda grads: self._record_penalty_and_update(params, grads),
            update_key=lambda: (self.lr_now, *self.optimizer.key()), capturable=self.optimizer.capturable,
            step=step, sample_weight=self.sample_weight,
            # "auto" weighs a full-batch step's set-up against the run's steps, and a short run
            # on the CPU does without numba where it is not loaded yet
            steps=self.epochs * self.steps_per_epoch,
        )
        if self.batch_size >= n and getattr(self.stepper, "flat_grad", None) is not None:
            # the epoch's gradient is the step's: the check reads the step's own buffer
            self._grad_flat, self.grad_mean = self.stepper.flat_grad, self.stepper.grads
        # mini-batches of in-memory data are gathered into buffers made once
        self._gather = None
        if self.stepper.name == "batch" and not self.streams_data:
            self._gather = (self.X.new_empty(self.batch_size, self.X.shape[1]),
                            self.T.new_empty(self.batch_size, self.T.shape[1]))
        # ... or not gathered at all: a step that reads the rows in place takes their numbers
        # (the base class's batches only: a subclass that makes its own batches gets them gathered)
        self._step_rows = None
        if self._gather is not None and type(self)._batches is Trainer._batches and hasattr(self.stepper, "rows_step"):
            self._step_rows = self.stepper.rows_step(self.X, self.T)
        self.history = History()
        self.epoch = 0
        self.step = 0

    def _prepare(self, X, y, xname: str, yname: str) -> tuple[Tensor, Tensor]:
        X = validation.as_tensor(X, xname, dtype=self.dtype, device=self.device)
        validation.check_features(X, self.model.n_features, name=xname)
        y = validation.as_tensor(y, yname, device=self.device)
        try:
            T = self.model.targets(y, X.shape[0])
        except ValueError as exc:
            raise UsageError(f"{yname}: {exc}") from exc
        return X, T

    # -- checkpointing --
    def state_dict(self) -> dict:
        """Everything but the model's own parameters that the loop needs to continue exactly."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "last_good": {k: v.detach().cpu().clone() for k, v in self.last_good.items()},
            "best_state": None if self.best_state is None else {k: v.cpu().clone() for k, v in self.best_state.items()},
            "best_metric": self.best_metric,
            "bad_epochs": self.bad_epochs,
            "generator": self.generator.get_state(),
            "history": self.history.to_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        to = {"device": self.device, "dtype": self.dtype}
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        elif state.get("velocity"):  # saved by 0.1.0, whose momentum buffers had this name
            self.optimizer.load_state_dict({"name": self.solver, "steps": self.step, "state": {"velocity": state["velocity"]}})
        for k, v in state["last_good"].items():
            self.last_good[k].copy_(v.to(**to))
        best = state["best_state"]
        self.best_state = None if best is None else {k: v.to(**to) for k, v in best.items()}
        self.best_metric = float(state["best_metric"])
        self.bad_epochs = int(state["bad_epochs"])
        self.generator.set_state(state["generator"])
        self.history = History.from_dict(state["history"])

    @property
    def n_rows(self) -> int:
        """The training rows this process steps through (``X``'s, or those a streamed run reads)."""
        return int(self.X.shape[0])

    @property
    def reads_rows_in_place(self) -> bool:
        """Whether each mini-batch reaches the step as its row numbers, the step's kernel reading
        the rows where they lie in ``X`` (never gathered into a buffer)."""
        return self._step_rows is not None

    # -- the loop --
    def _batches(self):
        n = self.X.shape[0]
        if self.batch_size >= n:
            yield self.X, self.T
            return
        perm = torch.randperm(n, generator=self.generator, device=self.device)
        for start in range(0, n, self.batch_size):
            idx = perm[start : start + self.batch_size]
            if self.sample_weight is not None:  # the step weights the batch by its rows' weights
                self.stepper.sample_weight = self.sample_weight.index_select(0, idx)
            if self.X.layout != torch.strided:  # sparse CSR rows
                yield F.csr_rows(self.X, idx), self.T.index_select(0, idx)
            elif self._gather is None:
                yield self.X.index_select(0, idx), self.T.index_select(0, idx)
            else:  # into the same two buffers each step: the batch is used before the next is gathered
                xs, ts = self._gather
                nb = idx.shape[0]
                yield (torch.index_select(self.X, 0, idx, out=xs[:nb]),
                       torch.index_select(self.T, 0, idx, out=ts[:nb]))

    def _row_batches(self):
        """The batches of :meth:`_batches` (the same draw from the generator) as the row numbers
        of each, a 1-D int64 NumPy array, for a step that reads the rows in place."""
        n = self.X.shape[0]
        perm = torch.randperm(n, generator=self.generator, device=self.device).numpy()
        for start in range(0, n, self.batch_size):
            yield perm[start : start + self.batch_size]

    def _update(self, params: dict[str, Tensor], grads: dict[str, Tensor]) -> None:
        self.optimizer.step(params, grads, self.lr_now)
        if self.l1:  # the proximal step of l1 ||W||_1: soft-thresholding by lr * l1 gives exact zeros
            for name, p in params.items():
                if penalty.penalised(name):
                    p.copy_(penalty.soft_threshold(p, self.lr_now * self.l1))

    def _grad_check(self, Xb: Tensor, Tb: Tensor) -> None:
        report = compare_gradients(self.model, Xb, Tb, self.l2, fd_max_coords=self.grad_check_coords, seed=self.step)
        self.history.grad_checks.append((self.step, report.max_rel_error))
        if not report.passed:
            worst = report.worst()
            assert worst is not None  # a failed check compared something
            raise GradientCheckFailed(
                f"gradient check failed at step {self.step}: {worst.parameter} differs from the "
                f"{worst.reference} gradient by {worst.max_rel_error:.3e} relative "
                f"(tolerance {worst.tolerance:.0e})\n{report}",
                report,
            )

    def reduce(self, loss: Tensor, grads: dict[str, Tensor], batch_size: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Combine a batch's loss and gradient across workers; identity in one process.

        A data-parallel subclass all-reduces here, before the update, so every worker applies
        the same gradient.
        """
        return loss, grads

    @torch.no_grad()
    def _restore(self, params: dict[str, Tensor], state: dict[str, Tensor]) -> None:
        for k, p in params.items():
            p.copy_(state[k])

    def run(self) -> History:
        """Train until a stopping rule fires; returns the :class:`History`."""
        model, history = self.model, self.history
        params = dict(model.named_parameters())
        n = self.n_rows
        state = TrainState(model=model, trainer=self, epoch=self.epoch, step=self.step)
        for cb in self.callbacks:
            cb.on_train_begin(state)
        start = time.perf_counter()
        stop_reason = None
        try:
            with torch.no_grad():
                # one step an epoch: the epoch's loss and gradient are the step's
                one_batch = self.steps_per_epoch == 1
                # looked up once: on small problems the loop's own Python is a fair part of a step
                step, reduce, update = self.stepper.step, self.reduce, self._update
                includes_update = getattr(self.stepper, "includes_update", False)  # a CUDA graph
                batch_grads = getattr(self.stepper, "grads", None)
                batch_flat = getattr(self.stepper, "flat_grad", None)
                grad_check_every, callbacks = self.grad_check_every, self.callbacks
                # a step that reads each batch's rows in place, given their numbers (no gather)
                step_rows = None if grad_check_every else self._step_rows
                # the penalty at the weights each step used, so the epoch's loss is told from its
                # objective (a CUDA graph fills it inside the graph, before the update)
                l2, l1, step_penalty = self.l2, self.l1, self._step_penalty
                if not (l2 or l1):
                    step_penalty.zero_()
                # dropout and batch norm: training mode for the steps, evaluation mode for the checks
                modal = getattr(model, "mode_dependent", False)
                while self.epoch < self.epochs and stop_reason is None:
                    self.lr_now = state.lr = self.lr * self.schedule.factor(self.epoch)
                    if modal:
                        model.train()
                    if not one_batch:
                        epoch_loss = torch.zeros((), dtype=self.dtype, device=self.device)
                        epoch_penalty = torch.zeros((), dtype=self.dtype, device=self.device)
                        self._grad_flat.zero_()
                    for batch in (self._row_batches() if step_rows is not None else self._batches()):
                        if step_rows is not None:  # the batch is its rows' numbers
                            loss, grads = step_rows(batch, l2)
                            nb = batch.shape[0]
                        else:
                            Xb, Tb = batch
                            if grad_check_every and self.step % grad_check_every == 0:
                                self._grad_check(Xb, Tb)
                            loss, grads = step(Xb, Tb, l2)
                            nb = Xb.shape[0]
                        loss, grads = reduce(loss, grads, nb)
                        if l1:  # the steps' objective has the smooth penalty only
                            l1_term = penalty.l1_value(params, l1)
                            loss = loss + l1_term
                            step_penalty.copy_(penalty.value(params, l2) + l1_term)  # type: ignore[arg-type]
                        elif l2 and not includes_update:
                            step_penalty.copy_(penalty.value(params, l2))  # type: ignore[arg-type]
                        if one_batch:
                            epoch_loss, epoch_penalty = loss, step_penalty
                            if grads is not self.grad_mean:
                                for k, g in grads.items():
                                    self.grad_mean[k].copy_(g)
                        else:
                            epoch_loss.add_(loss, alpha=nb / n)
                            if l2 or l1:
                                epoch_penalty.add_(step_penalty, alpha=nb / n)
                            if grads is batch_grads:  # one flat buffer, laid out like grad_mean's
                                self._grad_flat.add_(batch_flat, alpha=nb / n)  # type: ignore[arg-type]
                            else:
                                for k, g in grads.items():
                                    self.grad_mean[k].add_(g, alpha=nb / n)
                        if not includes_update:
                            update(params, grads)
                        self.step += 1
                        state.step, state.loss, state.grads, state.batch_size = self.step, loss, grads, nb
                        for cb in callbacks:
                            cb.on_step(state)
                    if modal:
                        model.eval()
                    self.epoch += 1
                    state.epoch = self.epoch
                    state.checked = self.epoch % self.check_every == 0 or self.epoch == self.epochs
                    if state.checked:
                        stop_reason = self._check(params, epoch_loss, epoch_penalty, state)
                    for cb in self.callbacks:
                        cb.on_epoch_end(state)
                    if stop_reason is None and state.stop_reason:
                        stop_reason = state.stop_reason
        finally:
            history.n_epochs, history.n_steps = self.epoch, self.step
            history.wall_time += time.perf_counter() - start
        if stop_reason is None:
            stop_reason = "max_epochs"
        if stop_reason == "early_stopping" and self.best_state is not None:
            self._restore(params, self.best_state)
        history.stop_reason = stop_reason
        state.stop_reason = stop_reason
        for cb in self.callbacks:
            cb.on_train_end(state)
        if stop_reason == "diverged":
            raise TrainingDiverged(
                f"training diverged: the objective became {history.train_objective[-1]:.6g} at epoch {self.epoch} "
                f"with lr={self.lr:g}; the model holds the last finite weights. "
                "Try a smaller learning rate.",
                history,
            )
        return history

    def _record_penalty_and_update(self, params: dict[str, Tensor], grads: dict[str, Tensor]) -> None:
        """The update as a CUDA graph captures it: the penalty of the weights the step used, then the update."""
        if self.l2:
            self._step_penalty.copy_(penalty.value(params, self.l2))  # type: ignore[arg-type]
        self._update(params, grads)

    def _check(self, params: dict[str, Tensor], epoch_loss: Tensor, epoch_penalty: Tensor,
               state: TrainState) -> str | None:
        """Stopping check at the end of an epoch: the only place the loop reads the device."""
        history = self.history
        # Everything the check needs, read back in one transfer. A NaN or infinity anywhere in
        # the parameters makes the sum of their entries non-finite, so one number covers them.
        if self.l1:  # the minimum-norm subgradient at the new weights (the proximal gradient mapping)
            grad_norm = torch.linalg.vector_norm(torch.cat([
                (penalty.l1_optimality(p, self.grad_mean[k], self.l1) if penalty.penalised(k) else self.grad_mean[k])
                .reshape(-1) for k, p in params.items()]))
        else:
            grad_norm = torch.linalg.vector_norm(self._grad_flat)
        for k, p in params.items():
            self._spare[k].copy_(p)
        param_sum = self._spare_flat.sum()
        # without a penalty the loss is the objective: one operation fewer, which tiny problems notice
        penalised = bool(self.l2 or self.l1)
        readings = [epoch_loss, grad_norm, param_sum]
        if penalised:
            readings.append(epoch_loss - epoch_penalty)
        if self.X_val is not None:
            readings.append(self.model.objective(self.X_val, self.T_val))
        values = torch.stack(readings).tolist()
        train_objective, grad_norm, param_sum = values[:3]
        train_loss = values[3] if penalised else train_objective
        val_loss = values[-1] if self.X_val is not None else None
        history.epochs.append(self.epoch)
        history.train_objective.append(train_objective)
        history.train_loss.append(train_loss)
        history.grad_norm.append(grad_norm)
        if val_loss is not None:
            history.val_loss.append(val_loss)
        state.train_objective, state.train_loss = train_objective, train_loss
        state.val_loss, state.grad_norm = val_loss, grad_norm

        if not (math.isfinite(train_objective) and math.isfinite(grad_norm) and math.isfinite(param_sum)):
            self._restore(params, self.last_good)
            return "diverged"
        # an objective far above where the run started is divergence too, before it overflows: a
        # logistic model's objective grows only linearly in the weights, so a too-large step can
        # climb for a long time without ever reaching infinity
        if train_objective > EXPLODED * max(history.train_objective[0], 1.0):
            self._restore(params, self.last_good)
            return "diverged"
        # the spare now holds these finite parameters: it becomes the last good copy
        self._good_flat, self._spare_flat = self._spare_flat, self._good_flat
        self.last_good, self._spare = self._spare, self.last_good

        if self.patience:
            metric = val_loss if val_loss is not None else train_objective
            if metric < self.best_metric - self.min_delta:
                self.best_metric, self.bad_epochs = metric, 0
                history.best_epoch = self.epoch
                if val_loss is not None:
                    self.best_state = {k: p.detach().clone() for k, p in params.items()}
            else:
                self.bad_epochs += self.check_every
                if self.bad_epochs >= self.patience:
                    return "early_stopping" if val_loss is not None else "plateau"
        if grad_norm < self.tol:
            return "converged"
        return None


def fit(model, X, y, **kwargs) -> History:
    """Train ``model`` on ``X (N, D)``, ``y`` with the hand-written loop; returns a History.

    ``X`` may be sparse (``scipy.sparse`` CSR/CSC/COO matrix or array, torch sparse COO/CSR
    tensor): it becomes a torch sparse CSR tensor, never densified, and a single-``Linear`` model
    trains on the sparse step (``steps/sparse.py``); other models are refused.

    Keyword arguments (the names the configs use): ``solver``, the update rule (one of
    ``registry.LOOP_SOLVERS``: gd, momentum, nesterov, adagrad, rmsprop, adam, adamw) with its
    hyper-parameters named as torch.optim names them (``momentum``, ``betas``, ``eps``, ``alpha``,
    ``weight_decay``; one the rule does not take is an error), ``lr`` and its ``schedule``
    (constant | step | exponential | cosine, with ``step_size``, ``gamma``, ``warmup_epochs``,
    ``warmup_start_factor``: see ``schedules.py``), ``epochs``, ``batch_size`` (0 = full batch),
    ``l2``, ``l1`` (gd only: a proximal step, soft-thresholding the weights by ``lr * l1`` after
    each update, gives exact zeros; full-batch gd is then ISTA), ``tol``
    (gradient-norm threshold; with ``l1``, of the minimum-norm subgradient), ``patience`` (epochs; 0 = off), ``min_delta``,
    ``grad_check_every`` (steps; 0 = off), ``grad_check_coords``, ``check_every`` (epochs
    between stopping checks, the only host syncs), ``fast_path`` (a single ``Linear``
    layer: for a full batch, one fused pass over a large X for one sigmoid or identity output
    (numba on CPU, Triton on CUDA), else a feature-major copy of X; for mini-batches, buffers
    made once; False = the reference path), ``cuda_graph`` (CUDA, full batch on the fast path:
    capture the step and the update once as a CUDA graph and replay it each epoch, which removes
    the per-kernel launch cost that dominates small problems), ``step`` ("rule", the default: the
    fixed size rule above; "auto": measure the steps that apply once per shape and keep the
    fastest; or "reference" | "feature_major" | "row_major" | "fused" to force one: see
    ``steps/select.py``), ``seed``, ``device`` ("auto" |
    "cpu" | "cuda" | "cuda:N"), ``dtype`` ("float32" |
    "float64"; default: the model's), ``X_val``, ``y_val`` (for early stopping) and
    ``callbacks``.

    The model is moved to the run's device and dtype and trained in place.
    """
    return Trainer(model, X, y, **kwargs).run()
