"""The GPU rows: the fused binary pass against a device-to-device copy, softmax against autograd,
and the loop's time per epoch at 10^7 x 100.

* ``binary``: N x 100 float32 (N = 10^7 by default, 4 GB): a copy of X into another buffer
  (reads and writes X once: the bandwidth floor, as the GPU reaches it), ``X.sum()`` (one read),
  the fused Triton pass (``steps/fused_triton.py``: loss and gradient in one read of X), the same
  step with autograd (``nn.Linear`` + ``BCEWithLogitsLoss`` + ``torch.optim.SGD``) and
  ``Trainer.run`` per epoch (the loop on the step its selector picks);
* ``softmax``: 60,000 x 784 x 10 float32 (an MNIST-sized problem): the loop's full-batch step
  against the autograd step, and ``Trainer.run`` per epoch.

``x floor`` divides by the time one read of X takes at the copy's rate (half the copy's time: a
copy moves X's bytes twice). ``GB/s`` is X's bytes over the time (the copy: twice X's bytes), so
it reads against the GPU's memory bandwidth; benchmarks/README.md states what each row should reach.

    python benchmarks/bench_gpu.py [--device cuda|cpu] [--rows N] [--repeats R] [--json out.json] [--markdown out.md]

``--device cpu`` with small ``--rows`` runs the same code here (the reference step stands in for the
Triton pass where there is no Triton), so the script is tested without a GPU.
"""

from __future__ import annotations

import argparse
import json

import torch

from common import (
    AutogradReference,
    Case,
    Timing,
    describe_machine,
    fit_cases,
    format_seconds,
    hand_model,
    hand_step,
    machine_info,
    make_binary,
    make_multiclass,
    max_weight_difference,
    measure_interleaved,
    resolve_bench_device,
)

LR = 0.5
D = 100
SOFTMAX = (60_000, 784, 10)


def fused_step(model, X, T, lr: float):
    """The fused Triton pass with the in-place update, as ``hand_step`` times a step; the reference step
    where Triton does not apply (no GPU, or no Triton)."""
    from torch_logreg.steps import fused_triton

    if not fused_triton.supports(model, X):
        step = hand_step(model, X, T, lr)
        step.path = "reference step (no Triton here)"
        return step
    kernel = fused_triton.TritonStep(model, X, T)
    params = dict(model.named_parameters())

    def step():
        _, grads = kernel.step(X, T)
        with torch.no_grad():
            for name, p in params.items():
                p.sub_(grads[name], alpha=lr)

    step.path = "fused Triton pass"
    return step


def row(section: str, case: str, t: Timing, nbytes: float, floor: float | None, vs: Timing | None = None,
        note: str = "") -> dict:
    return {"section": section, "case": case, "median_s": t.median, "repeats": t.repeats,
            "gb_per_s": nbytes / t.median / 1e9, "x_floor": None if floor is None else t.median / floor,
            "autograd_over_this": None if vs is None else vs.median / t.median, "note": note}


def binary(n: int, device, repeats: int, epochs: int) -> list[dict]:
    X, y = make_binary(n, D, device=device)
    nbytes = X.numel() * X.element_size()
    Y = torch.empty_like(X)
    model = hand_model(D, device=device)
    T = model.targets(y, n)
    ref = AutogradReference(D, lr=LR, device=device)
    t_ref = ref.targets(y)
    fused = fused_step(model, X, T, LR)
    fused()
    ref.step(X, t_ref)
    diff = max_weight_difference(model, ref)
    cases = {
        "copy": Case(lambda: Y.copy_(X)),
        "sum": Case(lambda: X.sum()),
        "fused": Case(fused),
        "auto": Case(lambda: ref.step(X, t_ref)),
        "run": fit_cases(D, 1, X, y, epochs=epochs, lr=LR, device=device)["run"],
    }
    t = measure_interleaved(cases, device=device, repeats=repeats, warmup=1)
    floor = t["copy"].median / 2
    section = f"binary {n:,} x {D}"
    return [
        row(section, "device-to-device copy of X (bandwidth floor)", t["copy"], 2 * nbytes, floor),
        row(section, "X.sum(): one read", t["sum"], nbytes, floor),
        row(section, f"{fused.path}: loss, gradient, update", t["fused"], nbytes, floor, vs=t["auto"],
            note=f"|w - w_autograd| = {diff:.0e} after one step"),
        row(section, "autograd step (nn.Linear + BCEWithLogits + SGD)", t["auto"], nbytes, floor),
        row(section, f"Trainer.run per epoch (E={epochs})", t["run"], nbytes, floor, vs=t["auto"]),
    ]


def softmax(n: int, d: int, k: int, device, repeats: int, epochs: int) -> list[dict]:
    X, y = make_multiclass(n, d, k, device=device)
    nbytes = X.numel() * X.element_size()
    Y = torch.empty_like(X)
    model = hand_model(d, k, device=device)
    T = model.targets(y, n)
    ref = AutogradReference(d, k, lr=LR, device=device)
    t_ref = ref.targets(y)
    fast = hand_step(model, X, T, LR, fast=True)
    fast()
    ref.step(X, t_ref)
    diff = max_weight_difference(model, ref)
    cases = {
        "copy": Case(lambda: Y.copy_(X)),
        "fast": Case(fast),
        "auto": Case(lambda: ref.step(X, t_ref)),
        "run": fit_cases(d, k, X, y, epochs=epochs, lr=LR, device=device)["run"],
    }
    t = measure_interleaved(cases, device=device, repeats=repeats, warmup=1)
    floor = t["copy"].median / 2
    section = f"softmax {n:,} x {d} x {k}"
    return [
        row(section, "device-to-device copy of X (bandwidth floor)", t["copy"], 2 * nbytes, floor),
        row(section, f"hand-written step, loop's full-batch path ({fast.path})", t["fast"], nbytes, floor,
            vs=t["auto"], note=f"|w - w_autograd| = {diff:.0e} after one step"),
        row(section, "autograd step (nn.Linear + CrossEntropy + SGD)", t["auto"], nbytes, floor),
        row(section, f"Trainer.run per epoch (E={epochs})", t["run"], nbytes, floor, vs=t["auto"]),
    ]


def render(rows: list[dict]) -> str:
    head = "| section | case | median (samples) | GB/s | x floor | autograd / this | note |"
    lines = [head, "|" + "---|" * 7]
    for r in rows:
        x_floor = "" if r["x_floor"] is None else f"{r['x_floor']:.2f}"
        ratio = "" if r["autograd_over_this"] is None else f"{r['autograd_over_this']:.2f}"
        lines.append(f"| {r['section']} | {r['case']} | {format_seconds(r['median_s'])} (n={r['repeats']}) | "
                     f"{r['gb_per_s']:.0f} | {x_floor} | {ratio} | {r['note']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    p.add_argument("--rows", type=int, default=10**7, help="N of the binary rows (default 10^7: 4 GB of float32)")
    p.add_argument("--softmax-rows", type=int, default=SOFTMAX[0], help="N of the softmax rows (default 60,000)")
    p.add_argument("--repeats", type=int, default=15, help="samples of each case (default 15)")
    p.add_argument("--epochs", type=int, default=5, help="epochs per Trainer.run sample (default 5)")
    p.add_argument("--json", metavar="PATH", help="also write the rows and the machine description as JSON")
    p.add_argument("--markdown", metavar="PATH", help="also write the table as markdown")
    args = p.parse_args(argv)
    device = resolve_bench_device(args.device)
    torch.manual_seed(0)
    info = machine_info(device)
    print(describe_machine(info), flush=True)
    rows = binary(args.rows, device, args.repeats, args.epochs)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    _, d, k = SOFTMAX
    rows += softmax(args.softmax_rows, d, k, device, args.repeats, args.epochs)
    table = render(rows)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")
    copy, _, fused, _, epoch, _, soft, _, _ = rows
    # the few figures scripts/gpu_check.py puts in its report's table, one line each
    print(f"FIGURE copy {copy['gb_per_s']:.0f} GB/s")
    print(f"FIGURE fused pass {format_seconds(fused['median_s'])} = {fused['gb_per_s']:.0f} GB/s, "
          f"x floor {fused['x_floor']:.2f}, autograd/fused {fused['autograd_over_this']:.2f}")
    print(f"FIGURE epoch at {args.rows:.0e} x {D} {format_seconds(epoch['median_s'])}")
    print(f"FIGURE softmax autograd/hand {soft['autograd_over_this']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
