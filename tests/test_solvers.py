"""Newton, proximal Newton and L-BFGS: exact optima against scikit-learn, analytic Hessians
against autograd, monotone steps, penalties, weights, warnings and bad input."""

import copy
import math
import re
import sys
import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits, load_iris
from sklearn.linear_model import LogisticRegression as SkLogisticRegression
from sklearn.preprocessing import StandardScaler

import torch_logreg as tl
from torch_logreg import functional as F
from torch_logreg.inference import SeparationWarning
from torch_logreg.solvers import ConvergenceWarning, NonFiniteError, augment, fit_exact, get_theta

from conftest import CUDA_ONLY
from helpers import l1_optimality, max_gradient, model_at

SOLVERS = ("newton", "lbfgs")


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return StandardScaler().fit_transform(X), y


@pytest.fixture(scope="module")
def sk_digits(digits):
    """scikit-learn's exact multinomial Newton solution at C = 1, checked to be the optimum of the
    project's objective (l2 = 1/N) to rounding: a reference, not an iterate that stopped short."""
    X, y = digits
    sk = SkLogisticRegression(C=1.0, tol=1e-10, solver="newton-cholesky", max_iter=1000).fit(X, y)
    assert max_gradient(model_at(tl.SoftmaxRegression(64, 10), sk.coef_, sk.intercept_), X, y, 1.0 / len(y)) < 1e-12
    return sk


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def _coef(model):
    return model.linear.weight.detach().cpu().numpy(), model.linear.bias.detach().cpu().numpy()


# --- exact optima against scikit-learn ---------------------------------------------------------


@pytest.mark.parametrize("C", [0.01, 1.0, 100.0])
@pytest.mark.parametrize("solver", SOLVERS)
def test_binary_l2_matches_sklearn(cancer, C, solver):
    """Breast cancer, l2 = 1/(C N). The reference is scikit-learn's exact newton-cholesky solver at
    tol=1e-10 (its lbfgs at the same tol stops ~1e-5 short at C=100, where the problem is
    ill-conditioned)."""
    X, y = cancer
    l2 = 1.0 / (C * len(y))
    sk = SkLogisticRegression(C=C, tol=1e-10, solver="newton-cholesky", max_iter=1000).fit(X, y)
    assert max_gradient(model_at(tl.LogisticRegression(30), sk.coef_, sk.intercept_), X, y, l2) < 1e-11
    model = tl.LogisticRegression(X.shape[1]).double()
    result = fit_exact(model, X, y, solver=solver, l2=l2, tol=1e-10, max_iter=2000)
    assert result.converged and result.stop_reason == "converged"
    W, b = _coef(model)
    scale = np.abs(sk.coef_).max()
    # L-BFGS stops at a max-abs gradient of 1e-10; at C = 100 the smallest Hessian eigenvalue is
    # near l2 ~ 2e-5, so its weights may sit up to ~1e-6 relative from the optimum (2e-7 measured)
    assert np.abs(W - sk.coef_).max() / scale < 1e-5
    assert abs(b[0] - sk.intercept_[0]) / max(1.0, abs(sk.intercept_[0])) < 1e-5
    if solver == "newton":
        assert result.n_iter <= 15
        np.testing.assert_allclose(W, sk.coef_, rtol=1e-8, atol=1e-8 * scale)


@pytest.mark.parametrize("solver", SOLVERS)
def test_multinomial_probabilities_match_sklearn(digits, sk_digits, solver):
    X, y = digits
    sk = sk_digits
    model = tl.SoftmaxRegression(X.shape[1], 10).double()
    result = fit_exact(model, X, y, solver=solver, l2=1.0 / len(y), tol=1e-10, max_iter=1000)
    assert result.converged
    if solver == "newton":
        assert result.n_iter <= 15
    P = model(torch.from_numpy(X)).detach().numpy()
    # both Newton fits land at a gradient of ~1e-16 (probabilities agree to ~1e-15); L-BFGS stops
    # at a max-abs gradient of 1e-10, which with a smallest curvature of l2 = 1/N moves the
    # probabilities by at most ~1e-7
    np.testing.assert_allclose(P, sk.predict_proba(X), rtol=0, atol=1e-12 if solver == "newton" else 1e-6)
    # the intercepts, which the penalty does not see, are centred over the classes
    assert abs(model.linear.bias.sum().item()) < 1e-10


def test_newton_and_lbfgs_agree_to_high_precision(iris):
    X, y = iris
    models = {}
    for solver in SOLVERS:
        models[solver] = tl.SoftmaxRegression(4, 3).double()
        fit_exact(models[solver], X, y, solver=solver, l2=1e-2, tol=1e-11, max_iter=1000)
    for a, b in zip(models["newton"].parameters(), models["lbfgs"].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8)


# --- analytic Hessians against autograd --------------------------------------------------------


@pytest.mark.parametrize("kind", ["binary", "multilabel", "softmax", "regression"])
@pytest.mark.parametrize("weighted", [False, True])
def test_hessian_matches_autograd(kind, weighted):
    gen = torch.Generator().manual_seed(3)
    n, d, k = 40, 3, 3
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    model = {
        "binary": lambda: tl.LogisticRegression(d),
        "multilabel": lambda: tl.LogisticRegression(d, n_outputs=k),
        "softmax": lambda: tl.SoftmaxRegression(d, k),
        "regression": lambda: tl.LinearRegression(d),
    }[kind]().double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
    if kind == "softmax":
        y = torch.randint(0, k, (n,), generator=gen)
    elif kind == "multilabel":
        y = torch.randint(0, 2, (n, k), generator=gen)
    elif kind == "binary":
        y = torch.randint(0, 2, (n,), generator=gen)
    else:
        y = torch.randn(n, generator=gen, dtype=torch.float64)
    T = model.targets(y, n)
    w = torch.rand(n, generator=gen, dtype=torch.float64) * 2 if weighted else None

    Xa = augment(X, True)
    theta0 = get_theta(model.linear)
    K, A = theta0.shape
    z = Xa @ theta0.T
    if kind == "softmax":
        H = F.softmax_hessian(Xa, torch.softmax(z, 1), w, chunk_size=7).reshape(K * A, K * A)
    else:
        # the column of ones is never made: its row and column come from sums (as Newton forms it)
        blocks = F.block_diagonal_hessian(X, F.diagonal_curvature(model.link, z, w), bias=True)
        H = torch.block_diag(*blocks)

    loss_fn = F.LINKS[model.link][1]

    def objective(flat):
        theta = flat.view(K, A)
        return loss_fn(Xa @ theta.T, T, w)[0]

    ref = torch.autograd.functional.hessian(objective, theta0.reshape(-1))
    torch.testing.assert_close(H, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["binary", "softmax", "regression"])
def test_weighted_loss_matches_autograd_objective(kind):
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(25, 4, generator=gen, dtype=torch.float64)
    model = {"binary": tl.LogisticRegression(4), "softmax": tl.SoftmaxRegression(4, 3),
             "regression": tl.LinearRegression(4)}[kind].double()
    y = {"binary": torch.randint(0, 2, (25,), generator=gen), "softmax": torch.randint(0, 3, (25,), generator=gen),
         "regression": torch.randn(25, generator=gen, dtype=torch.float64)}[kind]
    T = model.targets(y, 25)
    w = torch.rand(25, generator=gen, dtype=torch.float64)
    loss, grads = model.objective_and_grad(X, T, 0.1, w)
    # integer-free check: weights w on rows equal an explicit weighted autograd objective
    params = dict(model.named_parameters())
    with torch.enable_grad():
        z = model.logits(X)
        per = {"binary": torch.nn.functional.binary_cross_entropy_with_logits(z, T, reduction="none").sum(1),
               "softmax": torch.nn.functional.cross_entropy(z, T, reduction="none"),
               "regression": 0.5 * ((z - T) ** 2).sum(1)}[kind]
        ref = (w * per).mean() + 0.05 * (params["linear.weight"] ** 2).sum()
        ref_grads = torch.autograd.grad(ref, list(params.values()))
    torch.testing.assert_close(loss, ref.detach())
    for (name, _), g in zip(params.items(), ref_grads):
        torch.testing.assert_close(grads[name], g)
    assert torch.allclose(model.objective(X, T, 0.1, w), loss)


# --- the iteration ----------------------------------------------------------------------------


@pytest.mark.parametrize("solver", SOLVERS)
def test_every_step_lowers_the_objective(cancer, solver):
    X, y = cancer
    model = tl.LogisticRegression(X.shape[1]).double()
    result = fit_exact(model, X, y, solver=solver, l2=1e-3, tol=1e-10, max_iter=2000)
    losses = np.array(result.losses)
    assert len(losses) == result.n_iter + 1
    assert np.all(np.diff(losses) <= 1e-14 * abs(losses[0]))
    assert result.grad_norms[-1] <= 1e-10 == result.tol


def test_newton_converges_quadratically(cancer):
    X, y = cancer
    result = fit_exact(tl.LogisticRegression(30).double(), X, y, l2=1e-3, tol=1e-12)
    g = result.grad_norms
    assert g[-1] < 1e-12 and result.n_iter <= 12  # L-BFGS needs ~100 iterations here
    # near the optimum each step squares the error: g_{k+1} <= c g_k^2 (measured 5e-5, 4e-7, 3e-11,
    # 1e-17: c ~ 200); a linear rate (L-BFGS, gradient descent) breaks it once g_k < 1e-3 / c
    pairs = [(a, b) for a, b in zip(g, g[1:]) if a < 1e-3 and b > 1e-14]
    assert pairs and all(b <= 1e3 * a * a for a, b in pairs)
    assert all(t == 1.0 for t in result.line_search_steps[-3:])


@pytest.mark.parametrize("solver", SOLVERS)
def test_max_iter_warns_with_the_iteration_count(cancer, solver):
    X, y = cancer
    model = tl.LogisticRegression(30).double()
    with pytest.warns(ConvergenceWarning, match=r"did not converge in 2 iterations \(max_iter=2\)"):
        result = fit_exact(model, X, y, solver=solver, l2=1e-4, max_iter=2, tol=1e-12)
    assert not result.converged and result.stop_reason == "max_iter" and result.n_iter == 2


def test_warm_start_from_the_optimum_takes_no_step(iris):
    X, y = iris
    model = tl.SoftmaxRegression(4, 3).double()
    fit_exact(model, X, y, l2=1e-2, tol=1e-10)
    result = fit_exact(model, X, y, l2=1e-2, tol=1e-10)
    assert result.n_iter == 0 and result.converged


def test_linear_regression_newton_is_least_squares():
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(50, 4, generator=gen, dtype=torch.float64)
    noise = 0.1 * torch.randn(50, generator=gen, dtype=torch.float64)
    y = X @ torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64) + noise + 4
    model = tl.LinearRegression(4).double()
    result = fit_exact(model, X, y, tol=1e-10)
    assert result.n_iter == 1
    ref = torch.linalg.lstsq(augment(X, True), y[:, None]).solution[:, 0]
    torch.testing.assert_close(get_theta(model.linear)[0], ref)


@pytest.mark.parametrize("solver", SOLVERS)
def test_multilabel_fits_each_output_like_its_own_binary_model(solver):
    gen = torch.Generator().manual_seed(5)
    X = torch.randn(80, 3, generator=gen, dtype=torch.float64)
    Y = (torch.rand(80, 2, generator=gen, dtype=torch.float64) < torch.sigmoid(X[:, :2] * 2)).to(torch.int64)
    joint = tl.LogisticRegression(3, n_outputs=2).double()
    fit_exact(joint, X, Y, solver=solver, l2=1e-2, tol=1e-11, max_iter=500)
    for k in range(2):
        single = tl.LogisticRegression(3).double()
        fit_exact(single, X, Y[:, k], solver="newton", l2=1e-2, tol=1e-11)
        torch.testing.assert_close(joint.linear.weight[k], single.linear.weight[0], rtol=1e-7, atol=1e-9)


def test_lbfgs_trains_an_mlp_with_the_manual_gradient():
    torch.manual_seed(0)
    X = torch.tensor([[0.0, 0], [0, 1], [1, 0], [1, 1]], dtype=torch.float64).repeat(5, 1)
    y = torch.tensor([0, 1, 1, 0]).repeat(5)
    model = tl.MLP(2, [8], link="sigmoid").double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = fit_exact(model, X, y, solver="lbfgs", tol=1e-6, max_iter=500)
    assert result.losses[-1] < 0.05 < result.losses[0]


# --- penalties and weights ----------------------------------------------------------------------


def _saga(X, y, C, l1_ratio, max_iter=200_000):
    """scikit-learn's saga at a tight tolerance and a fixed seed: the only exact-penalty reference
    it has for L1 (liblinear penalises the intercept, another objective). saga is iterative, so
    each use first checks how close it came (``l1_optimality``) before trusting its support."""
    return SkLogisticRegression(C=C, l1_ratio=l1_ratio, solver="saga", tol=1e-12, max_iter=max_iter,
                                random_state=0).fit(X, y)


def _assert_l1_solution(model, sk, X, y, l1, l2, atol):
    """Ours is the optimum (KKT violation at rounding level) with a support that a small error
    cannot change (margin); saga came close enough to it that its support is determined too; the
    weights then agree within ``atol``, which is sized to saga's measured violation."""
    ours = l1_optimality(model, X, y, l1, l2)
    assert ours["violation"] < 1e-9
    assert 0 < ours["support"].sum() < ours["support"].numel()
    ref = l1_optimality(model_at(copy.deepcopy(model), sk.coef_, sk.intercept_), X, y, l1, l2)
    # a zero of ours has |g_j| <= l1 (1 - margin); saga resolves it if its own error is far smaller
    assert ref["violation"] < 0.1 * ours["margin"] * l1
    W, _ = _coef(model)
    np.testing.assert_array_equal(W != 0, sk.coef_ != 0)
    np.testing.assert_allclose(W, sk.coef_, rtol=0, atol=atol)


def test_l1_support_matches_sklearn(cancer):
    """At C = 0.1 the L1 support (8 features) is well determined: every zero has |g_j| at least
    2% below l1."""
    X, y = cancer
    C = 0.1
    l1 = 1.0 / (C * len(y))
    model = tl.LogisticRegression(30).double()
    result = fit_exact(model, X, y, l1=l1, tol=1e-10)
    assert result.converged and result.n_iter <= 15
    assert l1_optimality(model, X, y, l1)["margin"] > 0.01
    # saga's measured distance is ~3e-8 in the weights
    _assert_l1_solution(model, _saga(X, y, C, 1.0, 100_000), X, y, l1, 0.0, atol=1e-6)


def test_l1_solution_satisfies_optimality_conditions(cancer):
    X, y = cancer
    l1, l2 = 0.02, 0.01
    model = tl.LogisticRegression(30).double()
    fit_exact(model, X, y, l1=l1, l2=l2, tol=1e-12)
    Xt = torch.from_numpy(X)
    _, grads = model.objective_and_grad(Xt, model.targets(torch.from_numpy(y), len(y)), l2)
    g, W = grads["linear.weight"][0], model.linear.weight.detach()[0]
    zero = W == 0
    assert zero.any() and (~zero).any()
    assert torch.all(g[zero].abs() <= l1 + 1e-12)  # subgradient condition at zero
    torch.testing.assert_close(g[~zero], -l1 * torch.sign(W[~zero]), rtol=0, atol=1e-11)
    assert abs(grads["linear.bias"].item()) < 1e-12  # the bias is not penalised


@pytest.mark.parametrize("C,l1_ratio", [(0.1, 0.5), (1.0, 0.3)])
def test_elastic_net_matches_sklearn_saga(cancer, C, l1_ratio):
    X, y = cancer
    n = len(y)
    l1, l2 = l1_ratio / (C * n), (1 - l1_ratio) / (C * n)
    model = tl.LogisticRegression(30).double()
    fit_exact(model, X, y, l1=l1, l2=l2, tol=1e-10)
    # saga's measured distance is ~3e-9 in the weights
    _assert_l1_solution(model, _saga(X, y, C, l1_ratio), X, y, l1, l2, atol=1e-7)


def test_multinomial_l1_matches_sklearn_saga(iris):
    X, y = iris
    C = 0.5
    l1 = 1.0 / (C * len(y))
    model = tl.SoftmaxRegression(4, 3).double()
    result = fit_exact(model, X, y, l1=l1, tol=1e-10)
    assert result.converged
    # saga's measured distance is ~3e-9 in the weights
    _assert_l1_solution(model, _saga(X, y, C, 1.0, 500_000), X, y, l1, 0.0, atol=1e-6)


@pytest.mark.parametrize("solver", SOLVERS)
def test_integer_sample_weights_equal_repeated_rows(iris, solver):
    X, y = iris
    w = np.random.default_rng(0).integers(0, 4, len(y))
    weighted = tl.SoftmaxRegression(4, 3).double()
    fit_exact(weighted, X, y, solver=solver, l2=1e-2, sample_weight=w, tol=1e-11, max_iter=1000)
    repeated = tl.SoftmaxRegression(4, 3).double()
    # same objective: (1/N) sum w_n loss_n == (sum w / N) * mean over repeated rows
    l2_rep = 1e-2 * len(y) / w.sum()
    fit_exact(repeated, np.repeat(X, w, axis=0), np.repeat(y, w), solver="newton", l2=l2_rep, tol=1e-11)
    for a, b in zip(weighted.parameters(), repeated.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-8)


def test_sample_weights_match_sklearn(cancer):
    X, y = cancer
    w = np.random.default_rng(1).uniform(0.1, 3.0, len(y))
    C = 1.0
    sk = SkLogisticRegression(C=C, tol=1e-10, solver="newton-cholesky").fit(X, y, sample_weight=w)
    model = tl.LogisticRegression(30).double()
    # scikit-learn: C sum_n w_n loss_n + |W|^2 / 2  ->  l2 = 1 / (C N) with the mean over N
    fit_exact(model, X, y, l2=1.0 / (C * len(y)), sample_weight=w, tol=1e-10)
    W, b = _coef(model)
    np.testing.assert_allclose(W, sk.coef_, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(b, sk.intercept_, rtol=1e-6, atol=1e-8)


# --- separation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "X,y,kind",
    [
        ([[0.0], [1], [2], [3], [4], [5]], [0, 0, 0, 1, 1, 1], "Complete separation"),
        ([[0.0], [1], [2], [2], [3], [4]], [0, 0, 0, 1, 1, 1], "Quasi-complete separation"),
    ],
)
def test_unpenalised_fit_reports_separation(X, y, kind):
    model = tl.LogisticRegression(1).double()
    with pytest.warns(SeparationWarning, match=kind):
        result = fit_exact(model, X, y)
    assert result.separation is not None
    # a penalty makes the estimate exist: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", SeparationWarning)
        result = fit_exact(tl.LogisticRegression(1).double(), X, y, l2=0.1)
    assert result.separation is None


def test_non_separated_data_gives_no_separation_warning(iris):
    X, y = iris
    with warnings.catch_warnings():
        warnings.simplefilter("error", SeparationWarning)
        fit_exact(tl.LogisticRegression(1).double(), X[:, :1], (y == 1).astype(int))


def test_multinomial_quasi_separation_is_reported():
    # class 2 is cut off by x > 2, classes 0 and 1 overlap
    X = np.array([[0.0], [0.5], [1.0], [1.2], [0.3], [0.8], [3.0], [4.0], [5.0]])
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    with pytest.warns(SeparationWarning, match=r"Quasi-complete separation.*3 of 9 samples.*rows 6, 7, 8"):
        fit_exact(tl.SoftmaxRegression(1, 3).double(), X, y)


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"solver": "lbfgs", "l1": 0.1}, r"solver='lbfgs' cannot minimise an L1 penalty.*\['newton', 'proximal', 'cd'\]"),
        ({"solver": "sgd"}, r"solver must be one of \['newton', 'lbfgs', 'proximal', 'cd'\], got 'sgd'"),
        ({"l2": -1.0}, r"l2 must be a finite number >= 0"),
        ({"l1": float("nan")}, r"l1 must be a finite number >= 0"),
        ({"max_iter": 0}, r"max_iter must be an integer >= 1, got 0"),
        ({"sample_weight": [-1.0] + [1.0] * 9}, r"sample_weight must be non-negative, got -1.0 at sample 0"),
        ({"sample_weight": [0.0] * 10}, r"sample_weight sums to zero"),
        ({"sample_weight": [1.0] * 9}, r"sample_weight must have shape \(10,\)"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs, match):
    X = np.random.default_rng(0).normal(size=(10, 2))
    y = np.arange(10) % 2
    with pytest.raises(ValueError, match=match):
        fit_exact(tl.LogisticRegression(2).double(), X, y, **kwargs)


def test_newton_needs_a_single_linear_layer():
    with pytest.raises(TypeError, match="solver='newton' needs a model with a single Linear layer"):
        fit_exact(tl.MLP(2, [3]).double(), np.zeros((4, 2)), [0, 1, 0, 1])


# --- features, weights and parameters too large for the dtype ------------------------------------

SQUARES = r"whose squares overflow float32; rescale the column or pass dtype='float64'$"


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("kind", ["binary", "softmax"])
@pytest.mark.parametrize("data_dtype", [np.float32, np.float64])
def test_column_whose_squares_overflow_the_dtype_is_refused(iris, solver, kind, data_dtype):
    """The Hessian and L-BFGS's curvature pairs sum products of two columns: a column whose square
    overflows float32 is named before the first iteration, on the values as passed."""
    X, y = iris
    X = X.astype(data_dtype)
    X[:, 2] *= data_dtype(1e20)
    model = tl.LogisticRegression(4) if kind == "binary" else tl.SoftmaxRegression(4, 3)
    y = y % 2 if kind == "binary" else y
    before = copy.deepcopy(model.state_dict())
    big = float(np.abs(X[:, 2]).max())
    with pytest.raises(ValueError, match=rf"^X column 2 has values of magnitude up to {re.escape(f'{big:.3g}')}, " + SQUARES):
        fit_exact(model, X, y, solver=solver)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name])


def test_values_beyond_float32_are_refused_before_the_conversion_turns_them_infinite(iris):
    X, y = iris
    X = X.copy()
    X[:, 1] *= 1e300  # finite in float64, infinite once converted to the model's float32
    with pytest.raises(ValueError, match=r"^X column 1 has values of magnitude up to .*e\+300, " + SQUARES):
        fit_exact(tl.SoftmaxRegression(4, 3), X, y)


@pytest.mark.parametrize("solver", SOLVERS)
def test_large_columns_whose_squares_fit_give_the_scaled_answer(cancer, solver):
    """Up to the squares' limit the fit is exact: the coefficients of ``X * s`` are those of ``X``
    divided by ``s`` (unpenalised, so the objective is invariant)."""
    X, y = cancer
    X = X[:, :6]
    ref = tl.LogisticRegression(6).double()
    fit_exact(ref, X, y, solver="newton", tol=1e-12)
    scale = 1e150 if solver == "newton" else 1e6  # L-BFGS's backtracking needs ~log2(scale) halvings at the start
    model = tl.LogisticRegression(6).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the absolute tol scales with the gradient
        fit_exact(model, X * scale, y, solver=solver, tol=0.0, max_iter=300 if solver == "lbfgs" else 30)
    torch.testing.assert_close(model.linear.weight * scale, ref.linear.weight, rtol=1e-6, atol=0)
    torch.testing.assert_close(model.linear.bias, ref.linear.bias, rtol=1e-6, atol=0)


def _large_weights():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(50, 3, generator=gen)
    X[:, 0] *= 1e18  # squares fit float32 (1e36), but 1e4 times them do not
    return X, torch.randint(0, 2, (50,), generator=gen), torch.full((50,), 1e4)


@pytest.mark.parametrize(
    "solver,match",
    [
        ("newton", r"newton: the Hessian .* has a non-finite entry at iteration 0; .*too large for the model's dtype"),
        ("lbfgs", r"lbfgs: the squared norm of the gradient overflows at iteration 0; .*too large for the model's dtype"),
    ],
)
def test_non_finite_curvature_is_a_value_error(solver, match):
    """Large sample weights overflow the Hessian (L-BFGS: the gradient's squared norm): a clear
    ValueError, never LAPACK's internal assertion on a matrix holding inf or NaN."""
    X, y, w = _large_weights()
    with pytest.raises(NonFiniteError, match=match) as info:
        fit_exact(tl.LogisticRegression(3), X, y, solver=solver, sample_weight=w, warn=False)
    assert isinstance(info.value, ValueError) and isinstance(info.value, FloatingPointError)
    assert "\n" not in str(info.value)


def test_newton_solve_of_a_non_finite_system_is_a_value_error():
    """Cholesky fails on inf or NaN, and the least-squares fallback must not be handed them."""
    newton_module = sys.modules["torch_logreg.solvers.newton"]
    for bad in (math.inf, math.nan):
        h = torch.eye(3, dtype=torch.float64)
        h[0, 1] = h[1, 0] = bad
        with pytest.raises(NonFiniteError, match="the Newton system has a non-finite entry"):
            newton_module._spd_solve(h, torch.ones(3, 1, dtype=torch.float64))
    h = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)  # singular but finite: least squares
    x = newton_module._spd_solve(h, torch.ones(2, 1, dtype=torch.float64))
    torch.testing.assert_close(h @ x, torch.ones(2, 1, dtype=torch.float64))


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_non_finite_objective_at_the_start_is_a_value_error(solver, dtype):
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(20, 3, generator=gen, dtype=dtype)
    model = tl.LogisticRegression(3).to(dtype)
    with torch.no_grad():
        model.linear.weight.fill_(torch.finfo(dtype).max)
    with pytest.raises(NonFiniteError, match=rf"^{solver}: the objective became nan at iteration 0; "):
        fit_exact(model, X, torch.randint(0, 2, (20,), generator=gen), solver=solver)


# --- devices and dtypes ---------------------------------------------------------------------------


@pytest.mark.parametrize("solver", SOLVERS)
def test_float32_reaches_float64_answer(iris, solver):
    X, y = iris
    m32 = tl.SoftmaxRegression(4, 3)
    fit_exact(m32, X, y, solver=solver, l2=1e-2, tol=1e-4, max_iter=500)
    assert m32.linear.weight.dtype == torch.float32
    m64 = tl.SoftmaxRegression(4, 3).double()
    fit_exact(m64, X, y, solver=solver, l2=1e-2, tol=1e-10, max_iter=500)
    torch.testing.assert_close(m32.linear.weight.double(), m64.linear.weight, rtol=0, atol=2e-3)


@pytest.mark.parametrize("device", CUDA_ONLY)
@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("l1", [0.0, 0.01])
def test_solvers_on_cuda_match_cpu(iris, device, solver, l1):
    if solver == "lbfgs" and l1:
        pytest.skip("lbfgs has no L1")
    X, y = iris
    cpu = tl.SoftmaxRegression(4, 3).double()
    fit_exact(cpu, X, y, solver=solver, l2=1e-2, l1=l1, tol=1e-10, max_iter=500)
    dev = tl.SoftmaxRegression(4, 3).double().to(device)
    fit_exact(dev, torch.from_numpy(X).to(device), torch.from_numpy(y).to(device), solver=solver, l2=1e-2, l1=l1,
              tol=1e-10, max_iter=500)
    assert dev.linear.weight.device.type == device
    for a, b in zip(cpu.parameters(), dev.parameters()):
        torch.testing.assert_close(a, b.cpu(), rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("solver", SOLVERS)
def test_callback_stops_at_a_target_objective(cancer, solver):
    X, y = cancer
    full = fit_exact(tl.LogisticRegression(30).double(), X, y, solver=solver, l2=1e-3, tol=1e-10)
    target = full.losses[0] - 0.5 * (full.losses[0] - full.loss)
    seen = []

    def stop(n_iter, loss):
        seen.append((n_iter, loss))
        return loss <= target

    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        result = fit_exact(tl.LogisticRegression(30).double(), X, y, solver=solver, l2=1e-3, tol=1e-10, callback=stop)
    assert result.stop_reason == "callback" and not result.converged
    assert result.loss <= target < result.losses[-2]
    assert [n for n, _ in seen] == list(range(result.n_iter + 1))


def test_a_solve_has_its_own_history(iris):
    """An exact solve records what the loop records, one entry per iterate from the start: the
    objective, the loss without the penalty (below it once the weights move) and the optimality."""
    X, y = iris
    result = fit_exact(tl.SoftmaxRegression(4, 3).double(), X, y, solver="newton", l2=0.01)
    history = result.history
    assert history.epochs == list(range(result.n_iter + 1)) and history.n_epochs == result.n_iter
    assert history.train_objective == result.losses and history.grad_norm == result.grad_norms
    assert len(history.train_loss) == len(result.losses) and history.train_loss[0] == result.losses[0]
    assert all(loss < f for loss, f in zip(history.train_loss[1:], result.losses[1:]))
    assert history.stop_reason == "converged"


def test_one_dispatch_says_which_solver_runs():
    from torch_logreg.solvers.dispatch import resolve

    assert resolve("auto", 400) == "newton" and resolve("auto", 401) == "lbfgs"
    assert resolve("auto", 3000, l1=0.1) == "proximal" and resolve("lbfgs", 10) == "lbfgs"
    with pytest.raises(tl.UsageError, match=r"solver='lbfgs' cannot minimise an L1 penalty \(l1=0.1\); "
                                            r"solvers that can: \['auto', 'newton', 'proximal', 'cd'\]"):
        resolve("lbfgs", 10, l1=0.1)
    with pytest.raises(tl.UsageError, match="solver must be one of"):
        resolve("adam", 10)
