"""`torch-logreg train` under torchrun: the same command with two processes (gloo) reaches
the weights of one process, and rank 0 alone writes the run directory."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from torch_logreg.app.checkpoint import load_checkpoint

from helpers import run_cli

#: the command line end to end: left out of `make test-fast`
pytestmark = pytest.mark.e2e

SETS = ["train.device=cpu", "train.dtype=float64", "train.patience=0", "train.tol=0", "train.epochs=60",
        "train.solver=nesterov", "log.checkpoint_every=20"]


def _args(run_dir):
    args = ["train", "--quiet", "--run-dir", str(run_dir)]
    for s in SETS:
        args += ["--set", s]
    return args


@pytest.mark.slow
def test_torchrun_two_ranks_match_one_process(tmp_path, capsys):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    single = tmp_path / "single"
    code, _, err = run_cli(capsys, *_args(single))  # one process: this one
    assert code == 0, err
    runs = tmp_path / "runs"
    runs.mkdir()
    multi = runs / "multi"
    result = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "torch_logreg.app.cli", *_args(multi)],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [p.name for p in runs.iterdir()] == ["multi"]  # one directory, written by rank 0
    assert sum(line.startswith("test ") for line in result.stdout.splitlines()) == 1  # one report
    a = load_checkpoint(single / "checkpoint.pt")["model"]
    b = load_checkpoint(multi / "checkpoint.pt")["model"]
    for k in a:
        rel = ((a[k] - b[k]).abs().max() / a[k].abs().max()).item()
        assert rel <= 1e-10, (k, rel)
