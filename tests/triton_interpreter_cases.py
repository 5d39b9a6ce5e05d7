"""The Triton kernel against the reference step, run by Triton's interpreter on CPU tensors.

Run as a script (``tests/test_fused_triton.py`` does, in a subprocess, because the interpreter
is chosen by ``TRITON_INTERPRET=1`` before Triton is imported). Exits non-zero, naming the
case, on the first disagreement.
"""

import itertools
import os
import sys

os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402

from torch_logreg.steps import fused_triton  # noqa: E402
from torch_logreg.steps.fused_triton import TritonStep  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from helpers import make_model, make_targets, randomize, scale_to_logits  # noqa: E402


def case(kind, bias, n, d, dtype, seed, logit_scale=None):
    gen = torch.Generator().manual_seed(seed)
    model = make_model(kind, d, bias=bias).double()
    randomize(model, gen)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    if logit_scale is not None:
        scale_to_logits(model, X, logit_scale)
    T = model.targets(make_targets(kind, n, gen), n)
    return model.to(dtype), X.to(dtype), T.to(dtype)


def max_rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-300)).item()


def check(name, ok, detail):
    if not ok:
        sys.exit(f"FAILED {name}: {detail}")


def main():
    assert fused_triton.interpreted()
    seed = 0
    # float64: equal to the reference step to 1e-12; row counts around the 64-row tile
    for kind, bias, l2, n, d in itertools.product(("binary", "regression"), (True, False), (0.0, 0.1),
                                                  (1, 63, 65, 300), (1, 5, 130)):
        seed += 1
        model, X, T = case(kind, bias, n, d, torch.float64, seed)
        loss_ref, grads_ref = model.objective_and_grad(X, T, l2)
        loss, grads = TritonStep(model, X, T).step(X, T, l2)
        name = f"float64 {kind} bias={bias} l2={l2} n={n} d={d}"
        # the reference forms softplus(z) - t z, which cancels to a few ulp of |z| when the loss
        # is far smaller than the logits; the kernel's max(z, 0) - t z + log1p(e) does not
        scale = max(abs(loss_ref.item()), model.logits(X).abs().mean().item())
        check(name, abs(loss.item() - loss_ref.item()) <= 1e-12 * scale, (loss.item(), loss_ref.item()))
        check(name, grads.keys() == grads_ref.keys(), list(grads))
        for k, g in grads_ref.items():
            check(name, grads[k].shape == g.shape and grads[k].dtype == g.dtype, k)
            check(name, max_rel(grads[k], g) <= 1e-12, (k, max_rel(grads[k], g)))
    # several tiles per program: fewer programs than tiles
    fused_triton.MAX_PROGRAMS = 3
    for n in (64 * 7, 64 * 7 + 5, 1000):
        model, X, T = case("binary", True, n, 9, torch.float64, 100 + n)
        loss_ref, grads_ref = model.objective_and_grad(X, T, 0.01)
        step = TritonStep(model, X, T)
        check(f"programs n={n}", step.programs <= 3 and step.rows_per_program > 64, step.programs)
        loss, grads = step.step(X, T, 0.01)
        again = step.step(X, T, 0.01)
        check(f"programs n={n}", abs(loss.item() - loss_ref.item()) <= 1e-12 * abs(loss_ref.item()), loss.item())
        for k, g in grads_ref.items():
            check(f"programs n={n}", max_rel(grads[k], g) <= 1e-12, k)
            check(f"deterministic n={n}", torch.equal(grads[k], again[1][k]), k)
    fused_triton.MAX_PROGRAMS = 4096
    # large logits stay finite and exact
    for scale in (30.0, 1e4):
        model, X, T = case("binary", True, 500, 6, torch.float64, 7, scale)
        loss_ref, grads_ref = model.objective_and_grad(X, T)
        loss, grads = TritonStep(model, X, T).step(X, T)
        check(f"logits {scale}", abs(loss.item() - loss_ref.item()) <= 1e-12 * abs(loss_ref.item()), loss.item())
        for k, g in grads_ref.items():
            check(f"logits {scale}", max_rel(grads[k], g) <= 1e-12, k)
    # float32: within a few float32 roundings of the float64 answer, like torch's float32 step
    eps = torch.finfo(torch.float32).eps
    for kind in ("binary", "regression"):
        model64, X64, T64 = case(kind, True, 2000, 40, torch.float64, 11, 10.0)
        loss_true, grads_true = model64.objective_and_grad(X64, T64)
        model32, X32, T32 = model64.float(), X64.float(), T64.float()
        loss_ref, grads_ref = model32.objective_and_grad(X32, T32)
        loss, grads = TritonStep(model32, X32, T32).step(X32, T32)
        check(f"float32 {kind}", loss.dtype == torch.float32, loss.dtype)
        err, err_ref = abs(loss.item() - loss_true.item()), abs(loss_ref.item() - loss_true.item())
        check(f"float32 {kind} loss", err <= err_ref + 8 * eps * abs(loss_true.item()), (err, err_ref))
        for k, g in grads_true.items():
            check(f"float32 {kind} {k}", max_rel(grads[k], g) <= max_rel(grads_ref[k], g) + 16 * eps,
                  (max_rel(grads[k], g), max_rel(grads_ref[k], g)))
    # a NaN weight reaches the loss
    model, X, T = case("binary", True, 100, 4, torch.float64, 13)
    with torch.no_grad():
        model.linear.weight[0, 1] = float("nan")
    loss, _ = TritonStep(model, X, T).step(X, T)
    check("nan", not torch.isfinite(loss).item(), loss.item())
    print("ok")


if __name__ == "__main__":
    main()
