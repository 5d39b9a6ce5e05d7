"""One full-batch epoch (= one step) of the hand-written loop against autograd + torch.optim.

For each problem (N x D float32 binary logistic regression) this measures, in one process:

* the bandwidth floor: ``X.sum()``, one read of the features;
* the bare hand-written step: ``model.objective_and_grad`` + in-place update (the reference
  path), and the same step on the fast path the full-batch loop picks (the fused single pass,
  or the feature-major layout; the row's label says which);
* the same step done the usual way: ``nn.Linear`` + ``BCEWithLogitsLoss`` + ``torch.optim.SGD``
  + ``loss.backward()``;
* the per-epoch cost of the full loop: ``fit(epochs=E) / E`` and ``Trainer.run() / E``
  (tol=0 and patience=0, so exactly E epochs run);

and prints medians (with sample counts), the ratio autograd / hand-written and every time as a
multiple of the bandwidth floor.

    python benchmarks/bench_core.py [--device cpu|cuda] [--quick]
"""

from __future__ import annotations

import argparse

import torch

from common import (
    AutogradReference,
    Case,
    auto_inner,
    describe_machine,
    fit_cases,
    hand_model,
    hand_step,
    machine_info,
    make_binary,
    max_weight_difference,
    measure_interleaved,
    resolve_bench_device,
)

LR = 0.5


def bench_problem(n: int, d: int, device: torch.device, quick: bool) -> list[tuple[str, object, float | None]]:
    dtype = torch.float32
    X, y = make_binary(n, d, device=device, dtype=dtype)
    big = n * d >= 10**7
    repeats = (5 if quick else 15) if big else (50 if quick else 200)
    epochs = (2 if quick else 5) if big else (20 if quick else 200)
    fit_repeats = (3 if quick else 7) if big else (5 if quick else 15)

    # agreement: one step of each from zero gives the same weights
    model = hand_model(d, device=device, dtype=dtype)
    T = model.targets(y, n)
    ref = AutogradReference(d, lr=LR, device=device, dtype=dtype)
    t_ref = ref.targets(y)
    hand_step(model, X, T, LR)()
    ref.step(X, t_ref)
    diff = max_weight_difference(model, ref)

    step = hand_step(model, X, T, LR)
    fast = hand_step(model, X, T, LR, fast=True)
    auto = lambda: ref.step(X, t_ref)  # noqa: E731
    cases = {
        "floor": Case(lambda: X.sum()),
        "hand": Case(step, inner=1 if big else auto_inner(step, device)),
        "fast": Case(fast, inner=1 if big else auto_inner(fast, device)),
        "auto": Case(auto, inner=1 if big else auto_inner(auto, device)),
    }
    t = measure_interleaved(cases, device=device, repeats=repeats, warmup=3)
    floor, t_hand, t_fast, t_auto = t["floor"], t["hand"], t["fast"], t["auto"]
    f = measure_interleaved(fit_cases(d, 1, X, y, epochs=epochs, lr=LR, device=device, dtype=dtype),
                            device=device, repeats=fit_repeats)
    t_fit, t_run = f["fit"], f["run"]

    rows = [
        ("bandwidth floor: X.sum()", floor, None),
        ("hand-written step, reference path", t_hand, t_auto.median / t_hand.median),
        (f"hand-written step, loop's fast path ({fast.path})", t_fast, t_auto.median / t_fast.median),
        ("autograd step (nn.Linear + BCEWithLogits + SGD)", t_auto, None),
        (f"Trainer.run per epoch (E={epochs})", t_run, t_auto.median / t_run.median),
        (f"fit per epoch, incl. setup (E={epochs})", t_fit, t_auto.median / t_fit.median),
    ]
    print(f"\nN = {n:,} x D = {d}, float32, {device}  (max |w_hand - w_autograd| after one step: {diff:.1e})")
    print(f"  {'what':<58} {'median':>22} {'x floor':>8} {'autograd/this':>14}")
    for name, t, ratio in rows:
        r = "" if ratio is None else f"{ratio:.2f}"
        print(f"  {name:<58} {t.label():>22} {t.median / floor.median:>8.2f} {r:>14}")
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--quick", action="store_true", help="fewer repeats and epochs")
    args = p.parse_args(argv)
    device = resolve_bench_device(args.device)
    print(describe_machine(machine_info(device)))
    from torch_logreg.steps import jit

    # loaded up front: the figures are per step once numba's one-time load is paid (run.py's
    # fresh section measures a script's first fit, the load included)
    print(f"numba loaded in {jit.load_now() * 1e3:.0f} ms")
    print("times are medians over n samples (n=AxB: A samples of B calls each); "
          "'x floor' = time / time of X.sum(); 'autograd/this' > 1 means this is faster than autograd")
    for n, d in ((1_000_000, 100), (100, 10)):
        bench_problem(n, d, device, args.quick)


if __name__ == "__main__":
    main()
