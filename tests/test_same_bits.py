"""The default step is a function of the call alone: the same fit gives bit-identical weights in a
fresh process, after other fits (numba loaded, other shapes chosen, a fit of the same shape on a
forced step) and on a rerun.

Real fresh interpreters (the suite's own process takes the kernels for runs of any length:
``conftest.py``). The fits cover both sides of the rule: runs too short for the kernels and runs
long enough for them, binary and softmax, the full batch and mini-batches of 64. What is compared
is the bits of the weights, within one machine; no figure here depends on its rounding.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from torch_logreg.steps import fused_cpu

ROOT = Path(__file__).resolve().parents[1]

#: name: (kind, rows, features, epochs, batch_size); each case's own step is checked below
CASES = {
    "binary full, short": ("binary", 20_000, 50, 10, 0),
    "binary full, long": ("binary", 100_000, 100, 30, 0),
    "softmax full, short": ("softmax", 20_000, 64, 30, 0),
    "softmax full, long": ("softmax", 40_000, 256, 30, 0),
    "binary B=64, long": ("binary", 40_000, 50, 8, 64),
    "softmax B=64, short": ("softmax", 20_000, 50, 2, 64),
}

SCRIPT = textwrap.dedent("""
    import hashlib, json, sys
    import torch
    import torch_logreg as tl

    CASES = json.loads(sys.argv[1])
    mode, names = sys.argv[2], json.loads(sys.argv[3])

    def fit(kind, n, d, epochs, batch_size, step="rule", seed=0):
        gen = torch.Generator().manual_seed(seed)
        X = torch.randn(n, d, generator=gen)
        if kind == "binary":
            model, y = tl.LogisticRegression(d), (X[:, 0] + 0.5 * X[:, 1] > 0).long()
        else:
            model, y = tl.SoftmaxRegression(d, 5), (X[:, :5] + 0.3 * X[:, 5:10]).argmax(1)
        torch.manual_seed(seed)
        trainer = tl.Trainer(model, X, y, epochs=epochs, batch_size=batch_size, lr=0.5, tol=0.0, step=step)
        trainer.run()
        weights = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        return hashlib.sha256(weights.numpy().tobytes()).hexdigest(), trainer.stepper.selection.step

    if mode == "after":  # other shapes, numba loaded, and a fit of a shape below on a forced step
        fit("binary", 30_000, 40, 5, 32)
        fit("softmax", 5_000, 300, 40, 0)
        fit(*CASES["binary full, long"], step="feature_major")
    out = {}
    for name in names:
        out[name] = fit(*CASES[name])
        if mode == "after":  # a rerun in the same process
            assert fit(*CASES[name]) == out[name], name
    print(json.dumps(out))
""")


def _run(mode: str, names: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(CASES), mode, json.dumps(names)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.e2e
@pytest.mark.skipif(not fused_cpu.available(), reason="numba is not installed")
def test_a_fit_gives_the_same_bits_in_a_fresh_process_after_other_fits_and_on_a_rerun():
    names = list(CASES)
    after = _run("after", names)
    for name in names:
        fresh = _run("fresh", [name])[name]  # the case first in its process
        assert fresh == after[name], f"{name}: {fresh[1]} in a fresh process, {after[name][1]} after other fits"
    steps = {name: step for name, (_, step) in after.items()}
    # both sides of the rule are covered: the torch path for short runs, the kernels for long ones
    assert steps["binary full, short"] == "reference" and steps["softmax full, short"] == "feature_major"
    assert steps["binary full, long"] == steps["softmax full, long"] == "fused"
    assert steps["binary B=64, long"] == "row_major" and steps["softmax B=64, short"] == "reference"


@pytest.mark.e2e
@pytest.mark.skipif(not fused_cpu.available(), reason="numba is not installed")
def test_a_kernel_leaves_torch_its_thread_count():
    """numba's OpenMP layer sets OpenMP's thread count when a parallel kernel first starts it, and
    torch runs on the same runtime: with numba's default (every logical CPU) a fit after a kernel
    summed on more threads than before it, and its weights changed in their last bits."""
    script = textwrap.dedent("""
        import torch
        torch.set_num_threads(1)
        import torch_logreg as tl
        X = torch.randn(5_000, 100, generator=torch.Generator().manual_seed(0))
        trainer = tl.Trainer(tl.LogisticRegression(100), X, (X[:, 0] > 0).long(), epochs=2, step="fused")
        trainer.run()
        print(trainer.stepper.selection.step, torch.get_num_threads())
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", script], env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["fused", "1"]
