"""The GPU check: everything in the project that needs an NVIDIA GPU, as one command with a time budget.

    python3 scripts/gpu_check.py --out DIR [--dry-run] [--only PART,...]
    make gpu-check [PYTHON=python3] [OUT=DIR] [DRY_RUN=1]

It uses the interpreter that runs it as it is (no virtual environment, nothing installed): that interpreter
needs PyTorch with CUDA (and Triton, pytest, numba, scikit-learn... as the project does); the project is
imported from this checkout (PYTHONPATH). Each part runs in a process of its own with its own timeout, so one
hang does not eat the rest; the timeouts add up to :data:`BUDGET_S`. One report, ``DIR/gpu-check.md`` (a table:
part, status, seconds, figures; the versions of torch, CUDA, the driver, NCCL and Triton; the GPU's name), and a
log of each part in ``DIR/logs/``.

``--dry-run`` runs anywhere, on the CPU: it checks that every part's files exist, its modules import and its
command resolves (pytest collects the ``cuda`` tests, torchrun is there), lists what would run with its timeout,
writes the report with status ``dry-run`` and exits 0 when all resolve (1 otherwise).

A part passes on exit status 0; 77 after a ``SKIP: reason`` line means skipped; any other status, or its
timeout, means failed. Lines ``FIGURE text`` of its output go into the report's figures column. The check
exits 0 when no part failed.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIPPED = 77
REPORT = "gpu-check.md"


@dataclass
class Part:
    """One line of the report: ``argv`` run from the checkout within ``timeout`` seconds."""

    name: str
    timeout: int
    what: str
    argv: list[str]
    files: tuple[str, ...] = ()  # that must exist in the checkout
    modules: tuple[str, ...] = ()  # that must import (from the checkout or the interpreter)
    gpu_modules: tuple[str, ...] = ()  # that must import on the GPU machine (the CPU builds of torch lack them)
    figures: object = None  # figures(log text, run folder) -> extra figures, after the FIGURE lines
    check: object = None  # check() for the dry run: a note (or None); raises where the part would not start


@dataclass
class Result:
    part: Part
    status: str
    seconds: float
    figures: list[str] = field(default_factory=list)


def pytest_summary(text: str, _folder: Path) -> list[str]:
    """pytest's last line (``12 passed, 3 skipped in 40.1s``) without its decoration."""
    lines = [line.strip("= ") for line in text.splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
    return lines[-1:]


def train_figures(_text: str, folder: Path) -> list[str]:
    """What the synthetic run's metrics.json says: where it ran, how it stopped, the held-out scores."""
    import json

    path = folder / "train" / "metrics.json"
    if not path.exists():
        return []
    m = json.loads(path.read_text())
    test = m.get("test", {})
    figures = [f"device {m.get('device')}, {m.get('epochs')} epochs ({m.get('stop_reason')}) in "
               f"{m.get('wall_time_s', float('nan')):.2f} s",
               f"test loss {test.get('loss', float('nan')):.4f}, accuracy {test.get('accuracy', float('nan')):.4f}"]
    if "true_weights_cosine" in m:
        figures.append(f"cosine to the true weights {m['true_weights_cosine']:.4f}")
    return figures


def synthetic_config() -> None:
    """The train part's config as the command will read it: raises where it would not load."""
    from torch_logreg.app.config import load_config

    load_config(ROOT / "configs" / "synthetic_gpu.toml", ["train.device=cuda"])


def collect_cuda_tests(python: str) -> str:
    """pytest collects the tests marked cuda (on any machine: the marker, not the GPU, selects them)."""
    proc = subprocess.run([python, "-m", "pytest", "--collect-only", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                           "tests"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    found = re.search(r"(\d+)/\d+ tests collected|(\d+) tests? collected", proc.stdout)
    count = int(next(g for g in found.groups() if g)) if found else 0
    if proc.returncode or not count:
        raise RuntimeError(f"pytest collected no cuda tests: {(proc.stdout + proc.stderr).strip().splitlines()[-1:]}")
    return f"{count} cuda tests collected"


def import_benchmark(name: str) -> None:
    """``benchmarks/{name}.py`` imports (as its own folder on sys.path makes it, for ``from common import``)."""
    folder = str(ROOT / "benchmarks")
    sys.path.insert(0, folder)
    try:
        importlib.import_module(name)
    finally:
        sys.path.remove(folder)


def parts(python: str, out: Path, scratch: Path) -> list[Part]:
    """The parts in the order they run; the timeouts add up to BUDGET_S."""
    bench_out = out / "bench_gpu"
    ranks_s = 60  # NCCL, then gloo where NCCL refuses: each try gets half of it, less a margin to report
    return [
        Part("cuda tests", 150, "the tests marked cuda (CUDA results against CPU ones), Triton compiled included",
             [python, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "tests"],
             files=("tests/conftest.py",), modules=("pytest",), figures=pytest_summary,
             check=lambda: collect_cuda_tests(python)),
        Part("triton kernel", 45, "the fused Triton kernel compiled on the GPU against its interpreter's answers",
             [python, "scripts/gpu_parts.py", "triton"], files=("scripts/gpu_parts.py",),
             modules=("torch_logreg.steps.fused_triton",), gpu_modules=("triton",)),
        Part("cuda graph", 30, "full-batch gd with cuda_graph=True against the plain loop: weights, time per epoch",
             [python, "scripts/gpu_parts.py", "cuda-graph"], files=("scripts/gpu_parts.py",),
             modules=("torch_logreg.steps.cuda_graph",)),
        Part("torchrun nccl", ranks_s, "2 processes on one GPU under torchrun with NCCL (gloo on the GPU where NCCL refuses)",
             [python, "scripts/gpu_parts.py", "ranks", "--timeout", str(ranks_s - 5)], files=("scripts/gpu_parts.py",),
             modules=("torch_logreg.distributed", "torch.distributed.run")),
        Part("train synthetic_gpu", 90, "torch-logreg train --config configs/synthetic_gpu.toml on cuda, end to end",
             [python, "-m", "torch_logreg", "train", "--config", "configs/synthetic_gpu.toml", "--quiet", "--run-dir",
              str(scratch / "train"), "--device", "cuda"],
             files=("configs/synthetic_gpu.toml",), modules=("torch_logreg.app.cli",), figures=train_figures,
             check=synthetic_config),
        Part("gpu benchmark", 105, "fused binary pass vs a device-to-device copy, softmax vs autograd, epoch at 1e7 x 100",
             [python, "benchmarks/bench_gpu.py", "--device", "cuda", "--json", f"{bench_out}.json", "--markdown",
              f"{bench_out}.md"], files=("benchmarks/bench_gpu.py", "benchmarks/common.py"),
             check=lambda: import_benchmark("bench_gpu")),
    ]


#: the sum of the parts' timeouts, seconds: within 8 minutes on one GPU
BUDGET_S = 480


def environment() -> dict[str, str]:
    """The child processes' environment: this checkout first on PYTHONPATH, no .pyc files written into
    the checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def versions(python: str, env: dict) -> list[tuple[str, str]]:
    """torch, CUDA, NCCL, Triton, the driver and the GPU, as the interpreter and nvidia-smi see them."""
    probe = (
        "import platform, torch\n"
        "print('python', platform.python_version())\n"
        "print('torch', torch.__version__, '| CUDA', torch.version.cuda, '| cuda available', torch.cuda.is_available())\n"
        "if torch.cuda.is_available():\n"
        "    p, count = torch.cuda.get_device_properties(0), torch.cuda.device_count()\n"
        "    print('gpu', p.name, f'| sm_{p.major}{p.minor} | {p.total_memory / 2**30:.1f} GiB | {count} device(s)')\n"
        "    v = torch.cuda.nccl.version() if torch.distributed.is_nccl_available() else 'none'\n"
        "    print('nccl', '.'.join(map(str, v)) if isinstance(v, tuple) else v)\n"
        "try:\n"
        "    import triton; print('triton', triton.__version__)\n"
        "except ImportError:\n"
        "    print('triton', 'not installed')\n"
    )
    rows = []
    try:
        out = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=120, env=env)
        for line in out.stdout.splitlines():
            key, _, value = line.partition(" ")
            rows.append((key, value))
        if out.returncode:
            rows.append(("probe", f"failed: {out.stderr.strip().splitlines()[-1:]}"))
    except subprocess.TimeoutExpired:
        rows.append(("probe", "timed out"))
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        rows.append(("driver", smi.stdout.strip().replace("\n", "; ") or smi.stderr.strip()))
    except (OSError, subprocess.TimeoutExpired):
        rows.append(("driver", "nvidia-smi not found"))
    return rows


def run_part(part: Part, env: dict, logs: Path, scratch: Path) -> Result:
    log = logs / f"{part.name.replace(' ', '-')}.log"
    started = time.perf_counter()
    try:
        proc = subprocess.run(part.argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=part.timeout)
        text, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        text, code = out + err, None
    seconds = time.perf_counter() - started
    log.write_text("$ " + " ".join(part.argv) + "\n" + text)
    figures = [line.removeprefix("FIGURE ").strip() for line in text.splitlines() if line.startswith("FIGURE ")]
    if part.figures is not None:
        figures += part.figures(text, scratch)
    if code is None:
        status = "failed"
        figures.append(f"timed out after {part.timeout} s")
    elif code == SKIPPED:
        status = "skipped"
        figures += [line.removeprefix("SKIP:").strip() for line in text.splitlines() if line.startswith("SKIP:")]
    else:
        status = "passed" if code == 0 else "failed"
        if code:
            tail = [line for line in text.splitlines() if line.strip()][-1:]
            figures.append(f"exit {code}: {tail[0][:200] if tail else ''}")
    print(f"{part.name}: {status} in {seconds:.1f} s  {'; '.join(figures)}", flush=True)
    return Result(part, status, seconds, figures)


def dry_run_part(part: Part) -> Result:
    """Files there, modules importable, the part's own check (the cuda tests collected, the config loaded, ...)."""
    started = time.perf_counter()
    problems, notes = [f"missing {f}" for f in part.files if not (ROOT / f).exists()], []
    for name in part.modules:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001  (any failure to import is the finding)
            problems.append(f"import {name}: {type(e).__name__}: {e}")
    notes += [f"{name} not installed here (needed on the GPU machine)" for name in part.gpu_modules
              if importlib.util.find_spec(name) is None]
    if part.check is not None:
        try:
            notes += [note for note in [part.check()] if note]
        except Exception as e:  # noqa: BLE001
            problems.append(f"{type(e).__name__}: {e}")
    figures = [f"would run `{' '.join(part.argv)}` (timeout {part.timeout} s)", *notes, *problems]
    status = "unresolved" if problems else "dry-run"
    print(f"{part.name}: {status}  {'; '.join(figures)}", flush=True)
    return Result(part, status, time.perf_counter() - started, figures)


def report(results: list[Result], header: list[tuple[str, str]], out: Path, dry_run: bool) -> Path:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["# GPU check" + (" (dry run)" if dry_run else ""), "", "| | |", "|---|---|"]
    lines += [f"| {cell(k)} | {cell(v)} |" for k, v in header]
    if results:
        lines += ["", "| part | status | seconds | timeout | figures |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.part.name} | {r.status} | {r.seconds:.1f} | {r.part.timeout} | "
                     f"{cell('; '.join(r.figures))} |")
    if results:
        lines += ["", "What each part checks:", ""]
    lines += [f"- **{r.part.name}**: {r.part.what}" for r in results]
    bench = out / "bench_gpu.md"
    if bench.exists() and not dry_run:
        lines += ["", "## GPU benchmark rows", "", bench.read_text().strip(),
                  "", "Read against the targets in benchmarks/README.md (GPU rows)."]
    path = out / REPORT
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="the folder for the report and the logs (made if missing)")
    p.add_argument("--dry-run", action="store_true", help="check that every part resolves, on any machine; run nothing")
    p.add_argument("--only", help="comma-separated part names (default: all)")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        return check(Path(tmp), out, args.dry_run, args.only, p.error)


def check(scratch: Path, out: Path, dry_run: bool, only: str | None, error) -> int:
    """Every part (or those ``only`` names) with ``scratch`` for its temporary files; the report into ``out``."""
    python = sys.executable
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = environment()
    os.environ["PYTHONPATH"] = env["PYTHONPATH"]  # the dry run imports in this process too
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    todo = parts(python, out, scratch)
    assert sum(part.timeout for part in todo) == BUDGET_S
    if only:
        names = [n.strip() for n in only.split(",")]
        unknown = set(names) - {part.name for part in todo}
        if unknown:
            error(f"unknown part(s) {sorted(unknown)}; the parts: {[part.name for part in todo]}")
        todo = [part for part in todo if part.name in names]

    header = versions(python, env)
    header.append(("budget", f"{sum(part.timeout for part in todo)} s (the parts' timeouts added up)"))
    if not dry_run:
        available = dict(header).get("torch", "")
        if "cuda available True" not in available:
            header.append(("stopped", "this interpreter's torch sees no CUDA GPU; nothing was run"))
            path = report([], header, out, dry_run=False)
            print(f"{python}: torch sees no CUDA GPU ({available or 'torch did not import'}); report: {path}",
                  file=sys.stderr)
            return 2
    results = []
    for part in todo:
        results.append(dry_run_part(part) if dry_run else run_part(part, env, logs, scratch))
    metrics = scratch / "train" / "metrics.json"
    if metrics.exists():  # the run itself goes with the scratch folder
        shutil.copy(metrics, logs / "train-metrics.json")
    path = report(results, header, out, dry_run)
    print(f"report: {path}")
    bad = {"unresolved"} if dry_run else {"failed"}
    return 1 if any(r.status in bad for r in results) else 0

if __name__ == "__main__":
    sys.exit(main())
