"""Choosing a step by measuring it, once per process and shape class (like cuDNN's benchmark mode).

Opt-in only (``step = "auto"``): the default, ``"rule"`` (``select.RULE``), decides from the call
alone, so that a call gives the same bits in every process; measured timings change with the
machine's load, and so may the step and the result's last bits. Nothing measured here changes what
``"rule"`` takes. :func:`choose`, given the steps that apply (the rule's choice first):

1. keeps the rule's step without measuring a tiny problem (under :data:`TINY_WORK` entries of X
   times outputs) or a rule step under :data:`MIN_STEP_SECONDS`;
2. otherwise builds each candidate on the real X and T, warms it up by one call and times it
   (the rule's step twice; a challenger once, again when within :data:`CLOSE` of the best, not
   at all when its warm-up took :data:`SLOW` times the best), starting no candidate that would
   take measuring past :data:`BUDGET_STEPS` times the rule's step (nor a JIT-compiled one whose
   first call the budget cannot cover);
3. keeps the fastest unless it beats the rule's step by under :data:`MARGIN`; where the caller
   knows the run's length (``steps``), the least ``set-up + steps x step`` (:func:`for_steps`);
4. remembers the timings in the process (:func:`shape_key`) and on disk (:func:`cache_file`,
   keyed also by the CPU model and a digest of the steps' source).

Steps compute the objective and the gradient only, so measuring leaves the model as it was; the
choice and the timings are logged at DEBUG on the ``torch_logreg`` logger. Figures and the
reasons for each constant: benchmarks/README.md.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from . import jit

LOG = logging.getLogger("torch_logreg")

#: below this many entries of X times outputs a step costs well under a millisecond: not measured
TINY_WORK = 1 << 21
#: a rule step faster than this (warm) is kept without measuring the others
MIN_STEP_SECONDS = 1e-3
#: measuring starts no new candidate that would take it past this many times the rule's step
#: (counted from after the rule step's first call, which a run without measuring pays too)
BUDGET_STEPS = 10
#: a challenger within this factor of the best after one timed call is timed a second time
CLOSE = 1.25
#: a challenger whose warm-up call takes this many times the best step is not timed further
SLOW = 2.0
#: a challenger replaces the rule's choice only when it is faster by more than this fraction
MARGIN = 0.05
#: what the first call of a JIT-compiled candidate costs at least on CUDA (Triton compiles): skipped
#: when the budget cannot cover it. On the CPU it is numba's load, where not yet paid (:func:`jit_seconds`)
FIRST_CALL_SECONDS = {"cuda": 2.0}
#: candidates compiled on their first call in a process
JIT_COMPILED = ("fused",)
#: the disk cache's format; a file of another version is ignored (and replaced on the next write)
CACHE_VERSION = 1
#: entries the disk cache keeps (the most recently written)
MAX_DISK_ENTRIES = 512

clock = time.perf_counter


@dataclass
class Selection:
    """How a step was chosen: ``step`` (a name of ``registry.STEPS``), ``source`` ("measured",
    "cache" (this process), "disk", "rule" (not measured; ``reason`` says why) or "forced"),
    ``seconds`` (per candidate measured, its fastest timed call, or its warm-up call where that
    was already far slower than the best), the key, ``setup`` (per candidate measured, the
    seconds its build took) and ``rule`` (the row of ``select.RULE`` that decided, in words)."""

    step: str
    source: str
    seconds: dict[str, float] = field(default_factory=dict)
    key: tuple = ()
    reason: str = ""
    setup: dict[str, float] = field(default_factory=dict)
    rule: str = ""

    def describe(self) -> str:
        """``"feature_major (measured; feature_major 29.70 ms, reference 46.40 ms)"`` or
        ``"fused (rule; rule row 7: CPU, one sigmoid ...)"``, with the reason after another
        semicolon where there is one."""
        times = ", ".join(f"{name} {format_seconds(s)}" for name, s in self.seconds.items())
        return f"{self.step} ({'; '.join(p for p in (self.source, self.rule, times, self.reason) if p)})"


#: the choices made in this process, by :func:`shape_key`
_choices: dict[tuple, Selection] = {}
#: names of the steps run in this process (a JIT-compiled one costs its compile only once)
_warm: set[str] = set()


def clear_cache() -> None:
    """Forget the choices made in this process (the disk cache stays)."""
    _choices.clear()


def mark_warm(name: str) -> None:
    """``name``, a candidate's name, has run (or will, first) in this process."""
    _warm.add(name)


def format_seconds(s: float) -> str:
    return f"{s * 1e3:.2f} ms" if s >= 1e-4 else f"{s * 1e6:.1f} us"


# --- keys ----------------------------------------------------------------------------------------


def log2(n: int) -> int:
    """``round(log2(n))`` (-1 for 0): the shape classes of the caches' keys."""
    return round(math.log2(n)) if n > 0 else -1


def device_name(device: torch.device) -> str:
    """The GPU's name for a CUDA device, else the device type."""
    if device.type == "cuda":
        try:
            return torch.cuda.get_device_name(device)
        except Exception:  # a device that cannot be queried still gets a key
            return "cuda"
    return device.type


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


@functools.cache
def steps_fingerprint() -> str:
    """A digest of the steps' source files (this folder's ``*.py``): timings measured with other
    kernels (an older or newer release, or an edited checkout) are not taken from the disk cache."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def shape_key(mode: str, model, X: Tensor, rows: int, candidates) -> tuple:
    """The process cache's key: ``mode`` ("full" or "mini"), device, dtype, link, outputs, bias,
    rounded log2 of ``rows`` and of the features, the candidates, threads and torch version."""
    (_, layer), = model.named_children()
    return (mode, device_name(X.device), str(X.dtype).removeprefix("torch."), model.link, int(model.n_outputs),
            layer.bias is not None, log2(rows), log2(X.shape[1]), ",".join(candidates), torch.get_num_threads(),
            torch.__version__)


def disk_key(key: tuple) -> str:
    """The disk cache's key: the process key with the CPU model, the machine type and the steps'
    :func:`steps_fingerprint`."""
    return "|".join(str(part) for part in (*key, cpu_model(), platform.machine(), steps_fingerprint()))


# --- numba's one-time load -----------------------------------------------------------------------


def jit_seconds() -> float:
    """What numba's load would still cost this process, by the fixed estimate
    (:data:`~torch_logreg.steps.jit.IMPORT_SECONDS` and ``INIT_SECONDS``); 0 once paid."""
    if jit.ready():
        return 0.0
    return jit.INIT_SECONDS if jit.imported() else jit.INIT_SECONDS + jit.IMPORT_SECONDS


def load_jit() -> float:
    """Pay numba's load now (:func:`torch_logreg.steps.jit.load`); returns the seconds it took (0
    where paid already)."""
    seconds = sum(jit.load().values())
    if seconds:
        LOG.debug("numba loaded in %s", format_seconds(seconds))
    return seconds


def first_call_seconds(device: torch.device) -> float:
    """What the first call of a JIT-compiled step costs at least in this process, on ``device``."""
    return jit_seconds() if device.type == "cpu" else FIRST_CALL_SECONDS.get(device.type, 0.0)


# --- the disk cache ------------------------------------------------------------------------------


def cache_file() -> Path | None:
    """``$TORCH_LOGREG_CACHE/steps.json`` (an empty value turns the disk cache off), else
    ``$XDG_CACHE_HOME/torch_logreg/steps.json`` or ``~/.cache/torch_logreg/steps.json``."""
    env = os.environ.get("TORCH_LOGREG_CACHE")
    if env is not None:
        return Path(env).expanduser() / "steps.json" if env.strip() else None
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "torch_logreg" / "steps.json"


def read_disk(path: Path) -> dict[str, dict]:
    """The entries of the cache file; none where it is missing, unreadable or damaged."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        LOG.debug("ignoring the step cache %s: %s", path, exc)
        return {}
    entries = data.get("entries") if isinstance(data, dict) and data.get("version") == CACHE_VERSION else None
    if not isinstance(entries, dict):
        LOG.debug("ignoring the step cache %s: not a version %d cache", path, CACHE_VERSION)
        return {}
    return {k: v for k, v in entries.items() if isinstance(v, dict) and isinstance(v.get("step"), str)}


def write_disk(path: Path, key: str, entry: dict) -> None:
    """Add ``entry`` under ``key`` to the cache file, atomically (a temporary file in the same
    folder, then ``os.replace``); a file that cannot be written is left alone."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        entries = read_disk(path)
        entries.pop(key, None)
        entries[key] = entry
        entries = dict(list(entries.items())[-MAX_DISK_ENTRIES:])
        fd, tmp = tempfile.mkstemp(prefix=".steps-", suffix=".json", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump({"version": CACHE_VERSION, "entries": entries}, f, indent=1)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        LOG.debug("could not write the step cache %s: %s", path, exc)


def room_for(nbytes: int, device: torch.device) -> bool:
    """Whether ``nbytes`` more take at most half of the device's free memory (True where unknown)."""
    try:
        if device.type == "cuda":
            free = torch.cuda.mem_get_info(device)[0]
        elif device.type == "cpu":
            with open("/proc/meminfo") as f:
                free = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
        else:
            return True
    except (OSError, StopIteration, ValueError, RuntimeError):
        return True
    return nbytes <= free // 2


# --- measuring -----------------------------------------------------------------------------------


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(step, X: Tensor, T: Tensor | None) -> float:
    """Seconds of one ``step.step(X, T, 0)``, finished work on CUDA."""
    _synchronize(X.device)
    start = clock()
    step.step(X, T, 0.0)
    _synchronize(X.device)
    return clock() - start


def _tagged(step, selection: Selection):
    step.selection = selection
    mark_warm(selection.step)
    return step


def _try_build(name: str, build: Callable[[], object], X: Tensor, T: Tensor | None,
               setup: dict[str, float]) -> tuple[object | None, float]:
    """The candidate, built and warmed up by one call, and that call's seconds (its build's go
    into ``setup``); None where a JIT-compiled one fails (a broken Triton install or a driver
    mismatch must not stop training) or device memory runs out."""
    try:
        _synchronize(X.device)
        start = clock()
        step = build()
        _synchronize(X.device)
        setup[name] = clock() - start
        return step, time_call(step, X, T)
    except torch.OutOfMemoryError as exc:
        LOG.debug("step %s left out: %s", name, exc)
    except Exception as exc:
        if name not in JIT_COMPILED:
            raise
        warnings.warn(f"the fused kernel could not run ({type(exc).__name__}: {exc}); using the torch fast path",
                      RuntimeWarning, stacklevel=2)
    return None, math.inf


def _measure(candidates: Mapping[str, Callable[[], object]], X: Tensor, T: Tensor | None):
    """Build, warm up and time the candidates (see the module docstring); returns the chosen
    name, its built step, the seconds per step measured, the seconds of each build, and why
    measuring stopped early ('')."""
    names = list(candidates)
    base = base_step = None
    setup: dict[str, float] = {}
    while names and base_step is None:  # the rule's step, or the next one if it fails
        base = names.pop(0)
        base_step, _ = _try_build(base, candidates[base], X, T, setup)
    if base_step is None:  # pragma: no cover - the reference step always runs
        raise RuntimeError("no step could run")
    start = clock()  # the rule's build and first call are what the run costs without measuring
    first = time_call(base_step, X, T)
    seconds = {base: first}
    if first < MIN_STEP_SECONDS:
        return base, base_step, seconds, setup, f"a step takes under {format_seconds(MIN_STEP_SECONDS)}"
    seconds[base] = min(first, time_call(base_step, X, T))
    budget = BUDGET_STEPS * seconds[base]
    best, best_step, stopped = base, base_step, ""
    for i, name in enumerate(names):
        spent = clock() - start
        if spent + 2 * seconds[base] > budget:  # a challenger costs at least a warm-up and a timed call
            stopped = f"budget of {BUDGET_STEPS} steps spent before {', '.join(names[i:])}"
            break
        if name in JIT_COMPILED and name not in _warm and spent + first_call_seconds(X.device) > budget:
            LOG.debug("step %s left out: its first call in this process would pass the budget", name)
            continue
        if name in JIT_COMPILED and X.device.type == "cpu":
            load_jit()  # numba's load is timed apart, not as this candidate's set-up
        step, warm_up = _try_build(name, candidates[name], X, T, setup)
        if step is None:
            continue
        mark_warm(name)
        if name not in JIT_COMPILED and warm_up > SLOW * seconds[best]:
            seconds[name] = warm_up  # far slower even on its first call, whose extra costs are small here
            continue
        t = time_call(step, X, T)
        if t < CLOSE * seconds[best]:
            t = min(t, time_call(step, X, T))
        seconds[name] = t
        if t < seconds[best]:
            best, best_step = name, step
        del step  # a slower challenger's buffers (a copy of X, for the feature-major step) go now
    if best != base and seconds[best] > (1.0 - MARGIN) * seconds[base]:
        best, best_step = base, base_step
    return best, best_step, seconds, setup, stopped


def for_steps(selection: Selection, names, steps: int | None) -> str:
    """The step of least ``set-up + steps x step`` among the measured ``names``, or the selection's
    own (the fastest per step) unless that one beats it by more than :data:`MARGIN`; the
    selection's own where ``steps`` is None or nothing was measured."""
    chosen = selection.step
    if not steps or chosen not in selection.seconds:
        return chosen

    def cost(name: str) -> float:
        return selection.setup.get(name, 0.0) + steps * selection.seconds[name]

    best = min((n for n in names if n in selection.seconds), key=cost, default=chosen)
    return best if cost(best) < (1.0 - MARGIN) * cost(chosen) else chosen


def _for_steps(selection: Selection, candidates: Mapping[str, Callable[[], object]], steps: int | None,
               built=None):
    """The step :func:`for_steps` chooses, built (or ``built``, the selection's own step, where
    that is the choice), tagged with how it was chosen."""
    name = for_steps(selection, candidates, steps)
    if name == selection.step:
        return _tagged(built if built is not None else candidates[name](), selection)
    LOG.debug("step for %s: %s over %d steps, set-up included (%s per step)", selection.key, name, steps,
              selection.step)
    return _tagged(candidates[name](), Selection(name, selection.source, selection.seconds, selection.key,
                                                 f"set-up included over {steps} steps", selection.setup))


def choose(key: tuple, candidates: Mapping[str, Callable[[], object]], X: Tensor, T: Tensor | None, *, work: int,
           skip: str = "", steps: int | None = None):
    """The step to run, ``candidates[name]()`` for the chosen name (the rule's choice first),
    with a :class:`Selection` as its ``selection`` attribute. ``work``: entries of X times
    outputs per step (tiny problems are not measured); ``skip``: a reason not to measure;
    ``steps``: how many steps the run will take, where known (the set-up then counts)."""
    rule = next(iter(candidates))
    if not skip and work < TINY_WORK:
        skip = f"tiny problem ({work:,} entries x outputs)"
    if skip:
        return _tagged(candidates[rule](), Selection(rule, "rule", key=key, reason=skip))
    known = _choices.get(key)
    if known is not None and known.step in candidates:
        LOG.debug("step for %s: %s (chosen before in this process)", key, known.step)
        return _for_steps(Selection(known.step, "cache", known.seconds, key, known.reason, known.setup), candidates,
                          steps)
    path = cache_file()
    if path is not None:
        entry = read_disk(path).get(disk_key(key))
        if entry is not None and entry["step"] in candidates:
            seconds, setup = (_timings(entry.get(field_)) for field_ in ("seconds", "setup"))
            selection = _choices[key] = Selection(entry["step"], "disk", seconds, key, setup=setup)
            LOG.debug("step for %s: %s (from %s)", key, selection.step, path)
            return _for_steps(selection, candidates, steps)
    name, step, seconds, setup, stopped = _measure(candidates, X, T)
    selection = _choices[key] = Selection(name, "measured", seconds, key, stopped, setup)
    LOG.debug("step for %s: %s; measured %s%s", key, name,
              ", ".join(f"{n} {format_seconds(s)}" for n, s in seconds.items()), f" ({stopped})" if stopped else "")
    if path is not None and len(seconds) > 1:
        write_disk(path, disk_key(key), {"step": name, "seconds": seconds, "setup": setup,
                                         "written": time.strftime("%Y-%m-%d %H:%M:%S")})
    return _for_steps(selection, candidates, steps, built=step)


def _timings(value) -> dict[str, float]:
    """A cache entry's ``{name: seconds}`` field, its well-formed items only."""
    return {k: v for k, v in value.items() if isinstance(v, (int, float))} if isinstance(value, dict) else {}
