"""The same layers stacked into an MLP: manual backward = autograd; XOR becomes separable."""

import pytest
import torch

import torch_logreg as tl
from torch_logreg.gradients import autograd_gradient
from torch_logreg.layers import ACTIVATIONS


def xor_data(n=400, seed=0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 2 - 1
    X = X + 0.1 * torch.sign(X)  # keep points off the axes, where the label flips
    y = ((X[:, 0] > 0) ^ (X[:, 1] > 0)).long()
    return X, y


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
@pytest.mark.parametrize("link,n_out", [("sigmoid", 1), ("softmax", 3), ("identity", 2)])
@pytest.mark.parametrize("l2", [0.0, 0.1])
def test_stacked_manual_backward_matches_autograd(activation, link, n_out, l2):
    torch.manual_seed(0)
    model = tl.StackedModel(
        {
            "fc1": tl.Linear(5, 8).double(),
            "act1": ACTIVATIONS[activation](),
            "fc2": tl.Linear(8, 6).double(),
            "act2": ACTIVATIONS[activation](),
            "out": tl.Linear(6, n_out).double(),
        },
        link=link,
        n_outputs=n_out,
    )
    X = torch.randn(30, 5, dtype=torch.float64)
    if link == "softmax":
        y = torch.randint(0, n_out, (30,))
    elif link == "sigmoid":
        y = torch.randint(0, 2, (30,))
    else:
        y = torch.randn(30, n_out, dtype=torch.float64)
    T = model.targets(y, 30)
    _, manual = model.objective_and_grad(X, T, l2)
    reference = autograd_gradient(model, X, T, l2)
    assert set(manual) == set(reference) == {n for n, _ in model.named_parameters()}
    for name in manual:
        scale = reference[name].abs().max().item()
        assert (manual[name] - reference[name]).abs().max().item() <= 1e-10 * max(scale, 1e-300), name


def test_mlp_learns_xor_where_logistic_regression_cannot():
    X, y = xor_data()
    logistic = tl.LogisticRegression(2).double()
    tl.fit(logistic, X, y, solver="nesterov", lr=0.5, epochs=2000, device="cpu")
    acc_logistic = (logistic.predict(X) == y).double().mean().item()

    torch.manual_seed(0)
    mlp = tl.MLP(2, [8], n_outputs=1, activation="tanh").double()
    tl.fit(mlp, X, y, solver="nesterov", lr=0.5, epochs=2000, device="cpu", grad_check_every=500)
    acc_mlp = (mlp.predict(X) == y).double().mean().item()
    assert acc_logistic <= 0.75
    assert acc_mlp == 1.0
