"""The fused sparse step (``steps/sparse_fused.py``): its row pass (mini-batches, unbound data)
and its blocked pass (the bound full batch) against the reference step on the densified X, over
links, bias, sample weights, dtypes and shapes; determinism; the loop with and without it; and
the models that keep the torch path."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import torch_logreg as tl
from torch_logreg import validation
from torch_logreg.steps import sparse_fused
from torch_logreg.steps.sparse import SparseStep

from helpers import flat_parameters, make_model, make_targets, max_gradient, randomize

pytestmark = pytest.mark.skipif(not sparse_fused.available(), reason="numba is not importable")

EPS32 = float(np.finfo(np.float32).eps)

#: (n, d, density, what): N = 1, a full row, empty rows, wide and tall
CASES = [(1, 6, 1.0, "one row"), (40, 7, 0.3, "empty and full rows"), (200, 33, 0.05, "tall"),
         (30, 300, 0.02, "wide")]


def sparse_matrix(n: int, d: int, density: float, seed: int, special: bool) -> sp.csr_matrix:
    """A duplicate-free random CSR matrix (values of both signs); with ``special`` row 0 holds all
    D columns and rows 3 and 5 none."""
    rng = np.random.default_rng(seed)
    A = sp.random(n, d, density=density, format="lil", random_state=rng, data_rvs=lambda k: rng.normal(size=k))
    if special:
        A[0, :] = rng.normal(size=(1, d))
        for i in (3, 5):
            A[i, :] = 0
    return A.tocsr()


def problem(kind, n, d, density, dtype, bias=True, weighted=False, seed=0):
    A = sparse_matrix(n, d, density, seed, special=n > 5)
    X = validation.as_tensor(A, "X", dtype=dtype)
    gen = torch.Generator().manual_seed(seed)
    model = make_model(kind, d, bias=bias).to(dtype)
    randomize(model, gen, scale=0.5)
    T = model.targets(make_targets(kind, n, gen), n).to(dtype)
    w = torch.rand(n, generator=gen, dtype=torch.float64).to(dtype) * 2 if weighted else None
    return model, X, T, w


def reference(model, X, T, l2, w):
    """The reference step in float64 on the densified X (the same stored values), and the scales
    ``|X|^T |G|`` and ``|G|`` of the gradients (G = dL/dz), elementwise."""
    ref = make_model("binary" if model.link == "sigmoid" else "regression", X.shape[1],
                     bias=model.linear.bias is not None).double()
    ref.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    Xd, Td = X.to_dense().double(), T.double()
    wd = None if w is None else w.double()
    loss, grads = ref.objective_and_grad(Xd, Td, l2, sample_weight=wd)
    _, G = ref.loss_fn(ref.logits(Xd), Td, wd)
    scales = {"linear.weight": (Xd.abs().T @ G.abs()).T + l2 * ref.linear.weight.detach().abs(),
              "linear.bias": G.abs().sum(0)}
    return loss, grads, scales


def assert_close(loss, grads, model, X, T, l2, w, rtol):
    loss_ref, grads_ref, scales = reference(model, X, T, l2, w)
    assert loss.dtype == model.linear.weight.dtype
    assert abs(loss.item() - loss_ref.item()) <= rtol * abs(loss_ref.item()) + 1e-300
    assert grads.keys() == grads_ref.keys()
    for k in grads:
        assert grads[k].shape == grads_ref[k].shape and grads[k].dtype == model.linear.weight.dtype, k
        err = (grads[k].double() - grads_ref[k]).abs()
        assert (err <= rtol * scales[k] + 1e-300).all(), (k, err.max().item())


def steps(model, X, T, w, monkeypatch):
    """The fused step three ways: unbound (the row pass, weighted by ``sample_weight`` as the loop
    sets it), bound (the row pass: D within one block), bound with blocks of 4 columns and chunks
    of 16 rows."""
    unbound = SparseStep(model)
    unbound.sample_weight = w
    bound = SparseStep(model, X, T, w)
    assert bound.kernel_name == "sparse_fused" and bound.XT is None
    monkeypatch.setattr(sparse_fused, "BLOCK_SHIFT", 2)
    monkeypatch.setattr(sparse_fused, "ROW_CHUNK", 16)  # several chunks of rows
    blocked = SparseStep(model, X, T, w)
    monkeypatch.undo()
    assert (blocked.kernel_name == "sparse_fused_blocked") == (X.shape[1] > 4) and blocked.XT is None
    return {"row pass, unbound": unbound, "row pass, bound": bound, "blocked": blocked}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("n,d,density,what", CASES)
@pytest.mark.parametrize("kind", ["binary", "regression"])
def test_the_fused_step_equals_the_reference(kind, n, d, density, what, bias, weighted, dtype, monkeypatch):
    model, X, T, w = problem(kind, n, d, density, dtype, bias, weighted)
    l2 = 0.1
    # float64: 1e-12 relative; float32: the result's own rounding, everything else in float64
    rtol = 1e-12 if dtype == torch.float64 else 4 * EPS32
    for name, step in steps(model, X, T, w, monkeypatch).items():
        loss, grads = step.step(X, T, l2)
        assert_close(loss, grads, model, X, T, l2, w, rtol)
        if dtype == torch.float32:  # against the float32 reference step: a few roundings a row length
            loss32, grads32 = model.objective_and_grad(X.to_dense(), T, l2, sample_weight=w)
            _, _, scales = reference(model, X, T, l2, w)
            tol = 4 * EPS32 * (max(n, d) + 2)
            assert abs(loss.item() - loss32.item()) <= tol * abs(loss32.item()), name
            for k in grads:
                assert ((grads[k] - grads32[k]).abs().double() <= tol * scales[k] + 1e-30).all(), (name, k)


@pytest.mark.parametrize("kind", ["binary", "regression"])
def test_several_row_chunks_and_int32_indices(kind, monkeypatch):
    model, X, T, w = problem(kind, 300, 50, 0.1, torch.float64, weighted=True)
    monkeypatch.setattr(sparse_fused, "n_chunks", lambda nnz, d, threads: 3)
    step = SparseStep(model)
    step.sample_weight = w
    loss, grads = step.step(X, T, 0.01)
    assert_close(loss, grads, model, X, T, 0.01, w, 1e-12)
    X32 = torch.sparse_csr_tensor(X.crow_indices().int(), X.col_indices().int(), X.values(), size=X.shape,
                                  check_invariants=True)
    loss, grads = step.step(X32, T, 0.01)
    assert_close(loss, grads, model, X, T, 0.01, w, 1e-12)
    monkeypatch.setattr(sparse_fused, "BLOCK_SHIFT", 3)
    monkeypatch.setattr(sparse_fused, "ROW_CHUNK", 100)
    loss, grads = SparseStep(model, X32, T, w).step(X32, T, 0.01)
    assert_close(loss, grads, model, X, T, 0.01, w, 1e-12)


def test_chunk_boundaries_split_the_entries_evenly():
    crow = np.array([0, 0, 5, 5, 6, 20, 20, 21], dtype=np.int64)
    for chunks in (1, 2, 3, 7):
        starts = sparse_fused.chunk_starts(crow, chunks)
        assert starts[0] == 0 and starts[-1] == 7 and (np.diff(starts) >= 0).all() and len(starts) == chunks + 1
    assert sparse_fused.n_chunks(10, 100, 4) == 1
    assert sparse_fused.n_chunks(1 << 20, 1 << 10, 4) == 4


@pytest.mark.parametrize("kind", ["binary", "regression"])
def test_the_fused_step_is_deterministic(kind, monkeypatch):
    model, X, T, w = problem(kind, 3000, 400, 0.05, torch.float32, weighted=True)
    monkeypatch.setattr(sparse_fused, "MIN_CHUNK_ENTRIES", 1)  # several chunks of rows where threads allow
    for name, step in steps(model, X, T, w, monkeypatch).items():
        first = step.step(X, T, 0.01)
        second = step.step(X, T, 0.01)
        assert torch.equal(first[0], second[0]), name
        assert all(torch.equal(first[1][k], second[1][k]) for k in first[1]), name
    # the blocked pass sums in an order that does not depend on the thread count
    monkeypatch.setattr(sparse_fused, "BLOCK_SHIFT", 5)
    monkeypatch.setattr(sparse_fused, "ROW_CHUNK", 256)
    blocked = SparseStep(model, X, T, w)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = blocked.step(X, T, 0.0)
    finally:
        torch.set_num_threads(threads)
    many = blocked.step(X, T, 0.0)
    assert torch.equal(one[0], many[0]) and all(torch.equal(one[1][k], many[1][k]) for k in one[1])


def _fits(kind, monkeypatch, **kwargs):
    """The same loop run with the fused kernel and with it disabled: both flat parameters, and
    how many steps ran each fused pass."""
    A = sparse_matrix(257, 40, 0.1, seed=4, special=True)
    y = make_targets(kind, 257, torch.Generator().manual_seed(2))
    out, calls = [], {"row": 0, "blocked": 0}

    def counted(cls, key):
        call = cls.__call__

        def wrapper(self, *args):
            calls[key] += 1
            return call(self, *args)
        return wrapper

    for fused in (True, False):
        with monkeypatch.context() as m:
            if not fused:
                m.setattr(sparse_fused, "available", lambda: False)
            else:
                m.setattr(sparse_fused, "BLOCK_SHIFT", 3)  # the full batch bound: blocked
                m.setattr(sparse_fused, "ROW_CHUNK", 50)
                m.setattr(sparse_fused.SparseFused, "__call__", counted(sparse_fused.SparseFused, "row"))
                m.setattr(sparse_fused.BlockedFused, "__call__", counted(sparse_fused.BlockedFused, "blocked"))
            model = make_model(kind, 40).double()
            tl.fit(model, A, y, lr=0.2, epochs=3, seed=5, l2=0.01, device="cpu", **kwargs)
            out.append(flat_parameters(model))
    return out, calls


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("batch_size", [32, 0])
@pytest.mark.parametrize("kind", ["binary", "regression"])
def test_the_loop_with_the_fused_kernel_equals_the_loop_without(kind, batch_size, weighted, monkeypatch):
    w = np.random.default_rng(0).random(257) * 2 if weighted else None
    (fused, torch_path), calls = _fits(kind, monkeypatch, batch_size=batch_size, solver="adam", sample_weight=w)
    assert calls == ({"row": 3 * 9, "blocked": 0} if batch_size else {"row": 0, "blocked": 3}), calls
    assert (fused - torch_path).abs().max().item() <= 1e-10
    assert (fused != 0).any()


@pytest.mark.parametrize("kind", ["softmax", "multilabel"])
def test_models_with_several_outputs_keep_the_torch_path(kind, monkeypatch):
    A = sparse_matrix(50, 8, 0.3, seed=1, special=True)
    X = validation.as_tensor(A, "X", dtype=torch.float64)
    model = make_model(kind, 8).double()
    step = SparseStep(model, X)
    assert step.kernel_name is None and step.XT is not None

    def refuse(*args, **kwargs):
        raise AssertionError("the fused kernel ran")

    monkeypatch.setattr(sparse_fused.SparseFused, "__call__", refuse)
    T = model.targets(make_targets(kind, 50, torch.Generator().manual_seed(0)), 50)
    loss, grads = step.step(X, T, 0.0)
    assert grads["linear.weight"].shape == (model.n_outputs, 8)


def test_a_float32_batch_for_a_float64_model_keeps_the_torch_path():
    model, X, T, _ = problem("binary", 20, 5, 0.3, torch.float64)
    assert not sparse_fused.supports_data(X.to(torch.float32), model.linear.weight)
    assert sparse_fused.supports_data(X, model.linear.weight)


@pytest.mark.parametrize("exact", [True, False])
def test_float64_values_that_are_float32_numbers_are_stored_in_float32_with_the_same_result(exact, monkeypatch):
    """The blocked layout keeps float64 values as float32 where every one is a float32 number: the
    same numbers, so the step gives the same bits as with them kept in float64."""
    model, X, T, w = problem("binary", 200, 33, 0.05, torch.float64, weighted=True)
    if exact:  # float32 numbers held in float64
        X = torch.sparse_csr_tensor(X.crow_indices(), X.col_indices(), X.values().float().double(), X.shape,
                                    check_invariants=True)
    monkeypatch.setattr(sparse_fused, "BLOCK_SHIFT", 3)
    monkeypatch.setattr(sparse_fused, "ROW_CHUNK", 50)
    results, layouts = [], []
    for keep_float64 in (False, True):
        if keep_float64:
            monkeypatch.setattr(sparse_fused, "_exact_in_float32", lambda values: False)
        step = SparseStep(model, X, T, w)
        assert step.kernel_name == "sparse_fused_blocked"
        layouts.append(step._blocked._values.dtype)
        loss, grads = step.step(X, T, 0.1)
        results.append((loss.clone(), {k: v.clone() for k, v in grads.items()}))
    assert layouts == [np.float32 if exact else np.float64, np.float64]
    (loss, grads), (loss64, grads64) = results
    assert torch.equal(loss, loss64) and all(torch.equal(grads[k], grads64[k]) for k in grads)
    assert_close(loss, grads, model, X, T, 0.1, w, 1e-12)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind", ["binary", "regression"])
def test_lbfgs_on_regrouped_x_searches_along_margins_and_reaches_the_exact_optimum(kind, bias, weighted,
                                                                                   monkeypatch):
    """On regrouped X, L-BFGS's trials along a direction take margins ``z + t X d``: one pass
    ``X^T r`` per accepted point and one ``X d`` per direction, whatever the number of trials. It
    reaches the optimum of dense Newton on the same data, where the gradient vanishes, and a rerun
    gives the same bits."""
    from torch_logreg.steps import select

    n, d, l2 = 300, 40, 0.05
    A = sparse_matrix(n, d, 0.1, seed=4, special=True)
    gen = torch.Generator().manual_seed(4)
    y = make_targets(kind, n, gen).numpy()
    w = np.random.default_rng(4).uniform(0.5, 2.0, n) if weighted else None
    monkeypatch.setattr(select, "MIN_RUN_SECONDS", 0.0)  # the kernels for this small problem
    monkeypatch.setattr(sparse_fused, "BLOCK_SHIFT", 3)
    monkeypatch.setattr(sparse_fused, "ROW_CHUNK", 64)
    calls = {"__call__": 0, "margins": 0, "terms": 0, "gradient": 0}

    def counted(name, f):
        def call(*args):
            calls[name] += 1
            return f(*args)
        return call

    for name in calls:
        monkeypatch.setattr(sparse_fused.BlockedFused, name, counted(name, getattr(sparse_fused.BlockedFused, name)))
    model = make_model(kind, d, bias=bias).double()
    result = tl.fit_exact(model, A, y, solver="lbfgs", l2=l2, sample_weight=w, tol=1e-10, max_iter=500)
    assert result.stop_reason == "converged"
    iterations = result.n_iter
    assert calls["__call__"] == 0 and calls["margins"] == calls["gradient"] == iterations + 1
    assert calls["terms"] >= iterations + 1
    again = make_model(kind, d, bias=bias).double()
    tl.fit_exact(again, A, y, solver="lbfgs", l2=l2, sample_weight=w, tol=1e-10, max_iter=500)
    assert torch.equal(flat_parameters(again), flat_parameters(model))  # a rerun gives the same bits
    monkeypatch.undo()
    exact = make_model(kind, d, bias=bias).double()
    tl.fit_exact(exact, A.toarray(), y, solver="newton", l2=l2, sample_weight=w, tol=1e-12, max_iter=100)
    assert max_gradient(exact, A.toarray(), y, l2, w) <= 1e-12
    assert max_gradient(model, A.toarray(), y, l2, w) <= 1e-9
    assert (flat_parameters(model) - flat_parameters(exact)).abs().max().item() <= 1e-7
