"""L1 in the hand-written loop: a proximal step (soft-thresholding the weights by ``lr * l1``)
after each gd update. Full-batch gd is then ISTA, whose fixed points are
exactly the optimum of ``smooth + l1 ||W||_1``: checked by the optimality conditions and against
proximal Newton's exact fit."""

import pytest
import torch

import torch_logreg as tl
from torch_logreg.app.cli import main
from torch_logreg.errors import UsageError

from helpers import l1_optimality, make_model, make_targets


def problem(kind: str = "binary", n: int = 200, d: int = 8, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    return X, make_targets(kind, n, gen)


@pytest.mark.parametrize("kind", ["binary", "multilabel", "softmax", "regression"])
@pytest.mark.parametrize("l2", [0.0, 0.01])
def test_full_batch_reaches_the_exact_l1_optimum(kind, l2):
    X, y = problem(kind)
    l1 = 0.02
    model = make_model(kind, X.shape[1]).double()
    history = tl.fit(model, X, y, lr=0.5, l1=l1, l2=l2, epochs=20_000, tol=1e-10, device="cpu")
    assert history.stop_reason == "converged"
    check = l1_optimality(model, X, y, l1, l2)
    assert check["violation"] <= 1e-9 and check["margin"] > 1e-3  # the zeros are zeros by a clear margin
    exact = make_model(kind, X.shape[1]).double()
    tl.fit_exact(exact, X, y, solver="newton", l1=l1, l2=l2, tol=1e-12)
    assert torch.equal(model.linear.weight == 0, exact.linear.weight == 0)  # the same support, exactly
    assert (model.linear.weight - exact.linear.weight).abs().max() <= 1e-8


def test_the_objective_includes_the_l1_term():
    X, y = problem()
    model = tl.LogisticRegression(8).double()
    with torch.no_grad():
        model.linear.weight.copy_(torch.linspace(-1, 1, 8))
    W0 = model.linear.weight.detach().clone()
    smooth = model.objective_and_grad(X, model.targets(y, 200), 0.1)[0].item()
    history = tl.fit(model, X, y, l1=0.05, l2=0.1, lr=0.1, epochs=1, tol=0, device="cpu")
    expected = smooth + 0.05 * W0.abs().sum().item()  # at the weights the step used
    assert abs(history.train_objective[0] - expected) <= 1e-12 * expected
    nll = expected - 0.05 * W0.abs().sum().item() - 0.05 * (W0 ** 2).sum().item()
    assert abs(history.train_loss[0] - nll) <= 1e-12


def test_mini_batches_come_near_the_optimum():
    X, y = problem(d=20)
    model = tl.LogisticRegression(20).double()
    tl.fit(model, X, y, l1=0.02, lr=0.05, batch_size=20, epochs=60, tol=0, device="cpu")
    exact = tl.LogisticRegression(20).double()
    tl.fit_exact(exact, X, y, l1=0.02, tol=1e-12)

    def objective(m):
        return m.objective(X, m.targets(y, 200)).item() + 0.02 * m.linear.weight.abs().sum().item()

    # stochastic gradients keep the thresholded weights near zero rather than at it: only the
    # objective is compared, and the exact fit's zeros are small
    assert objective(exact) <= objective(model) <= objective(exact) * 1.01
    assert model.linear.weight[exact.linear.weight == 0].abs().max() <= 0.02


@pytest.mark.parametrize("kwargs,message", [
    (dict(solver="adam"), "l1 > 0 in the loop takes a proximal step"),
    (dict(solver="momentum"), "l1 > 0 in the loop takes a proximal step"),
    (dict(solver="gd", cuda_graph=True), "does not combine with cuda_graph"),
    (dict(solver="gd", l1=-1.0), "l1"),
])
def test_what_l1_does_not_combine_with_is_refused(kwargs, message):
    X, y = problem()
    kwargs = {"l1": 0.1, **kwargs}
    with pytest.raises(UsageError, match=message):
        tl.Trainer(tl.LogisticRegression(8), X, y, device="cpu", **kwargs)


def test_the_command_line_takes_l1_with_gd(tmp_path, capsys):
    def args(run, solver):
        return ["train", "--quiet", "--run-dir", str(tmp_path / run), "--set", f"train.solver={solver}", "--set",
                "train.l1=0.01", "--set", "train.device=cpu", "--set", "train.epochs=50"]

    assert main(args("run", "gd")) == 0, capsys.readouterr().err
    payload = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert (payload["model"]["linear.weight"] == 0).any()
    capsys.readouterr()
    assert main(args("r2", "adam")) == 2
    assert "needs train.solver in" in capsys.readouterr().err
