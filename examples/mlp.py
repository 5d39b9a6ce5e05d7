"""An MLP on XOR-like data, which no straight line separates, next to logistic regression.

Shows `tl.MLP` (2 -> 8 tanh -> 1 sigmoid) trained by the same `tl.fit` loop as the linear models,
with the loop itself re-checking the manual backward against autograd and finite differences every
500 steps (`grad_check_every`); logistic regression on the same data stays near chance.

    python examples/mlp.py
"""

import torch

import torch_logreg as tl

torch.manual_seed(0)
torch.set_num_threads(1)  # a problem this small gains nothing from threads; one also fixes the order of sums


def xor_data(n, generator):
    """Uniform on [-1, 1]^2, pushed 0.1 off the axes; label 1 where the two coordinates differ in sign."""
    X = torch.rand(n, 2, generator=generator, dtype=torch.float64) * 2 - 1
    X = X + 0.1 * torch.sign(X)
    return X, ((X[:, 0] > 0) ^ (X[:, 1] > 0)).long()


generator = torch.Generator().manual_seed(0)
X_train, y_train = xor_data(400, generator)
X_test, y_test = xor_data(400, generator)


def accuracy(m):
    return (m.predict(X_test) == y_test).double().mean().item()


def test_loss(m):
    return m.loss_and_grad(X_test, y_test)[0].item()  # the mean negative log-likelihood


linear = tl.LogisticRegression(n_features=2).double()
tl.fit(linear, X_train, y_train, solver="nesterov", lr=0.5, epochs=2000, tol=1e-8, device="cpu", seed=0)

mlp = tl.MLP(n_features=2, hidden=[8], activation="tanh").double()  # weights drawn from the seed above
history = tl.fit(mlp, X_train, y_train, solver="nesterov", lr=0.5, epochs=2000, grad_check_every=500, device="cpu", seed=0)

print(f"logistic regression: test accuracy {accuracy(linear):.4f}, test loss {test_loss(linear):.4f}")
print(f"MLP: train loss {history.train_loss[-1]:.4f}, {len(history.grad_checks)} gradient checks, "
      f"max rel err {history.grad_check_max_rel_error:.1e}")
print(f"MLP: test accuracy {accuracy(mlp):.4f}, test loss {test_loss(mlp):.4f}")
