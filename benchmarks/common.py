"""Shared helpers of the benchmarks: timing, synthetic data, the autograd reference loop,
the bandwidth floor and the machine description (CPU model, SIMD level, BLAS).

Timing uses only ``time.perf_counter`` and, on CUDA, ``torch.cuda.synchronize`` around each
sample, so a sample is the wall time of finished work. Every measurement is warmed up first and
reported as the median of its samples together with the number of samples.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # running `python benchmarks/x.py` from a plain checkout
    sys.path.insert(0, str(ROOT))

import torch_logreg  # noqa: E402
from torch_logreg import LogisticRegression, SoftmaxRegression, Trainer  # noqa: E402

# --- timing ------------------------------------------------------------------------------------


def synchronize(device: torch.device | str) -> None:
    """Wait for queued device work (a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Median seconds per call over ``repeats`` samples (each sample averages ``inner`` calls)."""

    median: float
    repeats: int
    inner: int = 1
    samples: tuple[float, ...] = ()

    @property
    def spread(self) -> float:
        """(max - min) / median over the samples: a rough noise figure."""
        if len(self.samples) < 2 or self.median == 0:
            return 0.0
        return (max(self.samples) - min(self.samples)) / self.median

    def label(self) -> str:
        return f"{format_seconds(self.median)} (n={self.repeats}{'x' + str(self.inner) if self.inner > 1 else ''})"


def measure(
    fn,
    *,
    device: torch.device | str = "cpu",
    repeats: int = 10,
    warmup: int = 2,
    inner: int = 1,
    setup=None,
    max_seconds: float | None = None,
) -> Timing:
    """Median wall time of ``fn()``.

    ``setup()`` (untimed) runs before each sample and its result, if not None, is passed to
    ``fn``. ``inner`` calls are timed together and averaged (for calls of a few microseconds).
    ``max_seconds`` stops sampling early once that much time has been spent (at least 3 samples).
    """

    def once() -> float:
        arg = setup() if setup is not None else None
        synchronize(device)
        t0 = time.perf_counter()
        if arg is None:
            for _ in range(inner):
                fn()
        else:
            for _ in range(inner):
                fn(arg)
        synchronize(device)
        return (time.perf_counter() - t0) / inner

    for _ in range(warmup):
        once()
    samples: list[float] = []
    budget_start = time.perf_counter()
    for i in range(repeats):
        samples.append(once())
        if max_seconds is not None and i >= 2 and time.perf_counter() - budget_start > max_seconds:
            break
    return Timing(statistics.median(samples), len(samples), inner, tuple(samples))


@dataclass
class Case:
    """One thing to time in :func:`measure_interleaved`: ``fn()`` (or ``fn(setup())``),
    ``inner`` calls per sample, and a divisor (e.g. epochs per call) for per-unit figures."""

    fn: object
    setup: object = None
    inner: int = 1
    per: float = 1.0


def measure_interleaved(
    cases: dict[str, Case], *, device="cpu", repeats: int = 10, warmup: int = 1, max_seconds: float | None = None
) -> dict[str, Timing]:
    """Time several cases round-robin: each round takes one sample of every case, in an order
    that rotates from round to round. Slow drifts of the machine (frequency, neighbours) then
    hit every case alike, which keeps their ratios honest. Returns a Timing per case, divided
    by the case's ``per``."""
    names = list(cases)

    def sample(case: Case) -> float:
        arg = case.setup() if case.setup is not None else None
        synchronize(device)
        t0 = time.perf_counter()
        if arg is None:
            for _ in range(case.inner):
                case.fn()
        else:
            for _ in range(case.inner):
                case.fn(arg)
        synchronize(device)
        return (time.perf_counter() - t0) / case.inner / case.per

    for _ in range(warmup):
        for name in names:
            sample(cases[name])
    samples: dict[str, list[float]] = {name: [] for name in names}
    start = time.perf_counter()
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(sample(cases[name]))
        if max_seconds is not None and r >= 2 and time.perf_counter() - start > max_seconds:
            break
    return {
        name: Timing(statistics.median(v), len(v), cases[name].inner, tuple(v)) for name, v in samples.items()
    }


def format_seconds(s: float) -> str:
    if s != s:  # NaN
        return "n/a"
    if s >= 1:
        return f"{s:.3f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def auto_inner(fn, device, target_seconds: float = 2e-3, cap: int = 1000) -> int:
    """How many calls of ``fn`` make a sample of about ``target_seconds`` (1 for slow calls)."""
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    dt = max(time.perf_counter() - t0, 1e-7)
    return int(min(cap, max(1, target_seconds // dt)))


# --- data --------------------------------------------------------------------------------------


def make_binary(n: int, d: int, *, device="cpu", dtype=torch.float32, seed: int = 0):
    """Separable-ish binary data: ``X ~ N(0, 1)``, ``y = 1[X w + noise > 0]`` as float 0/1."""
    g = torch.Generator().manual_seed(seed)
    X = torch.empty(n, d, dtype=dtype)
    # fill in chunks to keep the float64 temporaries small for large n
    w = torch.randn(d, generator=g, dtype=torch.float64) / d**0.5
    y = torch.empty(n, dtype=dtype)
    chunk = 1 << 18
    for s in range(0, n, chunk):
        xs = torch.randn(min(chunk, n - s), d, generator=g, dtype=dtype)
        X[s : s + xs.shape[0]] = xs
        z = xs.double() @ w + 0.5 * torch.randn(xs.shape[0], generator=g, dtype=torch.float64)
        y[s : s + xs.shape[0]] = (z > 0).to(dtype)
    return X.to(device), y.to(device)


def make_multiclass(n: int, d: int, k: int, *, device="cpu", dtype=torch.float32, seed: int = 0):
    """K-class data: ``X ~ N(0, 1)``, ``y = argmax(X W + noise)`` as int64 labels."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=dtype)
    W = torch.randn(d, k, generator=g, dtype=dtype) / d**0.5
    y = (X @ W + 0.5 * torch.randn(n, k, generator=g, dtype=dtype)).argmax(dim=1)
    return X.to(device), y.to(device)


# --- the models under test ---------------------------------------------------------------------


def hand_model(d: int, k: int = 1, *, device="cpu", dtype=torch.float32):
    """The project's model: LogisticRegression for k == 1, SoftmaxRegression otherwise."""
    model = LogisticRegression(d) if k == 1 else SoftmaxRegression(d, k)
    return model.to(device=device, dtype=dtype)


#: how the tables name each step
PATHS = {"fused_cpu": "fused single pass", "fused_k_cpu": "fused single pass, K outputs",
         "fused_triton": "fused Triton kernel", "feature_major": "feature-major", "blocked": "blocked",
         "row_major": "row-major", "batch": "row-major", "reference": "reference"}
#: the ``step`` the benchmarks give the loop: the fixed rule table's step, the library's default
STEP = "rule"


def hand_step(model, X, T, lr: float, l2: float = 0.0, fast: bool = False):
    """One bare step of the hand-written loop: manual objective and gradient, in-place update.
    ``fast``: the full-batch step the loop's selector picks for a long run (``steps.select.full_batch``
    with ``step="rule"``); ``step.path`` names it and ``step.selection`` says how it was chosen (None
    for the reference path)."""
    params = dict(model.named_parameters())
    objective_and_grad = model.objective_and_grad
    path, selection = "reference", None
    if fast:
        from torch_logreg.steps.select import full_batch

        fast_step = full_batch(model, X, T, step=STEP)
        path, selection = PATHS.get(fast_step.name, fast_step.name), fast_step.selection
        objective_and_grad = fast_step.step

    def step():
        _, grads = objective_and_grad(X, T, l2)
        with torch.no_grad():
            for name, p in params.items():
                p.sub_(grads[name], alpha=lr)

    step.path = path
    step.selection = selection
    return step


class AutogradReference:
    """The same model trained the usual way: ``nn.Linear`` + ``BCEWithLogitsLoss`` (binary) or
    ``CrossEntropyLoss`` (K classes) + ``torch.optim.SGD`` + ``loss.backward()``.

    Parameters start at zero, as the project's convex models do, so one step of each gives the
    same weights (checked by :func:`max_weight_difference`).
    """

    def __init__(self, d: int, k: int = 1, *, lr: float, weight_decay: float = 0.0, device="cpu", dtype=torch.float32):
        self.k = k
        self.linear = nn.Linear(d, k, device=device, dtype=dtype)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.bias.zero_()
        self.criterion = nn.BCEWithLogitsLoss() if k == 1 else nn.CrossEntropyLoss()
        # SGD's weight_decay also decays the bias; l2 = 0 in the benchmarks, so they agree.
        self.optimizer = torch.optim.SGD(self.linear.parameters(), lr=lr, weight_decay=weight_decay)

    def targets(self, y):
        """Binary: float ``(N, 1)``; K classes: int64 labels ``(N,)``."""
        return y.reshape(-1, 1).to(self.linear.weight.dtype) if self.k == 1 else y.long()

    def step(self, X, t) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.criterion(self.linear(X), t)
        loss.backward()
        self.optimizer.step()
        return loss

    def epoch(self, X, t, batch_size: int, generator: torch.Generator) -> None:
        """One pass in mini-batches drawn from a fresh permutation, like the project's loop."""
        n = X.shape[0]
        if batch_size <= 0 or batch_size >= n:
            self.step(X, t)
            return
        perm = torch.randperm(n, generator=generator, device=X.device)
        for s in range(0, n, batch_size):
            idx = perm[s : s + batch_size]
            self.step(X.index_select(0, idx), t.index_select(0, idx))


def max_weight_difference(model, ref: AutogradReference) -> float:
    """Largest absolute difference between the project's and the reference's parameters."""
    lin = model.linear
    with torch.no_grad():
        dw = (lin.weight - ref.linear.weight).abs().max().item()
        db = (lin.bias - ref.linear.bias).abs().max().item()
    return max(dw, db)


def fit_trainer(model, X, y, *, epochs: int, lr: float, batch_size: int = 0, device="cpu", dtype=torch.float32, seed=0):
    """A Trainer for ``epochs`` epochs with every early stop off (tol=0, patience=0), on the step
    the selector chooses (``STEP``) for a long run: the sections time epoch after epoch
    (``trainer.epochs += 1``) on one Trainer, so it is built for :data:`LONG_RUN_EPOCHS` epochs (a
    run of one epoch would keep to the torch path) and then set to ``epochs``.
    ``trainer.stepper.selection`` says which step and how."""
    trainer = Trainer(
        model, X, y, solver="gd", lr=lr, epochs=max(epochs, LONG_RUN_EPOCHS), batch_size=batch_size, tol=0.0,
        patience=0, seed=seed, device=device, dtype=dtype, step=STEP,
    )
    trainer.epochs = epochs
    return trainer


#: the run's length the benchmarks' Trainers are built for (so the step is a long run's)
LONG_RUN_EPOCHS = 100


def fit_cases(
    d: int, k: int, X, y, *, epochs: int, lr: float, batch_size: int = 0, device="cpu", dtype=torch.float32,
) -> dict[str, Case]:
    """Per-epoch cost of the full loop, as two cases for :func:`measure_interleaved`.

    ``fit`` times ``torch_logreg.fit(..., epochs=E) / E`` (input checks and target preparation
    included, and the selector's choice by the rule table); ``run`` times only ``Trainer.run() / E``
    on a Trainer built beforehand, untimed (the loop itself: batching, steps, reduce hook, stopping
    checks). tol=0 and patience=0, so exactly E epochs run.
    """

    def do_fit():
        torch_logreg.fit(
            hand_model(d, k, device=device, dtype=dtype), X, y, solver="gd", lr=lr, epochs=epochs,
            batch_size=batch_size, tol=0.0, patience=0, device=device, dtype=dtype, step=STEP,
        )

    def build():
        return fit_trainer(hand_model(d, k, device=device, dtype=dtype), X, y, epochs=epochs, lr=lr,
                           batch_size=batch_size, device=device, dtype=dtype)

    return {"fit": Case(do_fit, per=epochs), "run": Case(lambda tr: tr.run(), setup=build, per=epochs)}


# --- bandwidth floor ---------------------------------------------------------------------------


def bandwidth_floor(X, *, device="cpu", repeats: int = 10, warmup: int = 2, max_seconds: float | None = None) -> Timing:
    """Median time of ``X.sum()``: one read of the features, the least any epoch must cost."""
    return measure(lambda: X.sum(), device=device, repeats=repeats, warmup=warmup, max_seconds=max_seconds)


# --- machine -----------------------------------------------------------------------------------




def cpu_capability() -> str:
    """The SIMD level torch's CPU kernels use here (``torch.backends.cpu.get_cpu_capability()``:
    DEFAULT, AVX2, AVX512, ...)."""
    try:
        return torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):  # older torch
        return "unknown"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_info() -> str:
    """The BLAS torch was built with, from ``torch.__config__.show()``: ``BLAS_INFO`` and the
    library's own line where there is one (MKL, OpenBLAS)."""
    text = torch.__config__.show()
    found = re.search(r"BLAS_INFO=([^,\s]+)", text)
    blas = found.group(1) if found else "unknown"
    for line in text.splitlines():
        line = line.strip(" -")
        if "Math Kernel Library" in line or "OpenBLAS" in line:
            return f"{blas} ({line})"
    return blas


def machine_info(device: torch.device | str) -> dict:
    device = torch.device(device)
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_capability": cpu_capability(),
        "blas": blas_info(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": str(device),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def describe_machine(info: dict) -> str:
    lines = [
        f"platform: {info['platform']} (python {info['python']})",
        f"cpu: {info['cpu']}, {info['cpu_count']} logical cores, torch threads {info['torch_threads']}",
        f"simd: {info['cpu_capability']}, blas: {info['blas']}",
        f"torch: {info['torch']}, device: {info['device']}" + (f" ({info['gpu']}, CUDA {info['cuda']})" if "gpu" in info else ""),
    ]
    if info.get("load_average"):
        lines.append("load average at start (1, 5, 15 min): " + ", ".join(map(str, info["load_average"])))
    return "\n".join(lines)


def resolve_bench_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU is available on this machine")
    return torch.device(name)
