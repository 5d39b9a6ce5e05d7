"""Proximal Newton with coordinate descent (``solver="cd"``): optimality conditions checked directly and
agreement with proximal Newton over binary / multi-label / linear outputs, dense and sparse X, with and
without intercept, L2 and sample weights, and softmax (cycling over the classes); scikit-learn's saga on a
sparse problem; dense and sparse X give one fit; float32 models, the callback, max_iter."""

import copy
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.linear_model import LogisticRegression as SkLogisticRegression

import torch_logreg as tl
from torch_logreg.registry import EXACT_SOLVERS, L1_SOLVERS
from torch_logreg.solvers import ConvergenceWarning, fit_exact

from conftest import CUDA_ONLY
from helpers import l1_optimality, max_gradient, model_at

KINDS = ("binary", "multilabel", "softmax", "identity")


def _problem(kind: str, n: int = 200, d: int = 8, seed: int = 0):
    """Float64 data from a sparse true model: ``X (n, d)`` (about a quarter of its entries zero), targets and
    sample weights."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    X = X * (torch.rand(n, d, generator=gen, dtype=torch.float64) < 0.75)
    W = torch.randn(3, d, generator=gen, dtype=torch.float64) * (torch.arange(d) < d // 2)
    z = X @ W.T
    if kind == "binary":
        y = (torch.rand(n, generator=gen, dtype=torch.float64) < torch.sigmoid(z[:, 0])).long()
    elif kind == "multilabel":
        y = (torch.rand(n, 3, generator=gen, dtype=torch.float64) < torch.sigmoid(z)).long()
    elif kind == "softmax":
        y = torch.multinomial(torch.softmax(z, dim=1), 1, generator=gen)[:, 0]
    else:
        y = z[:, 0] + 0.5 * torch.randn(n, generator=gen, dtype=torch.float64)
    sw = torch.rand(n, generator=gen, dtype=torch.float64) * 2
    return X, y, sw


def _model(kind: str, d: int, bias: bool = True):
    if kind == "binary":
        return tl.LogisticRegression(d, bias=bias).double()
    if kind == "multilabel":
        return tl.LogisticRegression(d, n_outputs=3, bias=bias).double()
    if kind == "softmax":
        return tl.SoftmaxRegression(d, 3, bias=bias).double()
    return tl.LinearRegression(d, bias=bias).double()


def _objective(model, X, y, l1: float, l2: float, sample_weight=None) -> float:
    """``(1/N) sum w_n loss_n + (l2/2)||W||^2 + l1 ||W||_1`` at the model's parameters, in float64."""
    X = torch.as_tensor(X.toarray() if sp.issparse(X) else X, dtype=torch.float64)
    T = model.targets(torch.as_tensor(y), X.shape[0])
    w = None if sample_weight is None else torch.as_tensor(sample_weight, dtype=torch.float64)
    smooth = model.objective(X, T, l2, w)
    return (smooth + l1 * model.linear.weight.detach().abs().sum()).item()


def _params(model) -> torch.Tensor:
    b = model.linear.bias
    W = model.linear.weight.detach()
    return W if b is None else torch.cat([b.detach()[:, None], W], dim=1)


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
    assert result.converged and result.solver == "cd" and result.grad_norm <= 1e-10
    kkt = l1_optimality(model, X, y, l1, l2, sample_weight=w)
    assert kkt["violation"] <= 1e-8
    assert 0 < kkt["support"].sum() < kkt["support"].numel()  # the penalty sets some weights to exactly 0
    assert kkt["margin"] > 1e-3  # every zero is clearly a zero, so the support is determined

    ref = _model(kind, X.shape[1], bias)
    fit_exact(ref, X, y, solver="newton", l1=l1, l2=l2, sample_weight=w, tol=1e-12, max_iter=100)
    ours, theirs = _objective(model, X, y, l1, l2, w), _objective(ref, X, y, l1, l2, w)
    assert ours == pytest.approx(theirs, rel=1e-10)
    torch.testing.assert_close(model.linear.weight != 0, ref.linear.weight != 0)
    torch.testing.assert_close(_params(model), _params(ref), rtol=0, atol=1e-6)
    assert result.losses[-1] == pytest.approx(ours, rel=1e-12)
    assert len(result.losses) == len(result.grad_norms) == result.n_iter + 1


@pytest.mark.parametrize("kind", KINDS)
def test_without_l1_it_reaches_the_smooth_optimum(kind):
    """``l1 = 0``: the gradient itself falls to ``tol``, and the optimum is Newton's."""
    X, y, _ = _problem(kind, seed=1)
    model = _model(kind, X.shape[1])
    result = fit_exact(model, X, y, solver="cd", l2=0.1, tol=1e-10)
    assert result.converged
    assert max_gradient(model, X, y, 0.1) <= 1e-10
    ref = _model(kind, X.shape[1])
    fit_exact(ref, X, y, solver="newton", l2=0.1, tol=1e-12)
    torch.testing.assert_close(_params(model), _params(ref), rtol=0, atol=1e-8)


def test_the_bias_is_never_penalised():
    """A large ``l1`` zeroes every weight; the intercept still fits the base rate (gradient 0)."""
    X, y, _ = _problem("binary", seed=2)
    model = _model("binary", X.shape[1])
    fit_exact(model, X, y, solver="cd", l1=10.0, tol=1e-12)
    assert bool((model.linear.weight == 0).all())
    p = y.double().mean()
    assert model.linear.bias.item() == pytest.approx(torch.log(p / (1 - p)).item(), abs=1e-10)


# --- sparse X: scikit-learn's saga, and the same fit as dense X --------------------------------------------------


@pytest.fixture(scope="module")
def sparse_problem():
    """3000 rows x 2000 sparse columns (0.5% dense), labels from 50 informative columns (as for the proximal
    gradient's test)."""
    rng = np.random.default_rng(0)
    X = sp.random(3000, 2000, density=0.005, format="csr", random_state=1, data_rvs=rng.standard_normal)
    coef = np.zeros(2000)
    coef[:50] = 3.0 * rng.standard_normal(50)
    y = (rng.random(3000) < 1 / (1 + np.exp(-(X @ coef)))).astype(np.int64)
    return X, y


def test_sparse_l1_matches_sklearn_saga(sparse_problem):
    """The objective within 1e-6 relative of saga's at ``tol = 1e-10``, and the same support; scikit-learn's
    ``C`` is ``l1 = 1 / (C N)``."""
    X, y = sparse_problem
    n, d = X.shape
    C = 0.2
    l1 = 1.0 / (C * n)
    model = tl.LogisticRegression(d).double()
    result = fit_exact(model, X, y, solver="cd", l1=l1, tol=1e-10)
    assert result.converged
    sk = SkLogisticRegression(C=C, l1_ratio=1.0, solver="saga", tol=1e-10, max_iter=100_000, random_state=0).fit(X, y)
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


def test_callback_sees_every_iterate_and_can_stop():
    X, y, _ = _problem("multilabel")
    seen = []

    def callback(n_iter, objective):
        seen.append((n_iter, objective))
        return n_iter == 2

    model = _model("multilabel", X.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        result = fit_exact(model, X, y, solver="cd", l1=0.01, tol=1e-14, callback=callback)
    assert result.stop_reason == "callback" and result.n_iter == 2
    assert [i for i, _ in seen] == [0, 1, 2]
    assert [f for _, f in seen] == result.losses
    assert result.losses[-1] < result.losses[0]


def test_max_iter_warns_with_the_iteration_count():
    X, y, _ = _problem("binary")
    with pytest.warns(ConvergenceWarning, match=r"cd: did not converge in 1 iterations \(max_iter=1\)"):
        result = fit_exact(_model("binary", X.shape[1]), X, y, solver="cd", l1=0.01, tol=1e-14, max_iter=1)
    assert result.stop_reason == "max_iter" and result.n_iter == 1 and not result.converged


def test_warm_start_at_the_optimum_takes_no_step():
    X, y, _ = _problem("binary")
    model = _model("binary", X.shape[1])
    fit_exact(model, X, y, solver="newton", l1=0.05, tol=1e-13)
    before = _params(model).clone()
    result = fit_exact(model, X, y, solver="cd", l1=0.05, tol=1e-10)
    assert result.converged and result.n_iter == 0
    assert torch.equal(_params(model), before)


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
