"""The blocked full-batch step (``steps/blocked.py``) equals the reference step within a bound
scaled to the sums' sizes and the dtype's rounding (never bit for bit: CI runs on AVX2
and AVX-512 CPUs, whose BLAS kernels sum in other orders), on every kind, with and without an
intercept and an L2 term, with N a multiple of the block, not one, and smaller than one block.
It is forced through the loop and a config like the other steps, and refused where it cannot run.
(That "auto" may pick it is in test_step_choice.py, with that file's clock that only the steps
advance.)"""

import itertools

import pytest
import torch

import torch_logreg as tl
from torch_logreg.errors import UsageError
from torch_logreg.steps import blocked, select
from torch_logreg.steps.blocked import BlockedStep, block_rows

from helpers import (
    KINDS,
    assert_reuses_buffers_and_follows_updates,
    assert_same_fit,
    assert_step_equals_reference,
    step_problem,
    train_variants,
)

#: (N, rows per block): several blocks and a short last one, whole blocks only, one short block,
#: one row, and the default block size (N smaller than one block)
SHAPES = [(1000, 64), (512, 64), (37, 64), (1, 64), (300, None)]
GRID = list(itertools.product(KINDS, (True, False), (0.0, 0.1), (torch.float64, torch.float32), SHAPES))


def problem(kind: str, n: int, d: int = 7, *, bias: bool = True, dtype=torch.float64, seed: int = 0):
    return step_problem(kind, n, d, bias=bias, dtype=dtype, seed=seed)


@pytest.mark.parametrize("kind,bias,l2,dtype,shape", GRID)
def test_blocked_step_equals_reference_step(kind, bias, l2, dtype, shape):
    n, rows = shape
    model, X, T = problem(kind, n, bias=bias, dtype=dtype, seed=GRID.index((kind, bias, l2, dtype, shape)))
    step = BlockedStep(model, X, T, rows=rows)
    assert len(step.x_blocks) == -(-n // step.rows)
    assert_step_equals_reference(step, model, X, T, l2)


@pytest.mark.parametrize("kind", KINDS)
def test_blocked_step_reuses_its_buffers_and_follows_in_place_updates(kind):
    model, X, T = problem(kind, 200, 5, seed=3)
    step = BlockedStep(model, X, T, rows=64)
    assert all(xb.untyped_storage().data_ptr() == X.untyped_storage().data_ptr() for xb in step.x_blocks)  # no copy
    assert_reuses_buffers_and_follows_updates(step, model, X, T)


def test_the_block_size_rule():
    # a block of X and its logits in half of the threads' L2: fewer rows for more features or wider
    # entries, more for more threads; a multiple of 64 and never under MIN_ROWS
    two_mib = 2 << 20
    assert block_rows(784, 10, 4, cache_bytes=two_mib) == 640
    assert block_rows(784, 10, 8, cache_bytes=two_mib) == 512  # 320, raised to MIN_ROWS
    assert block_rows(784, 10, 8, cache_bytes=2 * two_mib) == 640
    assert block_rows(100, 1, 4, cache_bytes=two_mib) == 5120
    assert block_rows(100_000, 1, 8, cache_bytes=two_mib) == blocked.MIN_ROWS
    for d, k, size, threads in itertools.product((1, 50, 784, 5000), (1, 10), (4, 8), (1, 2, 8)):
        rows = block_rows(d, k, size, threads=threads)
        assert rows % 64 == 0 and rows >= blocked.MIN_ROWS
        assert rows >= block_rows(d, k, size, threads=1)
        assert rows <= max(blocked.MIN_ROWS, blocked.l2_bytes() // 2 * threads // ((d + 2 * k) * size))
    assert blocked.l2_bytes() > 0


def test_a_model_that_is_not_one_linear_layer_is_refused():
    with pytest.raises(TypeError, match="single Linear layer"):
        BlockedStep(tl.MLP(3, [4]), torch.randn(10, 3), torch.zeros(10, 1))


# --- through the selector, the loop and a config ---------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_forced_blocked_step_fits_like_the_reference(kind):
    blocked_run, ref = train_variants(kind, [{"step": "blocked"}, {"step": "reference"}], seed=2, solver="nesterov",
                                      lr=0.2, epochs=15, l2=0.01, tol=0, device="cpu")
    assert blocked_run[0].stepper.name == "blocked" and blocked_run[0].stepper.selection.source == "forced"
    assert_same_fit(blocked_run, ref)


def test_fit_takes_the_blocked_step():
    gen = torch.Generator().manual_seed(0)
    X, y = torch.randn(300, 4, generator=gen), torch.randint(0, 3, (300,), generator=gen)
    history = tl.fit(tl.SoftmaxRegression(4, 3), X, y, device="cpu", step="blocked", epochs=3, tol=0)
    assert history.n_epochs == 3
    assert tl.Trainer(tl.SoftmaxRegression(4, 3), X, y, device="cpu", step="blocked").stepper.name == "blocked"


@pytest.mark.parametrize("kwargs,message", [
    (dict(batch_size=10), "full-batch training"),
    (dict(model=tl.MLP(3, [4])), "one Linear layer"),
    (dict(grad_check_every=5), "gradient checks"),
    (dict(fast_path=False), "fast path"),
    (dict(dtype="bfloat16"), "bfloat16"),
])
def test_the_blocked_step_is_refused_where_it_cannot_run(kwargs, message):
    kwargs = dict(kwargs)
    model = kwargs.pop("model", tl.LogisticRegression(3))
    X, y = torch.randn(50, 3), torch.randint(0, 2, (50,))
    with pytest.raises(UsageError, match=message) as info:
        tl.Trainer(model, X, y, device="cpu", step="blocked", **kwargs)
    assert str(info.value).startswith("step='blocked' ") and "\n" not in str(info.value)


def test_the_selector_offers_and_forces_the_blocked_step():
    model, X, T = problem("softmax", 400)
    assert "blocked" in select.full_batch_candidates(model, X, T)
    binary, Xb, Tb = problem("binary", 400)
    # where the fused single-pass kernel runs, the blocked step (the same idea in BLAS calls) is not measured
    assert ("blocked" in select.full_batch_candidates(binary, Xb, Tb)) == (select.problem("fused", binary, Xb, full=True)
                                                                         is not None)
    with pytest.raises(UsageError, match="sample weights"):
        select.full_batch(model, X, T, torch.ones(400, dtype=X.dtype), step="blocked")
    step = select.full_batch(model, X, T, step="blocked")
    assert isinstance(step, BlockedStep) and step.selection.step == "blocked" and step.selection.source == "forced"


def test_the_config_key_takes_blocked():
    from torch_logreg.app.config import load_config
    from torch_logreg.app.fitting import loop_options

    assert loop_options(load_config(None, ["train.step=blocked"]))["step"] == "blocked"
