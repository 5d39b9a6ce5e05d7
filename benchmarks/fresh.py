"""One fit in a fresh interpreter, timed from after the imports and the data: what a script pays.

    python benchmarks/fresh.py CASE METHOD      # prints one JSON line

``CASE`` is a key of :data:`CASES` or ``newton``; ``METHOD`` is ``hand`` (``torch_logreg.fit``
with the benchmarks' step, ``"rule"``, the default), ``kernel`` (the same fit with the step the selector takes
once numba is loaded, forced: what a fresh process paid before short runs kept to the torch path)
or ``autograd`` (``nn.Linear`` + loss + ``torch.optim.SGD`` + ``backward``, as in the other
sections). For ``newton`` (``fit_exact(solver="newton")``, float64, tol 1e-8, the defaults),
``kernel`` loads numba inside the timed fit (what its fused step cost a fresh process before), and
``autograd`` is scikit-learn's ``LogisticRegression(solver="lbfgs")`` at the same tol and penalty
(imported before the timing, as torch_logreg is). The fit runs twice: ``first`` includes every
one-time cost (the selector, layout copies, numba's load, torch's own first calls), ``second`` is
the same fit again in the now warm process. ``run.py``'s ``fresh`` section starts these and
prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from common import STEP, AutogradReference, hand_model, make_binary, make_multiclass

LR = 0.5
#: case -> (rows, features, outputs, epochs, the step the selector takes once numba is loaded)
CASES = {
    "tiny": (100, 10, 1, 200, "row_major"),
    "binary": (200_000, 100, 1, 5, "fused"),
    "softmax": (60_000, 784, 10, 5, "fused"),
}
#: the exact case: rows and features of ``fit_exact(solver="newton")`` (float64), and its l2
NEWTON = (100_000, 100, 1e-4)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("case", choices=[*CASES, "newton"])
    p.add_argument("method", choices=("hand", "kernel", "autograd"))
    args = p.parse_args(argv)
    if args.case == "newton":
        return newton(args.method)
    n, d, k, epochs, kernel_step = CASES[args.case]
    X, y = make_binary(n, d) if k == 1 else make_multiclass(n, d, k)
    import torch_logreg

    if args.method == "autograd":
        t = None

        def fit():
            nonlocal t
            ref = AutogradReference(d, k, lr=LR)
            t = ref.targets(y) if t is None else t
            for _ in range(epochs):
                ref.step(X, t)
    else:
        step = STEP if args.method == "hand" else kernel_step
        chosen = {}

        def fit():
            chosen["history"] = torch_logreg.fit(hand_model(d, k), X, y, solver="gd", lr=LR, epochs=epochs, tol=0.0,
                                                 patience=0, step=step)

    times = []
    for _ in range(2):
        start = time.perf_counter()
        fit()
        times.append(time.perf_counter() - start)
    report = {"case": args.case, "method": args.method, "epochs": epochs, "first": times[0], "second": times[1],
              "numba": "numba" in sys.modules}
    if args.method != "autograd":
        trainer = torch_logreg.Trainer(hand_model(d, k), X, y, solver="gd", lr=LR, epochs=epochs, tol=0.0,
                                       step=STEP if args.method == "hand" else kernel_step)
        report["step"] = trainer.stepper.selection.describe()
    print(json.dumps(report))
    return 0


def newton(method: str) -> int:
    n, d, l2 = NEWTON
    X, y = make_binary(n, d)
    X = X.double()
    if method == "autograd":
        from sklearn.linear_model import LogisticRegression

        Xn, yn = X.numpy(), y.numpy()

        def fit():
            LogisticRegression(C=1.0 / (l2 * n), solver="lbfgs", tol=1e-8, max_iter=10_000).fit(Xn, yn)
    else:
        from torch_logreg import LogisticRegression
        from torch_logreg.solvers import fit_exact
        from torch_logreg.steps import jit

        def fit():
            if method == "kernel":
                jit.load_now()
            fit_exact(LogisticRegression(d).double(), X, y, solver="newton", l2=l2, check_separation=False)

    times = []
    for _ in range(2):
        start = time.perf_counter()
        fit()
        times.append(time.perf_counter() - start)
    print(json.dumps({"case": "newton", "method": method, "first": times[0], "second": times[1],
                      "numba": "numba" in sys.modules}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
