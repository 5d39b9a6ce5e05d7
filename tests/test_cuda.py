"""CUDA results against CPU ones: losses, gradients, full-batch and mini-batch fits, CUDA graphs
(the CUDA entries are skipped without a GPU)."""

import pytest
import torch

import torch_logreg as tl

from conftest import CUDA_ONLY, DEVICES
from helpers import KINDS, assert_same_fit, flat_parameters, make_model, make_targets, randomize, train_variants


@pytest.mark.parametrize("device", CUDA_ONLY)
@pytest.mark.parametrize("kind", KINDS)
def test_loss_and_gradient_on_cuda_equal_cpu(device, kind):
    gen = torch.Generator().manual_seed(0)
    cpu = make_model(kind, 7).double()
    randomize(cpu, gen)
    X = torch.randn(300, 7, generator=gen, dtype=torch.float64)
    y = make_targets(kind, 300, gen)
    loss_cpu, grads_cpu = cpu.loss_and_grad(X, y, l2=0.1)
    dev = make_model(kind, 7).double().to(device)
    dev.load_state_dict(cpu.state_dict())
    loss_dev, grads_dev = dev.loss_and_grad(X.to(device), y.to(device), l2=0.1)
    assert loss_dev.device.type == "cuda" and all(g.is_cuda for g in grads_dev.values())
    # float64 sums of 300 terms in another order: agreement to ~1e-15 relative
    assert loss_dev.item() == pytest.approx(loss_cpu.item(), rel=1e-12)
    for name, g in grads_cpu.items():
        assert torch.allclose(grads_dev[name].cpu(), g, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("device", CUDA_ONLY)
def test_full_batch_fit_on_cuda_equals_cpu(device):
    """Full batch has no randomness: 20 float64 Nesterov steps on the two devices agree to rounding."""
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(256, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (256,), generator=gen)
    results = {}
    for where in ("cpu", device):
        model = tl.SoftmaxRegression(5, 3)
        history = tl.fit(model, X, y, solver="nesterov", lr=0.2, epochs=20, device=where, dtype="float64",
                         tol=0, grad_check_every=10)
        assert model.linear.weight.device.type == torch.device(where).type
        results[where] = (flat_parameters(model), history)
    (w_cpu, h_cpu), (w_dev, h_dev) = results["cpu"], results[device]
    assert torch.allclose(w_dev, w_cpu, rtol=1e-10, atol=1e-12)
    assert h_dev.train_loss == pytest.approx(h_cpu.train_loss, rel=1e-12)
    assert h_dev.grad_check_max_rel_error < 1e-6


@pytest.mark.parametrize("device", DEVICES)
def test_minibatch_fit_replays_on_cpu(device):
    """Mini-batches on ``device`` (its own random order) equal a float64 CPU replay of the same
    batches with torch.optim.SGD: on CUDA this compares the CUDA run with a CPU computation; on
    CPU it pins the mini-batch loop to the reference optimiser."""
    gen = torch.Generator().manual_seed(2)
    n, batch, epochs = 250, 32, 4
    X = torch.randn(n, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=gen)
    model = tl.SoftmaxRegression(5, 3)
    tl.fit(model, X, y, solver="nesterov", lr=0.2, epochs=epochs, batch_size=batch, seed=7, tol=0,
           device=device, dtype="float64")
    # the loop draws one permutation per epoch from a generator on its device seeded with `seed`
    order = torch.Generator(device=device).manual_seed(7)
    ref = torch.nn.Linear(5, 3).double()
    torch.nn.init.zeros_(ref.weight)
    torch.nn.init.zeros_(ref.bias)
    opt = torch.optim.SGD(ref.parameters(), lr=0.2, momentum=0.9, nesterov=True)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=order, device=device).cpu()
        for start in range(0, n, batch):
            idx = perm[start : start + batch]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(ref(X[idx]), y[idx]).backward()
            opt.step()
    assert model.linear.weight.device.type == torch.device(device).type
    torch.testing.assert_close(model.linear.weight.detach().cpu(), ref.weight.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(model.linear.bias.detach().cpu(), ref.bias.detach(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_auto_device_and_every_tensor_on_it(device):
    model = tl.LogisticRegression(3)
    trainer = tl.Trainer(model, torch.randn(10, 3), torch.randint(0, 2, (10,)), device=device, epochs=2)
    trainer.run()
    tensors = [trainer.X, trainer.T, *model.parameters(), *trainer.optimizer.tensors(), *trainer.last_good.values()]
    assert all(t.device.type == torch.device(device).type for t in tensors)
    assert tl.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("solver", ["gd", "nesterov"])
def test_cuda_graph_run_equals_plain_run(kind, solver):
    def lower_lr(trainer):  # with a graph, a changed learning rate is captured again
        trainer.lr = 0.1
        trainer.epochs += 5

    plain, graph = train_variants(kind, [{"cuda_graph": False}, {"cuda_graph": True}], n=500, seed=2, then=lower_lr,
                                  solver=solver, lr=0.2, epochs=25, l2=0.01, tol=0, device="cuda")
    assert_same_fit(graph, plain)
