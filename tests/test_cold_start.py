"""Short runs: a run too short to pay a share of numba's load keeps to the torch path, decided
from the call alone (``select.kernels_pay``), whether or not the process has loaded numba.

In a test run the kernels are taken for runs of any length (``conftest.py``); here the library's
threshold is restored (and a process without numba played by replacing ``jit.ready`` and
``jit.imported``, which must change nothing), and one test starts a real fresh interpreter. What
is pinned: which step a short run takes and why (``selection.reason``), that it computes what the
kernels' step does (float64, to 1e-12). Nothing depends on this machine's speed.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import scipy.sparse as sp
import torch

import torch_logreg as tl
from torch_logreg.solvers.newton import EVALUATIONS
from torch_logreg.steps import batch_fused, jit, select
from torch_logreg.steps.batch import BatchStep
from torch_logreg.steps.feature_major import FeatureMajorStep
from torch_logreg.steps.reference import ReferenceStep

from helpers import KINDS, LIBRARY_MIN_RUN_SECONDS, assert_same_fit, train_variants

needs_numba = pytest.mark.skipif(not batch_fused.available(), reason="numba is not installed")
ROOT = Path(__file__).resolve().parents[1]


def go_cold(monkeypatch) -> None:
    """From here on, the library's shortest run for the kernels, in a process in which numba is
    neither imported nor loaded (as far as anything could look)."""
    monkeypatch.setattr(select, "MIN_RUN_SECONDS", LIBRARY_MIN_RUN_SECONDS)
    monkeypatch.setattr(jit, "ready", lambda: False)
    monkeypatch.setattr(jit, "imported", lambda: False)
    monkeypatch.setattr(jit, "load_now", lambda: 0.0)  # "loading" changes nothing here


@pytest.fixture
def cold(monkeypatch):
    go_cold(monkeypatch)


def test_a_run_takes_the_kernels_when_its_torch_path_would_take_long_enough(cold):
    per_step = select.TORCH_STEP_SECONDS + 1000 * select.TORCH_BYTE_SECONDS
    shortest = int(select.MIN_RUN_SECONDS / per_step) + 1  # the fewest steps whose torch path takes the threshold
    assert select.kernels_pay(shortest, 1000) and not select.kernels_pay(shortest - 1, 1000)
    assert select.kernels_pay(None, 1000)  # an unknown length keeps the kernels


def test_the_estimate_counts_a_batchs_logits(cold):
    """A softmax's logits (rows x outputs) cost its torch path more than its bytes do: 4 steps of
    60,000 x 784 x 10 float32 are a run for the kernels where the same X with one output is not."""
    X = torch.empty(60_000, 784, device="meta")  # the estimate reads the shape and bytes only
    softmax, binary = tl.SoftmaxRegression(784, 10), tl.LogisticRegression(784)
    assert select.torch_seconds(4, X.nbytes) < select.MIN_RUN_SECONDS  # the bytes alone: short
    assert select.dense_kernels_pay(softmax, X, 4) and not select.dense_kernels_pay(binary, X, 4)
    logits = 60_000 * 10
    assert select.torch_seconds(5, X.nbytes, logits) == pytest.approx(
        5 * (select.TORCH_STEP_SECONDS + X.nbytes * select.TORCH_BYTE_SECONDS + logits * select.TORCH_LOGIT_SECONDS))


def test_a_loaded_numba_costs_nothing_more():
    jit.load_now()
    assert jit.ready()
    assert jit.load() == {} and jit.load_now() == 0.0


@needs_numba
@pytest.mark.parametrize("loaded", [False, True])
def test_the_rule_does_not_depend_on_what_the_process_loaded(cold, monkeypatch, loaded):
    """The same call takes the same step with numba loaded or not."""
    monkeypatch.setattr(jit, "ready", lambda: loaded)
    monkeypatch.setattr(jit, "imported", lambda: loaded)
    model = tl.LogisticRegression(10).double()
    X = torch.randn(100, 10, dtype=torch.float64)
    T = model.targets((X[:, 0] > 0).double(), 100)
    short, long_ = 30, 100_000  # 0.8 ms and 2.6 s on the torch path by the estimate
    assert select.full_batch(model, X, T, steps=short).selection.step == "feature_major"
    assert select.full_batch(model, X, T, steps=long_).selection.step == "row_major"


@needs_numba
@pytest.mark.parametrize("kind", KINDS)
def test_a_short_cold_full_batch_run_takes_the_feature_major_step_and_the_same_path(monkeypatch, kind):
    warm, = train_variants(kind, [{}], epochs=30, lr=0.5, tol=0.0)
    assert not warm[0].stepper.selection.reason.startswith("a run of")
    go_cold(monkeypatch)
    with_cold, = train_variants(kind, [{}], epochs=30, lr=0.5, tol=0.0)
    trainer = with_cold[0]
    assert isinstance(trainer.stepper, FeatureMajorStep)
    selection = trainer.stepper.selection
    assert selection.source == "rule"
    assert "a run of 30 steps" in selection.reason and "numba's load" in selection.reason
    assert_same_fit(with_cold, warm)


@needs_numba
@pytest.mark.parametrize("kind", KINDS)
def test_a_cold_run_too_short_for_a_copy_of_x_takes_the_reference_step(monkeypatch, kind):
    epochs = select.FEATURE_MAJOR_MIN_STEPS - 1
    warm, = train_variants(kind, [{}], epochs=epochs, lr=0.5, tol=0.0)
    go_cold(monkeypatch)
    with_cold, = train_variants(kind, [{}], epochs=epochs, lr=0.5, tol=0.0)
    selection = with_cold[0].stepper.selection
    assert isinstance(with_cold[0].stepper, ReferenceStep) and selection.step == "reference"
    assert selection.source == "rule"
    assert f"a run of {epochs} steps" in selection.reason and "too few to pay for a copy of X" in selection.reason
    assert_same_fit(with_cold, warm)
    # from that many steps on, the copy pays
    longer, = train_variants(kind, [{}], epochs=epochs + 1, lr=0.5, tol=0.0)
    assert isinstance(longer[0].stepper, FeatureMajorStep)


@needs_numba
def test_the_warm_run_of_the_same_problem_takes_the_kernel():
    (trainer, _, _), = train_variants("binary", [{}], epochs=30, lr=0.5, tol=0.0)
    assert trainer.stepper.selection.step == "row_major" and not trainer.stepper.selection.reason


@needs_numba
def test_a_long_cold_run_pays_for_the_load(cold, monkeypatch):
    monkeypatch.setattr(select, "MIN_RUN_SECONDS", 1e-5)  # shorter than 30 torch steps
    (trainer, _, _), = train_variants("binary", [{}], epochs=30, lr=0.5, tol=0.0)
    assert trainer.stepper.selection.step == "row_major" and trainer.stepper.kernel_name == "batch_fused"


@needs_numba
@pytest.mark.parametrize("kind", KINDS)
def test_short_cold_mini_batches_take_the_reference_step(monkeypatch, kind):
    """The reference step, not the batch step's torch path: a step of its own name, which the
    checkpoint records and a resumed run takes again."""
    common = dict(epochs=3, lr=0.1, batch_size=32, tol=0.0)
    warm, = train_variants(kind, [{}], **common)
    assert isinstance(warm[0].stepper, BatchStep) and warm[0].stepper.kernel_name == "batch_fused"
    go_cold(monkeypatch)
    for run in train_variants(kind, [{}, {"step": "rule"}], **common):
        selection = run[0].stepper.selection
        assert isinstance(run[0].stepper, ReferenceStep) and selection.step == "reference"
        assert "a run of 30 steps" in selection.reason  # 300 rows / 32: 10 steps an epoch
        assert_same_fit(run, warm)


@needs_numba
def test_a_forced_step_is_not_changed_by_a_cold_process(cold):
    (full, _, _), (mini, _, _) = train_variants("binary", [{"step": "row_major"}, {"step": "row_major", "batch_size": 32}],
                                              epochs=2, lr=0.5, tol=0.0)
    assert full.stepper.kernel_name == mini.stepper.kernel_name == "batch_fused"
    assert full.stepper.selection.source == mini.stepper.selection.source == "forced"


@needs_numba
@pytest.mark.e2e
def test_a_fresh_process_runs_a_short_fit_without_numba():
    """A real fresh interpreter: a short fit (dense and sparse) and a small exact solve leave numba unimported (and
    SciPy's linear algebra); loading numba then takes its time, once."""
    script = textwrap.dedent("""
        import json, sys
        import torch
        import torch_logreg as tl
        from torch_logreg.steps import jit

        X = torch.randn(100, 10, generator=torch.Generator().manual_seed(0))
        y = (X[:, 0] > 0).double()
        trainer = tl.Trainer(tl.LogisticRegression(10).double(), X.double(), y, epochs=20, tol=0.0)
        trainer.run()
        tl.fit_exact(tl.LogisticRegression(10).double(), X.double(), y, l2=1e-3)
        sparse = tl.Trainer(tl.LogisticRegression(10).double(), (X.double() * (X > 1)).to_sparse_csr(), y,
                            epochs=20, tol=0.0)
        sparse.run()
        assert sparse.stepper.name == "sparse" and sparse.stepper.kernel_name is None
        report = {"step": trainer.stepper.selection.step, "numba": "numba" in sys.modules,
                  "scipy": "scipy.linalg" in sys.modules}
        if sys.argv[1] == "load":
            report["loaded"] = jit.load_now()
            report["after"] = jit.load_now()
        print(json.dumps(report))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run(mode: str) -> dict:
        out = subprocess.run([sys.executable, "-c", script, mode], env=env, capture_output=True, text=True,
                             timeout=300, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    first = run("load")
    assert first["step"] == "feature_major" and not first["numba"] and not first["scipy"]
    assert first["loaded"] > 0 and first["after"] == 0.0
    second = run("read")  # nothing kept changes the next process
    assert not second["numba"] and second["step"] == first["step"]


@needs_numba
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("batch_size", [0, 64])
def test_a_short_cold_run_on_sparse_x_takes_the_torch_products(monkeypatch, batch_size, weighted):
    gen = torch.Generator().manual_seed(3)
    dense = torch.randn(300, 40, generator=gen, dtype=torch.float64) * (torch.rand(300, 40, generator=gen) < 0.1)
    y = (dense.sum(1) > 0).double()
    runs = []
    for cold in (False, True):
        if cold:
            go_cold(monkeypatch)
        model = tl.LogisticRegression(40).double()
        weights = torch.linspace(0.5, 2.0, 300, dtype=torch.float64) if weighted else None
        trainer = tl.Trainer(model, sp.csr_matrix(dense.numpy()), y, epochs=5, lr=0.5, tol=0.0, batch_size=batch_size,
                             sample_weight=weights)
        trainer.run()
        runs.append((trainer, torch.cat([p.detach().reshape(-1) for p in model.parameters()]), trainer.history))
    (warm, _, _), (cold_trainer, _, _) = runs
    assert warm.stepper.kernel_name is not None and cold_trainer.stepper.kernel_name is None
    assert "numba's load" in cold_trainer.stepper.selection.reason
    assert_same_fit(runs[1], runs[0])


@needs_numba
@pytest.mark.parametrize("solver", ["newton", "lbfgs", "proximal"])
def test_a_short_cold_exact_solve_takes_the_torch_path_to_the_same_optimum(monkeypatch, cancer, solver):
    from torch_logreg.solvers import fit_exact
    from torch_logreg.steps import select

    X, y = (torch.as_tensor(a) for a in cancer)
    chosen = []
    full_batch = select.full_batch

    def spy(*args, **kwargs):
        step = full_batch(*args, **kwargs)
        chosen.append(step)
        return step

    monkeypatch.setattr(select, "full_batch", spy)
    solutions = []
    for cold in (False, True):
        if cold:
            go_cold(monkeypatch)
        model = tl.LogisticRegression(30).double()
        fit_exact(model, X, y, solver=solver, l2=1e-3, l1=1e-3 if solver == "proximal" else 0.0, tol=1e-10,
                  max_iter=1000)
        solutions.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    warm, cold_step = chosen
    # Newton weighs the evaluations a solve takes (newton.EVALUATIONS), too few for the copy of X
    expected = (("reference", f"a run of {EVALUATIONS} steps") if solver == "newton"
                else ("feature_major", "a run of 1,000 steps"))
    assert warm.selection.step == "row_major" and cold_step.selection.step == expected[0]
    assert expected[1] in cold_step.selection.reason
    torch.testing.assert_close(solutions[1], solutions[0], rtol=0, atol=1e-7)
