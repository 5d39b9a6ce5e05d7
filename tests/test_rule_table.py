"""The default step as one table (``select.RULE``): the first matching row decides, from the call
alone, and ``selection.describe()`` names that row. Shapes here are tiny; nothing is timed."""

import pytest
import scipy.sparse as sp
import torch

import torch_logreg as tl
from torch_logreg import validation
from torch_logreg.steps import batch_fused, select

from helpers import LIBRARY_MIN_RUN_SECONDS

needs_numba = pytest.mark.skipif(not batch_fused.available(), reason="numba is not installed")


def row_of(step) -> int:
    """The row number a selection names (``"rule row N: ..."``)."""
    words = step.selection.rule
    assert words.startswith("rule row "), words
    return int(words.removeprefix("rule row ").split(":")[0])


def test_every_row_has_words_a_step_and_a_test():
    assert select.RULE[-1].when == "otherwise"
    for row in select.RULE:
        assert row.when and row.step in ("reference", "feature_major", "row_major", "fused", "sparse")
        assert callable(row.test)


def test_the_last_row_matches_anything():
    call = select.Call(None, None, "meta", False, True, None, 0)
    assert select.decide(call) == len(select.RULE)


@pytest.mark.parametrize("steps, row", [(3, 5), (40, 6)])
def test_a_short_full_batch_run_is_decided_by_its_length(monkeypatch, steps, row):
    monkeypatch.setattr(select, "MIN_RUN_SECONDS", LIBRARY_MIN_RUN_SECONDS)
    model = tl.LogisticRegression(5).double()
    X = torch.randn(50, 5, dtype=torch.float64)
    T = model.targets((X[:, 0] > 0).long(), 50)
    step = select.full_batch(model, X, T, steps=steps)
    assert row_of(step) == row and step.selection.step == select.RULE[row - 1].step
    assert f"rule row {row}" in step.selection.describe()


@needs_numba
def test_a_small_cpu_problem_takes_the_row_of_the_batch_kernel():
    model = tl.LogisticRegression(5).double()
    X = torch.randn(50, 5, dtype=torch.float64)
    T = model.targets((X[:, 0] > 0).long(), 50)
    step = select.full_batch(model, X, T)
    assert row_of(step) == 8 and step.selection.step == "row_major"


@needs_numba
@pytest.mark.parametrize("short, row, step_name", [(True, 3, "reference"), (False, 4, "row_major")])
def test_mini_batches_take_rows_3_and_4(monkeypatch, short, row, step_name):
    monkeypatch.setattr(select, "MIN_RUN_SECONDS", LIBRARY_MIN_RUN_SECONDS if short else 0.0)
    model = tl.LogisticRegression(5)
    step = select.mini_batch(model, 8, torch.float32, torch.device("cpu"), steps=10)
    assert row_of(step) == row and step.selection.step == step_name


@pytest.mark.parametrize("short, row", [(True, 1), (False, 2)])
def test_sparse_x_takes_rows_1_and_2(monkeypatch, short, row):
    monkeypatch.setattr(select, "MIN_RUN_SECONDS", LIBRARY_MIN_RUN_SECONDS if short else 0.0)
    X = validation.as_tensor(sp.random(40, 30, density=0.2, format="csr", random_state=0), "X")
    model = tl.LogisticRegression(30).double()
    T = model.targets(torch.arange(40) % 2, 40)
    step = select.full_batch(model, X, T, steps=5)
    assert row_of(step) == row and step.selection.step == "sparse"


def test_a_forced_step_names_no_row():
    model = tl.LogisticRegression(5).double()
    X = torch.randn(50, 5, dtype=torch.float64)
    T = model.targets((X[:, 0] > 0).long(), 50)
    step = select.full_batch(model, X, T, step="reference")
    assert step.selection.rule == "" and step.selection.describe() == "reference (forced)"
