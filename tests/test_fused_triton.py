"""The fused Triton kernel equals the reference step: in Triton's interpreter on CPU tensors
everywhere, and compiled on a CUDA GPU where there is one."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import torch_logreg as tl
from torch_logreg.steps import fused_triton

from conftest import CUDA
from helpers import make_model, make_targets, randomize

HERE = Path(__file__).parent
#: rows of 16 features that reach the size from which the loop takes the fused kernel
LARGE_ROWS = fused_triton.MIN_ENTRIES // 16
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")


@needs_triton
@pytest.mark.slow
def test_kernel_equals_reference_in_the_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, str(HERE / "triton_interpreter_cases.py")], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("ok")


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="no CUDA GPU")
@needs_triton
@pytest.mark.parametrize("kind", ["binary", "regression"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_compiled_kernel_equals_reference_on_cuda(kind, dtype):
    from torch_logreg.steps.fused_triton import TritonStep

    gen = torch.Generator().manual_seed(0)
    model = make_model(kind, 37).double()
    randomize(model, gen)
    X = torch.randn(70_001, 37, generator=gen, dtype=torch.float64)
    T = model.targets(make_targets(kind, X.shape[0], gen), X.shape[0])
    loss_true, grads_true = model.objective_and_grad(X, T, 0.01)
    model, X, T = model.to("cuda", dtype), X.to("cuda", dtype), T.to("cuda", dtype)
    loss, grads = TritonStep(model, X, T).step(X, T, 0.01)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert loss.item() == pytest.approx(loss_true.item(), rel=tol)
    for k, g in grads_true.items():
        assert ((grads[k].double().cpu() - g).abs().max() / g.abs().max()).item() <= tol, k


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="no CUDA GPU")
@needs_triton
def test_loop_takes_the_triton_step_for_large_cuda_data():
    X = torch.randn(LARGE_ROWS, 16, device="cuda")
    y = (X[:, 0] > 0).long()
    trainer = tl.Trainer(tl.LogisticRegression(16), X, y, epochs=3, tol=0, device="cuda")
    assert trainer.stepper.name == "fused_triton"
    trainer.run()


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="no CUDA GPU")
@needs_triton
def test_cuda_graph_with_the_triton_step_equals_the_plain_run():
    gen = torch.Generator().manual_seed(5)
    X = torch.randn(LARGE_ROWS, 16, generator=gen, dtype=torch.float64)
    y = (X[:, 0] + 0.5 * torch.randn(X.shape[0], generator=gen, dtype=torch.float64) > 0).long()
    weights = []
    for graph in (False, True):
        model = tl.LogisticRegression(16).double()
        trainer = tl.Trainer(model, X, y, solver="nesterov", lr=0.5, epochs=15, tol=0, device="cuda",
                             cuda_graph=graph)
        assert trainer.stepper.name == ("cuda_graph(fused_triton)" if graph else "fused_triton")
        trainer.run()
        weights.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]).cpu())
    assert ((weights[1] - weights[0]).abs().max() / weights[0].abs().max()).item() <= 1e-12
