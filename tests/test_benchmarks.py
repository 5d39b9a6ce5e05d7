"""The benchmark suite runs end to end in its quick form (no assertions on time)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

#: the command line end to end: left out of `make test-fast`
pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]


def test_run_quick_prints_the_table(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--json", str(out)],
        # a bound for a hang only: in a fresh clone numba compiles every kernel the run takes first
        cwd=ROOT, capture_output=True, text=True, timeout=1500,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = proc.stdout
    assert "| section" in text and "ratio (vs / this)" in text
    for section in ("binary", "binary mb", "softmax", "softmax mb", "exact", "sparse", "out-of-core", "scaling", "tiny",
                    "fresh", "fits"):
        assert f"| {section} " in text, section
    assert "log-log slope" in text
    data = json.loads(out.read_text())
    assert data["quick"] is True and data["machine"]["torch"]
    timed = [r for r in data["rows"] if r["median_s"] is not None]
    assert timed and all(r["median_s"] > 0 for r in timed)
    # the one-step agreement of hand-written and autograd weights is reported, and holds: float32
    # sums over up to 1e6 rows in another order (and another split over threads) differ by rounding
    # only (0 to 2e-6 seen); a wrong gradient would move the weights by ~lr * |gradient| ~ 0.1
    diffs = [float(r["note"].split("=")[-1]) for r in data["rows"] if "w_autograd" in r["note"]]
    assert diffs and all(d <= 5e-5 for d in diffs)
