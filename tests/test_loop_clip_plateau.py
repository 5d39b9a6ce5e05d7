"""The loop's global-norm clipping equals ``torch.nn.utils.clip_grad_norm_`` followed by the same
``torch.optim`` optimizer, and its plateau schedule equals ``ReduceLROnPlateau`` fed the same
validation losses, resumed or not."""

import copy

import pytest
import torch

import torch_logreg as tl
from torch_logreg.gradients import autograd_objective

REFERENCES = {
    "gd": (torch.optim.SGD, {}),
    "momentum": (torch.optim.SGD, {"momentum": 0.9}),
    "adam": (torch.optim.Adam, {}),
    "rmsprop": (torch.optim.RMSprop, {}),
}


def mlp_problem(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(60, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (60,), generator=gen)
    torch.manual_seed(seed)
    model = tl.MLP(5, [8], n_outputs=3, activation="tanh", link="softmax").double()
    with torch.no_grad():  # large weights: large gradients, clipped at first
        for p in model.parameters():
            p.mul_(3.0)
    return model, X, y


@pytest.mark.slow
@pytest.mark.parametrize("solver", list(REFERENCES))
def test_clipping_in_the_loop_equals_torch_clip_grad_norm_and_optim_over_40_steps(solver):
    model, X, y = mlp_problem()
    reference = copy.deepcopy(model)
    T = model.targets(y, len(y))
    l2, lr, max_norm, steps = 1e-3, 0.05, 0.5, 40
    history = tl.fit(model, X, y, solver=solver, lr=lr, epochs=steps, l2=l2, tol=0, clip_grad_norm=max_norm,
                     device="cpu", dtype="float64")

    cls, kwargs = REFERENCES[solver]
    optimizer = cls(reference.parameters(), lr=lr, **kwargs)
    clipped, norms = 0, []
    for _ in range(steps):
        optimizer.zero_grad()
        autograd_objective(reference, X, T, l2).backward()
        total = torch.nn.utils.clip_grad_norm_(reference.parameters(), max_norm)
        clipped += bool(max_norm / (total + 1e-6) < 1)
        norms.append(total.item())
        optimizer.step()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        assert (p - q).abs().max().item() <= 1e-10 * q.abs().max().item(), name
    assert clipped > 0
    assert history.clipped_steps[-1] == clipped and len(history.clipped_steps) == steps
    # the recorded norm is the one before clipping (the epoch's gradient is the step's here)
    assert history.grad_norm == pytest.approx(norms, rel=1e-9)


def test_clipping_off_is_the_plain_loop_and_a_large_bound_changes_nothing():
    model, X, y = mlp_problem(1)
    a, b, c = copy.deepcopy(model), copy.deepcopy(model), copy.deepcopy(model)
    settings = {"solver": "adam", "lr": 0.01, "epochs": 5, "batch_size": 16, "tol": 0, "device": "cpu"}
    tl.fit(a, X, y, **settings)
    tl.fit(b, X, y, clip_grad_norm=0, **settings)
    history = tl.fit(c, X, y, clip_grad_norm=1e9, **settings)
    for p, q, r in zip(a.parameters(), b.parameters(), c.parameters()):
        assert torch.equal(p, q) and torch.equal(p, r)
    assert history.clipped_steps == [0] * 5


def test_clipping_reads_the_device_only_at_checks(monkeypatch):
    X, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    trainer = tl.Trainer(tl.LogisticRegression(4), X, y, epochs=10, check_every=10, batch_size=8, tol=0,
                         clip_grad_norm=1e-3, device="cpu")
    counter = {"n": 0}
    for name in ("item", "__bool__", "tolist"):
        original = getattr(torch.Tensor, name)

        def counting(self, _original=original):
            counter["n"] += 1
            return _original(self)

        monkeypatch.setattr(torch.Tensor, name, counting)
    history = trainer.run()
    monkeypatch.undo()
    assert counter["n"] == 1  # 80 steps, one check: the clip count travels with the check's transfer
    assert history.clipped_steps == [80]


def test_clipping_refuses_a_bad_bound_and_the_cuda_graph():
    with pytest.raises(ValueError, match="clip_grad_norm"):
        tl.LoopConfig(clip_grad_norm=-1.0)
    with pytest.raises(tl.UsageError, match="clip_grad_norm does not combine with cuda_graph"):
        tl.LoopConfig(clip_grad_norm=1.0, cuda_graph=True)


# --- the plateau schedule in the loop -----------------------------------------------------------

def plateau_problem():
    gen = torch.Generator().manual_seed(3)
    X = torch.randn(120, 6, generator=gen, dtype=torch.float64)
    y = (X[:, 0] + 0.8 * torch.randn(120, generator=gen, dtype=torch.float64) > 0).long()
    return X[:80], y[:80], X[80:], y[80:]


PLATEAU = {"schedule": "plateau", "factor": 0.5, "plateau_patience": 1, "threshold": 1e-2, "cooldown": 1,
           "min_lr": 1e-3}


def torch_rates(lr: float, metrics: list[float], epochs: int) -> list[float]:
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=1, threshold=1e-2,
                                                           cooldown=1, min_lr=1e-3)
    rates = [optimizer.param_groups[0]["lr"]]
    for m in metrics[: epochs - 1]:
        scheduler.step(m)
        rates.append(optimizer.param_groups[0]["lr"])
    return rates


@pytest.mark.parametrize("validation", [True, False])
def test_plateau_rates_equal_reduce_lr_on_plateau_fed_the_same_losses(validation):
    X, y, X_val, y_val = plateau_problem()
    held = {"X_val": X_val, "y_val": y_val} if validation else {}
    history = tl.fit(tl.LogisticRegression(6).double(), X, y, solver="momentum", lr=2.0, epochs=40, tol=0,
                     batch_size=16, device="cpu", **held, **PLATEAU)
    metrics = history.val_loss if validation else history.train_objective
    assert len(history.lr) == 40
    assert history.lr == torch_rates(2.0, metrics, 40)  # the same float operations: equal
    assert len(set(history.lr)) > 2


def test_plateau_resumed_equals_uninterrupted():
    X, y, X_val, y_val = plateau_problem()
    settings = {"solver": "momentum", "lr": 2.0, "epochs": 30, "tol": 0, "batch_size": 16, "device": "cpu",
                "X_val": X_val, "y_val": y_val, "clip_grad_norm": 0.05, **PLATEAU}
    whole = tl.LogisticRegression(6).double()
    expected = tl.Trainer(whole, X, y, **settings).run()

    class StopAt(tl.Callback):
        def on_epoch_end(self, state):
            if state.epoch == 13:
                state.stop_reason = "interrupted"

    first = tl.LogisticRegression(6).double()
    trainer = tl.Trainer(first, X, y, callbacks=[StopAt()], **settings)
    trainer.run()
    saved, weights = copy.deepcopy(trainer.state_dict()), copy.deepcopy(first.state_dict())
    second = tl.LogisticRegression(6).double()
    second.load_state_dict(weights)
    resumed = tl.Trainer(second, X, y, **settings)
    resumed.load_state_dict(saved)
    got = resumed.run()
    assert got.lr == expected.lr and len(set(got.lr)) > 2
    assert got.clipped_steps == expected.clipped_steps
    for p, q in zip(whole.parameters(), second.parameters()):
        assert torch.equal(p, q)


def test_plateau_settings_are_checked():
    with pytest.raises(ValueError, match="factor"):
        tl.LoopConfig(schedule="plateau", factor=1.0)
    with pytest.raises(ValueError, match="patience"):
        tl.LoopConfig(schedule="plateau", plateau_patience=-1)


def test_the_train_table_maps_plateau_and_clipping_onto_the_loop():
    from torch_logreg.app.config import load_config
    from torch_logreg.app.fitting import loop_config

    cfg = load_config("configs/xor_mlp.toml", ["train.schedule=plateau", "train.factor=0.5", "train.plateau_patience=3",
                                               "train.threshold=0.01", "train.cooldown=2", "train.min_lr=0.001",
                                               "train.clip_grad_norm=1.5"])
    loop = loop_config(cfg, device="cpu")
    assert (loop.schedule, loop.factor, loop.plateau_patience, loop.threshold, loop.cooldown, loop.min_lr,
            loop.clip_grad_norm) == ("plateau", 0.5, 3, 0.01, 2, 0.001, 1.5)
    assert loop_config(load_config("configs/xor_mlp.toml"), device="cpu").clip_grad_norm == 0.0
    with pytest.raises(tl.UsageError, match="train.factor"):
        load_config("configs/xor_mlp.toml", ["train.factor=1.0"])


@pytest.mark.e2e
def test_train_command_with_plateau_and_clipping(tmp_path, capsys):
    import json

    from helpers import run_cli

    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--config", "configs/xor_mlp.toml", "--run-dir", run_dir, "--quiet",
                           "--set", "train.device=cpu", "--set", "train.epochs=30", "--set", "train.schedule=plateau",
                           "--set", "train.plateau_patience=2", "--set", "train.clip_grad_norm=0.5")
    assert code == 0, err
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 30
