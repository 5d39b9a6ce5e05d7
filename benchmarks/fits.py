"""A user's fits, from just before the call to just after it, each method in a fresh interpreter
(every one-time cost included: numba's load where the step takes the kernels):

    python benchmarks/fits.py [--repeats 3] [--quick] [--only NAME]

Each interpreter makes the data, then runs :data:`FITS` fits one after another (a notebook) and
reports the seconds to the end of the first fit (what a script's first fit costs in a fresh
process) and to the end of the last (five fits in one process). Cases (:data:`CASES`): binary
1,000,000 x 100 and softmax 60,000 x 784 x 10 float32, E = 20 full batch, and binary mini-batches
B = 64 (200,000 x 100, E = 2). Methods: ``rule`` (the library's default step), ``torch`` (the torch
path forced: ``feature_major`` for the full batch, ``reference`` for mini-batches) and ``autograd``
(``nn.Linear`` + the loss + ``torch.optim.SGD`` over the same epochs and batches), round-robin.
``run.py``'s ``fits`` section runs these and prints the rows; run alone, this prints each case's
medians and the ratios against autograd.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

#: case -> (kind, rows, features, epochs, batch size; 0 = full batch)
CASES = {
    "binary": ("binary", 1_000_000, 100, 20, 0),
    "softmax": ("softmax", 60_000, 784, 20, 0),
    "binary B=64": ("binary", 200_000, 100, 2, 64),
}
#: the same cases, small: what ``run.py --quick`` runs (the binary case only)
QUICK = {"binary": ("binary", 20_000, 100, 20, 0)}
#: fits a process runs one after another
FITS = 5
METHODS = ("rule", "torch", "autograd")


def _child(spec: tuple, method: str) -> list[float]:
    """Seconds from just before the first fit to the end of each of the :data:`FITS` fits."""
    import torch

    import torch_logreg as tl

    kind, n, d, epochs, batch_size = spec
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(n, d, generator=gen)
    k = 10 if kind == "softmax" else 1
    y = (X[:, :k] + 0.3 * X[:, k:2 * k]).argmax(1) if k > 1 else (X[:, 0] > 0).long()
    ends = []
    start = time.perf_counter()
    for _ in range(FITS):
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
        ends.append(time.perf_counter() - start)
    return ends


def run_case(spec: tuple, methods=METHODS, repeats: int = 3) -> dict[str, tuple[list[float], list[float]]]:
    """``{method: (first-fit seconds, five-fit seconds)}``, one sample per fresh interpreter,
    ``repeats`` rounds with the methods in a rotating order."""
    samples: dict[str, tuple[list[float], list[float]]] = {m: ([], []) for m in methods}
    for r in range(repeats):
        shift = r % len(methods)
        for method in methods[shift:] + methods[:shift]:
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec), method],
                                 capture_output=True, text=True, check=True)
            ends = json.loads(out.stdout.strip().splitlines()[-1])
            samples[method][0].append(ends[0])
            samples[method][1].append(ends[-1])
    return samples


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print(json.dumps(_child(tuple(json.loads(sys.argv[2])), sys.argv[3])))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="the small cases of run.py --quick")
    parser.add_argument("--only", default="", help="cases whose name contains this")
    args = parser.parse_args()
    for case, spec in (QUICK if args.quick else CASES).items():
        if args.only not in case:
            continue
        samples = run_case(spec, repeats=args.repeats)
        for i, what in enumerate(("first fit", f"{FITS} fits")):
            med = {m: statistics.median(s[i]) for m, s in samples.items()}
            print(f"{case}, E={spec[3]}, {what}: "
                  + ", ".join(f"{m} {s:.2f} s ({med['autograd'] / s:.2f}x autograd)" for m, s in med.items()),
                  flush=True)


if __name__ == "__main__":
    main()
