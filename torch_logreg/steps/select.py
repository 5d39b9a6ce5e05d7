"""The one place that decides which step computes a batch's objective and gradient.

Every step has the interface ``step(X, T, l2) -> (objective, grads)`` (``grads`` keyed like
``named_parameters()``) and a ``name``: the reference step (the model's own manual backward),
:class:`~.feature_major.FeatureMajorStep`, :class:`~.row_major.RowMajorStep` (:class:`~.batch.BatchStep`
on mini-batches), the fused kernels (numba on the CPU, Triton on CUDA) and
:class:`~.sparse.SparseStep` on a torch sparse CSR X (which refuses other models, forced dense
steps, gradient checks, autocast and CUDA graphs with a :class:`~torch_logreg.errors.UsageError`).
``cuda_graph`` captures the full-batch step and the update as one CUDA graph; ``dtype =
"bfloat16"`` runs the reference step under ``torch.autocast``.

Which one runs is ``step`` (``registry.STEPS``; ``train.step`` in a config, ``Trainer(step=...)``):

* ``"rule"`` (the default, of the library and of the command line): the first row of the table
  :data:`RULE` that matches the call, read from the call alone (model, shape, dtype, device,
  sparse or dense, batch size, the run's length), never from what the process did before, so the
  same call takes the same step, and gives the same bits, in a fresh process, after other fits
  and on a rerun. :data:`RULE` is the table, first match wins; ``selection.describe()`` names
  the row that decided. "Too short for the kernels" (off CUDA): the run's steps would take less than
  :data:`MIN_RUN_SECONDS` on the torch path (:func:`torch_seconds`, a fixed estimate from the
  number of steps the caller gives and the bytes of a batch; :func:`kernels_pay`). Longer runs
  take the kernels and pay numba's load (:mod:`.jit`) once per process. Before the table, the
  reference step is the only one for gradient checks, ``fast_path=False``, a model that is not
  one ``Linear``, sample weights on dense X, bfloat16 (under autocast) and a streamed full batch;
* ``"reference"``, ``"feature_major"``, ``"row_major"`` (``BatchStep`` on mini-batches) or
  ``"fused"`` force that step; where it cannot run, a :class:`~torch_logreg.errors.UsageError`
  says why in one sentence. Names no longer offered (:data:`REMOVED`: ``"blocked"``, a step no
  longer kept, and ``"auto"``, which measured the candidate steps) are read as ``"rule"`` with a
  warning, so that configs naming them still run (benchmarks/README.md says why each went).

Every step but the CUDA graph computes the objective and the gradient only, and tests pin each to
the reference step, so the choice changes results only within those tolerances. The returned step
carries a :class:`~.selection.Selection` as ``selection``: how it was chosen. The loop
(``train.py``) and L-BFGS (``solvers/lbfgs.py``) take their steps from here only.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .. import arguments
from ..errors import UsageError
from ..models import single_linear
from ..registry import STEPS
from . import jit
from .reference import ReferenceStep
from .selection import Selection, format_seconds

#: the step names the selector reports, by a step's ``name``
_USER_NAMES = {"fused_cpu": "fused", "fused_k_cpu": "fused", "fused_triton": "fused", "batch": "row_major"}
#: the fewest full-batch steps of a short run for which the feature-major step pays for its copy
#: of X (the copy costs a few to a few tens of the steps' gain over the reference step)
FEATURE_MAJOR_MIN_STEPS = 16
#: the torch path's cost per step, for :func:`torch_seconds`: a fixed part (a dozen operations'
#: dispatch), a part per byte of the batch (two reads of X^T) and a part per logit (rows x outputs:
#: the link, the loss and the residual, several passes over the logits; a softmax's dominate its
#: step); fixed, so every process decides alike (the figures behind them: benchmarks/README.md)
TORCH_STEP_SECONDS = 25e-6
TORCH_BYTE_SECONDS = 1e-10
TORCH_LOGIT_SECONDS = 3e-8
#: a CPU run whose steps take less than this on the torch path (:func:`torch_seconds`) keeps to
#: torch; a longer one takes the kernels: about an eighth of numba's load (:mod:`.jit`), paid once
#: per process, so a run this long gains at least its share of it over a few fits
MIN_RUN_SECONDS = 0.1
#: step names no longer offered, read as "rule" (with a warning saying why) so that configs naming
#: them still run
REMOVED = {
    "blocked": "step='blocked' is no longer offered (the blocked step was never faster than the fused step it "
               "would replace, benchmarks/README.md)",
    "auto": "step='auto' no longer measures candidate steps (it made the step depend on the machine's load, "
            "for little gain over the rule table's choice, benchmarks/README.md)",
}


def current(step: str, choices: tuple[str, ...] = STEPS, stacklevel: int = 3) -> str:
    """``step`` (one of ``choices``), or "rule" for a name no longer offered (:data:`REMOVED`), with
    a FutureWarning saying why."""
    arguments.choice("step", step, choices)
    if step in REMOVED:
        warnings.warn(f"{REMOVED[step]}; the rule's step runs", FutureWarning, stacklevel=stacklevel)
        return "rule"
    return step


def torch_seconds(steps: int, step_bytes: int, step_logits: int = 0) -> float:
    """The fixed estimate of a run of ``steps`` steps on batches of ``step_bytes`` bytes and
    ``step_logits`` logits (rows x outputs) on the torch path: ``steps x (TORCH_STEP_SECONDS +
    step_bytes x TORCH_BYTE_SECONDS + step_logits x TORCH_LOGIT_SECONDS)``."""
    return steps * (TORCH_STEP_SECONDS + step_bytes * TORCH_BYTE_SECONDS + step_logits * TORCH_LOGIT_SECONDS)


def kernels_pay(steps: int | None, step_bytes: int, step_logits: int = 0) -> bool:
    """Whether a CPU run of ``steps`` steps (None: not known, taken as long) on batches of
    ``step_bytes`` bytes and ``step_logits`` logits takes the kernels: :func:`torch_seconds` is at
    least :data:`MIN_RUN_SECONDS`. A function of its arguments alone, whatever this process has loaded."""
    return steps is None or torch_seconds(steps, step_bytes, step_logits) >= MIN_RUN_SECONDS


def _tag(step, source: str, reason: str = "", name: str | None = None, row: int = 0):
    name = name or _USER_NAMES.get(step.name, step.name)
    step.selection = Selection(name, source, reason=reason, rule=f"rule row {row}: {RULE[row - 1].when}" if row else "")
    return step


# --- the rule ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """What the rule reads of a call, nothing of the process: the model, X (None where not given),
    its device type, whether X is sparse and a batch the whole of it, the run's length in steps
    (None: not known, taken as long), a batch's bytes and its logits (rows x outputs; 0 where not
    counted: sparse X, whose stored entries dominate)."""

    model: Any
    X: Any  # the Tensor X; None where not given (the rows that read it are never reached then)
    device: str
    sparse: bool
    full: bool
    steps: int | None
    step_bytes: int
    step_logits: int = 0

    @property
    def short(self) -> bool:
        """Off CUDA, a run too short to pay its share of numba's load (not :func:`kernels_pay`)."""
        return self.device != "cuda" and not kernels_pay(self.steps, self.step_bytes, self.step_logits)


def _large_one_output(c: Call) -> bool:
    from . import fused_cpu

    X = c.X
    return (c.device == "cpu" and X.numel() >= fused_cpu.MIN_ENTRIES and X.shape[1] >= fused_cpu.MIN_FEATURES
            and fused_cpu.supports(c.model, X))


def _small_cpu_problem(c: Call) -> bool:
    """X is one batch for :mod:`.batch_fused`'s one-thread kernel, small enough for
    ``row_major.rule_takes``: a few microseconds of arithmetic, less than a torch step's dispatch."""
    X, model = c.X, c.model
    if c.device != "cpu" or X.dim() != 2 or not X.is_contiguous():
        return False
    from . import batch_fused, row_major

    n, d = X.shape
    return (X.dtype == model.dtype and row_major.rule_takes(n, d, int(model.n_outputs))
            and batch_fused.one_thread(n, model.n_outputs * d) and batch_fused.applies(model, X.dtype, X.device, n))


def _wide_few_outputs(c: Call) -> bool:
    """Several outputs (or a softmax), at least ``fused_k_cpu.rule_min_features`` features (128
    for a float32 softmax or sigmoid link, 512 otherwise), at most ``RULE_MAX_OUTPUTS`` outputs,
    where the K-output fused step applies."""
    X, model = c.X, c.model
    if c.device != "cpu" or (model.n_outputs == 1 and model.link != "softmax"):
        return False
    from . import fused_k_cpu

    return (X.dim() == 2 and X.shape[1] >= fused_k_cpu.rule_min_features(model, X.dtype)
            and model.n_outputs <= fused_k_cpu.RULE_MAX_OUTPUTS and fused_k_cpu.problem(model, X) is None)


def _large_cuda(c: Call) -> bool:
    if c.device != "cuda":
        return False
    from . import fused_triton

    return c.X.numel() >= fused_triton.MIN_ENTRIES and fused_triton.supports(c.model, c.X)


@dataclass(frozen=True)
class Row:
    """One row of :data:`RULE`: ``when`` in words, the ``step`` it takes, ``test(call)``, and
    whether the step runs compiled kernels (``kernels``: numba is loaded for it on the CPU)."""

    when: str
    step: str
    test: Callable[[Call], bool]
    kernels: bool = False


#: the default step, first matching row wins (figures for each threshold: benchmarks/README.md).
#: Rows 1-2 are sparse X, 3-4 mini-batches, 5-11 the full batch of dense X in memory
RULE: tuple[Row, ...] = (
    Row("sparse X, a run too short for the kernels", "sparse", lambda c: c.sparse and c.short),
    Row("sparse X", "sparse", lambda c: c.sparse, kernels=True),
    Row("mini-batches, a run too short for the kernels", "reference", lambda c: not c.full and c.short),
    Row("mini-batches", "row_major", lambda c: not c.full, kernels=True),
    Row(f"full batch, a run too short for the kernels and for a copy of X (under {FEATURE_MAJOR_MIN_STEPS} steps)",
        "reference", lambda c: c.short and (c.steps or 0) < FEATURE_MAJOR_MIN_STEPS),
    Row("full batch, a run too short for the kernels", "feature_major", lambda c: c.short),
    Row("CPU, one sigmoid or identity output, fused_cpu.MIN_ENTRIES entries and MIN_FEATURES features or more",
        "fused", _large_one_output, kernels=True),
    Row("CPU, a small problem (row_major.rule_takes, the batch kernel on one thread)", "row_major",
        _small_cpu_problem, kernels=True),
    Row("CPU, several outputs, fused_k_cpu.rule_min_features features or more, RULE_MAX_OUTPUTS outputs or fewer",
        "fused", _wide_few_outputs, kernels=True),
    Row("CUDA, one sigmoid or identity output, fused_triton.MIN_ENTRIES entries or more", "fused", _large_cuda,
        kernels=True),
    Row("otherwise", "feature_major", lambda c: True),
)


def decide(call: Call) -> int:
    """The number (from 1) of the first row of :data:`RULE` that matches ``call``."""
    return next(i for i, row in enumerate(RULE, 1) if row.test(call))


def _dense(model, X: Tensor, steps: int | None = None) -> Call:
    return Call(model, X, X.device.type, False, True, steps, X.nbytes, X.shape[0] * int(model.n_outputs))


def dense_kernels_pay(model, X: Tensor, steps: int | None) -> bool:
    """:func:`kernels_pay` for a run of ``steps`` full-batch steps of ``model`` on dense ``X`` (its
    bytes and logits), as the rule weighs it."""
    call = _dense(model, X, steps)
    return kernels_pay(call.steps, call.step_bytes, call.step_logits)


def _fused_problem(model, X: Tensor) -> str | None:
    """Why the fused kernel cannot run on ``X`` (the end of a sentence), or None."""
    if X.device.type not in ("cpu", "cuda"):
        return f"runs on the CPU (numba) or on CUDA (Triton), not on {X.device}"
    if X.device.type == "cpu" and (model.n_outputs != 1 or model.link not in ("sigmoid", "identity")):
        from . import fused_k_cpu  # any number of outputs, any link

        return fused_k_cpu.problem(model, X)
    if model.n_outputs != 1 or model.link not in ("sigmoid", "identity"):
        return (f"needs one sigmoid or identity output; this model has {model.n_outputs} {model.link} "
                f"output{'s' if model.n_outputs != 1 else ''}")
    if X.dtype not in (torch.float32, torch.float64):
        return f"needs float32 or float64 data, not {str(X.dtype).removeprefix('torch.')}"
    if X.dim() != 2 or not X.is_contiguous():
        return "needs X as one contiguous 2-D tensor"
    if X.device.type == "cpu":
        from . import fused_cpu

        return None if fused_cpu.available() else "needs numba, which cannot be imported here"
    from . import fused_triton

    return None if fused_triton.available() else "needs Triton, which cannot be imported here"


def problem(step: str, model, X: Tensor, *, full: bool, in_memory: bool = True, sample_weight: Tensor | None = None,
            fast_path: bool = True, grad_check: bool = False, autocast: torch.dtype | None = None,
            cuda_graph: bool = False) -> str | None:
    """Why the forced ``step`` (:data:`FORCED`) cannot
    run here (the end of a sentence starting with ``step='name'``), or None when it can."""
    if step == "reference":
        return "cannot be captured by cuda_graph, which replays a fast full-batch step" if cuda_graph else None
    if autocast is not None:
        return (f"does not run under dtype '{str(autocast).removeprefix('torch.')}', which computes the reference "
                "step under autocast")
    if not fast_path:
        return "needs the fast path (fast_path=True)"
    if grad_check:
        return "cannot run with gradient checks (grad_check_every > 0), which train on the reference step"
    if sample_weight is not None:
        return "does not take sample weights; the reference step does"
    if single_linear(model) is None:
        return (f"needs a model that is one Linear layer (logistic, softmax or linear regression), not "
                f"{type(model).__name__}")
    if step in _FULL_BATCH_ONLY and not full:
        return "needs full-batch training (batch_size = 0)"
    if full and not in_memory:
        return "needs the data in memory; a streamed full batch runs the reference step"
    if step == "fused":
        return _fused_problem(model, X)
    return None


#: the steps a run can force (the names of ``registry.STEPS`` other than "rule" and :data:`REMOVED`)
FORCED = tuple(name for name in STEPS if name != "rule" and name not in REMOVED)
#: the forced steps bound to the whole of X (the others also run on mini-batches)
_FULL_BATCH_ONLY = ("feature_major", "fused")


def _build(name: str, model, X: Tensor, T: Tensor, sample_weight: Tensor | None = None):
    """The full-batch step ``name`` bound to ``X``, ``T``."""
    if name == "reference":
        return ReferenceStep(model, sample_weight)
    if name == "feature_major":
        from .feature_major import FeatureMajorStep

        return FeatureMajorStep(model, X, T)
    if name == "row_major":
        from .row_major import RowMajorStep

        return RowMajorStep(model, X, T)
    return _fused_step(model, X, T)


def _fused_step(model, X: Tensor, T: Tensor):
    if X.device.type == "cpu":
        from . import fused_cpu

        if fused_cpu.supports(model, X):
            return fused_cpu.FusedStep(model, X, T)
        from . import fused_k_cpu

        return fused_k_cpu.FusedKStep(model, X, T)
    from . import fused_triton

    return fused_triton.TritonStep(model, X, T)


def _rule_full_batch(model, X: Tensor, T: Tensor, steps: int | None = None):
    """The rule's step for the full batch of dense ``X`` (rows 5-11 of :data:`RULE`), tagged. A
    Triton kernel that fails its first step gives way to the feature-major step, with a warning."""
    call = _dense(model, X, steps)
    number = decide(call)
    row = RULE[number - 1]
    reason = ""
    if call.short:
        words = _short_words(steps, X.nbytes, call.step_logits)
        reason = f"{words}; too few to pay for a copy of X" if row.step == "reference" else words
    if row.kernels and call.device == "cpu":
        jit.load_now()
    step = _first_triton_step(model, X, T) if row.step == "fused" and call.device == "cuda" else \
        _build(row.step, model, X, T)
    return _tag(step, "rule", reason, row=number)


def _short_words(steps: int | None, step_bytes: int, step_logits: int = 0) -> str:
    """Why a run of ``steps`` steps on batches of ``step_bytes`` bytes and ``step_logits`` logits
    keeps to the torch path (a short run: ``steps`` is known)."""
    steps = steps or 0
    return (f"a run of {steps:,} steps, about {format_seconds(torch_seconds(steps, step_bytes, step_logits))} on the torch "
            f"path: under {format_seconds(MIN_RUN_SECONDS)}, too short to pay its share of numba's load")


def _first_triton_step(model, X: Tensor, T: Tensor):
    """The Triton kernel after a first step, or, where that fails, the feature-major step."""
    from .feature_major import FeatureMajorStep

    try:
        step = _fused_step(model, X, T)
        step.step(X, T, 0.0)
        torch.cuda.synchronize(X.device)  # a kernel fault surfaces here, not mid-run
        return step
    except Exception as exc:  # a broken Triton install or a driver mismatch must not stop training
        warnings.warn(f"the fused Triton kernel could not run ({type(exc).__name__}: {exc}); "
                      "using the torch fast path", RuntimeWarning, stacklevel=5)
    return FeatureMajorStep(model, X, T)


def _sparse_bytes(X: Tensor) -> int:
    """The bytes a pass over a sparse CSR ``X`` reads: its values and column indices."""
    return X.values().nbytes + X.col_indices().nbytes


def _sparse_step(model, X: Tensor | None, T: Tensor | None, sample_weight: Tensor | None = None, *, step: str = "rule",
                 fast_path: bool = True, grad_check: bool = False, autocast: torch.dtype | None = None,
                 cuda_graph: bool = False, steps: int | None = None, step_bytes: int = 0):
    """The step for sparse ``X``: :class:`~.sparse.SparseStep` (bound to ``X`` when given; rows 1-2
    of :data:`RULE`), or the forced reference step; a UsageError says why nothing else can run."""
    from .sparse import SparseStep, check_model

    check_model(model)
    if cuda_graph:
        raise UsageError("cuda_graph needs dense X; sparse X runs the sparse step")
    if autocast is not None:
        raise UsageError(f"dtype '{str(autocast).removeprefix('torch.')}' (autocast) needs dense X; "
                         "sparse X runs in float32 or float64")
    if grad_check:
        raise UsageError("gradient checks (grad_check_every > 0) need dense X; sparse X runs the sparse step")
    if step == "reference" or not fast_path:
        return _tag(ReferenceStep(model, sample_weight), "forced" if step == "reference" else "rule")
    if step != "rule":
        raise UsageError(f"step={step!r} needs dense X; sparse X runs the sparse step (step='rule')")
    number = _sparse_row(X, steps, step_bytes)
    if RULE[number - 1].kernels:
        from . import sparse_fused  # imports numba

        if sparse_fused.supports_model(model):
            jit.load_now()
    short = _short_words(steps, step_bytes) if number == 1 else ""
    return _tag(SparseStep(model, X, T, sample_weight, fused=not short), "rule", short, row=number)


def _sparse_row(X: Tensor | None, steps: int | None, step_bytes: int) -> int:
    """Row 1 or 2 of :data:`RULE`: the sparse step with or without its kernels."""
    return decide(Call(None, X, "cpu" if X is None else X.device.type, True, X is not None, steps, step_bytes))


def full_batch(model, X: Tensor, T: Tensor, sample_weight: Tensor | None = None, *, step: str = "rule",
               graph: bool = False, steps: int | None = None):
    """The step bound to the full batch ``X``, ``T`` (see the module docstring for ``step``).
    Sample weights and models that are not one ``Linear`` take the reference step; sparse ``X``
    the sparse step. ``graph``: the step is for a CUDA graph (which replays the fast steps only);
    ``steps``: the run's length, where known (:data:`RULE`)."""
    step = current(step)
    if X.layout != torch.strided:
        return _sparse_step(model, X, T, sample_weight, step=step, cuda_graph=graph, steps=steps,
                            step_bytes=_sparse_bytes(X))
    if step != "rule":
        why = problem(step, model, X, full=True, sample_weight=sample_weight)
        if why is not None:
            raise UsageError(f"step={step!r} {why}")
        return _tag(_build(step, model, X, T, sample_weight), "forced")
    if sample_weight is not None or single_linear(model) is None:
        return _tag(ReferenceStep(model, sample_weight), "rule")
    return _rule_full_batch(model, X, T, steps)


def mini_batch(model, batch_size: int, dtype: torch.dtype, device: torch.device, *, step: str = "rule",
               X: Tensor | None = None, reason: str = "", steps: int | None = None):
    """A step for batches of up to ``batch_size`` rows: ``BatchStep`` (buffers made once) for a
    single ``Linear``, else the reference (rows 3-4 of :data:`RULE`; ``steps``: the run's length;
    ``X``: the data, for the rule's rows that read it; ``reason``: what the selection says)."""
    step = current(step)
    layer = single_linear(model)
    if layer is None or step == "reference":
        return _tag(ReferenceStep(model), "forced" if step == "reference" else "rule")
    from .batch import BatchStep

    width = X.shape[1] if X is not None else layer.weight.shape[1]
    step_bytes, step_logits = batch_size * width * dtype.itemsize, batch_size * int(model.n_outputs)
    number = decide(Call(model, X, torch.device(device).type, False, False, steps, step_bytes, step_logits))
    if step == "rule" and number == 3:
        return _tag(ReferenceStep(model), "rule", _short_words(steps, step_bytes, step_logits), row=3)
    if torch.device(device).type == "cpu":
        from . import batch_fused

        if batch_fused.applies(model, dtype, torch.device(device), batch_size):
            jit.load_now()
    forced = step == "row_major"
    return _tag(BatchStep(model, batch_size, dtype, device), "forced" if forced else "rule", reason,
                row=0 if forced else number)


def cuda_graph_problem(model, device: torch.device, *, full_batch: bool, fast_path: bool = True,
                       grad_check: bool = False, data_parallel: bool = False, exact: bool = False,
                       capturable: bool = True) -> str | None:
    """Why a CUDA graph cannot run here (the end of a sentence starting with the option's
    name), or None when it can."""
    if device.type != "cuda":
        return f"needs a CUDA device; this run is on {device}"
    if not full_batch or not fast_path or grad_check or exact or data_parallel or single_linear(model) is None \
            or not capturable:
        return ("needs full-batch training (batch_size = 0) with an update rule a graph can capture (one "
                "without a bias correction that changes each step), no gradient checks (grad_check_every = 0), the "
                "fast path, a single-Linear model and one process")
    return None


def _weighted_step(model, X: Tensor, T: Tensor | None, sample_weight: Tensor, *, full: bool, step: str,
                   grad_check: bool, autocast, cuda_graph: bool, steps: int | None = None, step_bytes: int = 0):
    """The step for sample-weighted training (see :func:`training_step`; ``steps`` and
    ``step_bytes`` as for :func:`_sparse_step`)."""
    if grad_check or autocast is not None or cuda_graph:
        what = "gradient checks" if grad_check else str(autocast).removeprefix("torch.") if autocast is not None \
            else "cuda_graph"
        raise UsageError(f"sample weights in the loop do not combine with {what}; leave the weights out or turn "
                         f"{what} off")
    sparse = isinstance(X, Tensor) and X.layout != torch.strided  # streamed data is a NumPy memory map
    if full:
        if sparse:
            return _sparse_step(model, X, T, sample_weight, step=step, steps=steps, step_bytes=step_bytes)
        assert T is not None  # a full batch in memory comes with its targets
        return full_batch(model, X, T, sample_weight, step=step)
    if step not in ("rule", "reference"):
        raise UsageError(f"step={step!r} does not take sample weights on mini-batches; use step = 'reference'")
    if sparse:
        from .sparse import SparseStep

        number = _sparse_row(None, steps, step_bytes)
        short = _short_words(steps, step_bytes) if number == 1 else ""
        return _tag(SparseStep(model, fused=not short), "rule", short or "weighted mini-batches", row=number)
    return _tag(ReferenceStep(model), "forced" if step == "reference" else "rule", "weighted mini-batches")


def training_step(model, X: Tensor, T: Tensor | None, *, batch_size: int, dtype: torch.dtype,
                  device: torch.device, fast_path: bool = True, grad_check: bool = False, in_memory: bool = True,
                  cuda_graph: bool = False, data_parallel: bool = False,
                  update: Callable[[dict[str, Tensor]], None] | None = None,
                  update_key: Callable[[], tuple] | None = None, capturable: bool = True,
                  autocast: torch.dtype | None = None, step: str = "rule", sample_weight: Tensor | None = None,
                  steps: int | None = None):
    """The step the hand-written loop runs for this model, data and options (see the module
    docstring). ``in_memory=False`` (streamed data) leaves out the steps bound to a full batch.
    With ``sample_weight`` ``(N,)``: a full batch is weighted by it; for mini-batches the step is
    one with a ``sample_weight`` attribute (the reference or sparse step), which the loop sets to
    each batch's weights. With ``cuda_graph``, ``update(grads)`` and ``update_key()`` are captured
    with the step (a ValueError says why a graph cannot run). ``step``: "rule" or a step to force
    (a UsageError says why it cannot run here); ``steps``: the run's length, where known."""
    step = current(step)
    n = X.shape[0]
    full = batch_size >= n
    sparse = isinstance(X, Tensor) and X.layout != torch.strided  # streamed data is a NumPy memory map
    step_bytes = _sparse_bytes(X) * min(batch_size, n) // max(n, 1) if sparse else 0
    if sample_weight is not None:
        return _weighted_step(model, X, T, sample_weight, full=full and in_memory, step=step, grad_check=grad_check,
                              autocast=autocast, cuda_graph=cuda_graph, steps=steps, step_bytes=step_bytes)
    if sparse:
        bound = full and in_memory
        return _sparse_step(model, X if bound else None, T if bound else None, step=step, fast_path=fast_path,
                            grad_check=grad_check, autocast=autocast, cuda_graph=cuda_graph, steps=steps,
                            step_bytes=step_bytes)
    if autocast is not None and cuda_graph:
        raise ValueError(f"cuda_graph runs the float32 or float64 step; it does not take dtype "
                         f"'{str(autocast).removeprefix('torch.')}'")
    if cuda_graph:
        problem_ = cuda_graph_problem(model, device, full_batch=full and in_memory, fast_path=fast_path,
                                      grad_check=grad_check, data_parallel=data_parallel, capturable=capturable)
        if problem_ is not None:
            raise ValueError(f"cuda_graph {problem_}")
    forced = step != "rule"
    if forced:
        why = problem(step, model, X, full=full, in_memory=in_memory, fast_path=fast_path, grad_check=grad_check,
                      autocast=autocast, cuda_graph=cuda_graph)
        if why is not None:
            raise UsageError(f"step={step!r} {why}")
    if autocast is not None:
        from .mixed import AutocastStep, LossScaledStep

        mixed = LossScaledStep(model, device) if autocast == torch.float16 else \
            AutocastStep(ReferenceStep(model), autocast, device)
        return _tag(mixed, "forced" if forced else "rule", name="reference")
    if grad_check or not fast_path:
        return _tag(ReferenceStep(model), "forced" if forced else "rule")
    if not full:
        return mini_batch(model, batch_size, dtype, device, step=step, X=X,
                          reason="" if in_memory else "streamed data", steps=steps)
    if not in_memory:
        return _tag(ReferenceStep(model), "forced" if forced else "rule")
    assert T is not None  # a full batch in memory comes with its targets
    inner = full_batch(model, X, T, step=step, graph=cuda_graph, steps=steps)
    if cuda_graph:
        from .cuda_graph import GraphedStep

        assert update is not None and update_key is not None  # what the graph captures with the step
        return GraphedStep(inner, update, update_key, device)
    return inner
