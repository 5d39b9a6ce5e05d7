"""The ``torch-logreg`` command line."""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch


def _train(args: argparse.Namespace) -> int:
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    from . import LogisticRegression, fit

    X, y = load_breast_cancer(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.2, stratify=y, random_state=args.seed)
    mean, std = X_tr.mean(0), X_tr.std(0)
    std[std == 0] = 1.0
    X_tr, X_te = (X_tr - mean) / std, (X_te - mean) / std
    model = LogisticRegression(X.shape[1])
    history = fit(model, X_tr, y_tr, solver="nesterov", lr=0.1, epochs=args.epochs, l2=args.l2, seed=args.seed, device=args.device)
    X_te_t = torch.as_tensor(X_te, dtype=model.dtype, device=model.device)
    T_te = model.targets(y_te, len(y_te))
    test_loss = model.objective(X_te_t, T_te).item()
    acc = (model.predict(X_te_t).cpu().numpy() == y_te).mean()
    print(f"breast_cancer: {history.n_epochs} epochs ({history.stop_reason}), device {model.device}")
    print(f"test accuracy {acc:.4f}  test loss {test_loss:.4f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="torch-logreg", description="Logistic regression trained by a hand-written loop.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train on the breast-cancer data and print test metrics",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=int, default=500)
    p.add_argument("--l2", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    return _train(args)


if __name__ == "__main__":
    sys.exit(main())
