"""Proximal Newton with coordinate descent (``solver="cd"``): optimality conditions checked directly and
agreement with proximal Newton over binary / multi-label / linear outputs, dense and sparse X, with and
without intercept, L2 and sample weights, and softmax (cycling over the classes); scikit-learn's saga on a
sparse problem; dense and sparse X give one fit; float32 models, the callback, max_iter."""


import numpy as np
import pytest
import scipy.sparse as sp
import torch

import torch_logreg as tl
from torch_logreg.registry import EXACT_SOLVERS, L1_SOLVERS
from torch_logreg.solvers import ConvergenceWarning, fit_exact

from conftest import CUDA_ONLY
from helpers import (
    assert_l1_optimum,
    l1_model,
    l1_objective,
    sparse_truth_problem,
    theta_of,
)

KINDS = ("binary", "multilabel", "softmax", "identity")


def _problem(kind: str, n: int = 200, d: int = 8, seed: int = 0):
    """Float64 data from a sparse true model, about a quarter of X's entries zero."""
    return sparse_truth_problem(kind, n, d, seed, zero_fraction=0.25)


_model, _objective, _params = l1_model, l1_objective, theta_of


# (without l1, the unpenalised bias, the callback and a warm start: test_proximal.py, for both L1 solvers)


def test_registered_as_an_exact_l1_solver():
    assert "cd" in EXACT_SOLVERS and "cd" in L1_SOLVERS


# --- the optimum: KKT conditions and proximal Newton over the grid -----------------------------------------------


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("l2", [0.0, 0.1])
@pytest.mark.parametrize("bias", [True, False], ids=["intercept", "no_intercept"])
@pytest.mark.parametrize("kind", KINDS)
def test_optimality_conditions_and_proximal_newton(kind, bias, l2, weighted, sparse):
    """(a) the KKT conditions hold at 1e-8; (b) proximal Newton reaches the same objective (1e-10 relative),
    support and weights."""
    X, y, sw = _problem(kind)
    w = sw if weighted else None
    l1 = 0.05
    data = sp.csr_matrix(X.numpy()) if sparse else X
    model = _model(kind, X.shape[1], bias)
    result = fit_exact(model, data, y, solver="cd", l1=l1, l2=l2, sample_weight=w, tol=1e-10, max_iter=200)
    assert_l1_optimum(model, result, "cd", X, y, l1, l2, w, _model(kind, X.shape[1], bias))


# --- sparse X: scikit-learn's saga, and the same fit as dense X --------------------------------------------------


# (scikit-learn's saga on a sparse problem: test_proximal.py, for both L1 solvers)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("kind", KINDS)
def test_dense_and_sparse_x_give_the_same_fit(kind, weighted):
    """The same data as a dense tensor, as scipy CSR and as a torch CSR tensor give the same fit to 1e-8."""
    gen = np.random.default_rng(3)
    X, y, sw = _problem(kind, n=300, d=30, seed=3)
    Xs = sp.csr_matrix(X.numpy() * (gen.random(X.shape) < 0.3))
    w = sw if weighted else None
    fits = []
    for data in (torch.as_tensor(Xs.toarray()), Xs, torch.as_tensor(Xs.toarray()).to_sparse_csr()):
        model = _model(kind, X.shape[1])
        result = fit_exact(model, data, y, solver="cd", l1=0.02, l2=0.05, sample_weight=w, tol=1e-12)
        assert result.converged
        fits.append(_params(model))
    for fit in fits[1:]:
        torch.testing.assert_close(fit != 0, fits[0] != 0)
        torch.testing.assert_close(fit, fits[0], rtol=0, atol=1e-8)


# --- dtype and run control: float32, callback, max_iter ---------------------------------------------------------------


def test_float32_model_gets_the_float64_solution_cast_back():
    X, y, sw = _problem("binary", seed=4)
    model = tl.LogisticRegression(X.shape[1])  # float32
    result = fit_exact(model, X.float(), y, solver="cd", l1=0.05, sample_weight=sw.float(), tol=1e-9)
    assert result.converged and model.linear.weight.dtype == torch.float32
    ref = _model("binary", X.shape[1])
    fit_exact(ref, X.float().double(), y, solver="newton", l1=0.05, sample_weight=sw.float().double(), tol=1e-12)
    torch.testing.assert_close(model.linear.weight != 0, ref.linear.weight != 0)
    torch.testing.assert_close(_params(model), _params(ref).float(), rtol=0, atol=1e-6)


def test_max_iter_warns_with_the_iteration_count():
    X, y, _ = _problem("binary")
    with pytest.warns(ConvergenceWarning, match=r"cd: did not converge in 1 iterations \(max_iter=1\)"):
        result = fit_exact(_model("binary", X.shape[1]), X, y, solver="cd", l1=0.01, tol=1e-14, max_iter=1)
    assert result.stop_reason == "max_iter" and result.n_iter == 1 and not result.converged


def test_estimator_takes_solver_cd():
    from torch_logreg.estimators.estimator import LogisticRegressionClassifier

    X, y, _ = _problem("binary", seed=6)
    est = LogisticRegressionClassifier(penalty="elasticnet", l1_ratio=0.5, C=0.5, solver="cd", tol=1e-10
                                       ).fit(X.numpy(), y.numpy())
    ref = LogisticRegressionClassifier(penalty="elasticnet", l1_ratio=0.5, C=0.5, solver="newton", tol=1e-12
                                       ).fit(X.numpy(), y.numpy())
    assert est.result_.solver == "cd" and est.result_.converged
    np.testing.assert_array_equal(est.coef_ != 0, ref.coef_ != 0)
    np.testing.assert_allclose(est.coef_, ref.coef_, rtol=0, atol=1e-6)


# --- what it refuses -------------------------------------------------------------------------------------------------


def test_unpenalised_softmax_is_centred_like_newton():
    """Without a penalty every column of a softmax model is free along the class mean: the result is centred
    there, as Newton's, and is the same fit."""
    X, y, _ = _problem("softmax", seed=7)
    model = _model("softmax", X.shape[1])
    assert fit_exact(model, X, y, solver="cd", tol=1e-10).converged
    torch.testing.assert_close(_params(model).sum(dim=0), torch.zeros(X.shape[1] + 1, dtype=torch.float64),
                               rtol=0, atol=1e-12)
    ref = _model("softmax", X.shape[1])
    fit_exact(ref, X, y, solver="newton", tol=1e-12)
    torch.testing.assert_close(_params(model), _params(ref), rtol=0, atol=1e-8)


def test_a_model_with_hidden_layers_is_refused():
    X, y, _ = _problem("binary")
    with pytest.raises(TypeError, match="solver='cd' needs a model with a single Linear layer"):
        fit_exact(tl.MLP(X.shape[1], [4], link="sigmoid").double(), X, y, solver="cd", l1=0.01)


@pytest.mark.parametrize("kind", ["binary", "softmax"])
@pytest.mark.parametrize("device", CUDA_ONLY)
def test_cuda_model_is_solved_on_the_cpu_and_stays_on_its_device(device, kind):
    X, y, sw = _problem(kind, n=300, d=20, seed=4)
    fits = []
    for dev in ("cpu", device):
        model = _model(kind, X.shape[1])
        result = fit_exact(model, sp.csr_matrix(X.numpy()), y, solver="cd", l1=0.02, l2=0.01, sample_weight=sw,
                           tol=1e-12, device=dev)
        assert result.converged
        assert model.linear.weight.device.type == torch.device(dev).type
        fits.append(_params(model).cpu())
    torch.testing.assert_close(fits[1], fits[0], rtol=0, atol=1e-10)
