"""Dropout and batch normalization: forward and manual backward equal ``torch.nn.Dropout`` and
``torch.nn.BatchNorm1d`` through autograd (float64, same mask), running statistics equal torch's,
and the three-way gradient checks pass on stacks that contain them."""

from pathlib import Path

import pytest
import torch
from torch import nn

import torch_logreg as tl
from torch_logreg.gradients import ManualFunction, check_gradients
from torch_logreg.layers import repeatable

from conftest import DEVICES

SHAPES = [(2, 1), (7, 4), (64, 20)]


def assert_close(actual, expected, rel=1e-12):
    """``max|a - e| <= rel * max(max|e|, 1)``: relative to the tensor's scale, not entrywise."""
    scale = max(expected.abs().max().item() if expected.numel() else 0.0, 1.0)
    assert (actual - expected).abs().max().item() <= rel * scale


# --- dropout -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 0.9])
@pytest.mark.parametrize("training", [True, False])
def test_dropout_forward_and_backward_equal_autograd_through_the_same_mask(shape, p, training):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    layer = tl.Dropout(p, seed=3).train(training)
    layer.freeze_mask()
    y = layer(x)
    grad_output = torch.randn(shape, generator=gen, dtype=torch.float64)
    grad_input = layer.backward(grad_output)

    xr = x.clone().requires_grad_(True)
    if training and p > 0:
        mask = layer.mask
        assert set(mask.unique().tolist()) <= {0.0, 1.0 / (1.0 - p)}  # inverted dropout's scaling
        yr = xr * mask
    else:
        assert layer.mask is None
        yr = nn.Dropout(p).eval()(xr)
    (gr,) = torch.autograd.grad(yr, xr, grad_output)
    assert_close(y, yr.detach())
    assert_close(grad_input, gr)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_draws_as_nn_dropout_does_from_the_global_generator(p):
    """Without a seed the mask comes from torch's global generator, drawn as nn.Dropout draws it
    on the CPU (Bernoulli(1 - p) divided by 1 - p): the same outputs after the same seed."""
    x = torch.randn(50, 8, dtype=torch.float64)
    torch.manual_seed(7)
    expected = nn.Dropout(p)(x)
    torch.manual_seed(7)
    assert_close(tl.Dropout(p)(x), expected)


def test_dropout_mask_is_seeded_frozen_and_unfrozen():
    x = torch.ones(40, 10, dtype=torch.float64)
    a, b = tl.Dropout(0.5, seed=11), tl.Dropout(0.5, seed=11)
    assert torch.equal(a(x), b(x)) and torch.equal(a(x), b(x))  # the same seed, the same masks
    assert not torch.equal(a(x), a(x))  # a new mask at every forward
    a.freeze_mask()
    first = a(x)
    assert torch.equal(a(x), first) and torch.equal(a.mask, first)  # reused while frozen
    with pytest.raises(tl.UsageError, match="frozen mask"):
        a(torch.ones(3, 10, dtype=torch.float64))
    a.unfreeze_mask()
    assert a.mask is None and not torch.equal(a(x), first)
    a.manual_seed(11)
    b.manual_seed(11)
    assert torch.equal(a(x), b(x))
    assert "mask" not in a.state_dict()  # the mask is not part of a checkpoint


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, True, "0.5"])
def test_dropout_refuses_a_rate_outside_0_1(p):
    with pytest.raises(tl.UsageError, match="Dropout: p must be"):
        tl.Dropout(p)


# --- batch normalization -----------------------------------------------------------------------


def _pair(n_features, affine, momentum, gen):
    ours = tl.BatchNorm1d(n_features, momentum=momentum, affine=affine, dtype=torch.float64)
    ref = nn.BatchNorm1d(n_features, momentum=momentum, affine=affine, dtype=torch.float64)
    if affine:
        with torch.no_grad():
            ours.weight.copy_(torch.randn(n_features, generator=gen, dtype=torch.float64))
            ours.bias.copy_(torch.randn(n_features, generator=gen, dtype=torch.float64))
            ref.weight.copy_(ours.weight)
            ref.bias.copy_(ours.bias)
    return ours, ref


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_batch_norm_forward_and_backward_equal_nn_batch_norm(shape, training, affine, momentum):
    n, c = shape
    gen = torch.Generator().manual_seed(n * 100 + c)
    ours, ref = _pair(c, affine, momentum, gen)
    for _ in range(3):  # running statistics away from their start
        batch = 2.0 * torch.randn(n, c, generator=gen, dtype=torch.float64) + 0.5
        ours(batch, cache=False)
        ref(batch)
    ours.train(training)
    ref.train(training)
    x = 3.0 * torch.randn(n, c, generator=gen, dtype=torch.float64) - 1.0
    grad_output = torch.randn(n, c, generator=gen, dtype=torch.float64)
    y = ours(x)
    grad_input = ours.backward(grad_output)

    xr = x.clone().requires_grad_(True)
    yr = ref(xr)
    params = list(ref.parameters())
    grads = torch.autograd.grad(yr, [xr, *params], grad_output)
    assert_close(y, yr.detach())
    assert_close(grad_input, grads[0])
    assert set(ours.grads) == ({"weight", "bias"} if affine else set())
    for name, g in zip(("weight", "bias"), grads[1:]):
        assert_close(ours.grads[name], g)
    for name in ("running_mean", "running_var"):
        assert_close(getattr(ours, name), getattr(ref, name))
    assert ours.num_batches_tracked.item() == ref.num_batches_tracked.item() == 3 + training


@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
def test_batch_norm_running_statistics_equal_torch_over_many_steps(momentum):
    gen = torch.Generator().manual_seed(5)
    ours, ref = _pair(6, True, momentum, gen)
    for step in range(20):
        n = 2 + step % 7  # batches of several sizes: the unbiased variance's N / (N - 1) changes
        x = torch.randn(n, 6, generator=gen, dtype=torch.float64) * (1 + step) + step
        ours(x, cache=False)
        ref(x)
        assert_close(ours.running_mean, ref.running_mean)
        assert_close(ours.running_var, ref.running_var)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    loaded = tl.BatchNorm1d(6, momentum=momentum, dtype=torch.float64)
    loaded.load_state_dict(ref.state_dict())  # torch's state dict loads as it is
    x = torch.randn(9, 6, generator=gen, dtype=torch.float64)
    assert_close(loaded.eval()(x), ref.eval()(x))


def test_batch_norm_refuses_a_single_row_in_training_and_bad_arguments():
    layer = tl.BatchNorm1d(3)
    with pytest.raises(tl.UsageError, match="at least 2 rows"):
        layer(torch.randn(1, 3))
    layer.eval()(torch.randn(1, 3))  # the running statistics need no batch
    for kwargs in ({"num_features": 0}, {"num_features": 3, "eps": 0.0}, {"num_features": 3, "momentum": 1.5}):
        with pytest.raises(tl.UsageError, match="BatchNorm1d"):
            tl.BatchNorm1d(**kwargs)


def test_scripted_layers_in_eval_mode_equal_the_eager_ones():
    gen = torch.Generator().manual_seed(2)
    stack = nn.Sequential(tl.BatchNorm1d(4, dtype=torch.float64), tl.Dropout(0.3, seed=0))
    for _ in range(3):
        stack(torch.randn(8, 4, generator=gen, dtype=torch.float64))
    stack.eval()
    scripted = torch.jit.script(stack)
    x = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    assert torch.equal(scripted(x), stack(x))


# --- gradient checks on stacks containing them ------------------------------------------------


def stack(n_features, n_outputs, link, dropout=0.3, affine=True):
    torch.manual_seed(0)
    return tl.StackedModel(
        {
            "fc0": tl.Linear(n_features, 8),
            "bn0": tl.BatchNorm1d(8, affine=affine),
            "act0": tl.Tanh(),
            "drop0": tl.Dropout(dropout, seed=1),
            "fc1": tl.Linear(8, 6),
            "bn1": tl.BatchNorm1d(6, affine=affine),
            "act1": tl.ReLU(),
            "drop1": tl.Dropout(dropout, seed=2),
            "out": tl.Linear(6, n_outputs),
        },
        link=link,
        n_outputs=n_outputs,
    ).double()


def targets(link, n, n_outputs, gen):
    if link == "softmax":
        return torch.randint(0, n_outputs, (n,), generator=gen)
    if link == "sigmoid":
        return torch.randint(0, 2, (n,) if n_outputs == 1 else (n, n_outputs), generator=gen)
    return torch.randn(n, n_outputs, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("link,n_outputs", [("sigmoid", 1), ("softmax", 3), ("identity", 2)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("l2", [0.0, 0.1])
@pytest.mark.parametrize("affine", [True, False])
def test_three_way_gradient_check_on_a_stack_with_dropout_and_batch_norm(link, n_outputs, training, l2, affine):
    gen = torch.Generator().manual_seed(3)
    model = stack(5, n_outputs, link, affine=affine)
    X = torch.randn(40, 5, generator=gen, dtype=torch.float64)
    for _ in range(2):  # running statistics of their own, for evaluation mode
        model.logits(2.0 * torch.randn(40, 5, generator=gen, dtype=torch.float64))
    model.train(training)
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    generator_states = [model.drop0.generator.get_state(), model.drop1.generator.get_state()]

    report = check_gradients(model, X, targets(link, 40, n_outputs, gen), l2, fd_max_coords=12)
    assert report.passed, str(report)
    checked = {(c.reference, c.parameter) for c in report.comparisons}
    names = [name for name, _ in model.named_parameters()]
    assert ("bn0.weight" in names) == affine
    assert all((ref, name) in checked for ref in ("autograd", "finite_difference") for name in names)
    # the check left the model as it was: running statistics, masks, the dropout generators
    assert all(torch.equal(v, buffers[k]) for k, v in model.named_buffers())
    assert model.drop0.mask is None and not model.drop0.frozen
    assert torch.equal(model.drop0.generator.get_state(), generator_states[0])
    assert torch.equal(model.drop1.generator.get_state(), generator_states[1])


def test_a_frozen_mask_is_what_makes_the_check_meaningful():
    """Inside ``repeatable`` every forward uses one mask; outside, each forward draws a new one,
    the first of them the one the block used (the block set the generator back)."""
    gen = torch.Generator().manual_seed(4)
    model = stack(5, 1, "sigmoid", dropout=0.5)
    X = torch.randn(30, 5, generator=gen, dtype=torch.float64)
    T = model.targets(targets("sigmoid", 30, 1, gen), 30)
    with repeatable(model):
        _, first = model.objective_and_grad(X, T)
        first = {k: v.clone() for k, v in first.items()}
        _, again = model.objective_and_grad(X, T)
        assert all(torch.equal(first[k], again[k]) for k in first)
    _, after = model.objective_and_grad(X, T)
    assert all(torch.equal(first[k], after[k]) for k in first)
    _, redrawn = model.objective_and_grad(X, T)
    assert any(not torch.equal(first[k], redrawn[k]) for k in first)


@pytest.mark.parametrize("training", [True, False])
def test_torch_gradcheck_through_the_manual_backward(training):
    """torch.autograd.gradcheck (finite differences of the forward against the layer's manual
    backward, for the input and each parameter) on each layer alone."""
    gen = torch.Generator().manual_seed(6)
    norm = tl.BatchNorm1d(4, dtype=torch.float64)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(4, generator=gen, dtype=torch.float64))
        norm.bias.copy_(torch.randn(4, generator=gen, dtype=torch.float64))
    norm(torch.randn(10, 4, generator=gen, dtype=torch.float64) + 1.0, cache=False)
    dropout = tl.Dropout(0.4, seed=0)
    x = torch.randn(10, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    for layer in (norm, dropout):
        layer.train(training)
        with repeatable(layer):
            params = tuple(layer.parameters(recurse=False))
            assert torch.autograd.gradcheck(lambda x, *p, layer=layer: ManualFunction.apply(layer, x, *p),
                                            (x, *params), eps=1e-6, atol=1e-8)


# --- the MLP with dropout and batch normalization ----------------------------------------------


def test_mlp_places_batch_norm_before_and_dropout_after_each_hidden_activation():
    model = tl.MLP(4, [8, 6], n_outputs=3, activation="relu", link="softmax", dropout=0.25, batch_norm=True)
    assert [name for name, _ in model.named_children()] == [
        "fc0", "bn0", "act0", "drop0", "fc1", "bn1", "act1", "drop1", "out"]
    assert model.mode_dependent and model.drop1.p == 0.25 and model.bn1.num_features == 6
    plain = tl.MLP(4, [8], n_outputs=1)
    assert [name for name, _ in plain.named_children()] == ["fc0", "act0", "out"] and not plain.mode_dependent
    assert plain.constructor_args()["dropout"] == 0.0 and plain.constructor_args()["batch_norm"] is False


def test_mlp_constructor_args_and_state_dict_round_trip_in_evaluation_mode():
    gen = torch.Generator().manual_seed(8)
    model = tl.MLP(5, [7], n_outputs=3, link="softmax", dropout=0.3, batch_norm=True).double()
    model.seed_dropout(0)
    for _ in range(4):  # running statistics away from their start
        model.logits(torch.randn(16, 5, generator=gen, dtype=torch.float64))
    args = model.constructor_args()
    assert args["dropout"] == 0.3 and args["batch_norm"] is True
    copy = tl.MLP(**args).double()
    copy.load_state_dict(model.state_dict())
    X = torch.randn(10, 5, generator=gen, dtype=torch.float64)
    assert torch.equal(copy.eval().logits(X), model.eval().logits(X))


def test_predict_is_in_evaluation_mode_whatever_the_model_mode():
    gen = torch.Generator().manual_seed(9)
    model = tl.MLP(3, [6], n_outputs=1, dropout=0.5, batch_norm=True).double()
    model.logits(torch.randn(20, 3, generator=gen, dtype=torch.float64) + 2.0)
    X = torch.randn(30, 3, generator=gen, dtype=torch.float64)
    expected = (model.eval().logits(X)[:, 0] >= 0).long()
    model.train()
    running = model.bn0.running_mean.clone()
    assert torch.equal(model.predict(X), expected)
    assert model.training and torch.equal(model.bn0.running_mean, running)  # mode restored, statistics untouched
    with torch.no_grad():
        assert not torch.equal(model.logits(X), model.logits(X))  # training mode: a new mask each time


class ModeLog(tl.Callback):
    def __init__(self):
        self.steps, self.epochs = [], []

    def on_step(self, state):
        self.steps.append(state.model.training)

    def on_epoch_end(self, state):
        self.epochs.append(state.model.training)


@pytest.mark.slow
def test_the_loop_trains_in_training_mode_and_checks_in_evaluation_mode():
    gen = torch.Generator().manual_seed(10)
    X = torch.randn(120, 4, generator=gen, dtype=torch.float64)
    y = (X[:, 0] * X[:, 1] > 0).long()
    X_val = torch.randn(40, 4, generator=gen, dtype=torch.float64)
    y_val = (X_val[:, 0] * X_val[:, 1] > 0).long()
    model = tl.MLP(4, [8], dropout=0.2, batch_norm=True).double()
    model.seed_dropout(0)
    log = ModeLog()
    history = tl.fit(model, X, y, solver="adam", lr=0.01, epochs=6, batch_size=32, X_val=X_val, y_val=y_val,
                     callbacks=[log], device="cpu", grad_check_every=7)
    assert all(log.steps) and len(log.steps) == 6 * 4 and not any(log.epochs)
    assert not model.training  # the model leaves the loop ready to predict
    assert model.bn0.num_batches_tracked.item() == 24  # one update a step: checks and validation add none
    assert len(history.grad_checks) == 4 and all(e <= 1e-6 for _, e in history.grad_checks)  # finite differences
    T_val = model.targets(y_val, 40)
    assert history.val_loss[-1] == model.objective(X_val, T_val).item()


# --- config, gradcheck, export -----------------------------------------------------------------

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_config_keys_reach_the_model_and_are_validated():
    from torch_logreg.app.config import load_config
    from torch_logreg.app.fitting import build_model

    cfg = load_config(CONFIGS / "digits_mlp.toml", ["model.dropout=0.2", "model.batch_norm=true"])
    model = build_model(cfg.model, 64, 10, seed=0)
    assert model.drop0.p == 0.2 and isinstance(model.bn0, tl.BatchNorm1d)
    assert model.constructor_args()["dropout"] == 0.2 and model.constructor_args()["batch_norm"]
    with pytest.raises(tl.UsageError, match=r"--set model.dropout=1: model.dropout must be a finite number >= 0 and < 1"):
        load_config(CONFIGS / "digits_mlp.toml", ["model.dropout=1"])
    with pytest.raises(tl.UsageError, match=r"model.batch_norm applies to model.kind = 'mlp'; model.kind is 'logistic'"):
        load_config(CONFIGS / "digits.toml", ["model.kind=logistic", "model.batch_norm=true"])
    with pytest.raises(tl.UsageError, match=r"model.dropout applies to model.kind = 'mlp'"):
        load_config(CONFIGS / "digits.toml", ["model.dropout=0.1"])
    with pytest.raises(tl.UsageError, match=r"model.dropout trains with the loop's update rules .* 'lbfgs'"):
        load_config(CONFIGS / "digits_mlp.toml", ["model.dropout=0.1", "train.solver=lbfgs"])


def test_gradcheck_command_passes_on_an_mlp_with_dropout_and_batch_norm():
    from torch_logreg.app import commands
    from torch_logreg.app.config import load_config

    cfg = load_config(CONFIGS / "xor_mlp.toml", ["model.dropout=0.2", "model.batch_norm=true", "train.device=cpu",
                                                 "data.n_samples=200"])
    report = commands.gradcheck(cfg)
    assert report.passed, str(report)
    assert {c.parameter for c in report.comparisons} >= {"bn0.weight", "bn0.bias", "fc0.weight", "out.weight"}


@pytest.mark.parametrize("device", DEVICES)
def test_layers_on_each_device_equal_torch(device):
    """Batch norm against nn.BatchNorm1d and a seeded dropout mask drawn on the input's device."""
    gen = torch.Generator().manual_seed(12)
    ours, ref = _pair(5, True, 0.1, gen)
    ours, ref = ours.to(device), ref.to(device)
    x = torch.randn(16, 5, generator=gen, dtype=torch.float64).to(device)
    g = torch.randn(16, 5, generator=gen, dtype=torch.float64).to(device)
    y = ours(x)
    xr = x.clone().requires_grad_(True)
    yr = ref(xr)
    (gr,) = torch.autograd.grad(yr, xr, g)
    assert_close(y, yr.detach())
    assert_close(ours.backward(g), gr)
    assert_close(ours.running_var, ref.running_var)
    a, b = tl.Dropout(0.5, seed=4), tl.Dropout(0.5, seed=4)
    assert torch.equal(a(x), b(x))
    assert a.generator.device.type == torch.device(device).type
