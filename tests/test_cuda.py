"""CPU/CUDA parity of losses, gradients and a short fit (skipped without a GPU)."""

import pytest
import torch

import torch_logreg as tl

from conftest import DEVICES
from helpers import KINDS, assert_same_fit, make_model, make_targets, randomize, train_variants


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_loss_and_gradient_parity(device, kind):
    gen = torch.Generator().manual_seed(0)
    cpu = make_model(kind, 7).double()
    randomize(cpu, gen)
    X = torch.randn(300, 7, generator=gen, dtype=torch.float64)
    y = make_targets(kind, 300, gen)
    loss_cpu, grads_cpu = cpu.loss_and_grad(X, y, l2=0.1)
    dev = make_model(kind, 7).double().to(device)
    dev.load_state_dict(cpu.state_dict())
    loss_dev, grads_dev = dev.loss_and_grad(X.to(device), y.to(device), l2=0.1)
    assert loss_dev.device.type == torch.device(device).type
    assert loss_dev.item() == pytest.approx(loss_cpu.item(), rel=1e-12)
    for name, g in grads_cpu.items():
        assert torch.allclose(grads_dev[name].cpu(), g, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch_size", [0, 32])
def test_short_fit_parity(device, batch_size):
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(256, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (256,), generator=gen)
    results = {}
    for where in ("cpu", device):
        model = tl.SoftmaxRegression(5, 3)
        # full batch has no randomness: the two devices must agree to rounding
        history = tl.fit(model, X, y, solver="nesterov", lr=0.2, epochs=20, batch_size=batch_size,
                         device=where, dtype="float64", grad_check_every=10)
        assert model.linear.weight.device.type == torch.device(where).type
        results[where] = (model.linear.weight.detach().cpu(), history)
    w_cpu, h_cpu = results["cpu"]
    w_dev, h_dev = results[device]
    if batch_size == 0:
        assert torch.allclose(w_cpu, w_dev, rtol=1e-10, atol=1e-12)
    assert h_dev.n_epochs == 20 and all(map(lambda l: l == l, h_dev.train_loss))


@pytest.mark.parametrize("device", DEVICES)
def test_auto_device_and_every_tensor_on_it(device):
    model = tl.LogisticRegression(3)
    trainer = tl.Trainer(model, torch.randn(10, 3), torch.randint(0, 2, (10,)), device=device, epochs=2)
    trainer.run()
    tensors = [trainer.X, trainer.T, *model.parameters(), *trainer.velocity.values(), *trainer.last_good.values()]
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
