"""The GPU check (scripts/gpu_check.py, `make gpu-check`) cannot rot on a machine without a GPU: its dry run
resolves every part, its report reads each part's status, and the parts that run on a CPU too (the benchmark
rows, two ranks under torchrun, the Triton comparison in the interpreter) run here on small problems."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CUDA

ROOT = Path(__file__).resolve().parents[1]


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gpu_check = load(ROOT / "scripts" / "gpu_check.py")


def env_with_checkout() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))


def test_the_parts_and_their_timeouts_fit_the_budget(tmp_path):
    parts = gpu_check.parts(sys.executable, tmp_path, tmp_path)
    names = [p.name for p in parts]
    assert len(set(names)) == len(names) == 6
    assert all(p.timeout > 0 for p in parts)
    assert sum(p.timeout for p in parts) == gpu_check.BUDGET_S <= 8 * 60
    for p in parts:  # nothing installs anything, and everything runs with the interpreter given
        assert p.argv[0] == sys.executable and "pip" not in p.argv and "venv" not in p.argv


def test_a_part_passes_skips_fails_or_times_out(tmp_path):
    def part(code: str, timeout: int = 30):
        return gpu_check.Part("p", timeout, "a part", [sys.executable, "-c", code])

    env = env_with_checkout()
    passed = gpu_check.run_part(part("print('FIGURE 3.2 TB/s')"), env, tmp_path, tmp_path)
    assert (passed.status, passed.figures) == ("passed", ["3.2 TB/s"])
    assert "FIGURE 3.2 TB/s" in (tmp_path / "p.log").read_text()
    skipped = gpu_check.run_part(part("print('SKIP: no NCCL'); raise SystemExit(77)"), env, tmp_path, tmp_path)
    assert (skipped.status, skipped.figures) == ("skipped", ["no NCCL"])
    failed = gpu_check.run_part(part("print('broken'); raise SystemExit(3)"), env, tmp_path, tmp_path)
    assert failed.status == "failed" and failed.figures == ["exit 3: broken"]
    hung = gpu_check.run_part(part("import time; time.sleep(30)", timeout=1), env, tmp_path, tmp_path)
    assert hung.status == "failed" and hung.figures == ["timed out after 1 s"] and hung.seconds < 10
    path = gpu_check.report([passed, skipped, failed, hung], [("gpu", "NVIDIA H100 80GB HBM3")], tmp_path, False)
    text = path.read_text()
    assert "| gpu | NVIDIA H100 80GB HBM3 |" in text
    assert "| p | passed |" in text and "| p | skipped |" in text and text.count("| p | failed |") == 2


def test_the_dry_run_names_what_does_not_resolve():
    def broken():
        raise RuntimeError("no such config")

    part = gpu_check.Part("p", 5, "a part", [sys.executable, "scripts/missing.py"], files=("scripts/missing.py",),
                          modules=("torch_logreg.no_such_module",), check=broken)
    result = gpu_check.dry_run_part(part)
    assert result.status == "unresolved"
    assert result.figures[0] == f"would run `{sys.executable} scripts/missing.py` (timeout 5 s)"
    assert result.figures[1:] == ["missing scripts/missing.py",
                                  "import torch_logreg.no_such_module: ModuleNotFoundError: No module named "
                                  "'torch_logreg.no_such_module'", "RuntimeError: no such config"]


@pytest.mark.slow
@pytest.mark.skipif(CUDA, reason="this machine has a GPU: the check would run")
def test_without_a_gpu_the_check_stops_with_a_report(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "sees no CUDA GPU" in proc.stderr
    assert "nothing was run" in (tmp_path / gpu_check.REPORT).read_text()


@pytest.mark.slow
def test_the_dry_run_resolves_every_part(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--out", str(tmp_path), "--dry-run"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (tmp_path / gpu_check.REPORT).read_text()
    assert text.startswith("# GPU check (dry run)") and "| torch |" in text and "| driver |" in text
    for part in gpu_check.parts(sys.executable, tmp_path, tmp_path):
        line = next(line for line in text.splitlines() if line.startswith(f"| {part.name} |"))
        assert "| dry-run |" in line and f"(timeout {part.timeout} s)" in line, line
    count = int(re.search(r"(\d+) cuda tests collected", text).group(1))
    assert count >= 50


def test_make_gpu_check_passes_the_interpreter_the_folder_and_the_dry_run():
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # as a user's make would run it, not as a child of `make test` (whose MAKEFLAGS and MAKELEVEL
    # would have it print the directories it enters)
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    dry = subprocess.run(["make", "-n", "--no-print-directory", "gpu-check", "PYTHON=py3", "OUT=somewhere", "DRY_RUN=1"],
                         cwd=ROOT, capture_output=True, text=True, check=True, env=env).stdout.strip()
    assert dry == "py3 scripts/gpu_check.py --out somewhere --dry-run"
    real = subprocess.run(["make", "-n", "--no-print-directory", "gpu-check", "DRY_RUN=0"], cwd=ROOT, capture_output=True,
                          text=True, check=True, env=env).stdout.strip()
    assert real.endswith("scripts/gpu_check.py --out runs/gpu-check")


@pytest.mark.slow
def test_the_benchmark_rows_run_on_a_cpu(tmp_path):
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--device", "cpu", "--rows",
                           "1000", "--softmax-rows", "200", "--repeats", "2", "--epochs", "2", "--json", str(out),
                           "--markdown", str(tmp_path / "rows.md")],
                          capture_output=True, text=True, timeout=300, env=env_with_checkout())
    assert proc.returncode == 0, proc.stderr[-4000:]
    figures = [line for line in proc.stdout.splitlines() if line.startswith("FIGURE ")]
    assert len(figures) == 4 and "autograd/fused" in figures[1]
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 9 and all(r["median_s"] > 0 for r in rows)
    assert (tmp_path / "rows.md").read_text().startswith("| section | case |")
    # one step of the hand-written and the autograd models from zero agree (float32 rounding apart)
    assert all(float(r["note"].split("= ")[1].split()[0]) <= 1e-5 for r in rows if r["note"])


@pytest.mark.slow
def test_two_ranks_under_torchrun_reach_one_process_weights(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(ROOT / "scripts" / "gpu_parts.py"), "rank", "--backend", "gloo", "--device", "cpu"],
                          capture_output=True, text=True, timeout=300, env=env_with_checkout(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert re.search(r"FIGURE gloo on cpu, 2 ranks: .* differ from one process's by", proc.stdout)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_the_triton_comparison_runs_in_the_interpreter():
    """On the CPU the interpreter's answers are compared with the interpreter's: the script's own workings."""
    env = dict(env_with_checkout(), TRITON_INTERPRET="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_parts.py"), "triton", "--device", "cpu"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    assert "FIGURE 32 cases" in proc.stdout
