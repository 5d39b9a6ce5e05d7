"""The accelerated proximal gradient (``solver="proximal"``): optimality conditions checked directly,
agreement with proximal Newton and with scikit-learn's saga on a sparse problem, dense and sparse X,
every output kind with and without intercept, L2 and sample weights, warnings, CUDA, and the rule
that chooses it."""

import copy
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.linear_model import LogisticRegression as SkLogisticRegression

import torch_logreg as tl
from torch_logreg.estimators.estimator import LogisticRegressionClassifier
from torch_logreg.solvers import ConvergenceWarning, choose_solver, fit_exact

from conftest import CUDA_ONLY
from helpers import (
    assert_l1_optimum,
    l1_model,
    l1_objective,
    l1_optimality,
    max_gradient,
    model_at,
    sparse_truth_problem,
    theta_of,
)

KINDS = ("binary", "softmax", "identity")


_problem, _model, _objective, _params = sparse_truth_problem, l1_model, l1_objective, theta_of


# --- the optimum: KKT conditions and proximal Newton over the grid -----------------------------------------------


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("l2", [0.0, 0.1])
@pytest.mark.parametrize("bias", [True, False], ids=["intercept", "no_intercept"])
@pytest.mark.parametrize("kind", KINDS)
def test_optimality_conditions_and_proximal_newton(kind, bias, l2, weighted):
    """(a) the KKT conditions hold at ~1e-8: ``|g_j + l1 sign W_j| ~ 0`` on the support, ``|g_j| <= l1`` off it,
    ``g = 0`` on the bias; (b) proximal Newton reaches the same objective, support and weights."""
    X, y, sw = _problem(kind)
    w = sw if weighted else None
    l1 = 0.05
    model = _model(kind, X.shape[1], bias)
    result = fit_exact(model, X, y, solver="proximal", l1=l1, l2=l2, sample_weight=w, tol=1e-10, max_iter=20_000)
    assert_l1_optimum(model, result, "proximal", X, y, l1, l2, w, _model(kind, X.shape[1], bias))


@pytest.mark.parametrize("solver", ["proximal", "cd"])
@pytest.mark.parametrize("kind", ("binary", "multilabel", "softmax", "identity"))
def test_without_l1_it_reaches_the_smooth_optimum(kind, solver):
    """(f) ``l1 = 0``: the gradient itself falls to ``tol``, and the optimum is Newton's (both L1 solvers)."""
    X, y, _ = _problem(kind, seed=1)
    model = _model(kind, X.shape[1])
    result = fit_exact(model, X, y, solver=solver, l2=0.1, tol=1e-10, max_iter=20_000)
    assert result.converged
    assert max_gradient(model, X, y, 0.1) <= 1e-10
    ref = _model(kind, X.shape[1])
    fit_exact(ref, X, y, solver="newton", l2=0.1, tol=1e-12)
    torch.testing.assert_close(_params(model), _params(ref), rtol=0, atol=1e-8)


@pytest.mark.parametrize("solver", ["proximal", "cd"])
def test_the_bias_is_never_penalised(solver):
    """A large ``l1`` zeroes every weight; the intercept still fits the base rate (gradient 0)."""
    X, y, _ = _problem("binary", seed=2)
    model = _model("binary", X.shape[1])
    fit_exact(model, X, y, solver=solver, l1=10.0, tol=1e-12, max_iter=1000)
    assert bool((model.linear.weight == 0).all())
    p = y.double().mean()
    assert model.linear.bias.item() == pytest.approx(torch.log(p / (1 - p)).item(), abs=1e-10)


# --- sparse X: scikit-learn's saga, and the same fit as dense X --------------------------------------------------


def sparse_logistic(n: int, d: int, density: float, *, informative: int, scale: float, seed: int, state: int):
    """A CSR ``(n, d)`` matrix of normal entries and 0/1 labels drawn from a logistic model on its
    first ``informative`` columns (coefficients ``scale`` times normal draws)."""
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=density, format="csr", random_state=state, data_rvs=rng.standard_normal)
    coef = np.zeros(d)
    coef[:informative] = scale * rng.standard_normal(informative)
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ coef)))).astype(np.int64)
    return X, y


@pytest.fixture(scope="module")
def sparse_problem():
    """3000 rows x 2000 sparse columns (0.5% dense), labels from 50 informative columns."""
    return sparse_logistic(3000, 2000, 0.005, informative=50, scale=3.0, seed=0, state=1)


@pytest.fixture(scope="module")
def saga_fit(sparse_problem):
    X, y = sparse_problem
    return SkLogisticRegression(C=0.2, l1_ratio=1.0, solver="saga", tol=1e-10, max_iter=100_000, random_state=0).fit(X, y)


@pytest.mark.slow
@pytest.mark.parametrize("solver", ["proximal", "cd"])
def test_sparse_l1_matches_sklearn_saga(sparse_problem, saga_fit, solver):
    """(c) The objective (read by one function at both coefficient sets) within 1e-6 relative of saga's at
    ``tol = 1e-10``, and the same support; scikit-learn's ``C`` is ``l1 = 1 / (C N)``."""
    X, y = sparse_problem
    n, d = X.shape
    C = 0.2
    l1 = 1.0 / (C * n)
    model = tl.LogisticRegression(d).double()
    result = fit_exact(model, X, y, solver=solver, l1=l1, tol=1e-10, max_iter=20_000)
    assert result.converged
    sk = saga_fit
    ref = model_at(copy.deepcopy(model), sk.coef_, sk.intercept_)
    ours, theirs = _objective(model, X, y, l1, 0.0), _objective(ref, X, y, l1, 0.0)
    assert ours == pytest.approx(theirs, rel=1e-6)
    assert ours <= theirs * (1 + 1e-12)  # saga stops short of the optimum, never below it
    kkt = l1_optimality(model, X.toarray(), y, l1)
    assert kkt["violation"] <= 1e-8
    support = model.linear.weight.detach().numpy() != 0
    assert 0 < support.sum() < d
    np.testing.assert_array_equal(support, sk.coef_ != 0)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("kind", KINDS)
def test_dense_and_sparse_x_give_the_same_fit(kind, weighted):
    """(d) The same data as a dense tensor and as scipy CSR (fitted as a torch CSR tensor) give the
    same fit: the two paths differ only in the rounding of their products."""
    gen = np.random.default_rng(3)
    X, y, sw = _problem(kind, n=300, d=30, seed=3)
    Xs = sp.csr_matrix(X.numpy() * (gen.random(X.shape) < 0.3))
    w = sw if weighted else None
    fits = []
    for data in (torch.as_tensor(Xs.toarray()), Xs):
        model = _model(kind, X.shape[1])
        result = fit_exact(model, data, y, solver="proximal", l1=0.02, l2=0.05, sample_weight=w, tol=1e-12,
                           max_iter=20_000)
        assert result.converged
        fits.append(_params(model))
    torch.testing.assert_close(fits[1] != 0, fits[0] != 0)
    torch.testing.assert_close(fits[1], fits[0], rtol=0, atol=1e-8)


# --- run control: max_iter, callback ---------------------------------------------------------------------------------


def test_max_iter_warns_with_the_iteration_count():
    """(g) Out of iterations: a ConvergenceWarning naming the count, ``stop_reason == "max_iter"``."""
    X, y, _ = _problem("softmax")
    model = _model("softmax", X.shape[1])
    with pytest.warns(ConvergenceWarning, match=r"proximal: did not converge in 3 iterations \(max_iter=3\)"):
        result = fit_exact(model, X, y, solver="proximal", l1=0.01, tol=1e-12, max_iter=3)
    assert result.stop_reason == "max_iter" and result.n_iter == 3 and not result.converged
    assert result.grad_norm > 1e-12


@pytest.mark.parametrize("solver, kind, stop", [("proximal", "binary", 5), ("cd", "multilabel", 2)])
def test_callback_sees_every_iterate_and_can_stop(solver, kind, stop):
    """The callback sees every iterate's objective (the start first) and can stop the run; the recorded
    objectives are those it saw (both L1 solvers)."""
    X, y, _ = sparse_truth_problem(kind, zero_fraction=0.25 if solver == "cd" else 0.0)
    seen = []

    def callback(n_iter, objective):
        seen.append((n_iter, objective))
        return n_iter == stop

    model = _model(kind, X.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        result = fit_exact(model, X, y, solver=solver, l1=0.01, tol=1e-14, callback=callback)
    assert result.stop_reason == "callback" and result.n_iter == stop
    assert [i for i, _ in seen] == list(range(stop + 1))
    assert [f for _, f in seen] == result.losses
    assert result.losses[-1] < result.losses[0]


@pytest.mark.parametrize("solver", ["proximal", "cd"])
def test_warm_start_at_the_optimum_takes_no_step(solver):
    X, y, _ = _problem("binary")
    model = _model("binary", X.shape[1])
    fit_exact(model, X, y, solver="newton", l1=0.05, tol=1e-13)
    before = _params(model).clone()
    result = fit_exact(model, X, y, solver=solver, l1=0.05, tol=1e-10)
    assert result.converged and result.n_iter == 0
    assert torch.equal(_params(model), before)


def test_a_model_with_hidden_layers_is_refused():
    X, y, _ = _problem("binary")
    with pytest.raises(TypeError, match="solver='proximal' needs a model with a single Linear layer"):
        fit_exact(tl.MLP(X.shape[1], [4], link="sigmoid").double(), X, y, solver="proximal", l1=0.01)


# --- devices -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("kind", ["binary", "softmax"])
@pytest.mark.parametrize("device", CUDA_ONLY)
def test_cuda_matches_cpu(device, kind, sparse):
    """(h) The same fit on CUDA as on the CPU (float64)."""
    X, y, sw = _problem(kind, n=300, d=20, seed=4)
    data = sp.csr_matrix(X.numpy()) if sparse else X
    fits = []
    for dev in ("cpu", device):
        model = _model(kind, X.shape[1])
        result = fit_exact(model, data, y, solver="proximal", l1=0.02, l2=0.01, sample_weight=sw, tol=1e-12,
                           max_iter=20_000, device=dev)
        assert result.converged
        assert model.linear.weight.device.type == torch.device(dev).type
        fits.append(_params(model).cpu())
    torch.testing.assert_close(fits[1] != 0, fits[0] != 0)
    torch.testing.assert_close(fits[1], fits[0], rtol=0, atol=1e-8)


# --- the choice of solver ----------------------------------------------------------------------------------------------


def test_choose_solver_rule():
    assert choose_solver(2000, l1=0.1) == "newton"
    assert choose_solver(2001, l1=0.1) == "proximal"
    assert choose_solver(400, l1=0.1, sparse=True) == "cd"
    assert choose_solver(10**6, l1=0.1, sparse=True) == "cd"
    assert choose_solver(400) == "newton"
    assert choose_solver(401) == "lbfgs"
    assert choose_solver(401, sparse=True) == "lbfgs"
    assert choose_solver(1000, penalised=False) == "newton"
    assert choose_solver(1001, penalised=False) == "lbfgs"


@pytest.mark.slow
@pytest.mark.parametrize("solver", ["auto", "proximal"])
def test_estimator_on_wide_sparse_l1_matches_dense_newton(solver):
    """(i) ``penalty="l1"`` on a wide sparse matrix: ``solver="auto"`` takes coordinate descent; it and the
    proximal gradient reach the dense proximal Newton fit of the same data."""
    X, y = sparse_logistic(600, 450, 0.05, informative=20, scale=2.0, seed=5, state=5)
    n, d = X.shape
    C = 0.5
    est = LogisticRegressionClassifier(penalty="l1", C=C, solver=solver, tol=1e-10, max_iter=20_000).fit(X, y)
    assert est.result_.solver == ("cd" if solver == "auto" else solver) and est.result_.converged
    ref = LogisticRegressionClassifier(penalty="l1", C=C, solver="newton", tol=1e-10).fit(X.toarray(), y)
    assert ref.result_.solver == "newton"
    l1 = 1.0 / (C * n)
    assert _objective(est.model_, X, y, l1, 0.0) == pytest.approx(_objective(ref.model_, X, y, l1, 0.0), rel=1e-10)
    np.testing.assert_array_equal(est.coef_ != 0, ref.coef_ != 0)
    assert 0 < (est.coef_ != 0).sum() < d
    np.testing.assert_allclose(est.coef_, ref.coef_, rtol=0, atol=1e-6)
    np.testing.assert_allclose(est.intercept_, ref.intercept_, rtol=0, atol=1e-6)


def test_estimator_takes_solver_proximal_for_elastic_net():
    X, y, _ = _problem("softmax", seed=6)
    est = LogisticRegressionClassifier(penalty="elasticnet", l1_ratio=0.5, C=0.5, solver="proximal", tol=1e-10,
                                       max_iter=20_000).fit(X.numpy(), y.numpy())
    ref = LogisticRegressionClassifier(penalty="elasticnet", l1_ratio=0.5, C=0.5, solver="newton", tol=1e-12
                                       ).fit(X.numpy(), y.numpy())
    assert est.result_.solver == "proximal"
    np.testing.assert_array_equal(est.coef_ != 0, ref.coef_ != 0)
    np.testing.assert_allclose(est.coef_, ref.coef_, rtol=0, atol=1e-6)
