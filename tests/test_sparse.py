"""Sparse X end to end: the boundary (scipy and torch sparse to a torch CSR tensor, checks on the
stored values), the sparse step against the reference step, autograd and finite differences, the
loop, the exact solvers and the estimator against their dense runs (float64), refusals, float32
and CUDA (skipped without a GPU)."""

import contextlib
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import torch_logreg as tl
from torch_logreg import functional as F
from torch_logreg import validation
from torch_logreg.errors import UsageError
from torch_logreg.gradients import autograd_gradient, finite_difference_gradient
from torch_logreg.steps import select
from torch_logreg.steps.reference import ReferenceStep
from torch_logreg.steps.sparse import SparseStep

from conftest import CUDA_ONLY
from helpers import flat_parameters, make_model, make_targets, randomize

KINDS = ("binary", "softmax", "regression")
SHAPES = [(50, 5), (50, 40), (300, 5), (300, 40)]
DENSITIES = (0.05, 0.3)


def sparse_data(n: int, d: int, density: float, seed: int = 0) -> sp.csr_matrix:
    """A random CSR matrix with values of both signs; every row keeps at least one stored entry
    (one in column ``n mod d``), so no row is all zeros by chance of the draw alone."""
    rng = np.random.default_rng(seed)
    A = sp.random(n, d, density=density, format="lil", random_state=rng, data_rvs=lambda k: rng.normal(size=k) * 2)
    for i in range(n):
        if A[i].nnz == 0:
            A[i, i % d] = rng.normal()
    return A.tocsr()


def problem(kind: str, n: int, d: int, density: float, seed: int = 0, bias: bool = True):
    """``model, A (scipy CSR), Xs (torch CSR), Xd (dense), T``, float64, random parameters."""
    gen = torch.Generator().manual_seed(seed)
    A = sparse_data(n, d, density, seed)
    Xs = validation.as_tensor(A, "X", dtype=torch.float64)
    Xd = torch.from_numpy(A.toarray())
    model = make_model(kind, d, bias=bias).double()
    randomize(model, gen, scale=0.3)
    T = model.targets(make_targets(kind, n, gen), n)
    return model, A, Xs, Xd, T


# --- the boundary -----------------------------------------------------------------------------


@pytest.mark.parametrize("make", [sp.csr_matrix, sp.csc_matrix, sp.csr_array, sp.csc_array, sp.coo_matrix,
                                  lambda a: torch.from_numpy(a.toarray()).to_sparse_csr(),
                                  lambda a: torch.from_numpy(a.toarray()).to_sparse()],
                         ids=["csr_matrix", "csc_matrix", "csr_array", "csc_array", "coo_matrix", "torch_csr", "torch_coo"])
def test_sparse_inputs_become_a_csr_tensor_with_the_same_entries(make):
    A = sparse_data(30, 7, 0.3)
    X = validation.as_tensor(make(A), "X", dtype=torch.float32)
    assert X.layout == torch.sparse_csr and X.dtype == torch.float32 and X.shape == (30, 7)
    assert X.crow_indices().dtype == torch.int64 and X.values().numel() == A.nnz
    assert torch.equal(X.to_dense(), torch.from_numpy(A.toarray()).float())


def test_duplicates_are_summed_and_the_callers_matrix_is_left_as_it_was():
    A = sp.coo_matrix(([1.0, 2.0, 3.0], ([0, 0, 1], [1, 1, 0])), shape=(2, 3))
    X = validation.as_tensor(A, "X", dtype=torch.float64)
    assert X.to_dense().tolist() == [[0.0, 3.0, 0.0], [3.0, 0.0, 0.0]]
    assert A.nnz == 3


def test_a_non_finite_stored_value_is_named_by_row_and_column():
    A = sparse_data(20, 6, 0.3).tolil()
    A[7, 4] = np.nan
    model = tl.LogisticRegression(6).double()
    with pytest.raises(UsageError, match=r"X contains a non-finite value nan at row 7, column 4"):
        tl.fit(model, A.tocsr(), np.arange(20) % 2, epochs=1)


def test_columns_whose_squares_overflow_are_refused_from_the_stored_values():
    A = sparse_data(20, 6, 0.3).tolil()
    A[3, 2] = 1e200
    model = tl.LogisticRegression(6).double()
    with pytest.raises(UsageError, match="X column 2 has values of magnitude up to 1e"):
        tl.fit_exact(model, A.tocsr(), np.arange(20) % 2)


def test_csr_rows_and_prepend_ones_equal_their_dense_forms():
    A = sparse_data(40, 9, 0.2)
    X = validation.as_tensor(A, "X", dtype=torch.float64)
    Xd = torch.from_numpy(A.toarray())
    idx = torch.tensor([5, 0, 39, 5, 17])
    assert torch.equal(F.csr_rows(X, idx).to_dense(), Xd[idx])
    assert torch.equal(F.csr_prepend_ones(X).to_dense(), torch.cat([torch.ones(40, 1, dtype=torch.float64), Xd], 1))
    v = torch.rand(40, dtype=torch.float64)
    torch.testing.assert_close(F.weighted_gram(X, v), Xd.T @ (Xd * v[:, None]), rtol=0, atol=1e-12)


# --- the sparse step --------------------------------------------------------------------------


@pytest.mark.parametrize("l2", [0.0, 0.1])
@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("n,d", SHAPES)
@pytest.mark.parametrize("kind", KINDS)
def test_sparse_step_equals_the_reference_step_and_autograd(kind, n, d, density, l2):
    model, _, Xs, Xd, T = problem(kind, n, d, density)
    loss_ref, grads_ref = ReferenceStep(model).step(Xd, T, l2)
    for step in (SparseStep(model, Xs, T), SparseStep(model)):  # bound to X (X^T made once), and unbound
        loss, grads = step.step(Xs, T, l2)
        assert abs(loss.item() - loss_ref.item()) <= 1e-10
        assert grads.keys() == grads_ref.keys()
        for k in grads:
            assert (grads[k] - grads_ref[k]).abs().max().item() <= 1e-10, k
    auto = autograd_gradient(model, Xd, T, l2)
    for k in grads:
        assert (grads[k] - auto[k]).abs().max().item() <= 1e-10, k


@pytest.mark.parametrize("kind", KINDS)
def test_sparse_step_equals_finite_differences(kind):
    model, _, Xs, Xd, T = problem(kind, 50, 5, 0.3, seed=3)
    _, grads = SparseStep(model, Xs, T).step(Xs, T, 0.05)
    for name, (idx, values) in finite_difference_gradient(model, Xd, T, 0.05, max_coords=3).items():
        assert (grads[name].reshape(-1)[idx] - values).abs().max().item() <= 1e-7, name


def test_sparse_step_takes_sample_weights_like_the_reference():
    model, _, Xs, Xd, T = problem("softmax", 300, 40, 0.05)
    w = torch.rand(300, dtype=torch.float64)
    loss_ref, grads_ref = ReferenceStep(model, w).step(Xd, T, 0.1)
    loss, grads = select.full_batch(model, Xs, T, sample_weight=w).step(Xs, T, 0.1)
    assert abs(loss.item() - loss_ref.item()) <= 1e-10
    assert all((grads[k] - grads_ref[k]).abs().max().item() <= 1e-10 for k in grads)


@pytest.mark.parametrize("step", ["rule", "auto"])
@pytest.mark.parametrize("batch_size", [0, 16])
def test_the_selector_takes_the_sparse_step_for_sparse_x(step, batch_size):
    """"auto", no longer offered, is read as "rule" with a warning."""
    model, _, Xs, _, T = problem("binary", 50, 5, 0.3)
    with pytest.warns(FutureWarning) if step == "auto" else contextlib.nullcontext():
        chosen = select.training_step(model, Xs, T, batch_size=batch_size or 50, dtype=torch.float64,
                                      device=torch.device("cpu"), step=step)
        assert select.full_batch(model, Xs, T, step=step).name == "sparse"
    assert chosen.name == "sparse" and chosen.selection.step == "sparse" and chosen.selection.source == "rule"


def test_the_reference_step_can_be_forced_on_sparse_x_and_dense_steps_are_refused():
    model, _, Xs, Xd, T = problem("softmax", 50, 5, 0.3)
    forced = select.training_step(model, Xs, T, batch_size=50, dtype=torch.float64, device=torch.device("cpu"),
                                  step="reference")
    loss, _ = forced.step(Xs, T, 0.0)
    assert forced.name == "reference" and abs(loss.item() - model.objective(Xd, T).item()) <= 1e-12
    with pytest.raises(UsageError, match="step='feature_major' needs dense X"):
        select.training_step(model, Xs, T, batch_size=50, dtype=torch.float64, device=torch.device("cpu"),
                             step="feature_major")
    with pytest.raises(UsageError, match="gradient checks"):
        tl.fit(model, Xs, T.argmax(1), epochs=1, grad_check_every=1)


# --- the loop and the exact solvers -----------------------------------------------------------


def _fit_pair(kind: str, fitter, n: int = 300, d: int = 40, density: float = 0.05, **kwargs):
    """The same fit on the dense copy and on the scipy CSR matrix: both models' flat parameters."""
    gen = torch.Generator().manual_seed(1)
    A = sparse_data(n, d, density, seed=2)
    y = make_targets(kind, n, gen)
    out = []
    for X in (A.toarray(), A):
        model = make_model(kind, d).double()
        fitter(model, X, y, **kwargs)
        out.append(flat_parameters(model))
    return out


@pytest.mark.parametrize("batch_size", [0, 32])
@pytest.mark.parametrize("solver", ["gd", "adam"])
@pytest.mark.parametrize("kind", KINDS)
def test_fit_on_sparse_x_equals_the_dense_fit(kind, solver, batch_size):
    dense, sparse = _fit_pair(kind, tl.fit, solver=solver, lr=0.1, epochs=4, batch_size=batch_size, l2=0.01, seed=3)
    assert (dense - sparse).abs().max().item() <= 1e-10
    assert (dense != 0).any()


def test_fit_on_sparse_x_with_validation_data_and_early_stopping():
    A = sparse_data(200, 10, 0.3)
    y = np.arange(200) % 2
    histories = []
    for X in (A.toarray(), A):
        model = tl.LogisticRegression(10).double()
        histories.append(tl.fit(model, X[:150], y[:150], X_val=X[150:], y_val=y[150:], epochs=5, patience=2, lr=0.5))
    assert np.allclose(histories[0].val_loss, histories[1].val_loss, rtol=0, atol=1e-12)


@pytest.mark.parametrize("solver", ["newton", "lbfgs"])
@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("kind", KINDS)
def test_fit_exact_on_sparse_x_equals_the_dense_fit(kind, solver, density):
    dense, sparse = _fit_pair(kind, tl.fit_exact, d=10, density=density, solver=solver, l2=0.01, tol=1e-12,
                              max_iter=500)
    assert (dense - sparse).abs().max().item() <= 1e-8


def test_newton_with_l1_and_sample_weights_on_sparse_x_equals_the_dense_fit():
    w = np.random.default_rng(0).uniform(0.5, 2.0, 300)
    dense, sparse = _fit_pair("softmax", tl.fit_exact, d=10, density=0.3, solver="newton", l2=0.01, l1=0.002,
                              sample_weight=w, tol=1e-12, max_iter=500)
    assert (dense - sparse).abs().max().item() <= 1e-8


def test_sparse_hessians_equal_the_dense_ones():
    A = sparse_data(300, 12, 0.3)
    Xs, Xd = validation.as_tensor(A, "X", dtype=torch.float64), torch.from_numpy(A.toarray())
    Xas, Xad = F.csr_prepend_ones(Xs), torch.cat([torch.ones(300, 1, dtype=torch.float64), Xd], 1)
    p = torch.softmax(torch.randn(300, 4, dtype=torch.float64), dim=1)
    w = torch.rand(300, dtype=torch.float64)
    torch.testing.assert_close(F.softmax_hessian(Xas, p, w), F.softmax_hessian(Xad, p, w), rtol=0, atol=1e-12)
    s = torch.rand(300, 3, dtype=torch.float64)
    torch.testing.assert_close(F.block_diagonal_hessian(Xas, s), F.block_diagonal_hessian(Xad, s), rtol=0, atol=1e-12)
    # the bias's row and column without a column of ones, dense and sparse
    for X in (Xs, Xd):
        torch.testing.assert_close(F.block_diagonal_hessian(X, s, bias=True), F.block_diagonal_hessian(Xad, s),
                                   rtol=0, atol=1e-12)


# --- the estimator ----------------------------------------------------------------------------


@pytest.mark.parametrize("penalty", ["l2", None])
@pytest.mark.parametrize("solver", ["auto", "lbfgs", "gd"])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_the_estimator_on_scipy_sparse_equals_the_estimator_on_the_dense_array(n_classes, solver, penalty):
    from torch_logreg.estimators.estimator import LogisticRegressionClassifier

    A = sparse_data(300, 10, 0.3, seed=4)
    X = A.toarray()
    y = (X @ np.linspace(-1, 1, 10) > 0).astype(int) + (n_classes == 3) * (X[:, 0] > 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # separation or convergence: the same on both
        dense = LogisticRegressionClassifier(penalty=penalty, solver=solver, C=10.0).fit(X, y)
        sparse = LogisticRegressionClassifier(penalty=penalty, solver=solver, C=10.0).fit(A, y)
    for Xp in (A, sp.csc_array(A), sp.coo_matrix(A)):
        assert np.abs(dense.predict_proba(X) - sparse.predict_proba(Xp)).max() <= 1e-8
        # without a penalty separated classes push the logits to thousands: compare relative to them.
        # There the optimum does not exist and each fit stops where its rounding takes it, through a
        # Hessian that grows ill-conditioned with the logits: the dense fit's one-read Hessian and the
        # sparse products agree to 4e-10 of the largest logit (on AVX-512 and on AVX2 code paths),
        # against 1e-14 with a penalty
        rtol = 1e-9 if penalty else 1e-7
        decision = dense.decision_function(X)
        assert np.abs(decision - sparse.decision_function(Xp)).max() <= rtol * max(1.0, np.abs(decision).max())
        assert (dense.predict(X) == sparse.predict(Xp)).all()
    assert np.abs(dense.predict_proba(A) - dense.predict_proba(X)).max() <= 1e-12  # dense fit, sparse predictions


@pytest.mark.parametrize("cov_type", ["nonrobust", "HC0", "HC3"])
def test_inference_on_sparse_x_equals_the_dense_inference(cov_type, monkeypatch):
    from torch_logreg.estimators.estimator import InferenceUnavailable, LogisticRegressionClassifier
    from torch_logreg.inference import results

    est = LogisticRegressionClassifier(penalty=None, cov_type=cov_type)
    assert est.__sklearn_tags__().input_tags.sparse
    A = sparse_data(300, 4, 0.5, seed=1)
    X = A.toarray()
    y = (np.random.default_rng(0).random(300) < 1 / (1 + np.exp(-(X @ np.array([1.0, -1.0, 0.5, 0.0]))))).astype(int)
    sparse = est.fit(A, y).inference_
    dense = LogisticRegressionClassifier(penalty=None, cov_type=cov_type).fit(X, y).inference_
    assert np.abs(sparse.bse - dense.bse).max() <= 1e-10 * np.abs(dense.bse).max()
    assert np.abs(sparse.params - dense.params).max() <= 1e-10 * np.abs(dense.params).max()
    monkeypatch.setattr(results, "SPARSE_DENSE_MAX_ENTRIES", 1000)  # a sparse X too large to read densely
    with pytest.raises(InferenceUnavailable, match="inference reads sparse X as dense rows"):
        _ = LogisticRegressionClassifier(penalty=None).fit(A, y).inference_


# --- refusals, float32, CUDA ------------------------------------------------------------------


def test_an_mlp_on_sparse_x_is_refused_in_one_sentence():
    A = sparse_data(40, 6, 0.3)
    y = np.arange(40) % 2
    message = r"^sparse X needs a model that is one Linear layer \(logistic, softmax or linear regression\), not MLP; " \
              r"pass X densified \(X\.toarray\(\) or X\.to_dense\(\)\) for this model$"
    with pytest.raises(UsageError, match=message):
        tl.fit(tl.MLP(6, [4]).double(), A, y, epochs=1)
    with pytest.raises(UsageError, match=message):
        tl.fit_exact(tl.MLP(6, [4]).double(), A, y, solver="lbfgs")


@pytest.mark.parametrize("kind", KINDS)
def test_float32_on_sparse_x(kind):
    model, A, _, Xd, T = problem(kind, 300, 40, 0.05)
    model = model.float()
    X32 = validation.as_tensor(A, "X", dtype=torch.float32)
    assert X32.dtype == torch.float32
    loss, grads = SparseStep(model, X32, T.float()).step(X32, T.float(), 0.01)
    loss_ref, grads_ref = ReferenceStep(model).step(Xd.float(), T.float(), 0.01)
    assert loss.dtype == torch.float32 and abs(loss.item() - loss_ref.item()) <= 1e-5
    assert all((grads[k] - grads_ref[k]).abs().max().item() <= 1e-5 for k in grads)
    y = make_targets(kind, 300, torch.Generator().manual_seed(0))
    history = tl.fit(make_model(kind, 40), A, y, epochs=3, batch_size=64, dtype="float32")
    assert np.isfinite(history.train_objective).all()


@pytest.mark.parametrize("device", CUDA_ONLY)
@pytest.mark.parametrize("kind", KINDS)
def test_sparse_step_and_fits_on_cuda_equal_cpu(device, kind):
    model, A, Xs, _, T = problem(kind, 300, 40, 0.05)
    loss_cpu, grads_cpu = SparseStep(model, Xs, T).step(Xs, T, 0.01)
    model_dev, Xs_dev, T_dev = model.to(device), Xs.to(device), T.to(device)
    loss_dev, grads_dev = SparseStep(model_dev, Xs_dev, T_dev).step(Xs_dev, T_dev, 0.01)
    assert abs(loss_dev.item() - loss_cpu.item()) <= 1e-10
    assert all((grads_dev[k].cpu() - grads_cpu[k]).abs().max().item() <= 1e-10 for k in grads_cpu)
    y = make_targets(kind, 300, torch.Generator().manual_seed(0))
    for batch_size in (0, 64):
        fits = []
        for dev in ("cpu", device):
            m = make_model(kind, 40).double()
            tl.fit(m, A, y, epochs=3, batch_size=batch_size, lr=0.1, device=dev, seed=1)
            fits.append(flat_parameters(m))
        assert (fits[0] - fits[1]).abs().max().item() <= 1e-10
    exact = []
    for dev in ("cpu", device):
        m = make_model(kind, 40).double().to(dev)
        tl.fit_exact(m, A, y, solver="newton", l2=0.01, tol=1e-12)
        exact.append(flat_parameters(m))
    assert (exact[0] - exact[1]).abs().max().item() <= 1e-8
