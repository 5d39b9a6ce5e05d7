"""Builders shared by the tests: random models and data of each kind, and the command line run
in-process."""

import pytest
import torch

import torch_logreg as tl
from torch_logreg.steps import select

#: the library's shortest run for the kernels, read when the tests are collected (the suite then
#: sets it to 0: conftest.py)
LIBRARY_MIN_RUN_SECONDS = select.MIN_RUN_SECONDS

KINDS = ("binary", "multilabel", "softmax", "regression")


def make_model(kind: str, n_features: int, bias: bool = True, n_outputs: int = 3):
    if kind == "binary":
        return tl.LogisticRegression(n_features, bias=bias)
    if kind == "multilabel":
        return tl.LogisticRegression(n_features, n_outputs=n_outputs, bias=bias)
    if kind == "softmax":
        return tl.SoftmaxRegression(n_features, n_outputs, bias=bias)
    return tl.LinearRegression(n_features, bias=bias)


def make_targets(kind: str, n: int, gen: torch.Generator, n_outputs: int = 3):
    if kind == "binary":
        return torch.randint(0, 2, (n,), generator=gen)
    if kind == "multilabel":
        return torch.randint(0, 2, (n, n_outputs), generator=gen)
    if kind == "softmax":
        return torch.randint(0, n_outputs, (n,), generator=gen)
    return torch.randn(n, generator=gen, dtype=torch.float64)


def randomize(model, gen: torch.Generator, scale: float = 1.0) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)


def scale_to_logits(model, X: torch.Tensor, target: float) -> None:
    """Rescale the parameters so the largest |logit| equals ``target``."""
    with torch.no_grad():
        z = model.logits(X)
        factor = target / z.abs().max()
        for p in model.parameters():
            p.mul_(factor)


def overfitting_data(seed: int = 5):
    """60 noisy rows of 40 features from a logistic model, and 500 held-out rows: a fit overfits,
    so the held-out loss turns up (early stopping fires). Returns ``X, y, X_val, y_val``."""
    gen = torch.Generator().manual_seed(seed)
    w_true = torch.randn(40, generator=gen, dtype=torch.float64)
    X = torch.randn(60, 40, generator=gen, dtype=torch.float64)
    y = (torch.rand(60, generator=gen, dtype=torch.float64) < torch.sigmoid(X @ w_true * 0.3)).long()
    Xv = torch.randn(500, 40, generator=gen, dtype=torch.float64)
    yv = (torch.rand(500, generator=gen, dtype=torch.float64) < torch.sigmoid(Xv @ w_true * 0.3)).long()
    return X, y, Xv, yv


def flat_parameters(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).cpu()


def train_variants(kind: str, variants, *, n: int = 300, d: int = 6, seed: int = 0, then=None, **common):
    """Train the same float64 model on the same data once per keyword set in ``variants``
    (each added to ``common``); ``then(trainer)``, if given, runs after the first ``run`` and
    before a second one. Returns ``(trainer, final parameters, history)`` per variant."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = make_targets(kind, n, gen)
    out = []
    for kwargs in variants:
        model = make_model(kind, d).double()
        trainer = tl.Trainer(model, X, y, **common, **kwargs)
        history = trainer.run()
        if then is not None:
            then(trainer)
            history = trainer.run()
        out.append((trainer, flat_parameters(model), history))
    return out


def assert_same_fit(a, b, loss_rel: float = 1e-12) -> None:
    """Two results of :func:`train_variants` reach the same weights and losses."""
    (_, w_a, h_a), (_, w_b, h_b) = a, b
    assert ((w_a - w_b).abs().max() / w_b.abs().max()).item() <= 1e-12
    assert h_a.train_loss == pytest.approx(h_b.train_loss, rel=loss_rel)


# --- optimality: how tests tell an exact reference from an inexact one ------------------------


def model_at(model, coef, intercept):
    """``model`` (float64) with its Linear set to ``coef (K, D)`` and ``intercept (K,)``,
    e.g. a reference library's solution, so the project's own objective can be read there."""
    model = model.double()
    with torch.no_grad():
        model.linear.weight.copy_(torch.as_tensor(coef, dtype=torch.float64).reshape(model.linear.weight.shape))
        if model.linear.bias is not None:
            model.linear.bias.copy_(torch.as_tensor(intercept, dtype=torch.float64).reshape(model.linear.bias.shape))
    return model


def smooth_gradient(model, X, y, l2: float = 0.0, sample_weight=None) -> dict:
    """The gradient of the smooth part of the objective, ``(1/N) sum_n w_n loss_n + l2/2 ||W||^2``,
    in float64 at the model's current parameters."""
    X = torch.as_tensor(X, dtype=torch.float64)
    w = None if sample_weight is None else torch.as_tensor(sample_weight, dtype=torch.float64)
    _, grads = model.objective_and_grad(X, model.targets(torch.as_tensor(y), X.shape[0]), l2, w)
    return grads


def max_gradient(model, X, y, l2: float = 0.0, sample_weight=None) -> float:
    """Largest |entry| of the objective's gradient: 0 at the exact optimum. A reference solution is
    only a reference if this is at rounding level there."""
    return max(g.abs().max().item() for g in smooth_gradient(model, X, y, l2, sample_weight).values())


def l1_optimality(model, X, y, l1: float, l2: float = 0.0, sample_weight=None) -> dict:
    """The optimality (KKT) conditions of ``smooth + l1 ||W||_1`` at the model's parameters:

    - ``violation``: the largest distance of ``-grad`` from the subdifferential of ``l1 |W|``
      (``|g_j + l1 sign W_j|`` where ``W_j != 0``; ``max(|g_j| - l1, 0)`` where ``W_j == 0``;
      ``|g|`` for the unpenalised intercept): 0 at the optimum.
    - ``margin``: how strictly the zeros are zero, ``min over W_j == 0 of (l1 - |g_j|) / l1``. With a
      margin well above the violations, every solver close to the optimum has the same support.
    """
    grads = smooth_gradient(model, X, y, l2, sample_weight)
    W = model.linear.weight.detach()
    g = grads["linear.weight"]
    zero = W == 0
    parts = [(g + l1 * torch.sign(W))[~zero].abs(), (g[zero].abs() - l1).clamp(min=0)]
    if "linear.bias" in grads:
        parts.append(grads["linear.bias"].abs())
    violation = torch.cat([p.reshape(-1) for p in parts]).max().item()
    margin = ((l1 - g[zero].abs()) / l1).min().item() if zero.any() else 1.0
    return {"violation": violation, "margin": margin, "support": ~zero}


def sparse_truth_problem(kind: str, n: int = 200, d: int = 8, seed: int = 0, zero_fraction: float = 0.0):
    """Float64 data from a sparse true model (its first ``d // 2`` columns matter), for the L1
    solvers: ``X (n, d)`` (with about ``zero_fraction`` of its entries zero), the targets of
    ``kind`` (binary, multilabel, softmax or identity) and sample weights."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    if zero_fraction:
        X = X * (torch.rand(n, d, generator=gen, dtype=torch.float64) < 1 - zero_fraction)
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


def l1_model(kind: str, d: int, bias: bool = True):
    """A float64 model of ``kind`` (``identity``: linear regression) with 3 outputs where it has several."""
    return make_model("regression" if kind == "identity" else kind, d, bias).double()


def l1_objective(model, X, y, l1: float, l2: float, sample_weight=None) -> float:
    """``(1/N) sum w_n loss_n + (l2/2)||W||^2 + l1 ||W||_1`` at the model's parameters, in float64: the
    one function both sides of a comparison are read with."""
    import scipy.sparse as sp

    X = torch.as_tensor(X.toarray() if sp.issparse(X) else X, dtype=torch.float64)
    T = model.targets(torch.as_tensor(y), X.shape[0])
    w = None if sample_weight is None else torch.as_tensor(sample_weight, dtype=torch.float64)
    smooth = model.objective(X, T, l2, w)
    return (smooth + l1 * model.linear.weight.detach().abs().sum()).item()


def theta_of(model) -> torch.Tensor:
    """``[b, W]`` of a single-Linear model (``W`` without a bias)."""
    b = model.linear.bias
    W = model.linear.weight.detach()
    return W if b is None else torch.cat([b.detach()[:, None], W], dim=1)


def assert_l1_optimum(model, result, solver: str, X, y, l1: float, l2: float, sample_weight, reference):
    """An L1 fit by ``solver`` (``result``) is optimal: the KKT conditions at 1e-8, with some weights
    exactly 0 and every zero clearly one; and proximal Newton from ``reference`` (a fresh model of the
    same kind) reaches its objective (1e-10 relative), support and weights."""
    from torch_logreg.solvers import fit_exact

    assert result.converged and result.solver == solver and result.grad_norm <= 1e-10
    kkt = l1_optimality(model, X, y, l1, l2, sample_weight=sample_weight)
    assert kkt["violation"] <= 1e-8
    assert 0 < kkt["support"].sum() < kkt["support"].numel()  # the penalty sets some weights to exactly 0
    assert kkt["margin"] > 1e-3  # every zero is clearly a zero, so the support is determined
    fit_exact(reference, X, y, solver="newton", l1=l1, l2=l2, sample_weight=sample_weight, tol=1e-12, max_iter=100)
    ours = l1_objective(model, X, y, l1, l2, sample_weight)
    assert ours == pytest.approx(l1_objective(reference, X, y, l1, l2, sample_weight), rel=1e-10)
    torch.testing.assert_close(model.linear.weight != 0, reference.linear.weight != 0)
    torch.testing.assert_close(theta_of(model), theta_of(reference), rtol=0, atol=1e-6)
    assert result.losses[-1] == pytest.approx(ours, rel=1e-12)
    assert len(result.losses) == len(result.grad_norms) == result.n_iter + 1


def run_cli(capsys, *args):
    """``torch-logreg ARGS`` in this process: (exit status, stdout, stderr)."""
    from torch_logreg.app.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def sample_then_predict(capsys, run_dir, folder, rows: int) -> str:
    """``sample`` ``rows`` rows of a run's test split into ``folder/s.csv``, then ``predict`` on them
    into ``folder/sp.csv``, both succeeding; returns the sample's header line."""
    code, _, err = run_cli(capsys, "sample", "--run", run_dir, "--output", folder / "s.csv", "--rows", rows)
    assert code == 0, err
    code, _, err = run_cli(capsys, "predict", "--run", run_dir, "--input", folder / "s.csv", "--output",
                           folder / "sp.csv")
    assert code == 0, err
    return (folder / "s.csv").read_text().splitlines()[0]


def expect_error(capsys, message, *args):
    """``torch-logreg ARGS`` fails as a user's mistake should: exit status 2, no traceback, one
    line ``torch-logreg: error: ...`` that contains ``message``; returns that line."""
    code, out, err = run_cli(capsys, *args)
    assert code == 2, (out, err)
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("torch-logreg: error: "), err
    assert message in lines[0], lines[0]
    return lines[0]


def rounding_bounds(model, X: torch.Tensor, T: torch.Tensor) -> tuple[float, dict[str, float]]:
    """How far two evaluations in X's dtype of the objective and gradient may differ when they sum in
    different orders: a rounding error of eps per term of each sum, worst case, times 4. A logit
    sums D + 1 terms of scale ``A = |X| |W|^T + |b|``; the residual ``R`` moves by at most twice a
    logit's error (softmax); a gradient entry sums N terms of scale ``(|R| + 2A)^T |X| / N``; the
    loss, N terms of its own size plus the logits' errors."""
    eps = torch.finfo(X.dtype).eps
    (prefix, layer), = model.named_children()
    n, d = X.shape
    X64, T64, W64 = X.double(), T.double(), layer.weight.detach().double()
    b64 = None if layer.bias is None else layer.bias.detach().double()
    A = X64.abs() @ W64.abs().T + (0 if b64 is None else b64.abs())
    z = X64 @ W64.T + (0 if b64 is None else b64)
    R = {"sigmoid": torch.sigmoid(z), "softmax": torch.softmax(z, dim=1), "identity": z}[model.link] - T64
    loss = {"sigmoid": torch.nn.functional.softplus(z) - T64 * z, "softmax": -T64 * torch.log_softmax(z, dim=1),
            "identity": 0.5 * R**2}[model.link]
    sums = 4 * eps * (n + d + 2)
    scale = R.abs() + 2 * A
    bounds = {f"{prefix}.weight": sums * ((scale.T @ X64.abs()) / n).max().item()}
    if b64 is not None:
        bounds[f"{prefix}.bias"] = sums * (scale.sum(0) / n).max().item()
    return sums * (loss.abs().sum(1).mean().item() + 2 * A.sum(1).mean().item()), bounds


def assert_step_equals_reference(step, model, X, T, l2: float) -> None:
    """``step.step(X, T, l2)`` equals ``model.objective_and_grad(X, T, l2)`` within
    :func:`rounding_bounds` (another summation order, any dtype; never bit for bit)."""
    loss_ref, grads_ref = model.objective_and_grad(X, T, l2)
    grads_ref = {k: g.clone() for k, g in grads_ref.items()}
    loss, grads = step.step(X, T, l2)
    assert grads.keys() == grads_ref.keys()
    assert loss.dtype == X.dtype and all(g.dtype == X.dtype and g.shape == grads_ref[k].shape for k, g in grads.items())
    loss_bound, bounds = rounding_bounds(model, X, T)
    assert abs(loss.item() - loss_ref.item()) <= loss_bound
    (_, layer), = model.named_children()
    for name, g in grads_ref.items():
        # the l2 term adds l2 * W, rounded once more in each
        bound = bounds[name] + 4 * torch.finfo(X.dtype).eps * l2 * layer.weight.abs().max().item()
        assert (grads[name] - g).abs().max().item() <= bound, name


def step_problem(kind: str, n: int, d: int, *, bias: bool = True, dtype=torch.float64, seed: int = 0,
                 outputs: int = 3):
    """A single-``Linear`` model of ``kind`` (``outputs`` outputs for several) with random parameters
    (scale 0.5), ``X (n, d)`` normal and its targets, all in ``dtype``: the problems the full-batch
    steps are pinned on."""
    gen = torch.Generator().manual_seed(seed)
    model = make_model(kind, d, bias=bias, n_outputs=outputs).double()
    randomize(model, gen, 0.5)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    T = model.targets(make_targets(kind, n, gen, n_outputs=outputs), n)
    return model.to(dtype), X.to(dtype), T.to(dtype)


def assert_reuses_buffers_and_follows_updates(step, model, X, T, seed: int = 4, same_buffers: bool = True) -> None:
    """The step returns the same gradient buffers each call (where ``same_buffers``), and after each
    in-place change of the parameters equals the reference step again
    (:func:`assert_step_equals_reference`)."""
    gen = torch.Generator().manual_seed(seed)
    _, first = step.step(X, T, 0.1)
    ids = {k: g.data_ptr() for k, g in first.items()}
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
        assert ({k: g.data_ptr() for k, g in step.step(X, T, 0.1)[1].items()} == ids) or not same_buffers
        assert_step_equals_reference(step, model, X, T, 0.1)


#: solver -> (torch.optim class, its keyword arguments besides lr): every hyper-parameter default
REFERENCES = {
    "gd": (torch.optim.SGD, {}),
    "momentum": (torch.optim.SGD, {"momentum": 0.9}),
    "nesterov": (torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
    "adagrad": (torch.optim.Adagrad, {}),
    "rmsprop": (torch.optim.RMSprop, {}),
    "adam": (torch.optim.Adam, {}),
    "adamw": (torch.optim.AdamW, {}),
}
