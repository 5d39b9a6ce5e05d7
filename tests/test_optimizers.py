"""The hand-written update rules against their torch.optim namesakes, step for step (float64 and
float32, full batch and mini-batch, CPU and CUDA); the learning-rate schedules against
torch.optim.lr_scheduler; optimizer state through a checkpoint."""

import math

import pytest
import torch

import torch_logreg as tl
from torch_logreg.schedules import Schedule

from conftest import DEVICES
from helpers import REFERENCES

N, D, K, LR, STEPS, SEED = 64, 5, 3, 0.05, 200, 4


def _data(kind: str):
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(N, D, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 2 if kind == "binary" else K, (N,), generator=gen)
    return X, y


def _reference(kind, solver, X, y, batch_size, dtype, device):
    """torch.nn.Linear from zeros, trained by torch.optim with autograd on the batches the loop
    draws (one permutation per epoch from a generator on the run's device, seeded as the loop's)."""
    out = 1 if kind == "binary" else K
    ref = torch.nn.Linear(D, out).to(device=device, dtype=dtype)
    torch.nn.init.zeros_(ref.weight)
    torch.nn.init.zeros_(ref.bias)
    cls, kwargs = REFERENCES[solver]
    opt = cls(ref.parameters(), lr=LR, **kwargs)
    X, y = X.to(device=device, dtype=dtype), y.to(device)
    order = torch.Generator(device=device).manual_seed(SEED)
    steps = 0
    while steps < STEPS:
        idx = torch.randperm(N, generator=order, device=device) if batch_size else torch.arange(N, device=device)
        for start in range(0, N, batch_size or N):
            b = idx[start : start + (batch_size or N)]
            opt.zero_grad()
            z = ref(X[b])
            loss = (torch.nn.functional.binary_cross_entropy_with_logits(z[:, 0], y[b].to(dtype)) if kind == "binary"
                    else torch.nn.functional.cross_entropy(z, y[b]))
            loss.backward()
            opt.step()
            steps += 1
    return torch.cat([ref.weight.detach().reshape(-1), ref.bias.detach()]).cpu()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("batch_size", [0, 16], ids=["full", "minibatch"])
@pytest.mark.parametrize("kind", ["binary", "softmax"])
@pytest.mark.parametrize("solver", list(REFERENCES))
def test_update_rule_follows_torch_optim(solver, kind, batch_size, dtype, device):
    X, y = _data(kind)
    model = tl.LogisticRegression(D) if kind == "binary" else tl.SoftmaxRegression(D, K)
    epochs = STEPS // (N // batch_size) if batch_size else STEPS
    history = tl.fit(model, X, y, solver=solver, lr=LR, epochs=epochs, batch_size=batch_size, tol=0, seed=SEED,
                     device=device, dtype=dtype)
    assert history.n_steps == STEPS
    ours = torch.cat([model.linear.weight.detach().reshape(-1), model.linear.bias.detach()]).cpu()
    ref = _reference(kind, solver, X, y, batch_size, dtype, device)
    # float64: 200 steps of the same maths in another summation order agree to ~1e-14; float32
    # rounding (~1e-7 a step) grows through 200 steps of an adaptive rule (1.1e-4 measured for
    # rmsprop, whose update divides by the running gradient size)
    tol = 1e-10 if dtype == torch.float64 else 1e-3
    assert ((ours - ref).abs().max() / ref.abs().max()).item() <= tol


@pytest.mark.parametrize("solver", ["momentum", "adagrad", "rmsprop", "adam", "adamw"])
@pytest.mark.parametrize("batch_size", [0, 16])
def test_optimizer_state_survives_a_checkpoint_bit_for_bit(solver, batch_size):
    """20 epochs in one go equal 10, a state_dict round trip into a new Trainer, then 10 more."""
    X, y = _data("softmax")
    kw = dict(solver=solver, lr=LR, batch_size=batch_size, tol=0, seed=1, device="cpu", dtype="float64",
              schedule="cosine", warmup_epochs=3)
    whole = tl.SoftmaxRegression(D, K)
    tl.Trainer(whole, X, y, epochs=20, **kw).run()
    first = tl.SoftmaxRegression(D, K)
    trainer = tl.Trainer(first, X, y, epochs=20, **kw)
    trainer.epochs = 10
    trainer.run()
    saved = {k: v.clone() for k, v in first.state_dict().items()}, trainer.state_dict()
    second = tl.SoftmaxRegression(D, K).double()
    second.load_state_dict(saved[0])
    resumed = tl.Trainer(second, X, y, epochs=20, **kw)
    resumed.load_state_dict(saved[1])
    resumed.run()
    assert resumed.optimizer.steps == trainer.optimizer.steps + 10 * (1 if not batch_size else N // batch_size)
    for a, b in zip(whole.parameters(), second.parameters()):
        assert torch.equal(a, b)


def test_every_registered_update_rule_steps_and_keeps_its_state():
    """Each name of the registry builds its class; after two steps its state, loaded into a fresh
    one, gives the same third step (as the checkpoint test shows through the Trainer)."""
    from torch_logreg.optimizers import make
    from torch_logreg.registry import OPTIMIZERS

    gen = torch.Generator().manual_seed(0)
    grads = [{"w": torch.randn(3, generator=gen, dtype=torch.float64)} for _ in range(3)]
    for name in OPTIMIZERS:
        params = {"w": torch.ones(3, dtype=torch.float64)}
        opt = make(name, params)
        for g in grads[:2]:
            opt.step(params, g, 0.1)
        assert not torch.equal(params["w"], torch.ones(3, dtype=torch.float64)), name
        copy = {"w": params["w"].clone()}
        other = make(name, copy)
        other.load_state_dict(opt.state_dict())
        opt.step(params, grads[2], 0.1)
        other.step(copy, grads[2], 0.1)
        assert torch.equal(params["w"], copy["w"]), name


def test_a_momentum_checkpoint_of_0_1_0_loads_into_the_optimizer():
    """Release 0.1.0 saved the momentum buffers as the Trainer's "velocity"."""
    X, y = _data("binary")
    trainer = tl.Trainer(tl.LogisticRegression(D), X, y, solver="nesterov", epochs=3, device="cpu", dtype="float64")
    trainer.run()
    state = trainer.state_dict()
    velocity = state.pop("optimizer")["state"]["velocity"]
    state["velocity"] = velocity
    other = tl.Trainer(tl.LogisticRegression(D), X, y, solver="nesterov", epochs=5, device="cpu", dtype="float64")
    other.load_state_dict(state)
    assert all(torch.equal(other.optimizer.state["velocity"][k], v) for k, v in velocity.items())


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"solver": "gd", "betas": (0.8, 0.9)}, "solver='gd' takes no betas"),
        ({"solver": "adam", "betas": (0.9,)}, "betas must be two numbers"),
        ({"solver": "adam", "eps": -1.0}, "eps must be a finite number > 0, got -1.0"),
        ({"solver": "rmsprop", "alpha": 1.5}, "alpha must be a finite number >= 0 and < 1, got 1.5"),
        ({"solver": "adamw", "weight_decay": float("nan")}, "weight_decay must be a finite number >= 0"),
        ({"schedule": "linear"}, "schedule must be one of"),
        ({"schedule": "step", "step_size": 0}, "step_size must be an integer >= 1, got 0"),
        ({"schedule": "exponential", "gamma": 0.0}, "gamma must be a finite number > 0"),
        ({"warmup_epochs": 2, "warmup_start_factor": 0.0}, "warmup_start_factor must be a finite number > 0"),
    ],
)
def test_bad_update_rule_arguments_name_the_parameter(kwargs, message):
    X, y = _data("binary")
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tl.Trainer(tl.LogisticRegression(D), X, y, device="cpu", **kwargs)


# --- schedules ------------------------------------------------------------------------------------


def _torch_rates(name: str, epochs: int, warmup: int, start: float, step_size: int, gamma: float) -> list[float]:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
    after = {
        "constant": lambda: torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0),
        "step": lambda: torch.optim.lr_scheduler.StepLR(opt, step_size=step_size, gamma=gamma),
        "exponential": lambda: torch.optim.lr_scheduler.ExponentialLR(opt, gamma=gamma),
        "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs - warmup),
    }[name]()
    if warmup:
        ramp = torch.optim.lr_scheduler.LinearLR(opt, start_factor=start, total_iters=warmup)
        sched = torch.optim.lr_scheduler.SequentialLR(opt, [ramp, after], milestones=[warmup])
    else:
        sched = after
    rates = []
    for _ in range(epochs):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return rates


@pytest.mark.filterwarnings("ignore::UserWarning")  # SequentialLR's deprecation notice about epoch arguments
@pytest.mark.parametrize("warmup", [0, 4])
@pytest.mark.parametrize("name", ["constant", "step", "exponential", "cosine"])
def test_schedules_equal_torch_lr_schedulers(name, warmup):
    epochs, start, step_size, gamma = 30, 0.25, 7, 0.8
    schedule = Schedule(name, epochs=epochs, step_size=step_size, gamma=gamma, warmup_epochs=warmup,
                        warmup_start_factor=start)
    ours = [0.5 * schedule.factor(e) for e in range(epochs)]
    # torch computes some of these recursively (a product per epoch): rounding, not maths, apart
    assert ours == pytest.approx(_torch_rates(name, epochs, warmup, start, step_size, gamma), rel=1e-12, abs=1e-15)
    if name == "cosine":
        assert ours[warmup] == pytest.approx(0.5) and ours[-1] < 0.5 * (1 - math.cos(math.pi / (epochs - warmup)))


def test_the_loop_runs_each_epoch_at_the_schedules_rate():
    X, y = _data("binary")
    seen = []

    class Rates(tl.Callback):
        def on_epoch_end(self, state):
            seen.append(state.lr)

    tl.fit(tl.LogisticRegression(D), X, y, lr=0.5, epochs=12, schedule="step", step_size=5, gamma=0.1, warmup_epochs=2,
           tol=0, device="cpu", callbacks=[Rates()])
    schedule = Schedule("step", epochs=12, step_size=5, gamma=0.1, warmup_epochs=2)
    assert seen == [0.5 * schedule.factor(e) for e in range(12)]


# --- mixed precision ------------------------------------------------------------------------------


@pytest.mark.slow
def test_bfloat16_reaches_the_float32_validation_loss_on_digits():
    """dtype="bfloat16": float32 master weights, the products in bfloat16 under autocast. On
    digits it ends within 1e-2 of the float32 run's validation loss (6e-4 measured)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = (X - X.mean(0)) / (X.std(0) + 1e-8)
    X_tr, X_val, y_tr, y_val = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    loss = {}
    for dtype in ("float32", "bfloat16"):
        model = tl.SoftmaxRegression(64, 10)
        trainer = tl.Trainer(model, X_tr, y_tr, solver="nesterov", lr=0.1, epochs=300, l2=1e-3, tol=0, dtype=dtype,
                             device="cpu", X_val=X_val, y_val=y_val)
        loss[dtype] = trainer.run().val_loss[-1]
        assert model.linear.weight.dtype == torch.float32
    assert trainer.stepper.name == "autocast_bfloat16(reference)"
    assert abs(loss["bfloat16"] - loss["float32"]) <= 1e-2


def test_bfloat16_is_refused_where_it_cannot_run(capsys, tmp_path):
    from torch_logreg.app.cli import main

    code = main(["train", "--quiet", "--run-dir", str(tmp_path / "r"), "--set", "train.dtype=bfloat16",
                 "--set", "train.solver=newton"])
    assert code == 2 and "train.dtype = 'bfloat16' is for the loop" in capsys.readouterr().err
    X, y = _data("binary")
    with pytest.raises(ValueError, match="cuda_graph runs the float32 or float64 step"):
        tl.Trainer(tl.LogisticRegression(D), X, y, dtype="bfloat16", cuda_graph=True, device="cpu")


def test_bfloat16_is_refused_on_a_gpu_without_it(monkeypatch):
    """The rule on any machine: a CUDA device whose GPU has no bfloat16 gets one sentence naming
    the GPU; the CPU always runs it."""
    from torch_logreg import devices
    from torch_logreg.errors import UsageError

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args, **kwargs: "Old GPU")
    with pytest.raises(UsageError, match="needs a GPU with bfloat16 support; Old GPU has none: use 'float32'"):
        devices.resolve_precision("bfloat16", device=torch.device("cuda"))
    assert devices.resolve_precision("bfloat16", device=torch.device("cpu")) == (torch.float32, torch.bfloat16)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.is_bf16_supported(),
                    reason="needs a CUDA GPU without bfloat16")
def test_bfloat16_is_refused_by_the_trainer_on_a_gpu_without_it():
    X, y = _data("binary")
    with pytest.raises(ValueError, match="needs a GPU with bfloat16 support"):
        tl.Trainer(tl.LogisticRegression(D), X, y, dtype="bfloat16", device="cuda")
