"""The hand-written update loop.

``Trainer(model, data, config)`` runs it: ``data`` the rows (:class:`TrainingData`), ``config``
the settings (:class:`LoopConfig`, checked when made). Per step: a step's objective and manual
gradient on a batch (``steps/``, through the interface of ``steps/base.py``), then an in-place
update of the parameters under ``torch.no_grad()`` by the chosen update rule (``optimizers/``:
gd, momentum, nesterov, adagrad, rmsprop, adam, adamw, each written out and equal to its
``torch.optim`` namesake) at the epoch's learning rate (``schedules.py``). No ``torch.optim`` and
no ``loss.backward()``.

Host synchronisation (reading a number back from the device) happens only at stopping checks,
every ``check_every`` epochs, and in callbacks that choose to read values; never in the step.

The stopping rules (``stopping.py``), tested at each check: the gradient norm falls below ``tol``
("converged"); with validation data, the validation loss has not improved for ``patience`` epochs
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
from .registry import L1_LOOP_SOLVERS, STEPS
from .registry import LOOP_SOLVERS as SOLVERS
from .schedules import Plateau, Schedule
from .steps import select
from .steps.offset import check_offset, offset_step
from .stopping import EXPLODED, Stopping, flat_buffer

__all__ = ["EXPLODED", "Callback", "GradientCheckFailed", "History", "LoopConfig", "Trainer", "TrainingData",
           "TrainingDiverged", "TrainState", "fit"]


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
    mean negative log-likelihood alone, so the two are comparable. ``grad_norm`` is the norm of the
    epoch's mean gradient before any clipping; ``clipped_steps`` (with ``clip_grad_norm``) the steps
    whose gradient was clipped so far, at each check. ``lr`` is the exception to one entry per check:
    the rate each epoch used, one entry per epoch."""

    epochs: list[int] = field(default_factory=list)
    train_objective: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    grad_checks: list[tuple[int, float]] = field(default_factory=list)  # (step, max rel error)
    lr: list[float] = field(default_factory=list)  # the learning rate of every epoch (one entry per epoch)
    clipped_steps: list[int] = field(default_factory=list)  # with clip_grad_norm: steps clipped so far, per check
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
        for key in ("epochs", "train_objective", "train_loss", "val_loss", "grad_norm", "lr", "clipped_steps"):
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



@dataclass
class LoopConfig:
    """The loop's settings, each checked when the config is made (a bad value is a ``ValueError``
    naming it, or a :class:`UsageError`, itself one, for a combination the loop refuses).

    ``solver``: the update rule (one of ``registry.LOOP_SOLVERS``: gd, momentum, nesterov, adagrad,
    rmsprop, adam, adamw) with its hyper-parameters named as torch.optim names them
    (``momentum``, ``betas``, ``eps``, ``alpha``, ``weight_decay``; one the rule does not take is an
    error), ``lr`` and its ``schedule`` (constant | step | exponential | cosine, with
    ``step_size``, ``gamma``, ``warmup_epochs``, ``warmup_start_factor``: see ``schedules.py``; or
    plateau: the rate cut by ``factor`` when the validation loss, or the training objective without
    validation rows, has not improved by ``threshold`` (relative) for more than ``plateau_patience``
    stopping checks, then ``cooldown`` checks without counting, never below ``min_lr``: torch's
    ``ReduceLROnPlateau`` with its names and defaults, stepped at each stopping check),
    ``clip_grad_norm`` (0 or None = off: the global 2-norm of each step's gradient, after the reduce
    across workers, scaled down to at most this before the update, as
    ``torch.nn.utils.clip_grad_norm_``),
    ``epochs``, ``batch_size`` (0 = full batch), ``l2``, ``l1`` (gd only: a proximal step,
    soft-thresholding the weights by ``lr * l1`` after each update, gives exact zeros; full-batch gd
    is then ISTA), ``tol`` (gradient-norm threshold; with ``l1``, of the minimum-norm subgradient),
    ``patience`` (epochs; 0 = off), ``min_delta``, ``grad_check_every`` (steps; 0 = off),
    ``grad_check_coords``, ``check_every`` (epochs between stopping checks, the only host syncs),
    ``fast_path`` (a single ``Linear`` layer: for a full batch, one fused pass over a large X for
    one sigmoid or identity output (numba on CPU, Triton on CUDA), else a feature-major copy of X;
    for mini-batches, buffers made once; False = the reference path), ``cuda_graph`` (CUDA, full
    batch on the fast path: capture the step and the update once as a CUDA graph and replay it
    each epoch, which removes the per-kernel launch cost that dominates small problems), ``step``
    ("rule", the default: the fixed rule, the same step in every process; or "reference" |
    "feature_major" | "row_major" | "fused" to force one: see ``steps/select.py``; "auto", which
    measured the steps, is read as "rule" with a FutureWarning), ``seed``, ``device`` ("auto" | "cpu" | "cuda" |
    "cuda:N") and ``dtype`` ("float32" | "float64" | "bfloat16" | "float16", CUDA only, with dynamic
    loss scaling: see ``loss_scaling.py``; default: the model's).
    """

    solver: str = "gd"
    lr: float = 0.1
    epochs: int = 100
    batch_size: int = 0
    l2: float = 0.0
    l1: float = 0.0
    momentum: float = optimizers.DEFAULTS["momentum"]
    betas: tuple[float, float] = optimizers.DEFAULTS["betas"]
    eps: float | None = None
    alpha: float = optimizers.DEFAULTS["alpha"]
    weight_decay: float = optimizers.DEFAULTS["weight_decay"]
    schedule: str = "constant"
    step_size: int = 1
    gamma: float = 0.1
    warmup_epochs: int = 0
    warmup_start_factor: float = 1.0 / 3.0
    factor: float = 0.1
    plateau_patience: int = 10
    threshold: float = 1e-4
    cooldown: int = 0
    min_lr: float = 0.0
    clip_grad_norm: float | None = None
    tol: float = 1e-6
    patience: int = 0
    min_delta: float = 0.0
    grad_check_every: int = 0
    grad_check_coords: int = 32
    check_every: int = 1
    fast_path: bool = True
    cuda_graph: bool = False
    step: str = "rule"
    seed: int = 0
    device: str | torch.device | None = "auto"
    dtype: str | torch.dtype | None = None

    def __post_init__(self) -> None:
        arguments.choice("solver", self.solver, SOLVERS)
        arguments.number("lr", self.lr, low=0, low_open=True)
        arguments.number("epochs", self.epochs, low=1, integer=True)
        arguments.number("batch_size", self.batch_size, low=0, integer=True)
        arguments.number("l2", self.l2, low=0)
        arguments.number("l1", self.l1, low=0)
        if self.l1 and self.solver not in L1_LOOP_SOLVERS:
            raise UsageError(f"l1 > 0 in the loop takes a proximal step after the update of solver in "
                             f"{list(L1_LOOP_SOLVERS)}, not {self.solver!r}; for an accelerated or exact L1 fit use "
                             "fit_exact(solver='proximal' or 'newton')")
        if self.l1 and self.cuda_graph:
            raise UsageError("l1 > 0 does not combine with cuda_graph (the graph captures the update without the "
                             "proximal step)")
        if self.clip_grad_norm:
            arguments.number("clip_grad_norm", self.clip_grad_norm, low=0, low_open=True)
            if self.cuda_graph:
                raise UsageError("clip_grad_norm does not combine with cuda_graph (the graph captures the update "
                                 "without the clipping)")
        arguments.number("tol", self.tol, low=0)
        arguments.number("patience", self.patience, low=0, integer=True)
        arguments.number("min_delta", self.min_delta, low=0)
        arguments.number("grad_check_every", self.grad_check_every, low=0, integer=True)
        arguments.number("grad_check_coords", self.grad_check_coords, low=1, integer=True)
        arguments.number("check_every", self.check_every, low=1, integer=True)
        arguments.number("seed", self.seed, low=0, integer=True)
        arguments.choice("step", self.step, STEPS)
        optimizers.make(self.solver, {}, **self.update_rule())  # a hyper-parameter the rule does not take
        rule = self.schedule_rule()
        if rule.peak_factor() > 1:  # a growing rate that would overflow in some epoch (a large lr: see Trainer)
            rule.check_rate(self.lr)
        self.plateau_rule()

    def update_rule(self) -> dict:
        """The update rule's hyper-parameters, as ``optimizers.make`` takes them."""
        return {"momentum": self.momentum, "betas": self.betas, "eps": self.eps, "alpha": self.alpha,
                "weight_decay": self.weight_decay}

    def schedule_rule(self) -> Schedule:
        """The learning rate's schedule over the run's epochs (plateau: the warm-up alone, the
        cuts being :meth:`plateau_rule`'s)."""
        return Schedule(self.schedule, epochs=self.epochs, step_size=self.step_size, gamma=self.gamma,
                        warmup_epochs=self.warmup_epochs, warmup_start_factor=self.warmup_start_factor)

    def plateau_rule(self) -> Plateau | None:
        """With ``schedule = "plateau"``: the rate's state, cut as the metric stalls; else None."""
        if self.schedule != "plateau":
            return None
        return Plateau(self.lr, factor=self.factor, patience=self.plateau_patience, threshold=self.threshold,
                       cooldown=self.cooldown, min_lr=self.min_lr)

    @classmethod
    def from_options(cls, options: dict) -> LoopConfig:
        """The config of keyword ``options`` (the names of the fields); an unknown name is a
        ``TypeError`` that lists the known ones."""
        names = [f.name for f in fields(cls)]
        unknown = [k for k in options if k not in names]
        if unknown:
            raise TypeError(f"unknown loop setting {unknown[0]!r}; the settings are {', '.join(names)}, and the "
                            "data's X, y, sample_weight, X_val, y_val, offset, offset_val")
        return cls(**options)


@dataclass
class TrainingData:
    """The rows a run trains on: ``X`` ``(N, D)`` (a tensor or array; or sparse: a ``scipy.sparse``
    matrix or a torch sparse tensor, trained on as a CSR tensor, never densified), ``y`` as the
    model's ``targets`` takes it (labels ``(N,)`` or targets ``(N, K)``), ``sample_weight``
    ``(N,)`` (each row's loss times its weight; None = all 1), and the held-out ``X_val``,
    ``y_val`` (for early stopping), given together or not at all; ``offset`` ``(N,)`` or ``(N, K)``,
    a known term added to each row's logits (:mod:`~torch_logreg.steps.offset`), with
    ``offset_val`` for the held-out rows."""

    X: object
    y: object
    sample_weight: object = None
    X_val: object = None
    y_val: object = None
    offset: object = None
    offset_val: object = None

    def __post_init__(self) -> None:
        if (self.X_val is None) != (self.y_val is None):
            raise UsageError("X_val and y_val must be given together")
        if self.X_val is not None and (self.offset is None) != (self.offset_val is None):
            raise UsageError("with held-out rows, offset and offset_val must be given together (the validation loss "
                             "adds the offset as training does)")


def trainer_arguments(data, config, callbacks, settings: dict) -> tuple[TrainingData, LoopConfig, list[Callback]]:
    """A Trainer's ``(data, config, callbacks)`` from either form of call: ``Trainer(model, data,
    config, callbacks)``, or the keyword form ``Trainer(model, X, y, **settings)`` whose settings
    are :class:`LoopConfig`'s fields and :class:`TrainingData`'s ``sample_weight``, ``X_val``,
    ``y_val``, with ``callbacks``."""
    if isinstance(data, TrainingData):
        if settings:
            raise TypeError(f"Trainer(model, data, config) takes its settings in config, not as keywords "
                            f"({', '.join(settings)})")
        return data, LoopConfig() if config is None else config, list(callbacks)
    X, y, settings = data, config, dict(settings)
    rows = {k: settings.pop(k) for k in ("sample_weight", "X_val", "y_val", "offset", "offset_val") if k in settings}
    callbacks = settings.pop("callbacks", callbacks)
    config = LoopConfig.from_options(settings)  # the settings are checked before the rows
    return TrainingData(X, y, **rows), config, list(callbacks)


class Trainer:
    """The loop's state, so that a run can be checkpointed and resumed exactly.

    ``Trainer(model, data, config, callbacks)``: ``data`` a :class:`TrainingData`, ``config`` a
    :class:`LoopConfig` (default: its defaults), ``callbacks`` a list of :class:`Callback`. The
    keyword form ``Trainer(model, X, y, lr=0.1, ...)`` (the settings of :func:`fit`) makes both.
    Most users call :func:`fit`; the application keeps a ``Trainer`` to save :meth:`state_dict` in
    checkpoints and to :meth:`load_state_dict` when resuming.
    """

    #: subclasses that read batches from disk (no full batch in memory) set this
    streams_data = False
    #: subclasses whose :meth:`reduce` combines gradients across processes set this
    data_parallel = False

    def __init__(self, model, data, config: LoopConfig | None = None, callbacks=(), **settings) -> None:
        data, config, callbacks = trainer_arguments(data, config, callbacks, settings)
        self.config = config
        self.device = resolve_device(config.device)
        #: the dtype of the weights and data, and the one autocast computes the step in (bfloat16) or None
        self.dtype, self.autocast = resolve_precision(config.dtype, next(model.parameters()).dtype, self.device)
        if config.lr > torch.finfo(self.dtype).max:  # the update would multiply by infinity
            raise UsageError(f"lr={config.lr:g} is larger than the largest {str(self.dtype).replace('torch.', '')} "
                             f"({torch.finfo(self.dtype).max:.3g})")
        self.model = model.to(device=self.device, dtype=self.dtype)
        self.X, self.T = self._prepare(data.X, data.y, "X", "y")
        #: (N,) weights of the rows, each row's loss multiplied by its weight; None = all 1
        self.sample_weight = validation.sample_weights(data.sample_weight, self.n_rows, self.dtype, self.device)
        self.X_val = self.T_val = None
        if data.X_val is not None:
            self.X_val, self.T_val = self._prepare(data.X_val, data.y_val, "X_val", "y_val")
        #: (N, 1) or (N, K) known terms added to the logits (steps/offset.py), and the held-out rows'; or None
        self.offset = self.offset_val = None
        if data.offset is not None:
            if self.streams_data or self.data_parallel:
                raise UsageError("an offset is taken by the loop on rows held in memory by one process; not by a "
                                 "streamed or data-parallel run")
            k = self.model.n_outputs
            self.offset = check_offset(data.offset, self.n_rows, k, self.dtype, self.device)
            if self.X_val is not None:
                self.offset_val = check_offset(data.offset_val, self.X_val.shape[0], k, self.dtype, self.device,
                                               "offset_val")

        c = config
        self.solver, self.lr, self.epochs, self.l2, self.l1 = c.solver, float(c.lr), c.epochs, float(c.l2), float(c.l1)
        self.schedule = c.schedule_rule()
        #: the plateau schedule's state (its rate, best metric, counters), or None
        self.plateau = c.plateau_rule()
        self.lr_now = self.lr  # the learning rate of the current epoch
        self.grad_check_every, self.check_every = c.grad_check_every, c.check_every
        n = self.n_rows
        self.batch_size = n if c.batch_size in (0, None) or c.batch_size >= n else c.batch_size
        #: steps in an epoch (a data-parallel subclass may pad its shard with empty batches to more)
        self.steps_per_epoch = math.ceil(n / self.batch_size) if n else 1
        self.callbacks = list(callbacks)

        params = dict(self.model.named_parameters())
        self.optimizer = optimizers.make(c.solver, params, **c.update_rule())
        # the epoch's mean gradient: one flat buffer with a view per parameter, made once
        self._grad_flat, self.grad_mean = flat_buffer(params)
        #: the stopping rules, with the last finite and the best parameters they keep
        self.stopping = Stopping(params, tol=c.tol, patience=c.patience, min_delta=c.min_delta,
                                 check_every=c.check_every)
        self._step_penalty = torch.zeros((), dtype=self.dtype, device=self.device)
        #: global-norm clipping: the bound (0 = off), a buffer the clipped gradient goes to (the
        #: step's own is left as it was, so the epoch's gradient and its norm are the unclipped
        #: ones), and the count of clipped steps, kept on the device (read at checks and logs only)
        self.clip = float(c.clip_grad_norm or 0.0)
        self._clipped: dict[str, Tensor] = {}
        self.clipped_steps: Tensor | None = None
        if self.clip:
            self._clipped = flat_buffer(params)[1]
            self.clipped_steps = torch.zeros((), dtype=torch.int64, device=self.device)
        self.generator = torch.Generator(device=self.device).manual_seed(c.seed)
        self._choose_step(params)
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

    def _choose_step(self, params: dict[str, Tensor]) -> None:
        """The one decision of which step computes a batch (steps/select.py; with an offset,
        steps/offset.py), and how batches reach it."""
        c = self.config
        if self.offset is not None:
            self._offset_step, self.stepper = offset_step(
                self.model, self.offset, self.sample_weight, sparse=self.X.layout != torch.strided,
                cuda_graph=c.cuda_graph, autocast=self.autocast, device=self.device)
            self._gather = self._step_rows = None
            return
        self.stepper = select.training_step(
            self.model, self.X, self.T, batch_size=self.batch_size, dtype=self.dtype, device=self.device,
            fast_path=c.fast_path, grad_check=bool(c.grad_check_every), in_memory=not self.streams_data,
            cuda_graph=c.cuda_graph, data_parallel=self.data_parallel, autocast=self.autocast,
            update=lambda grads: self._record_penalty_and_update(params, grads),
            update_key=lambda: (self.lr_now, *self.optimizer.key()), capturable=self.optimizer.capturable,
            step=c.step, sample_weight=self.sample_weight,
            # a run too short for the kernels on the CPU keeps to the torch path
            steps=self.epochs * self.steps_per_epoch,
        )
        if self.batch_size >= self.n_rows and self.stepper.flat_grad is not None:
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
        if self._gather is not None and type(self)._batches is Trainer._batches:
            self._step_rows = self.stepper.rows_step(self.X, self.T)

    # -- what the stopping rules keep, under the names a checkpoint gives them --
    @property
    def last_good(self) -> dict[str, Tensor]:
        return self.stopping.last_good

    @property
    def best_state(self) -> dict[str, Tensor] | None:
        return self.stopping.best_state

    @property
    def best_metric(self) -> float:
        return self.stopping.best_metric

    @property
    def bad_epochs(self) -> int:
        return self.stopping.bad_epochs

    # -- checkpointing --
    def state_dict(self) -> dict:
        """Everything but the model's own parameters that the loop needs to continue exactly."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            **self.stopping.state_dict(),  # last_good, best_state, best_metric, bad_epochs
            "generator": self.generator.get_state(),
            "history": self.history.to_dict(),
            **({"plateau": self.plateau.state_dict()} if self.plateau is not None else {}),
            **({"clipped_steps": int(self.clipped_steps)} if self.clipped_steps is not None else {}),
            **({"loss_scaler": self.scaler.state_dict()} if self.scaler is not None else {}),
        }

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        elif state.get("velocity"):  # saved by 0.1.0, whose momentum buffers had this name
            self.optimizer.load_state_dict({"name": self.solver, "steps": self.step, "state": {"velocity": state["velocity"]}})
        self.stopping.load_state_dict(state, self.device, self.dtype)
        self.generator.set_state(state["generator"])
        self.history = History.from_dict(state["history"])
        if self.plateau is not None and "plateau" in state:
            self.plateau.load_state_dict(state["plateau"])
        if self.clipped_steps is not None:
            self.clipped_steps.fill_(int(state.get("clipped_steps", 0)))
        if self.scaler is not None and "loss_scaler" in state:
            self.scaler.load_state_dict(state["loss_scaler"])

    @property
    def scaler(self):
        """float16: the step's :class:`~torch_logreg.loss_scaling.LossScaler` (a step with a
        non-finite gradient is skipped: no update, no part in the epoch's gradient); else None."""
        return self.stepper.scaler

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
    def run(self) -> History:
        """Train until a stopping rule fires; returns the :class:`History`."""
        params = dict(self.model.named_parameters())
        state = TrainState(model=self.model, trainer=self, epoch=self.epoch, step=self.step)
        for cb in self.callbacks:
            cb.on_train_begin(state)
        start = time.perf_counter()
        stop_reason = None
        try:
            with torch.no_grad():
                plan = self._lookups()
                while self.epoch < self.epochs and stop_reason is None:
                    base = self.lr if self.plateau is None else self.plateau.lr
                    self.lr_now = state.lr = base * self.schedule.factor(self.epoch)
                    self.history.lr.append(self.lr_now)
                    skipped = self.scaler.skipped if self.scaler is not None else 0
                    epoch_loss, epoch_penalty = self._epoch(params, state, plan)
                    self.epoch += 1
                    state.epoch = self.epoch
                    # float16: an epoch whose every step was skipped has no gradient to check
                    stepped = self.scaler is None or self.scaler.skipped - skipped < self.steps_per_epoch
                    state.checked = stepped and (self.epoch % self.check_every == 0 or self.epoch == self.epochs)
                    if state.checked:
                        stop_reason = self._check(params, epoch_loss, epoch_penalty, state)
                    for cb in self.callbacks:
                        cb.on_epoch_end(state)
                    if stop_reason is None and state.stop_reason:
                        stop_reason = state.stop_reason
        finally:
            self.history.n_epochs, self.history.n_steps = self.epoch, self.step
            self.history.wall_time += time.perf_counter() - start
        return self._finish(params, state, stop_reason or "max_epochs")

    def _lookups(self) -> tuple:
        """What each step of a run uses, looked up once: on small problems the loop's own Python
        is a fair part of a step. The step's gradient buffers count as flat only with their flat
        tensor; a step that reads each batch's rows in place takes their numbers instead of the
        rows (not under gradient checks, which read the rows)."""
        stepper = self.stepper
        flat_grads = stepper.grads if stepper.flat_grad is not None else None
        step_rows = None if self.grad_check_every else self._step_rows
        # the penalty at the weights each step used, so the epoch's loss is told from its
        # objective (a CUDA graph fills it inside the graph, before the update)
        if not (self.l2 or self.l1):
            self._step_penalty.zero_()
        return (stepper.step, self.reduce, self._update, stepper.includes_update, flat_grads, stepper.flat_grad,
                step_rows, self.callbacks)

    def _epoch(self, params: dict[str, Tensor], state: TrainState, plan: tuple) -> tuple[Tensor, Tensor]:
        """One pass over the batches, each one stepped, reduced and applied; returns the epoch's
        objective and penalty (row-weighted means over its batches, on the device) and leaves its
        mean gradient in ``grad_mean``."""
        step, reduce, update, includes_update, flat_grads, flat_grad, step_rows, callbacks = plan
        n, l2, l1, step_penalty, grad_check_every = self.n_rows, self.l2, self.l1, self._step_penalty, self.grad_check_every
        scaler = self.scaler
        one_batch = self.steps_per_epoch == 1  # the epoch's loss and gradient are the step's
        # dropout and batch norm: training mode for the steps, evaluation mode for the checks after
        modal = getattr(self.model, "mode_dependent", False)
        if modal:
            self.model.train()
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
            # float16: a step whose gradient overflowed is skipped (one flag read, as GradScaler.step reads it)
            applied = scaler is None or scaler.finite(grads)
            if l1:  # the steps' objective has the smooth penalty only
                l1_term = penalty.l1_value(params, l1)
                loss = loss + l1_term
                step_penalty.copy_(penalty.value(params, l2) + l1_term)  # type: ignore[arg-type]
            elif l2 and not includes_update:
                step_penalty.copy_(penalty.value(params, l2))  # type: ignore[arg-type]
            if one_batch:
                epoch_loss, epoch_penalty = loss, step_penalty
                if applied and grads is not self.grad_mean:
                    for k, g in grads.items():
                        self.grad_mean[k].copy_(g)
            else:
                epoch_loss.add_(loss, alpha=nb / n)
                if l2 or l1:
                    epoch_penalty.add_(step_penalty, alpha=nb / n)
                if applied and grads is flat_grads:  # one flat buffer, laid out like grad_mean's
                    self._grad_flat.add_(flat_grad, alpha=nb / n)
                elif applied:
                    for k, g in grads.items():
                        self.grad_mean[k].add_(g, alpha=nb / n)
            if not includes_update and applied:
                update(params, self._clip_grads(grads) if self.clip else grads)
            if scaler is not None:
                scaler.update()
            self.step += 1
            state.step, state.loss, state.grads, state.batch_size = self.step, loss, grads, nb
            for cb in callbacks:
                cb.on_step(state)
        if modal:
            self.model.eval()
        return epoch_loss, epoch_penalty

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
            if self.offset is not None:  # ... and adds its rows' offsets
                self._offset_step.offset = self.offset.index_select(0, idx)
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

    def _clip_grads(self, grads: dict[str, Tensor]) -> dict[str, Tensor]:
        """``grads`` with their global 2-norm scaled down to at most ``clip_grad_norm``
        (``optimizers.clip_grad_norm``, on a copy); counts the step as clipped when it scaled."""
        clipped = self._clipped
        for k, g in grads.items():
            clipped[k].copy_(g)
        total = optimizers.clip_grad_norm(clipped, self.clip)
        # the rule's coefficient max_norm / (total + 1e-6) is below 1 exactly when this holds
        assert self.clipped_steps is not None
        self.clipped_steps.add_(total + 1e-6 > self.clip)
        return clipped

    def _update(self, params: dict[str, Tensor], grads: dict[str, Tensor]) -> None:
        self.optimizer.step(params, grads, self.lr_now)
        if self.l1:  # the proximal step of l1 ||W||_1: soft-thresholding by lr * l1 gives exact zeros
            for name, p in params.items():
                if penalty.penalised(name):
                    p.copy_(penalty.soft_threshold(p, self.lr_now * self.l1))

    def _record_penalty_and_update(self, params: dict[str, Tensor], grads: dict[str, Tensor]) -> None:
        """The update as a CUDA graph captures it: the penalty of the weights the step used, then the update."""
        if self.l2:
            self._step_penalty.copy_(penalty.value(params, self.l2))  # type: ignore[arg-type]
        self._update(params, grads)

    def _grad_check(self, Xb: Tensor, Tb: Tensor) -> None:
        report = compare_gradients(self.model, Xb, Tb, self.l2, fd_max_coords=self.config.grad_check_coords,
                                   seed=self.step)
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

    def _check(self, params: dict[str, Tensor], epoch_loss: Tensor, epoch_penalty: Tensor,
               state: TrainState) -> str | None:
        """Stopping check at the end of an epoch: the only place the loop reads the device.
        Records the epoch in the history and the state; the rules are :class:`Stopping`'s."""
        history = self.history
        # Everything the check needs, read back in one transfer (the parameter sum stands for
        # the finiteness of every parameter).
        if self.l1:  # the minimum-norm subgradient at the new weights (the proximal gradient mapping)
            grad_norm = torch.linalg.vector_norm(torch.cat([
                (penalty.l1_optimality(p, self.grad_mean[k], self.l1) if penalty.penalised(k) else self.grad_mean[k])
                .reshape(-1) for k, p in params.items()]))
        else:
            grad_norm = torch.linalg.vector_norm(self._grad_flat)
        param_sum = self.stopping.parameter_sum(params)
        # without a penalty the loss is the objective: one operation fewer, which tiny problems notice
        penalised = bool(self.l2 or self.l1)
        readings = [epoch_loss, grad_norm, param_sum]
        if penalised:
            readings.append(epoch_loss - epoch_penalty)
        if self.X_val is not None:
            readings.append(self.model.objective(self.X_val, self.T_val, offset=self.offset_val))
        if self.clipped_steps is not None:
            readings.append(self.clipped_steps.to(epoch_loss.dtype))
        values = torch.stack(readings).tolist()
        if self.clipped_steps is not None:
            history.clipped_steps.append(int(values.pop()))
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
        if self.plateau is not None:  # the next epoch's rate, from this check's metric
            self.plateau.step(val_loss if val_loss is not None else train_objective)
        return self.stopping.decide(params, history, self.epoch, train_objective, grad_norm, param_sum, val_loss)

    def _finish(self, params: dict[str, Tensor], state: TrainState, stop_reason: str) -> History:
        """The end of a run: the best held-out weights back after early stopping, the callbacks
        told, and divergence raised (the model holding the last finite weights)."""
        self.stopping.restore_best(params, stop_reason)
        self.history.stop_reason = state.stop_reason = stop_reason
        for cb in self.callbacks:
            cb.on_train_end(state)
        if stop_reason == "diverged":
            raise TrainingDiverged(
                f"training diverged: the objective became {self.history.train_objective[-1]:.6g} at epoch "
                f"{self.epoch} with lr={self.lr:g}; the model holds the last finite weights. "
                "Try a smaller learning rate.",
                self.history,
            )
        return self.history


def fit(model, X, y, *, sample_weight=None, X_val=None, y_val=None, offset=None, offset_val=None, callbacks=(),
        **settings) -> History:
    """Train ``model`` on ``X (N, D)``, ``y`` with the hand-written loop; returns a History.

    ``X``, ``y``, ``sample_weight``, ``X_val``, ``y_val``, ``offset``, ``offset_val``: the rows, as
    :class:`TrainingData` takes them (an offset, added to each row's logits, runs the reference
    step: :mod:`~torch_logreg.steps.offset`) (``X`` may be sparse: a ``scipy.sparse`` CSR/CSC/COO matrix or array, or a torch
    sparse COO/CSR tensor, becomes a torch sparse CSR tensor, never densified, and a
    single-``Linear`` model trains on the sparse step, ``steps/sparse.py``; other models are
    refused). ``settings``: the fields of :class:`LoopConfig` (``solver``, ``lr``, ``epochs``,
    ``batch_size``, ``l2``, ``l1``, ``tol``, ``patience``, ``step``, ``seed``, ``device``,
    ``dtype``, ...; an unknown name is a ``TypeError``). ``callbacks``: :class:`Callback` hooks.

    The model is moved to the run's device and dtype and trained in place.
    """
    config = LoopConfig.from_options(settings)
    return Trainer(model, TrainingData(X, y, sample_weight, X_val, y_val, offset, offset_val), config, callbacks).run()
