"""From a config to a fit: the data prepared on the run's device, the model built, and the one
mapping of the ``[train]`` table onto the hand-written loop (:func:`loop_config`, a
:class:`~torch_logreg.train.LoopConfig` for the :class:`~torch_logreg.train.Trainer`) or the exact
solvers (:func:`exact_options`, for :func:`~torch_logreg.solvers.fit_exact`), which the solver
dispatch chooses between; used by ``train``, ``resume`` and ``cv`` alike."""

from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor

from .. import memory, validation
from ..devices import resolve_device, resolve_precision
from ..errors import UsageError
from ..init import AUTO as AUTO_INIT
from ..init import initialize
from ..models import MLP, LinearRegression, LogisticRegression, SoftmaxRegression
from ..optimizers import optimizer_class
from ..registry import EXACT_SOLVERS, L1_LOOP_SOLVERS, L1_SOLVERS, LOOP_SOLVERS, SOLVERS
from ..solvers import dispatch
from ..steps.select import FORCED, cuda_graph_problem
from ..train import History, LoopConfig, Trainer, TrainState
from . import ingest
from .config import Config, ModelConfig, schedule_options, target_is_real, update_rule_options
from .ingest import check_standardized  # noqa: F401 (its name here before it moved)
from .rows import HeldData, MemoryRows, Training, TrainingRows, open_data, world_size

SPLITS = ("train", "val", "test")


@dataclass
class Prepared:
    """The three splits on the run's device, ready for the model, and what produced them. The
    training rows are one source (:class:`~.rows.TrainingRows`: in memory, this rank's part, or
    a memory-mapped stream); ``X`` and ``T`` hold the validation and test splits, and the training
    split's where this process holds it in memory."""

    rows: TrainingRows  # the training rows, standardized, with their targets and weights
    X: dict[str, Tensor]  # standardized features per split
    T: dict[str, Tensor]  # prepared targets (N, K) per split
    y: dict[str, Tensor]  # encoded labels (class indices) or values per split
    plane: dict[str, np.ndarray] | None  # raw 2-D coordinates per split, for the probability map
    schema: ingest.Schema
    classes: list[str]
    standardizer: ingest.Standardizer
    image_shape: tuple[int, int] | None
    true_weights: Tensor | None
    fingerprint: dict | None = None  # the data file's size, mtime and SHA-256, saved with the run
    #: (N_split, 1) the offsets (data.offset) of each split on the device, or None without them
    offset: dict[str, Tensor | None] | None = None

    def logits(self, model, split: str) -> Tensor:
        """``(N, K)`` the model's logits on a held split's rows, its offsets added."""
        with torch.no_grad():
            z = model.logits(self.X[split])
        o = None if self.offset is None else self.offset[split]
        return z if o is None else z + o

    @property
    def weight(self) -> Tensor | None:
        """(N_train,) the training rows' weights (data.weight, train.class_weight), or None."""
        return self.rows.weight

    @property
    def n_features(self) -> int:
        return self.rows.n_features


def run_device(name: str) -> torch.device:
    try:
        return resolve_device(name)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def target_kind(model_cfg: ModelConfig) -> str:
    """How the target column is read: ``"linear"`` (real values) for linear regression and an MLP
    with an identity output, else the model kind (class labels)."""
    return "linear" if target_is_real(model_cfg) else model_cfg.kind


def build_model(model_cfg: ModelConfig, n_features: int, n_classes: int, seed: int = 0):
    """The ``[model]`` table as a model for ``n_features`` inputs and ``n_classes`` classes. An MLP's
    output follows the targets (``link = "auto"``: one sigmoid for two classes, a softmax for
    more) and its layers start from the named initialisation, seeded with ``seed``."""
    kind, bias = model_cfg.kind, model_cfg.bias
    if kind == "mlp":
        return _build_mlp(model_cfg, n_features, n_classes, seed)
    if kind == "linear":
        return LinearRegression(n_features, bias=bias)
    if n_classes < 2:
        raise UsageError(f"the target has only {n_classes} class; a classifier needs at least two")
    if kind == "logistic":
        if n_classes != 2:
            raise UsageError(
                f"the target has {n_classes} classes but model.kind = 'logistic' is binary; "
                "use model.kind = 'softmax' (or 'multilabel') for K classes"
            )
        return LogisticRegression(n_features, bias=bias)
    if kind == "multilabel":
        return LogisticRegression(n_features, n_outputs=n_classes, bias=bias)
    return SoftmaxRegression(n_features, n_classes, bias=bias)


def check_combinations(cfg: Config, sparse: bool) -> None:
    """The settings the data decides between, refused before training (the config alone checks
    the others): bfloat16 and float16 autocast take dense products only."""
    if sparse and cfg.train.dtype in ("bfloat16", "float16"):
        raise UsageError(f"train.dtype = {cfg.train.dtype!r} computes dense products under autocast, and "
                         f"{cfg.data.path or 'the data'} "
                         "gives sparse features (a sparse file or hashed columns); use train.dtype = 'float32' or 'float64'")


def check_sizes(cfg: Config, n_features: int, n_classes: int) -> None:
    """A MemoryBoundError, before the model or the standardizer exists, when the data's width
    ``n_features`` (a file's columns, an svmlight file's largest index, ``2**data.hash_bits``
    hashed columns) implies a model, or a newton Hessian, larger than the machine's memory
    (:func:`torch_logreg.memory.model_bytes`, :func:`torch_logreg.solvers.hessian.check_dense_hessian`)."""
    from ..solvers.hessian import check_dense_hessian

    m = cfg.model
    outputs = 1 if m.kind in ("logistic", "linear") or (m.kind == "mlp" and n_classes <= 2) else n_classes
    if m.kind == "mlp":
        params = memory.mlp_parameters(n_features, m.hidden, outputs, m.bias)
    else:
        params = memory.linear_parameters(n_features, outputs, m.bias)
    itemsize = 8 if cfg.train.dtype == "float64" else 4
    why = (f"data.hash_bits = {cfg.data.hash_bits} hashes into {1 << cfg.data.hash_bits:,} columns; lower it"
           if cfg.data.hash else "use fewer features (fewer columns, or an svmlight file's indices renumbered)")
    memory.check(memory.model_bytes(n_features, params, itemsize),
                 f"a model of {n_features:,} features ({params:,} parameters, with its standardizer and the loop's "
                 "copies)", why)
    if cfg.train.solver == "newton":
        check_dense_hessian(n_features, outputs, m.bias, m.kind == "softmax", itemsize, setting="train.solver")


def _build_mlp(model_cfg: ModelConfig, n_features: int, n_classes: int, seed: int):
    link = model_cfg.link
    if link == "auto":
        if n_classes < 2:
            raise UsageError(f"the target has only {n_classes} class; a classifier needs at least two")
        link = "sigmoid" if n_classes == 2 else "softmax"
    n_outputs = n_classes if link == "softmax" else 1
    if link == "sigmoid" and n_classes > 2:
        raise UsageError(f"the target has {n_classes} classes but model.link = 'sigmoid' has one output; "
                         "use model.link = 'softmax' (or 'auto')")
    model = MLP(n_features, model_cfg.hidden, n_outputs, activation=model_cfg.activation, link=link, bias=model_cfg.bias,
                dropout=model_cfg.dropout, batch_norm=model_cfg.batch_norm)
    scheme = AUTO_INIT[model_cfg.activation] if model_cfg.init == "auto" else model_cfg.init
    initialize(model, scheme, seed)
    model.seed_dropout(seed)
    return model


def fit_targets(kind: str, y: Tensor, n_classes: int) -> Tensor:
    """What ``fit`` takes as ``y``: indices, one-hot rows (one sigmoid per class) or values."""
    if kind == "multilabel" and y.dim() == 1:  # one class a row: its indicator row
        return torch.nn.functional.one_hot(y, n_classes)
    return y


def prepare(cfg: Config, device: torch.device, dtype: torch.dtype,
            standardizer: ingest.Standardizer | None = None) -> Prepared:
    """The config's data, split, standardized (``standardizer``: the one a resumed run saved) and
    on ``device``, however its rows are held (:func:`~.rows.open_data`)."""
    data, y, classes, idx = split_data(cfg, device)
    kind = target_kind(cfg.model)
    if standardizer is None:
        standardizer = (data.fit_standardizer(idx["train"]) if cfg.data.standardize
                        else ingest.Standardizer.identity(data.n_features))
    probe = build_model(cfg.model, data.n_features, len(classes)).to(device=device, dtype=dtype)
    y_split = {s: y.index_select(0, i.to(y.device)).to(device) for s, i in idx.items()}
    fit_y = {s: fit_targets(kind, v, len(classes)) for s, v in y_split.items()}
    T = {s: probe.targets(fit_y[s], len(v)) for s, v in y_split.items()}
    weight = row_weights(cfg, data.weight, idx["train"], y_split["train"], len(classes), classes)
    weight = None if weight is None else weight.to(device=device, dtype=dtype)
    offset = None
    if data.offset is not None:  # (N, 1) per split: one term added to the logits of every output
        offset = {s: torch.from_numpy(data.offset[i.numpy()][:, None]).to(device=device, dtype=dtype)
                  for s, i in idx.items()}
    t = Training(idx["train"], standardizer, T["train"], fit_y["train"], weight, device, dtype, cfg,
                 None if offset is None else offset["train"])
    rows, raw = {}, {}
    train_rows, raw["train"] = data.training(t)
    for s in ("val", "test"):
        raw[s] = data.rows(idx[s])
        rows[s] = data.standardized(raw[s], t, idx[s])
    held = train_rows.tensors()
    X = {**({"train": held[0]} if held is not None else {}), **rows}
    T["train"] = train_rows.T  # this process's training rows
    y_split["train"] = y_split["train"][data.held(idx["train"]).to(device)]
    schema = data.schema
    plane = None
    if (len(schema.columns) == 2 and not schema.categorical and not schema.sparse and raw["train"] is not None
            and offset is None):  # with an offset a point's probability depends on its row's offset too
        plane = {s: raw[s][:, :2].double().cpu().numpy() for s in SPLITS}
    return Prepared(train_rows, X, T, y_split, plane, schema, classes, standardizer, data.image_shape,
                    data.true_weights, data.fingerprint, offset)


def split_data(cfg: Config, device: torch.device) -> tuple[HeldData, Tensor, list[str], dict[str, Tensor]]:
    """The config's data as held (:func:`~.rows.open_data`), its labels encoded (class indices or
    values), the class names, and the row numbers of each split: where ``prepare`` and ``cv`` start."""
    data = open_data(cfg, device)
    check_combinations(cfg, data.schema.sparse)
    coefficient_options(cfg, data.schema)  # the feature names checked before anything is written
    y, classes = _labels(cfg, data.y, data.n_features)
    return data, y, classes, _split(cfg, y, classes, getattr(data, "split", None))


def _labels(cfg: Config, y_raw, n_features: int) -> tuple[Tensor, list[str]]:
    kind = target_kind(cfg.model)
    if isinstance(cfg.data.target, list):  # (N, K) 0/1 columns: the outputs are named by the columns
        return torch.as_tensor(np.asarray(y_raw, dtype=np.int64)), list(cfg.data.target)
    y, classes = ingest.encode_labels(y_raw, kind)
    if kind != "linear" and len(classes) < 2:
        raise UsageError(f"the target has only one class ({classes[0]!r}); a classifier needs at least two")
    check_sizes(cfg, n_features, len(classes))
    build_model(cfg.model, n_features, len(classes))  # fail early on labels that do not fit the kind
    return y, classes


def _split(cfg: Config, y: Tensor, classes: list[str], split: np.ndarray | None = None) -> dict[str, Tensor]:
    """The rows of each split: as ``data.split_column`` names them (``split``: each row's code, 0
    train, 1 val, 2 test; val_fraction and test_fraction then unused), else a seeded draw."""
    kind = target_kind(cfg.model)
    if cfg.data.split_column:
        if split is None:
            raise UsageError("data.split_column needs the file read whole by one process (not streamed, not under "
                             "torchrun)")
        idx = {s: torch.from_numpy(np.nonzero(split == code)[0]) for code, s in enumerate(SPLITS)}
    else:
        idx = dict(zip(SPLITS, ingest.split_indices(y, len(y), cfg.data.val_fraction, cfg.data.test_fraction,
                                                    cfg.train.seed, stratify=kind != "linear" and y.dim() == 1,
                                                    classes=classes)))
    if len(idx["train"]) == 0:
        raise UsageError("the training split is empty; lower data.val_fraction or data.test_fraction")
    return idx


def row_weights(cfg: Config, weights: np.ndarray | None, rows: Tensor, y: Tensor, n_classes: int,
                classes: list[str] | None = None) -> Tensor | None:
    """The weights of the training ``rows`` (labels ``y``): ``data.weight``'s times
    ``train.class_weight``'s (float64), or None when neither is set. As the estimator, at least
    two classes must keep a positive total weight; a training split of zero weights is named."""
    w = None if weights is None else torch.as_tensor(np.array(weights, dtype=np.float64)).index_select(0, rows.cpu())
    if w is not None and not bool((w > 0).any()):
        raise UsageError(f"{cfg.data.path}: every row of the training split has weight 0 in the data.weight column "
                         f"{cfg.data.weight!r} (the rows with a positive weight are all in the validation or test "
                         "split); give training rows a weight, or change data.val_fraction / data.test_fraction")
    if cfg.train.class_weight == "balanced":
        balanced = ingest.balanced_weights(y, n_classes, w)
        w = balanced if w is None else w * balanced
    if w is not None and not target_is_real(cfg.model):  # as the estimator requires
        what = " and ".join(k for k, v in (("data.weight", cfg.data.weight), ("train.class_weight",
                                                                             cfg.train.class_weight)) if v)
        validation.check_weighted_classes(y, w, classes or [str(c) for c in range(n_classes)],
                                          f"{what} on the training split")
    return w


def start_distributed(cfg: Config) -> tuple[torch.device, bool]:
    """Under torchrun (WORLD_SIZE > 1) join the process group: returns (device, is rank 0)."""
    if world_size() <= 1:
        return run_device(cfg.train.device), True
    from ..distributed import init_distributed

    if cfg.train.grad_check_every:
        raise UsageError("train.grad_check_every is not available with several processes; run the check in one")
    if cfg.data.offset:
        raise UsageError("data.offset is read by one process; run without torchrun")
    if cfg.train.solver in EXACT_SOLVERS:
        raise UsageError(f"train.solver = {cfg.train.solver!r} runs in one process; use {' / '.join(LOOP_SOLVERS)} "
                         "under torchrun")
    if cfg.train.device not in ("auto", "cpu", "cuda"):
        raise UsageError(f"with several processes train.device must be auto, cpu or cuda (each rank takes "
                         f"cuda:LOCAL_RANK), got {cfg.train.device!r}")
    info = init_distributed(device=cfg.train.device)
    return info.device, info.rank == 0


def end_distributed() -> None:
    """Under torchrun, once this rank's part of a command is done: wait for the others, then leave
    the process group, so that no rank's exit tears down connections another still uses."""
    if world_size() <= 1:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def check_cuda_graph(cfg: Config, model, device: torch.device) -> None:
    """UsageError unless ``train.cuda_graph`` is off or this run can use it."""
    t = cfg.train
    if not t.cuda_graph:
        return
    exact = t.solver in EXACT_SOLVERS
    problem = cuda_graph_problem(model, device, full_batch=not t.batch_size, grad_check=bool(t.grad_check_every),
                                 exact=exact, data_parallel=world_size() > 1,
                                 capturable=exact or optimizer_class(t.solver).capturable)
    if problem is not None:
        raise UsageError(f"train.cuda_graph = true {problem}")


def loop_config(cfg: Config, device: str | torch.device | None = None, step: str | None = None) -> LoopConfig:
    """The ``[train]`` table as the loop's :class:`~torch_logreg.train.LoopConfig`: the one mapping of
    the config onto the loop (a loop solver's; the exact solvers take :func:`exact_options`).
    ``device``: where the run is (default ``train.device``); ``step``: the step a run saved by an
    earlier version had measured when it started (``train.step = "auto"``), taken where it is a step
    a run can force, so that the resumed run continues as it began. The dtype is the config's name:
    "bfloat16" keeps float32 weights and computes under autocast."""
    t = cfg.train
    return LoopConfig(
        solver=t.solver, lr=t.lr, epochs=t.epochs, batch_size=t.batch_size, l2=t.l2, l1=t.l1, tol=t.tol,
        patience=t.patience, grad_check_every=t.grad_check_every, check_every=t.check_every, cuda_graph=t.cuda_graph,
        clip_grad_norm=t.clip_grad_norm,
        seed=t.seed, step=step if step in FORCED and t.step == "auto" else t.step, device=t.device if device is None else device,
        dtype=t.dtype, **update_rule_options(t), **schedule_options(t),
    )


def loop_options(cfg: Config) -> dict:
    """:func:`loop_config` as keywords, the form :func:`torch_logreg.fit` takes."""
    config = loop_config(cfg)
    return {f.name: getattr(config, f.name) for f in fields(config)}


def exact_options(cfg: Config, schema: ingest.Schema | None = None) -> dict:
    """The ``[train]`` table as :func:`~torch_logreg.solvers.fit_exact` keywords (``epochs`` is the
    iteration budget; ``step = "auto"`` is passed on, to be read as "rule" with a warning, any other
    step is the rule there), with the per-coefficient terms of :func:`coefficient_options` on the
    features of ``schema``."""
    t = cfg.train
    return {"solver": t.solver, "l2": t.l2, "l1": t.l1, "max_iter": t.epochs, "tol": t.tol,
            "step": "auto" if t.step == "auto" else "rule", **coefficient_options(cfg, schema)}


def coefficient_options(cfg: Config, schema: ingest.Schema | None) -> dict[str, np.ndarray]:
    """``train.penalty_factor``, ``train.lower_bounds`` and ``train.upper_bounds`` as the ``(D,)``
    arrays :func:`~torch_logreg.solvers.fit_exact` takes (a name left out: factor 1, no bound), the
    keys given only. A name is a feature's (:attr:`~.ingest.Schema.feature_names`: ``x1``,
    ``colour=red``, ``x1*x2``) or a categorical or pixels column's, which stands for each of its
    features; an unknown name is a UsageError listing the known ones."""
    t = cfg.train
    given = {k: getattr(t, k) for k in ("penalty_factor", "lower_bounds", "upper_bounds") if getattr(t, k)}
    if not given:
        return {}
    assert schema is not None, "the per-coefficient terms are resolved on the run's features"
    if schema.sparse:
        raise UsageError(f"train.{next(iter(given))} needs dense features; {cfg.data.path or 'the data'} gives sparse "
                         "ones (a sparse file or hashed columns)")
    names = schema.feature_names
    where = {n: [j] for j, n in enumerate(names)}
    for column in schema.columns:  # a categorical or pixels column's name: each of its features
        if column not in where:
            where[column] = [j for j, n in enumerate(names)
                             if n.startswith(f"{column}=") or (column == schema.pixels and n[len(column):].isdigit()
                                                               and n.startswith(column))]
    defaults = {"penalty_factor": 1.0, "lower_bounds": -math.inf, "upper_bounds": math.inf}
    out = {}
    for key, table in given.items():
        values = np.full(len(names), defaults[key])
        for name, v in table.items():
            if not where.get(name):
                raise UsageError(f"train.{key}: unknown feature {name!r}; the features are {ingest.listed(names)} "
                                 "(a categorical column's name stands for all its one-hot columns)")
            values[where[name]] = v
        out[key] = values
    return out


def solver_of(cfg: Config) -> str:
    """The solver ``train.solver`` runs, by the solver dispatch (the rule the estimator and the
    regularization path follow): an exact solver, or one of the loop's update rules."""
    t = cfg.train
    return dispatch.resolve(t.solver, l1=t.l1, choices=SOLVERS, l1_solvers=L1_SOLVERS + L1_LOOP_SOLVERS,
                            term=f"train.l1 = {t.l1:g}")


def storage_dtype(cfg: Config) -> torch.dtype:
    """The dtype the run keeps its weights and data in (float32 under ``dtype = "bfloat16"``)."""
    return resolve_precision(cfg.train.dtype)[0]


def make_trainer(cfg: Config, model, rows: TrainingRows, device, dtype, *, X_val: Tensor | None = None,
                 T_val: Tensor | None = None, callbacks=(), step: str | None = None,
                 schema: ingest.Schema | None = None, offset_val: Tensor | None = None) -> Trainer | SolverRun:
    """The Trainer for ``cfg`` on the training ``rows`` (a :class:`~.rows.TrainingRows`, which
    builds the loop that reads them), or for an exact solver the :class:`SolverRun`; ``step``: the
    step a resumed run chose when it started, kept so it continues as it began; ``schema``: the
    features' (for the per-coefficient terms, :func:`coefficient_options`); ``offset_val``: the
    held-out rows' offsets, where the training rows have them (:attr:`.rows.TrainingRows.offset`)."""
    check_cuda_graph(cfg, model, device)
    if dispatch.is_exact(solver_of(cfg)):
        X, T = rows.in_memory(f"solver = {solver_of(cfg)!r} needs them; use a loop solver (gd, sgd, adam, ...)")
        options = exact_options(cfg, schema)
        if rows.offset is not None:
            options["offset"] = rows.offset[:, 0]
        return SolverRun(cfg, model, X, T, device, rows.weight, options)
    has_val = X_val is not None and X_val.shape[0] > 0
    return rows.trainer(model, loop_config(cfg, device, step), list(callbacks), X_val=X_val if has_val else None,
                        y_val=T_val if has_val else None, offset_val=offset_val if has_val else None)


def fit(cfg: Config, model, X: Tensor, T: Tensor, *, X_val: Tensor | None = None, T_val: Tensor | None = None,
        sample_weight: Tensor | None = None, schema: ingest.Schema | None = None, offset: Tensor | None = None,
        offset_val: Tensor | None = None) -> None:
    """Fit ``model`` on prepared data the way ``cfg`` says, quietly: the loop, or an exact solver
    (no warnings, no separation check). What ``cv`` runs for each fold; ``offset`` and
    ``offset_val`` ``(N, 1)``: the rows' data.offset values, where the run has them."""
    if dispatch.is_exact(solver_of(cfg)):
        from ..solvers import fit_exact

        fit_exact(model, X, T, **exact_options(cfg, schema), sample_weight=sample_weight, warn=False,
                  check_separation=False, **({} if offset is None else {"offset": offset[:, 0]}))
        return
    make_trainer(cfg, model, MemoryRows(X, T, sample_weight, offset=offset), model.device, model.dtype, X_val=X_val,
                 T_val=T_val, offset_val=offset_val).run()


class SolverRun:
    """An exact solver's run, held as the commands hold a Trainer: the model on the run's device
    and dtype, the prepared rows, the :class:`~torch_logreg.train.History` of the solve, and a
    :meth:`state_dict` with a Trainer's keys for the checkpoints. A resumed exact run solves again
    from the saved weights, so :meth:`load_state_dict` reads back only the counts and the History."""

    #: no step and no early stopping on held-out rows: the solver chooses its own steps
    stepper = None
    best_state = None

    def __init__(self, cfg: Config, model, X: Tensor, T: Tensor, device, sample_weight: Tensor | None = None,
                 options: dict | None = None) -> None:
        self.cfg = cfg
        #: the fit_exact keywords of the solve (:func:`exact_options`)
        self.options = exact_options(cfg) if options is None else options
        dtype = resolve_precision(cfg.train.dtype, next(model.parameters()).dtype, device)[0]
        self.model = model.to(device=device, dtype=dtype)
        self.X, self.T, self.sample_weight = X, T, sample_weight
        self.history = History()
        self.epoch = self.step = 0

    def state_dict(self) -> dict:
        weights = {k: p.detach().cpu().clone() for k, p in self.model.named_parameters()}
        return {"epoch": self.epoch, "step": self.step, "last_good": weights, "best_state": None,
                "best_metric": math.inf, "bad_epochs": 0,
                "generator": torch.Generator().manual_seed(self.cfg.train.seed).get_state(),
                "history": self.history.to_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.history = History.from_dict(state["history"])


def fit_exact_run(cfg: Config, trainer: SolverRun, writer, interrupt, quiet: bool) -> History:
    """Newton, L-BFGS, the proximal gradient or coordinate descent on the analytic derivatives
    instead of the loop; returns the solver's History (kept in ``trainer``, a :class:`SolverRun`).

    Each iterate's objective and loss (without the penalties) go to TensorBoard
    (``train/objective``, ``train/loss`` by iteration), with the optimality measure
    (``grad_norm``); a first Ctrl-C stops at the next iterate and saves the weights; ``resume``
    then solves again from them (to the same optimum, though not along a bit-identical path). A
    convergence or separation warning is printed as one line.
    """
    from ..solvers import fit_exact

    t = cfg.train
    state = TrainState(model=trainer.model, trainer=trainer)
    interrupt.on_train_begin(state)

    def on_iterate(n_iter: int, objective: float) -> bool:
        writer.add_scalar("train/objective", objective, n_iter)
        if not quiet:
            print(f"{t.solver} iteration {n_iter}  objective {objective:.10g}", file=sys.stderr, flush=True)
        return interrupt.requested

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit_exact(trainer.model, trainer.X, trainer.T, **trainer.options, sample_weight=trainer.sample_weight,
                           callback=on_iterate)
    interrupt.on_train_end(state)
    for w in caught:
        print(f"torch-logreg: warning: {w.message}", file=sys.stderr)
    history = result.history
    for i, loss in enumerate(history.train_loss):
        writer.add_scalar("train/loss", loss, i)
    for i, g in enumerate(history.grad_norm):
        writer.add_scalar("grad_norm", g, i)
    if result.stop_reason == "callback":
        history.stop_reason = "interrupted"
    trainer.history, trainer.epoch, trainer.step = history, result.n_iter, result.n_iter
    return history
