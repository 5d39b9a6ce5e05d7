"""Logistic regression on scikit-learn's breast-cancer data, trained by the hand-written loop.

Shows `tl.check_gradients` (the manual gradient against the closed form, autograd and finite
differences), `tl.fit` (Nesterov gradient descent, full batch, L2 as scikit-learn's C=1), the
held-out accuracy and loss, and how far the loop ended from the exact optimum that `tl.fit_exact`
(Newton) finds.

    python examples/binary.py
"""

import torch
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import torch_logreg as tl

torch.manual_seed(0)
torch.set_num_threads(1)  # a problem this small gains nothing from threads; one also fixes the order of sums
X, y = load_breast_cancer(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
scaler = StandardScaler().fit(X_train)  # fitted on the training split only
X_train, X_test = (torch.tensor(scaler.transform(a)) for a in (X_train, X_test))  # float64
y_train, y_test = torch.tensor(y_train), torch.tensor(y_test)
l2 = 1.0 / (1.0 * len(y_train))  # scikit-learn's C = 1 is l2 = 1 / (C * N)

model = tl.LogisticRegression(n_features=X.shape[1]).double()
report = tl.check_gradients(model, X_train, y_train, l2=l2)  # at the start, where the gradient is large
history = tl.fit(model, X_train, y_train, solver="nesterov", lr=0.5, epochs=5000, l2=l2, tol=1e-6,
                 device="cpu", seed=0)

exact = tl.LogisticRegression(n_features=X.shape[1]).double()
result = tl.fit_exact(exact, X_train, y_train, solver="newton", l2=l2, tol=1e-12)
distance = max((p - q).abs().max().item() for p, q in zip(model.parameters(), exact.parameters()))


def accuracy(m):
    return (m.predict(X_test) == y_test).double().mean().item()


print(f"gradient check: {'PASS' if report.passed else 'FAIL'} (max rel err {report.max_rel_error:.1e})")
print(f"epochs: {history.n_epochs} ({history.stop_reason})")
print(f"train objective: {history.train_objective[-1]:.6f} (exact optimum: {result.loss:.6f})")
print(f"test loss: {model.loss_and_grad(X_test, y_test)[0].item():.4f}")  # l2 = 0: mean negative log-likelihood
print(f"test accuracy: {accuracy(model):.4f}")
print(f"test accuracy of the exact optimum: {accuracy(exact):.4f}")
print(f"max |theta - theta_exact|: {distance:.1e}")
