"""The parts of ``scripts/gpu_check.py`` that are not a command of their own: the Triton kernel compiled
against its interpreter, a CUDA-graph run against a plain one, and two ranks under torchrun.

    python scripts/gpu_parts.py triton       # compiled on the GPU vs Triton's interpreter on the CPU
    python scripts/gpu_parts.py cuda-graph   # fit with cuda_graph=True vs without: same weights, time per epoch
    python scripts/gpu_parts.py ranks        # torchrun, 2 processes on one GPU: NCCL, or why not (then gloo)

Each prints ``FIGURE ...`` lines for the report and exits 0 (passed), 77 after a ``SKIP: reason`` line
(skipped), or otherwise (failed). The project is imported from the checkout (the check sets PYTHONPATH).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SKIPPED = 77
HERE = Path(__file__).resolve()

# --- the Triton kernel: compiled against its interpreter ----------------------------------------------------------

#: (kind, bias, rows, features): rows around the kernel's 64-row tile and feature counts around its 128-wide block
TRITON_CASES = [(kind, bias, n, d) for kind in ("binary", "regression") for bias in (True, False)
                for n, d in ((1, 1), (65, 5), (300, 130), (1000, 37))]
#: float64 agrees to rounding; float32 sums its tiles in another order than the interpreter's NumPy
TRITON_TOL = {"float64": 1e-12, "float32": 1e-5}


def triton_case(kind: str, bias: bool, n: int, d: int, dtype, seed: int):
    """A model with random parameters and data of its kind, on the CPU, in ``dtype``."""
    import torch

    import torch_logreg as tl

    gen = torch.Generator().manual_seed(seed)
    model = tl.LogisticRegression(d, bias=bias) if kind == "binary" else tl.LinearRegression(d, bias=bias)
    model = model.double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 2, (n,), generator=gen) if kind == "binary" else torch.randn(n, generator=gen,
                                                                                       dtype=torch.float64)
    return model.to(dtype), X.to(dtype), model.targets(y, n).to(dtype)


def triton_answers(path: str) -> None:
    """Every case's loss and gradients from the kernel in Triton's interpreter (TRITON_INTERPRET=1, set before
    Triton is imported), saved to ``path``."""
    import torch

    from torch_logreg.steps import fused_triton

    assert fused_triton.interpreted(), "run with TRITON_INTERPRET=1"
    answers = {}
    for i, (kind, bias, n, d) in enumerate(TRITON_CASES):
        for dtype in (torch.float64, torch.float32):
            model, X, T = triton_case(kind, bias, n, d, dtype, seed=i)
            loss, grads = fused_triton.TritonStep(model, X, T).step(X, T, 0.01)
            answers[(i, str(dtype))] = (loss, grads)
    torch.save(answers, path)


def triton(device: str = "cuda") -> int:
    """The compiled kernel on ``device`` against the interpreter's answers (``device="cpu"`` under
    TRITON_INTERPRET=1 runs the interpreter against itself: how the script is tested without a GPU)."""
    import torch

    from torch_logreg.steps import fused_triton

    if not fused_triton.available():
        print("SKIP: Triton is not installed in this interpreter")
        return SKIPPED
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "answers.pt")
        env = dict(os.environ, TRITON_INTERPRET="1", PYTHONWARNINGS="ignore")
        started = time.perf_counter()
        subprocess.run([sys.executable, str(HERE), "triton-answers", path], env=env, check=True)
        print(f"FIGURE interpreter {time.perf_counter() - started:.1f} s")
        answers = torch.load(path, weights_only=True)
    worst = {"float64": 0.0, "float32": 0.0}
    failed = []
    for i, (kind, bias, n, d) in enumerate(TRITON_CASES):
        for dtype in (torch.float64, torch.float32):
            model, X, T = triton_case(kind, bias, n, d, dtype, seed=i)
            model, X, T = model.to(device), X.to(device), T.to(device)
            loss, grads = fused_triton.TritonStep(model, X, T).step(X, T, 0.01)
            want_loss, want_grads = answers[(i, str(dtype))]
            pairs = [(loss, want_loss), *((grads[k], g) for k, g in want_grads.items())]
            rel = max(((a.double().cpu() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-300)).item()
                      for a, b in pairs)
            name = str(dtype).removeprefix("torch.")
            worst[name] = max(worst[name], rel)
            if not rel <= TRITON_TOL[name] or grads.keys() != want_grads.keys():
                failed.append(f"{kind} bias={bias} n={n} d={d} {name}: relative difference {rel:.1e}")
    print(f"FIGURE {2 * len(TRITON_CASES)} cases; worst relative difference float64 {worst['float64']:.1e} "
          f"(tol {TRITON_TOL['float64']:.0e}), float32 {worst['float32']:.1e} (tol {TRITON_TOL['float32']:.0e})")
    for line in failed:
        print("FAILED", line)
    return 1 if failed else 0


# --- a CUDA graph against the plain loop --------------------------------------------------------------------------


def cuda_graph() -> int:
    """Full-batch gd with and without ``cuda_graph``: the same weights, and the time per epoch of each (set-up and
    capture included), on a launch-bound problem and on one that reads a few hundred MB."""
    import torch

    import torch_logreg as tl

    failed = False
    for n, d, epochs in ((2_000, 16, 300), (1_000_000, 64, 50)):
        gen = torch.Generator().manual_seed(0)
        X = torch.randn(n, d, generator=gen)
        y = (X @ torch.randn(d, generator=gen) + torch.randn(n, generator=gen) > 0).long()
        X, y = X.cuda(), y.cuda()
        weights, seconds = {}, {}
        for graph in (False, True):
            model = tl.LogisticRegression(d)
            torch.cuda.synchronize()
            started = time.perf_counter()
            tl.fit(model, X, y, solver="gd", lr=0.5, epochs=epochs, tol=0, patience=0, device="cuda",
                   dtype="float32", cuda_graph=graph)
            torch.cuda.synchronize()
            seconds[graph] = (time.perf_counter() - started) / epochs
            weights[graph] = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double().cpu()
        rel = ((weights[True] - weights[False]).abs().max() / weights[False].abs().max()).item()
        failed |= not rel <= 1e-5
        print(f"FIGURE {n:,} x {d}: {seconds[False] * 1e6:.0f} us/epoch plain, {seconds[True] * 1e6:.0f} us/epoch "
              f"graph (x{seconds[False] / seconds[True]:.2f}), weights differ by {rel:.1e} (tol 1e-5)")
    return 1 if failed else 0


# --- two ranks on one GPU -----------------------------------------------------------------------------------------

RANK_ROWS, RANK_FEATURES, RANK_EPOCHS = 20_000, 20, 40
RANK_FIT = {"solver": "nesterov", "lr": 0.5, "epochs": RANK_EPOCHS, "tol": 0.0, "patience": 0, "dtype": "float64"}


def rank(backend: str, device: str) -> int:
    """One rank of ``torchrun --nproc_per_node=2``: DistributedTrainer on ``device`` over ``backend``; rank 0 compares
    the weights with one process's fit of all the rows (equal up to rounding: the reduction is exact)."""
    import torch
    import torch.distributed as dist

    import torch_logreg as tl
    from torch_logreg.distributed import DistributedTrainer, init_distributed

    info = init_distributed(backend=backend, device=device)
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(RANK_ROWS, RANK_FEATURES, generator=gen, dtype=torch.float64)
    y = (X @ torch.randn(RANK_FEATURES, generator=gen, dtype=torch.float64) > 0).long()
    model = tl.LogisticRegression(RANK_FEATURES)
    started = time.perf_counter()
    DistributedTrainer(model, X, y, device=info.device, **RANK_FIT).run()
    seconds = time.perf_counter() - started
    code = 0
    if info.rank == 0:
        alone = tl.LogisticRegression(RANK_FEATURES)
        tl.fit(alone, X, y, device=info.device, **RANK_FIT)
        a = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).cpu()
        b = torch.cat([p.detach().reshape(-1) for p in alone.parameters()]).cpu()
        rel = ((a - b).abs().max() / b.abs().max()).item()
        code = 0 if rel <= 1e-10 else 1
        print(f"FIGURE {info.backend} on {info.device}, {info.world_size} ranks: {seconds:.2f} s for {RANK_EPOCHS} "
              f"epochs; weights differ from one process's by {rel:.1e} (tol 1e-10)", flush=True)
    dist.barrier()
    dist.destroy_process_group()
    return code


def torchrun(backend: str, timeout: float) -> subprocess.CompletedProcess:
    """Two ranks on cuda:0 over ``backend``; a hang counts as exit status 124, with what it printed."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(HERE),
               "rank", "--backend", backend, "--device", "cuda:0"]
    print("$", " ".join(command), flush=True)
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        text = [t.decode(errors="replace") if isinstance(t, bytes) else (t or "") for t in (e.stdout, e.stderr)]
        return subprocess.CompletedProcess(command, 124, text[0], text[1] + f"\ntimed out after {timeout:.0f} s")


def ranks(timeout: float) -> int:
    """Two ranks on one GPU over NCCL; where NCCL refuses to put two ranks on one GPU (its "Duplicate GPU" check),
    skipped with NCCL's words, and the same two ranks run over gloo on the GPU instead."""
    nccl = torchrun("nccl", timeout / 2)
    print(nccl.stdout + nccl.stderr[-6000:])
    if nccl.returncode == 0:
        return 0
    text = nccl.stdout + nccl.stderr
    refused = next((line.strip() for line in text.splitlines() if "Duplicate GPU" in line), None)
    if refused is None:
        return 1
    gloo = torchrun("gloo", timeout / 2)
    print(gloo.stdout + gloo.stderr[-6000:])
    status = "passed" if gloo.returncode == 0 else f"failed (exit {gloo.returncode})"
    print(f"FIGURE gloo on cuda:0 instead: {status}")
    print(f"SKIP: NCCL refuses two ranks on one GPU: {refused[:200]}")
    return SKIPPED if gloo.returncode == 0 else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="part", required=True)
    sub.add_parser("triton").add_argument("--device", default="cuda")
    sub.add_parser("triton-answers").add_argument("path")
    sub.add_parser("cuda-graph")
    r = sub.add_parser("ranks")
    r.add_argument("--timeout", type=float, default=60)
    one = sub.add_parser("rank")
    one.add_argument("--backend", default="nccl")
    one.add_argument("--device", default="cuda:0")
    args = p.parse_args(argv)
    if args.part == "triton-answers":
        triton_answers(args.path)
        return 0
    if args.part == "rank":
        return rank(args.backend, args.device)
    if args.part == "ranks":
        return ranks(args.timeout)
    if args.part == "triton":
        return triton(args.device)
    return cuda_graph()


if __name__ == "__main__":
    sys.exit(main())
