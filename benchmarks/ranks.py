"""Peak memory of `torch-logreg train` on an svmlight file: one process against each of two
torchrun ranks, which read only their halves of the file.

    python benchmarks/ranks.py [--quick]          # or as the ``ranks`` section of run.py

Each run's processes report their own peak resident size (``ru_maxrss``) when they finish. The
same command on a 200-row file of the same width gives each process's fixed part (the imports,
TensorBoard, the model); what is compared is each peak above it, what the data took.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def worker(out: str, args: list[str]) -> int:
    """Run the command line ``args``, then write this process's peak."""
    import os

    from torch_logreg.app.cli import main

    code = main(args)
    Path(out, f"rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps({"peak_mib": _peak_mib(), "code": code}))
    return code


def write_svmlight(path: Path, n: int, d: int, per_row: int, seed: int = 0) -> int:
    """An n-row svmlight file with ``per_row`` features a row out of ``d``; returns its CSR bytes."""
    import scipy.sparse
    from sklearn.datasets import dump_svmlight_file

    rng = np.random.default_rng(seed)
    cols = np.sort(rng.choice(d, size=(n, per_row)), axis=1)
    keep = np.concatenate([np.ones((n, 1), bool), cols[:, 1:] != cols[:, :-1]], axis=1)  # unique per row
    indptr = np.concatenate([[0], np.cumsum(keep.sum(1))])
    X = scipy.sparse.csr_matrix((rng.standard_normal(int(indptr[-1])).round(3), cols[keep], indptr), shape=(n, d))
    w = rng.standard_normal(d)
    y = (X @ w + 0.5 * rng.standard_normal(n) > 0).astype(int)
    dump_svmlight_file(X, y, str(path), zero_based=False)
    return X.data.nbytes * 2 + X.indptr.nbytes  # float64 values and int64 indices, as the run holds them


def _run(command: list[str], out: Path, args: list[str], cwd: Path) -> list[dict]:
    out.mkdir()
    result = subprocess.run([*command, str(HERE), "--worker", str(out), *args], capture_output=True, text=True,
                            cwd=cwd, timeout=1800)
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]


def measure(n: int, d: int, per_row: int) -> dict:
    """Peaks (MiB) of one process and of each of two ranks on an n-row file, each above the same
    run's peak on a 200-row file."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        peaks = {}
        for rows in (200, n):
            data = tmp / f"d{rows}.svm"
            csr_bytes = write_svmlight(data, rows, d, per_row)
            if rows == n:
                out.update(file_mib=data.stat().st_size / 2**20, csr_mib=csr_bytes / 2**20)
            args = ["train", "--quiet", "--run-dir", "RUN", "--set", f"data.path={data}", "--set", "train.device=cpu",
                    "--set", "train.epochs=5", "--set", "train.patience=0", "--set", "train.tol=0", "--set",
                    "data.val_fraction=0", "--set", "data.test_fraction=0"]
            runs = {"one": [sys.executable]}
            if torchrun is not None:
                runs["two"] = [torchrun, "--standalone", "--nproc_per_node=2"]
            for name, command in runs.items():
                where = tmp / f"{name}{rows}"
                peaks[name, rows] = [r["peak_mib"] for r in _run(command, where, [a.replace("RUN", str(where / "run"))
                                                                                  for a in args], tmp)]
        out["one_mib"] = peaks["one", n][0] - peaks["one", 200][0]
        out["base_mib"] = peaks["one", 200][0]
        out["ranks_mib"] = None if torchrun is None else [a - b for a, b in zip(peaks["two", n], peaks["two", 200])]
    return out


def report(m: dict, n: int, d: int, per_row: int) -> list[str]:
    lines = [f"train on svmlight {n:,} x {d:,}, {per_row} stored a row: file {m['file_mib']:.0f} MiB, CSR (float64, "
             f"int64) {m['csr_mib']:.0f} MiB; peaks above the same run on 200 rows ({m['base_mib']:.0f} MiB):",
             f"  one process: {m['one_mib']:.0f} MiB"]
    if m["ranks_mib"] is None:
        lines.append("  torchrun: not installed next to this Python")
    else:
        worst = max(m["ranks_mib"])
        lines.append(f"  two torchrun ranks: {', '.join(f'{r:.0f}' for r in m['ranks_mib'])} MiB; the larger is "
                     f"{worst / m['one_mib']:.2f} of one process's")
    return lines


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return worker(argv[1], argv[2:])
    quick = "--quick" in argv
    n, d, per_row = (50_000, 1 << 18, 40) if quick else (300_000, 1 << 20, 40)
    print("\n".join(report(measure(n, d, per_row), n, d, per_row)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
