"""The one place that decides which step computes a batch's objective and gradient.

Every step has the interface ``step(X, T, l2) -> (objective, grads)`` (``grads`` keyed like
``named_parameters()``) and a ``name``. What applies, best first:

* gradient checks, ``fast_path=False`` or a model that is not a single ``Linear``: the
  reference step (the model's own manual backward);
* mini-batches of a single-``Linear`` model: :class:`~.batch.BatchStep`;
* the full batch of a single-``Linear`` model, in memory: the single-pass fused kernel for one
  sigmoid or identity output on a large X (numba on CPU, Triton on CUDA, each from its own size
  threshold), else :class:`~.feature_major.FeatureMajorStep`;
* ``cuda_graph``: that full-batch step and the update captured as one CUDA graph;
* mixed precision (``dtype = "bfloat16"``): the reference step under ``torch.autocast``.

The loop (``train.py``) and L-BFGS (``solvers/lbfgs.py``) take their steps from here only.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from ..models import single_linear
from .reference import ReferenceStep


def full_batch(model, X: Tensor, T: Tensor, sample_weight: Tensor | None = None):
    """The fastest step bound to the full batch ``X``, ``T``. For one sigmoid or identity output on
    a large X: the single-pass fused kernel, compiled with numba on CPU or with Triton on CUDA
    (compiled here by a first step; if that fails, a warning says why and the torch path is used).
    Otherwise the feature-major torch step; sample weights and other models get the reference."""
    if sample_weight is not None or single_linear(model) is None:
        return ReferenceStep(model, sample_weight)
    from .feature_major import FeatureMajorStep

    if X.device.type == "cpu":
        from . import fused_cpu

        if X.numel() >= fused_cpu.MIN_ENTRIES and X.shape[1] >= fused_cpu.MIN_FEATURES and fused_cpu.supports(model, X):
            return fused_cpu.FusedStep(model, X, T)
    elif X.device.type == "cuda":
        try:
            from . import fused_triton  # imports Triton, so only for CUDA data

            if X.numel() >= fused_triton.MIN_ENTRIES and fused_triton.supports(model, X):
                step = fused_triton.TritonStep(model, X, T)
                step.step(X, T, 0.0)
                torch.cuda.synchronize(X.device)  # a kernel fault surfaces here, not mid-run
                return step
        except Exception as exc:  # a broken Triton install or a driver mismatch must not stop training
            warnings.warn(f"the fused Triton kernel could not run ({type(exc).__name__}: {exc}); "
                          "using the torch fast path", RuntimeWarning, stacklevel=2)
    return FeatureMajorStep(model, X, T)


def mini_batch(model, batch_size: int, dtype: torch.dtype, device: torch.device):
    """A step for batches of up to ``batch_size`` rows: buffers made once for a single ``Linear``,
    else the reference."""
    if single_linear(model) is None:
        return ReferenceStep(model)
    from .batch import BatchStep

    return BatchStep(model, batch_size, dtype, device)


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


def training_step(model, X: Tensor, T: Tensor | None, *, batch_size: int, dtype: torch.dtype,
                  device: torch.device, fast_path: bool = True, grad_check: bool = False, in_memory: bool = True,
                  cuda_graph: bool = False, data_parallel: bool = False,
                  update: Callable[[dict[str, Tensor]], None] | None = None,
                  update_key: Callable[[], tuple] | None = None, capturable: bool = True,
                  autocast: torch.dtype | None = None):
    """The step the hand-written loop runs for this model, data and options (see the module
    docstring). ``in_memory=False`` (streamed data) leaves out the steps bound to a full batch.
    With ``cuda_graph``, ``update(grads)`` and ``update_key()`` are captured with the step;
    a ValueError says why a graph cannot run."""
    n = X.shape[0]
    full = batch_size >= n
    if autocast is not None:
        if cuda_graph:
            raise ValueError("cuda_graph runs the float32 or float64 step; it does not take dtype 'bfloat16'")
        from .mixed import AutocastStep

        return AutocastStep(ReferenceStep(model), autocast, device)
    if cuda_graph:
        problem = cuda_graph_problem(model, device, full_batch=full and in_memory, fast_path=fast_path,
                                     grad_check=grad_check, data_parallel=data_parallel, capturable=capturable)
        if problem is not None:
            raise ValueError(f"cuda_graph {problem}")
    if grad_check or not fast_path:
        return ReferenceStep(model)
    if not full:
        return mini_batch(model, batch_size, dtype, device)
    if not in_memory:
        return ReferenceStep(model)
    step = full_batch(model, X, T)
    if cuda_graph:
        from .cuda_graph import GraphedStep

        return GraphedStep(step, update, update_key, device)
    return step
