"""Softmax (multinomial logistic) regression on scikit-learn's 8x8 digits, ten classes.

Shows `tl.SoftmaxRegression` trained by `tl.fit` (full-batch Nesterov, L2 as scikit-learn's C=1)
after `tl.check_gradients` has compared its manual gradient with the closed form, autograd and
finite differences; then the objective, held-out loss and accuracy next to those of the exact
optimum that `tl.fit_exact` (L-BFGS) finds.

    python examples/softmax.py
"""

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import torch_logreg as tl

torch.manual_seed(0)
torch.set_num_threads(1)  # a problem this small gains nothing from threads; one also fixes the order of sums
X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
scaler = StandardScaler().fit(X_train)  # fitted on the training split only; constant pixels stay 0
X_train, X_test = (torch.tensor(scaler.transform(a)) for a in (X_train, X_test))  # float64
y_train, y_test = torch.tensor(y_train), torch.tensor(y_test)
l2 = 1.0 / (1.0 * len(y_train))  # scikit-learn's C = 1 is l2 = 1 / (C * N)

model = tl.SoftmaxRegression(n_features=64, n_classes=10).double()
report = tl.check_gradients(model, X_train, y_train, l2=l2)
history = tl.fit(model, X_train, y_train, solver="nesterov", lr=0.5, epochs=3000, l2=l2, tol=1e-4, device="cpu", seed=0)

exact = tl.SoftmaxRegression(n_features=64, n_classes=10).double()
result = tl.fit_exact(exact, X_train, y_train, solver="lbfgs", l2=l2, tol=1e-10, max_iter=1000)


def accuracy(m):
    return (m.predict(X_test) == y_test).double().mean().item()


def test_loss(m):
    return m.loss_and_grad(X_test, y_test)[0].item()  # l2 = 0: the mean negative log-likelihood


print(f"gradient check: {'PASS' if report.passed else 'FAIL'} (max rel err {report.max_rel_error:.1e})")
print(f"epochs: {history.n_epochs} ({history.stop_reason})")
print(f"train objective: {history.train_objective[-1]:.6f} (exact optimum: {result.loss:.6f})")
print(f"test loss: {test_loss(model):.4f} (exact optimum: {test_loss(exact):.4f})")
print(f"test accuracy: {accuracy(model):.4f}")
print(f"test accuracy of the exact optimum: {accuracy(exact):.4f}")
