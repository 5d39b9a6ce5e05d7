"""The mini-batch speed path: the numba kernels of ``steps/batch_fused.py`` (gather, logits, loss,
residual and gradient of a single-``Linear`` model in one call: one sigmoid or identity output, or
K sigmoid, softmax or identity outputs) and the loop that hands them each batch's row numbers
instead of gathered rows.

The kernel is pinned to the reference step (``model.objective_and_grad`` on ``X[rows]``): float64
to 1e-12 relative; float32 within a bound on the rounding of its sums (a few float32 roundings
per term, scaled by how many terms each sum has), never bit for bit, since the two order their
sums differently and CI runs on other CPUs. Where the kernel does not apply (no numba, batches too
large, a subclass with its own batches, gradient checks) the loop keeps the torch path, and both
paths train to the same weights."""

import numpy as np
import pytest
import torch

import torch_logreg as tl
from torch_logreg.steps import batch_fused
from torch_logreg.steps.batch import BatchStep

from helpers import KINDS, make_model, make_targets, randomize

needs_numba = pytest.mark.skipif(not batch_fused.available(), reason="numba is not installed")



def problem(kind: str, n: int, d: int, dtype: torch.dtype, *, bias: bool = True, seed: int = 0, scale: float = 1.0,
            outputs: int = 3):
    gen = torch.Generator().manual_seed(seed)
    model = make_model(kind, d, bias=bias, n_outputs=outputs).to(torch.float64)
    randomize(model, gen, scale)
    model = model.to(dtype)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64).to(dtype)
    return model, X, model.targets(make_targets(kind, n, gen, n_outputs=outputs), n)


def rows_of(n: int, nb: int, seed: int) -> np.ndarray:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:nb].numpy()


def reference(model, X, T, rows, l2, dtype=torch.float64):
    """The reference step on ``X[rows]``, in ``dtype`` (the model's parameters cast to it)."""
    idx = torch.from_numpy(rows)
    ref = model if dtype == next(model.parameters()).dtype else _cast(model, dtype)
    return ref.objective_and_grad(X[idx].to(dtype), T[idx].to(dtype), l2)


def _cast(model, dtype):
    import copy

    return copy.deepcopy(model).to(dtype)


def float32_step_and_reference(model, X, T, nb: int, seed: int):
    """The kernel's float32 step on ``nb`` rows drawn with ``seed``, and the reference step on the
    same float32 numbers in float64: ``(rows, loss, grads, loss_ref, grads_ref)``."""
    step_rows = BatchStep(model, nb, torch.float32, "cpu").rows_step(X, T)
    rows = rows_of(X.shape[0], nb, seed)
    with torch.no_grad():
        loss, grads = step_rows(rows, 0.0)
    return (rows, loss, grads, *reference(model, X, T, rows, 0.0, torch.float64))


GRID64 = [(kind, bias, l2, nb, d) for kind in KINDS for bias in (True, False) for l2 in (0.0, 0.1)
          for nb in (1, 3, 64, 67, 200) for d in (1, 5, 100)]


@needs_numba
@pytest.mark.parametrize("kind,bias,l2,nb,d", GRID64)
def test_kernel_equals_the_reference_step_in_float64(kind, bias, l2, nb, d):
    model, X, T = problem(kind, 300, d, torch.float64, bias=bias, seed=GRID64.index((kind, bias, l2, nb, d)))
    step = BatchStep(model, 200, torch.float64, "cpu")
    step_rows = step.rows_step(X, T)
    assert step_rows is not None
    rows = rows_of(300, nb, nb)
    with torch.no_grad():
        loss, grads = step_rows(rows, l2)
    loss_ref, grads_ref = reference(model, X, T, rows, l2)
    assert abs(loss.item() - loss_ref.item()) <= 1e-12 * abs(loss_ref.item())
    assert grads.keys() == grads_ref.keys()
    for name, g in grads_ref.items():
        assert grads[name].shape == g.shape
        assert (grads[name] - g).abs().max().item() <= 1e-12 * max(g.abs().max().item(), 1e-300), name


@needs_numba
@pytest.mark.parametrize("kind", ["multilabel", "softmax"])
@pytest.mark.parametrize("outputs", [2, 4, 5, 6, 7])
@pytest.mark.parametrize("nb", [5, 67])
def test_every_block_of_outputs_equals_the_reference_step_in_float64(kind, outputs, nb):
    """The K-output kernel takes the outputs three at a time for the logits and two at a time for
    the gradient; each count of outputs left over (and rows left over from blocks of four) too."""
    model, X, T = problem(kind, 100, 11, torch.float64, seed=outputs * nb, outputs=outputs)
    step_rows = BatchStep(model, 100, torch.float64, "cpu").rows_step(X, T)
    rows = rows_of(100, nb, outputs)
    with torch.no_grad():
        loss, grads = step_rows(rows, 0.1)
    loss_ref, grads_ref = reference(model, X, T, rows, 0.1)
    assert abs(loss.item() - loss_ref.item()) <= 1e-12 * abs(loss_ref.item())
    for name, g in grads_ref.items():
        torch.testing.assert_close(grads[name], g, rtol=1e-12, atol=1e-14)


@needs_numba
@pytest.mark.parametrize("kind", ["binary", "regression"])
@pytest.mark.parametrize("nb,d", [(1, 1), (64, 100), (67, 7), (1000, 100), (64, 1000)])
@pytest.mark.parametrize("scale", [0.1, 3.0])
def test_kernel_in_float32_is_within_rounding_of_the_float64_reference(kind, nb, d, scale):
    """Each entry within a few float32 roundings of its sum's terms: the logit's ``d`` products
    (through a link of slope <= 1), then the gradient's ``nb`` products, against the reference
    computed in float64 on the same float32 numbers."""
    model, X, T = problem(kind, 2000, d, torch.float32, seed=nb + d, scale=scale / d**0.5)
    rows, loss, grads, loss_ref, grads_ref = float32_step_and_reference(model, X, T, nb, d)
    eps = torch.finfo(torch.float32).eps
    Xb = X[torch.from_numpy(rows)].double()
    W = model.linear.weight.detach().double()
    # the size of each row's logit sum, and so of its residual's error (the link's slope is <= 1)
    z_size = (Xb.abs() @ W.abs().T).reshape(-1) + model.linear.bias.detach().double().abs() + 1.0
    z_err = 4 * eps * (d + 8) * z_size
    r_ref = torch.sigmoid(Xb @ W.T).reshape(-1) if kind == "binary" else (Xb @ W.T).reshape(-1)
    r_size = r_ref.abs() + T[torch.from_numpy(rows)].double().reshape(-1).abs() + z_err
    # each gradient entry: (the residuals' errors + rounding over nb terms) times |x|, averaged
    bound_w = ((z_err + 4 * eps * (nb + 8) * r_size)[:, None] * Xb.abs()).mean(0)
    err_w = (grads["linear.weight"].double() - grads_ref["linear.weight"]).abs().reshape(-1)
    assert (err_w <= bound_w).all(), (err_w / bound_w).max().item()
    bound_b = (z_err + 4 * eps * (nb + 8) * r_size).mean().item()
    assert abs(grads["linear.bias"].double().item() - grads_ref["linear.bias"].item()) <= bound_b
    loss_size = (z_size * (1 + r_size)).mean().item()  # |loss_n| <= |z_n| + log 2, or (z - t)^2 / 2
    assert abs(loss.double().item() - loss_ref.item()) <= 4 * eps * (d + nb + 16) * loss_size


@needs_numba
@pytest.mark.parametrize("kind", ["multilabel", "softmax"])
@pytest.mark.parametrize("nb,d", [(1, 3), (64, 784), (67, 7), (128, 100)])
def test_several_outputs_in_float32_are_within_rounding_of_the_float64_reference(kind, nb, d):
    """Each entry within a few float32 roundings of the sums behind it (the logits' ``d``
    products, a link of slope <= 1 over the row's ``K`` logits, then ``nb`` products)."""
    model, X, T = problem(kind, 1000, d, torch.float32, seed=nb * d, scale=2.0 / d**0.5)
    rows, loss, grads, loss_ref, grads_ref = float32_step_and_reference(model, X, T, nb, d)
    eps = torch.finfo(torch.float32).eps
    K = model.n_outputs
    Xb = X[torch.from_numpy(rows)].double()
    W, b = model.linear.weight.detach().double(), model.linear.bias.detach().double()
    z_size = (Xb.abs() @ W.abs().T + b.abs()).amax(1) + 1.0  # (nb,) the largest logit sum of each row
    per_row = 4 * eps * (d + nb + K + 8) * z_size  # a residual's error, and the gradient sum's rounding
    bound_w = (per_row[:, None] * Xb.abs()).mean(0)  # (d,), the same for each output
    err_w = (grads["linear.weight"].double() - grads_ref["linear.weight"]).abs()
    assert (err_w <= bound_w).all(), (err_w / bound_w).max().item()
    assert (grads["linear.bias"].double() - grads_ref["linear.bias"]).abs().max().item() <= per_row.mean().item()
    assert abs(loss.double().item() - loss_ref.item()) <= 4 * eps * (d + nb + K + 8) * (K * z_size).mean().item()


@needs_numba
def test_plain_step_runs_the_kernel_on_a_contiguous_batch_and_matches_the_torch_path(monkeypatch):
    model, X, T = problem("binary", 64, 9, torch.float64, seed=3)
    step = BatchStep(model, 64, torch.float64, "cpu")
    assert step.kernel_name == "batch_fused"
    loss, grads = step.step(X, T, 0.1)
    loss, grads = loss.clone(), {k: g.clone() for k, g in grads.items()}
    calls = []
    original = batch_fused.RowsKernel.__call__
    monkeypatch.setattr(batch_fused.RowsKernel, "__call__", lambda self, *a: calls.append(1) or original(self, *a))
    step.step(X, T, 0.1)
    assert calls == [1]
    monkeypatch.setattr(batch_fused, "available", lambda: False)
    torch_step = BatchStep(model, 64, torch.float64, "cpu")  # the same step without its kernel
    assert torch_step.kernel_name is None
    torch_loss, torch_grads = torch_step.step(X, T, 0.1)
    assert torch_loss.item() == pytest.approx(loss.item(), rel=1e-12)
    for k, g in torch_grads.items():
        torch.testing.assert_close(g, grads[k], rtol=1e-12, atol=1e-15)


@needs_numba
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_an_empty_batch_gives_a_nan_loss_and_zero_gradients(dtype):
    """A data-parallel run pads with empty batches: the mean over no rows, as the reference."""
    model, X, T = problem("binary", 10, 3, dtype)
    step = BatchStep(model, 4, dtype, "cpu")
    for loss, grads in (step.rows_step(X, T)(np.zeros(0, dtype=np.int64), 0.0), step.step(X[:0], T[:0], 0.0)):
        assert torch.isnan(loss)
        assert all((g == 0).all() for g in grads.values())
    loss_ref, grads_ref = model.objective_and_grad(X[:0], T[:0], 0.0)
    assert torch.isnan(loss_ref) and all((g == 0).all() for g in grads_ref.values())


@needs_numba
def test_the_kernel_follows_parameters_updated_in_place_and_replaced():
    model, X, T = problem("binary", 50, 4, torch.float64)
    step_rows = BatchStep(model, 8, torch.float64, "cpu").rows_step(X, T)
    rows = rows_of(50, 8, 0)
    for change in ("in place", "new storage"):
        with torch.no_grad():
            if change == "in place":
                model.linear.weight.mul_(-2.0)
            else:
                model.linear.weight.data = model.linear.weight.data * 0.5 + 1.0
                model.linear.bias.data = model.linear.bias.data - 1.0
            loss, _ = step_rows(rows, 0.0)
        assert loss.item() == pytest.approx(reference(model, X, T, rows, 0.0)[0].item(), rel=1e-12)


@needs_numba
@pytest.mark.parametrize("kind", ["multilabel", "softmax"])
@pytest.mark.parametrize("nb", [513, 1500])
def test_a_large_batch_of_several_outputs_runs_in_chunks_and_equals_the_reference(monkeypatch, kind, nb):
    """Above MAX_WORK a batch of several outputs is cut into chunks of CHUNK_ROWS rows, run on all
    threads; float64 to 1e-12 of the reference step, and the same bits on 1 and 2 threads."""
    monkeypatch.setattr(batch_fused, "MAX_WORK", 1000)  # every batch here is a large one
    model, X, T = problem(kind, 2000, 9, torch.float64, seed=nb)
    step_rows = BatchStep(model, 2000, torch.float64, "cpu").rows_step(X, T)
    calls = []
    original = batch_fused.chunks_kernel_k
    monkeypatch.setattr(batch_fused, "chunks_kernel_k", lambda *a: calls.append(a[6]) or original(*a))
    rows = rows_of(2000, nb, 1)
    results = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with torch.no_grad():
                loss, grads = step_rows(rows, 0.1)
            results.append((loss.clone(), {k: g.clone() for k, g in grads.items()}))
    finally:
        torch.set_num_threads(before)
    assert calls == [-(-nb // batch_fused.CHUNK_ROWS)] * 2
    (loss, grads), (loss2, grads2) = results
    assert torch.equal(loss, loss2) and all(torch.equal(grads[k], grads2[k]) for k in grads)
    loss_ref, grads_ref = reference(model, X, T, rows, 0.1)
    assert abs(loss.item() - loss_ref.item()) <= 1e-12 * abs(loss_ref.item())
    for name, g in grads_ref.items():
        torch.testing.assert_close(grads[name], g, rtol=1e-12, atol=1e-14)


@needs_numba
def test_a_large_float32_batch_in_chunks_is_within_rounding_of_the_one_thread_kernel(monkeypatch):
    model, X, T = problem("softmax", 2000, 30, torch.float32, seed=5)
    rows = rows_of(2000, 1500, 2)
    outs = []
    for max_work in (batch_fused.MAX_WORK, 1000):  # one thread, then chunks
        monkeypatch.setattr(batch_fused, "MAX_WORK", max_work)
        step_rows = BatchStep(model, 2000, torch.float32, "cpu").rows_step(X, T)
        with torch.no_grad():
            loss, grads = step_rows(rows, 0.0)
        outs.append((loss.clone(), {k: g.clone() for k, g in grads.items()}))
    (loss1, grads1), (loss2, grads2) = outs
    assert loss2.dtype == torch.float32 and grads2["linear.weight"].dtype == torch.float32
    assert loss2.item() == pytest.approx(loss1.item(), rel=1e-5)
    for k in grads1:
        torch.testing.assert_close(grads2[k], grads1[k], rtol=1e-4, atol=1e-6)


def test_where_the_kernel_does_not_apply_the_torch_path_runs(monkeypatch):
    model, X, T = problem("binary", 40, 5, torch.float64)
    assert BatchStep(model, 8, torch.float64, "cpu").rows_step(X.T.contiguous().T, T) is None  # not contiguous
    too_many = batch_fused.MAX_WORK // 5 + 1  # rows x features x outputs above the kernels' limit
    assert BatchStep(model, too_many, torch.float64, "cpu").rows_step(X, T) is None
    monkeypatch.setattr(batch_fused, "available", lambda: False)  # as without numba
    step = BatchStep(model, 8, torch.float64, "cpu")
    assert step.rows_step(X, T) is None
    loss, grads = step.step(X[:8], T[:8], 0.1)
    loss_ref, grads_ref = model.objective_and_grad(X[:8], T[:8], 0.1)
    assert loss.item() == pytest.approx(loss_ref.item(), rel=1e-12)


# --- the loop ------------------------------------------------------------------------------------


def trainer(kind="binary", dtype=torch.float64, n=300, d=6, seed=0, **kwargs):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=gen, dtype=dtype)
    y = make_targets(kind, n, gen)
    model = make_model(kind, d).to(dtype)
    options = dict(solver="gd", lr=0.1, epochs=6, batch_size=32, tol=0.0, device="cpu", seed=seed)
    options.update(kwargs)
    return tl.Trainer(model, X, y, **options)


def weights(tr) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in tr.model.parameters()])


@needs_numba
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("options", [
    {},
    {"solver": "nesterov", "l2": 0.01},
    {"solver": "adam", "lr": 0.01, "schedule": "cosine"},
    {"l1": 0.01},
    {"batch_size": 7, "schedule": "step", "step_size": 2, "gamma": 0.5},
])
def test_the_row_path_trains_like_the_gathered_torch_path(monkeypatch, kind, options):
    fast = trainer(kind, **options)
    assert fast.reads_rows_in_place
    h_fast = fast.run()
    monkeypatch.setattr(batch_fused, "available", lambda: False)
    slow = trainer(kind, **options)
    assert not slow.reads_rows_in_place and slow.stepper.name == "batch"
    h_slow = slow.run()
    w_fast, w_slow = weights(fast), weights(slow)
    assert ((w_fast - w_slow).abs().max() / w_slow.abs().max()).item() <= 1e-10
    assert h_fast.train_objective == pytest.approx(h_slow.train_objective, rel=1e-10)
    assert h_fast.grad_norm == pytest.approx(h_slow.grad_norm, rel=1e-8)
    assert fast.step == slow.step == 6 * fast.steps_per_epoch


@needs_numba
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_same_seed_is_bit_identical_and_a_resumed_run_continues_exactly(dtype):
    a, b = trainer(dtype=dtype, epochs=6), trainer(dtype=dtype, epochs=6)
    a.run()
    b.run()
    assert torch.equal(weights(a), weights(b))
    first = trainer(dtype=dtype, epochs=3)
    first.run()
    resumed = trainer(dtype=dtype, epochs=6)
    resumed.model.load_state_dict(first.model.state_dict())
    resumed.load_state_dict(first.state_dict())
    resumed.run()
    assert resumed.reads_rows_in_place
    assert torch.equal(weights(resumed), weights(a))
    assert resumed.history.train_objective == a.history.train_objective


@needs_numba
def test_callbacks_see_each_steps_loss_and_gradient():
    seen = []

    class Watch(tl.Callback):
        def on_step(self, state):
            seen.append((state.step, state.batch_size, state.loss.dim(), state.loss.item(),
                         set(state.grads)))

    tr = trainer(epochs=1, n=70, callbacks=[Watch()])
    assert tr.reads_rows_in_place
    tr.run()
    assert [s[:3] for s in seen] == [(1, 32, 0), (2, 32, 0), (3, 6, 0)]
    assert all(np.isfinite(s[3]) and s[4] == {"linear.weight", "linear.bias"} for s in seen)


def test_the_row_path_is_left_out_where_it_does_not_apply():
    assert not trainer("binary", batch_size=batch_fused.MAX_WORK // 6 + 1,
                       n=batch_fused.MAX_WORK // 3).reads_rows_in_place  # too large a batch of one output for one thread
    assert trainer(grad_check_every=3).stepper.name == "reference"
    assert not trainer(fast_path=False).reads_rows_in_place
    assert not trainer(batch_size=0).reads_rows_in_place  # the full batch has its own steps

    class OwnBatches(tl.Trainer):
        def _batches(self):
            yield from super()._batches()

    gen = torch.Generator().manual_seed(0)
    X, y = torch.randn(50, 3, generator=gen, dtype=torch.float64), torch.randint(0, 2, (50,), generator=gen)
    own = OwnBatches(tl.LogisticRegression(3).double(), X, y, batch_size=8, epochs=2, device="cpu")
    assert not own.reads_rows_in_place
    own.run()
    assert own.step == 2 * 7


@needs_numba
def test_shapes_the_kernel_was_not_made_for_are_refused_not_read_out_of_bounds():
    """The kernel does not check bounds: a batch larger than the buffers, or of the wrong width,
    goes to the torch path (which computes the first, resizing its buffers, and raises on the second)."""
    model, X, T = problem("binary", 20, 3, torch.float64)
    step = BatchStep(model, 8, torch.float64, "cpu")
    with pytest.warns(UserWarning, match="resized"):
        loss, _ = step.step(X[:9], T[:9], 0.0)  # more rows than the buffers hold
    assert loss.item() == pytest.approx(model.objective_and_grad(X[:9], T[:9], 0.0)[0].item(), rel=1e-12)
    with pytest.raises(RuntimeError):
        step.step(torch.randn(4, 5, dtype=torch.float64), T[:4], 0.0)  # 5 features for a 3-feature model
    assert step.rows_step(torch.randn(20, 5, dtype=torch.float64), T) is None
    assert step.rows_step(X, T[:10]) is None


@needs_numba
@pytest.mark.parametrize("kind", ["binary", "softmax", "regression"])
def test_the_kernels_loss_is_summed_without_growing_error(kind):
    """Equal rows make a plain running sum's rounding errors add up (several ulps of the mean at a
    few hundred rows); the kernels' compensated sum stays within an ulp or two of the exact mean."""
    import math

    model, X, T = problem(kind, 1, 4, torch.float64, seed=5)
    n = 777
    X, T = X.expand(n, -1).contiguous(), T.expand(n, -1).contiguous()
    step = BatchStep(model, n, torch.float64, "cpu")
    with torch.no_grad():
        loss, _ = step.rows_step(X, T)(np.arange(n), 0.0)
    one = reference(model, X[:1], T[:1], np.arange(1), 0.0)[0].item()
    exact = math.fsum([one] * n) / n
    assert abs(loss.item() - exact) <= 2 * math.ulp(exact)
