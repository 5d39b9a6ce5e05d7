"""The hand-written loop: agreement with scikit-learn and torch.optim, stopping rules,
reproducibility, periodic gradient checks, callbacks and host syncs."""

import math

import numpy as np
import pytest
import torch

import torch_logreg as tl

from helpers import make_model, make_targets, overfitting_data


def test_nesterov_matches_sklearn_on_breast_cancer(cancer):
    from sklearn.linear_model import LogisticRegression as SkLogReg

    X, y = cancer
    n = X.shape[0]
    # the exact reference: Newton to a gradient of ~1e-13; the loop under test stops at 1e-9
    sk = SkLogReg(C=1.0, tol=1e-10, solver="newton-cholesky").fit(X, y)
    model = tl.LogisticRegression(X.shape[1])
    history = tl.fit(model, X, y, solver="nesterov", lr=1.0, epochs=20_000, l2=1.0 / (1.0 * n),
                     tol=1e-9, device="cpu", dtype="float64")
    assert history.stop_reason == "converged"
    coef = model.linear.weight.detach().numpy()[0]
    rel = np.abs(coef - sk.coef_[0]).max() / np.abs(sk.coef_[0]).max()
    assert rel < 1e-4
    assert model.linear.bias.item() == pytest.approx(sk.intercept_[0], rel=1e-4)


@pytest.mark.slow
def test_softmax_on_digits_approaches_the_exact_optimum():
    """300 Nesterov epochs on digits (float32) against the exact optimum of the same objective
    (Newton, float64): most of the way there in the objective, and as accurate on held-out data."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from torch_logreg.solvers import fit_exact

    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X / 16.0, y, test_size=0.25, stratify=y, random_state=0)
    model = tl.SoftmaxRegression(64, 10)
    history = tl.fit(model, X_tr, y_tr, solver="nesterov", lr=0.5, epochs=300, l2=1e-4, device="cpu")
    exact = tl.SoftmaxRegression(64, 10).double()
    best = fit_exact(exact, X_tr, y_tr, l2=1e-4, tol=1e-10).loss
    start = math.log(10)  # the objective at zero weights
    # 300 epochs close all but ~0.8% of the gap from the start (measured); 5% leaves room for rounding
    assert best < history.train_objective[-1] < best + 0.05 * (start - best)
    acc = (model.predict(torch.as_tensor(X_te, dtype=torch.float32)).numpy() == y_te).mean()
    acc_exact = (exact.predict(torch.as_tensor(X_te)).numpy() == y_te).mean()
    assert acc >= acc_exact - 0.02 and acc >= 0.95  # within 8 of 450 test images of the optimum


@pytest.mark.parametrize("solver", ["gd", "momentum", "nesterov"])
@pytest.mark.parametrize("l2", [0.0, 0.05])
def test_update_rules_match_torch_optim_sgd(solver, l2):
    """Same trajectory as torch.optim.SGD (used here only as a reference)."""
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(64, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 2, (64,), generator=gen)
    ours = tl.LogisticRegression(5).double()
    ref = torch.nn.Linear(5, 1).double()
    with torch.no_grad():
        ref.weight.zero_()
        ref.bias.zero_()
    tl.fit(ours, X, y, solver=solver, lr=0.3, epochs=25, l2=l2, tol=0, device="cpu")
    opt = torch.optim.SGD(ref.parameters(), lr=0.3, momentum=0.0 if solver == "gd" else 0.9,
                          nesterov=solver == "nesterov")
    for _ in range(25):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(ref(X)[:, 0], y.double())
        loss = loss + 0.5 * l2 * (ref.weight ** 2).sum()
        loss.backward()
        opt.step()
    assert torch.allclose(ours.linear.weight, ref.weight, rtol=1e-12, atol=1e-14)
    assert torch.allclose(ours.linear.bias, ref.bias, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("batch_size", [0, 16])
@pytest.mark.parametrize("kind", ["binary", "softmax"])
def test_same_seed_gives_bit_identical_weights(batch_size, kind):
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(100, 4, generator=gen)
    y = make_targets(kind, 100, gen)
    runs = []
    for _ in range(2):
        model = make_model(kind, 4)
        tl.fit(model, X, y, solver="momentum", lr=0.1, epochs=7, batch_size=batch_size, seed=3, device="cpu")
        runs.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_minibatch_order_depends_on_seed_and_changes_each_epoch():
    gen = torch.Generator().manual_seed(2)
    X = torch.randn(50, 3, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 2, (50,), generator=gen)
    orders = []

    class Record(tl.Callback):
        def on_step(self, state):
            orders.append(state.batch_size)

    trainer = tl.Trainer(tl.LogisticRegression(3).double(), X, y, batch_size=20, epochs=2, device="cpu", seed=0)
    # the loop gathers each batch into the same buffers, so keep copies
    first = [b.clone() for b, _ in trainer._batches()]
    second = [b.clone() for b, _ in trainer._batches()]
    assert [len(b) for b in first] == [20, 20, 10]
    assert not torch.equal(first[0], second[0])  # reshuffled between epochs
    w = []
    for seed in (0, 1):
        m = tl.LogisticRegression(3).double()
        tl.fit(m, X, y, batch_size=20, epochs=3, seed=seed, device="cpu", callbacks=[Record()])
        w.append(m.linear.weight.detach().clone())
    assert not torch.equal(w[0], w[1])
    assert orders == [20, 20, 10] * 6


def test_full_batch_minibatch_of_size_n_is_full_batch():
    gen = torch.Generator().manual_seed(3)
    X = torch.randn(30, 3, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 2, (30,), generator=gen)
    a, b = tl.LogisticRegression(3).double(), tl.LogisticRegression(3).double()
    tl.fit(a, X, y, batch_size=0, epochs=5, device="cpu")
    tl.fit(b, X, y, batch_size=30, epochs=5, device="cpu")
    assert torch.equal(a.linear.weight, b.linear.weight)


def test_stops_when_gradient_is_small(cancer):
    X, y = cancer
    history = tl.fit(tl.LogisticRegression(30), X, y, solver="nesterov", lr=0.5, epochs=50_000,
                     l2=0.01, tol=1e-5, device="cpu", dtype="float64")
    assert history.stop_reason == "converged"
    assert history.grad_norm[-1] < 1e-5 <= history.grad_norm[-2]
    assert history.n_epochs < 50_000 and history.n_epochs == history.epochs[-1]


def test_plateau_stops_when_training_loss_stops_falling():
    gen = torch.Generator().manual_seed(4)
    X = torch.randn(200, 2, generator=gen, dtype=torch.float64)
    y = (X[:, 0] + 0.5 * torch.randn(200, generator=gen, dtype=torch.float64) > 0).long()
    history = tl.fit(tl.LogisticRegression(2).double(), X, y, lr=0.5, epochs=100_000, tol=0,
                     patience=5, min_delta=1e-9, device="cpu")
    assert history.stop_reason == "plateau"
    assert history.n_epochs < 100_000
    # replay the rule on the recorded losses: it must fire at the last epoch and not before
    best, bad, fired = math.inf, 0, None
    for epoch, loss in zip(history.epochs, history.train_objective):
        if loss < best - 1e-9:
            best, bad = loss, 0
        else:
            bad += 1
            if bad >= 5:
                fired = epoch
                break
    assert fired == history.n_epochs == history.epochs[-1]
    assert history.train_objective[history.epochs.index(history.best_epoch)] == best


def test_early_stopping_restores_best_weights():
    """Overfit a tiny noisy training set; the held-out loss turns up and the best is kept."""
    X, y, Xv, yv = overfitting_data()
    model = tl.LogisticRegression(40).double()
    history = tl.fit(model, X, y, lr=0.5, epochs=5000, tol=0, patience=10, X_val=Xv, y_val=yv, device="cpu")
    assert history.stop_reason == "early_stopping"
    assert min(history.val_loss) < history.val_loss[-1]
    best = history.epochs.index(history.best_epoch)
    assert history.val_loss[best] == min(history.val_loss)
    T = model.targets(yv, 500)
    assert model.objective(Xv, T).item() == pytest.approx(history.val_loss[best], rel=1e-12)


def test_grad_check_every_records_and_raises():
    gen = torch.Generator().manual_seed(6)
    X = torch.randn(40, 3, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=gen)
    history = tl.fit(tl.SoftmaxRegression(3, 3).double(), X, y, epochs=3, batch_size=10,
                     grad_check_every=4, device="cpu")
    assert [s for s, _ in history.grad_checks] == [0, 4, 8]
    assert 0 <= history.grad_check_max_rel_error < 1e-6  # finite differences dominate

    model = tl.SoftmaxRegression(3, 3).double()
    original = model.linear.backward

    def broken(grad_output, need_input_grad=True):
        out = original(grad_output, need_input_grad)
        model.linear.grads["bias"] = model.linear.grads["bias"] + 1e-3
        return out

    model.linear.backward = broken
    with pytest.raises(tl.GradientCheckFailed, match="linear.bias"):
        tl.fit(model, X, y, epochs=3, grad_check_every=2, device="cpu")


def test_callbacks_see_each_step_epoch_and_end_and_can_stop():
    calls = []

    class Spy(tl.Callback):
        def on_train_begin(self, state):
            calls.append("begin")

        def on_step(self, state):
            calls.append(("step", state.step))
            assert state.loss.dim() == 0 and "linear.weight" in state.grads

        def on_epoch_end(self, state):
            calls.append(("epoch", state.epoch, state.checked))
            if state.epoch == 3:
                state.stop_reason = "interrupted"

        def on_train_end(self, state):
            calls.append(("end", state.stop_reason))

    X = torch.randn(10, 2)
    y = torch.randint(0, 2, (10,))
    history = tl.fit(tl.LogisticRegression(2), X, y, epochs=10, batch_size=5, check_every=2,
                     device="cpu", callbacks=[Spy()])
    assert calls == ["begin", ("step", 1), ("step", 2), ("epoch", 1, False), ("step", 3), ("step", 4),
                     ("epoch", 2, True), ("step", 5), ("step", 6), ("epoch", 3, False), ("end", "interrupted")]
    assert history.stop_reason == "interrupted" and history.n_epochs == 3 and history.n_steps == 6


def test_divergence_raises_and_keeps_last_finite_weights():
    gen = torch.Generator().manual_seed(8)
    X = torch.randn(50, 3, generator=gen, dtype=torch.float64) * 1e3
    y = torch.randn(50, generator=gen, dtype=torch.float64) * 1e3
    model = tl.LinearRegression(3).double()
    finite = []

    class LastFinite(tl.Callback):
        def on_epoch_end(self, state):
            if state.checked and math.isfinite(state.train_loss):
                finite.append([p.detach().clone() for p in model.parameters()])

    with pytest.raises(tl.TrainingDiverged, match="smaller learning rate") as info:
        tl.fit(model, X, y, lr=10.0, epochs=1000, device="cpu", callbacks=[LastFinite()])
    assert info.value.history.stop_reason == "diverged"
    assert len(finite) >= 2, "diverged before the weights moved"
    assert any(p.abs().max() > 0 for p in finite[-1])
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), finite[-1]))


def test_host_syncs_happen_only_at_checks(monkeypatch):
    """Reading values back (.item(), bool(tensor)) scales with the checks, not the steps."""
    X = torch.randn(64, 4)
    y = torch.randint(0, 2, (64,))
    counter = {"n": 0}
    item, as_bool, tolist = torch.Tensor.item, torch.Tensor.__bool__, torch.Tensor.tolist

    def counting_item(self):
        counter["n"] += 1
        return item(self)

    def counting_bool(self):
        counter["n"] += 1
        return as_bool(self)

    def counting_tolist(self):
        counter["n"] += 1
        return tolist(self)

    def syncs(epochs, check_every, batch_size):
        trainer = tl.Trainer(tl.LogisticRegression(4), X, y, epochs=epochs, check_every=check_every,
                             batch_size=batch_size, tol=0, device="cpu")
        monkeypatch.setattr(torch.Tensor, "item", counting_item)
        monkeypatch.setattr(torch.Tensor, "__bool__", counting_bool)
        monkeypatch.setattr(torch.Tensor, "tolist", counting_tolist)
        counter["n"] = 0
        trainer.run()
        monkeypatch.undo()
        return counter["n"]

    per_check = syncs(10, 10, 8)  # one check, 80 steps
    assert per_check == 1  # loss, gradient norm and parameter health in one transfer
    assert syncs(20, 10, 8) == 2 * per_check  # 160 steps, two checks
    assert syncs(20, 10, 0) == 2 * per_check  # 20 full-batch steps, two checks


def test_history_round_trips_through_dict():
    X = torch.randn(20, 2)
    y = torch.randint(0, 2, (20,))
    history = tl.fit(tl.LogisticRegression(2), X, y, epochs=4, grad_check_every=2, device="cpu")
    again = tl.History.from_dict(history.to_dict())
    assert again == history
    assert math.isfinite(again.wall_time)


def test_regression_reaches_least_squares_solution():
    gen = torch.Generator().manual_seed(7)
    X = torch.randn(200, 3, generator=gen, dtype=torch.float64)
    y = X @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + 0.3
    model = tl.LinearRegression(3).double()
    history = tl.fit(model, X, y, solver="nesterov", lr=0.3, epochs=5000, tol=1e-12, device="cpu")
    assert history.stop_reason == "converged"
    assert torch.allclose(model.linear.weight[0], torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64), atol=1e-10)
    assert model.linear.bias.item() == pytest.approx(0.3, abs=1e-10)


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize("batch_size", [0, 25])
def test_history_tells_the_objective_from_the_loss(fast_path, batch_size):
    """train_objective is what the steps minimised (mean NLL + l2 penalty at the weights each step
    used); train_loss is the mean NLL alone, comparable with val_loss."""
    gen = torch.Generator().manual_seed(11)
    X = torch.randn(100, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (100,), generator=gen)
    model = tl.SoftmaxRegression(4, 3).double()
    with torch.no_grad():
        model.linear.weight.copy_(torch.randn(3, 4, generator=gen, dtype=torch.float64))
    start = [p.detach().clone() for p in model.parameters()]
    T = model.targets(y, 100)
    trainer = tl.Trainer(model, X, y, lr=0.1, epochs=1, l2=0.3, batch_size=batch_size, fast_path=fast_path,
                         tol=0, device="cpu", X_val=X, y_val=y)
    history = trainer.run()
    # replay the epoch: each step's objective and loss at the weights it used, weighted by its rows
    replay = tl.SoftmaxRegression(4, 3).double()
    with torch.no_grad():
        for p, q in zip(replay.parameters(), start):
            p.copy_(q)
    order = torch.Generator().manual_seed(0)
    perm = torch.arange(100) if not batch_size else torch.randperm(100, generator=order)
    objective = loss = 0.0
    for s in range(0, 100, batch_size or 100):
        idx = perm[s : s + (batch_size or 100)]
        f, grads = replay.objective_and_grad(X[idx], T[idx], 0.3)
        objective += f.item() * len(idx) / 100
        loss += replay.objective(X[idx], T[idx]).item() * len(idx) / 100
        with torch.no_grad():
            for name, p in replay.named_parameters():
                p.sub_(0.1 * grads[name])
    assert history.train_objective[0] == pytest.approx(objective, rel=1e-12)
    assert history.train_loss[0] == pytest.approx(loss, rel=1e-12)
    assert history.train_objective[0] > history.train_loss[0]
    assert history.val_loss[0] == pytest.approx(model.objective(X, T).item(), rel=1e-12)


@pytest.mark.parametrize("kind", ["binary", "softmax"])
def test_a_logistic_objective_that_explodes_is_divergence(kind):
    """A classifier's objective grows only linearly in the weights: with lr = 1e6 it climbs to
    thousands without overflowing, which used to end as a normal run. Past EXPLODED times its
    first value it is divergence: the last good weights are kept."""
    from torch_logreg.train import EXPLODED

    gen = torch.Generator().manual_seed(3)
    X = torch.randn(200, 5, generator=gen, dtype=torch.float64)
    y = make_targets(kind, 200, gen)
    model = make_model(kind, 5).double()
    kept = []

    class LastGood(tl.Callback):
        def on_epoch_end(self, state):
            if state.checked and state.train_objective <= EXPLODED * max(state.history.train_objective[0], 1):
                kept.append([p.detach().clone() for p in model.parameters()])

    with pytest.raises(tl.TrainingDiverged, match="the objective became") as info:
        tl.fit(model, X, y, lr=1e6, epochs=100, tol=0, device="cpu", callbacks=[LastGood()])
    history = info.value.history
    assert history.stop_reason == "diverged" and history.n_epochs < 100
    assert history.train_objective[-1] > EXPLODED * max(history.train_objective[0], 1)
    assert kept and all(torch.equal(p, q) for p, q in zip(model.parameters(), kept[-1]))


def test_the_config_form_and_the_keyword_form_train_alike():
    """``Trainer(model, TrainingData, LoopConfig)`` is what ``fit``'s keywords make: the same weights,
    bit for bit; an unknown setting is a TypeError naming it, a hyper-parameter the rule does not
    take an error when the config is made."""
    g = torch.Generator().manual_seed(3)
    X = torch.randn(120, 4, generator=g, dtype=torch.float64)
    y = (X[:, 0] - X[:, 1] > 0).long()
    a, b = tl.LogisticRegression(4).double(), tl.LogisticRegression(4).double()
    b.load_state_dict(a.state_dict())
    settings = dict(solver="adam", lr=0.05, epochs=5, batch_size=16, l2=0.01, device="cpu")
    tl.fit(a, X, y, **settings)
    history = tl.Trainer(b, tl.TrainingData(X, y), tl.LoopConfig(**settings)).run()
    assert history.n_epochs == 5 and all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    with pytest.raises(TypeError, match="unknown loop setting 'learning_rate'"):
        tl.fit(tl.LogisticRegression(4), X, y, learning_rate=0.1)
    with pytest.raises(tl.UsageError, match="solver='gd' takes no betas"):
        tl.LoopConfig(betas=(0.5, 0.5))
    with pytest.raises(tl.UsageError, match="X_val and y_val must be given together"):
        tl.TrainingData(X, y, X_val=X)
