"""A user's fits from just before the first call to just after the last, each method in a fresh
interpreter (every one-time cost included: numba's load where the step takes the kernels):

    python benchmarks/fits.py [--repeats 3]

Cases: binary 200,000 x 100 float32 and softmax 60,000 x 784 x 10 float32, E = 20 full batch, one
fit and five fits in a row (a notebook); binary mini-batches B = 64, 2 epochs. Methods: ``rule``
(the library's default step), ``torch`` (the torch path forced: ``feature_major`` for the full
batch, ``reference`` for mini-batches) and ``autograd`` (``nn.Linear`` + the loss + ``torch.optim.SGD``
over the same epochs and batches). Prints each case's seconds (median of ``--repeats`` processes,
round-robin) and the ratios against autograd.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CASES = {
    "binary 200k x 100, E=20, 1 fit": ("binary", 200_000, 100, 20, 0, 1),
    "binary 200k x 100, E=20, 5 fits": ("binary", 200_000, 100, 20, 0, 5),
    "softmax 60k x 784 x 10, E=20, 1 fit": ("softmax", 60_000, 784, 20, 0, 1),
    "binary 200k x 100, B=64, E=2, 1 fit": ("binary", 200_000, 100, 2, 64, 1),
}
METHODS = ("rule", "torch", "autograd")


def _child(case: str, method: str) -> float:
    import torch

    import torch_logreg as tl

    kind, n, d, epochs, batch_size, fits = CASES[case]
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(n, d, generator=gen)
    k = 10 if kind == "softmax" else 1
    y = (X[:, :k] + 0.3 * X[:, k:2 * k]).argmax(1) if k > 1 else (X[:, 0] > 0).long()
    start = time.perf_counter()
    for _ in range(fits):
        if method == "autograd":
            layer = torch.nn.Linear(d, k)
            opt = torch.optim.SGD(layer.parameters(), lr=0.5)
            target = y if k > 1 else y.float()
            loss_fn = torch.nn.CrossEntropyLoss() if k > 1 else torch.nn.BCEWithLogitsLoss()
            for _ in range(epochs):
                order = torch.randperm(n) if batch_size else None
                for s in range(0, n, batch_size or n):
                    rows = order[s:s + batch_size] if order is not None else slice(None)
                    opt.zero_grad()
                    out = layer(X[rows])
                    loss_fn(out if k > 1 else out[:, 0], target[rows]).backward()
                    opt.step()
        else:
            model = tl.SoftmaxRegression(d, k) if k > 1 else tl.LogisticRegression(d)
            step = "rule" if method == "rule" else ("reference" if batch_size else "feature_major")
            tl.Trainer(model, X, y, epochs=epochs, batch_size=batch_size, lr=0.5, tol=0.0, step=step).run()
    return time.perf_counter() - start


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print(json.dumps(_child(sys.argv[2], sys.argv[3])))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="", help="cases whose name contains this")
    args = parser.parse_args()
    for case in CASES:
        if args.only not in case:
            continue
        times: dict[str, list[float]] = {m: [] for m in METHODS}
        for _ in range(args.repeats):
            for method in METHODS:
                out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", case, method],
                                     capture_output=True, text=True, check=True)
                times[method].append(json.loads(out.stdout.strip().splitlines()[-1]))
        med = {m: statistics.median(t) for m, t in times.items()}
        print(f"{case}: " + ", ".join(f"{m} {s:.2f} s ({med['autograd'] / s:.2f}x autograd)" for m, s in med.items()),
              flush=True)


if __name__ == "__main__":
    main()
