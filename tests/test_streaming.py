"""Out-of-core training from a memory-mapped .npy file."""

import numpy as np
import pytest
import torch

import torch_logreg as tl
from torch_logreg.streaming import BatchStreamer, StreamingTrainer, fit_streaming

from helpers import overfitting_data


def _data(n=3000, d=12, k=None, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    w = rng.standard_normal((d, k or 1))
    z = X @ w + 0.3 * rng.standard_normal((n, k or 1))
    y = (z[:, 0] > 0).astype(np.int64) if k is None else z.argmax(axis=1)
    return X, y


def _files(tmp_path, X, y):
    xp, yp = tmp_path / "X.npy", tmp_path / "y.npy"
    np.save(xp, X)
    np.save(yp, y)
    return xp, yp


KW = dict(lr=0.3, epochs=4, batch_size=128, tol=0.0, seed=7, device="cpu", dtype="float64")


@pytest.mark.parametrize("solver", ["gd", "nesterov"])
def test_streamed_run_equals_in_memory_run(tmp_path, solver):
    X, y = _data()
    xp, yp = _files(tmp_path, X, y)
    ref = tl.LogisticRegression(X.shape[1])
    ref_hist = tl.Trainer(ref, X, y, solver=solver, **KW).run()

    model = tl.LogisticRegression(X.shape[1])
    budget = X.nbytes // 8  # the file is 8x the budget
    # bit for bit needs the in-memory loop's thread count (by default one thread goes to the reader)
    trainer = StreamingTrainer(model, xp, yp, memory_budget_bytes=budget, solver=solver,
                               compute_threads=torch.get_num_threads(), **KW)
    hist = trainer.run()

    assert trainer.file_bytes > budget
    assert isinstance(trainer.X, np.memmap)
    for name, p in ref.named_parameters():
        assert torch.equal(p, dict(model.named_parameters())[name]), name
    assert hist.train_loss == ref_hist.train_loss
    assert hist.grad_norm == ref_hist.grad_norm
    assert hist.n_steps == ref_hist.n_steps == 4 * int(np.ceil(3000 / 128))


def test_softmax_float32_file_cast_to_float64_matches(tmp_path):
    X, y = _data(n=4000, d=8, k=4, dtype=np.float32)
    xp, yp = _files(tmp_path, X, y)
    ref = tl.SoftmaxRegression(8, 4)
    tl.Trainer(ref, X, y, **KW).run()  # X is cast to float64 in memory
    model = tl.SoftmaxRegression(8, 4)
    # The float32 -> float64 cast is exact, so the file-cast path must give the in-memory run's numbers bit for
    # bit; that needs the same torch thread count in both loops (the streamed one leaves a thread to the reader).
    trainer = StreamingTrainer(model, xp, yp, memory_budget_bytes=40_000, compute_threads=torch.get_num_threads(),
                               **KW)
    trainer.run()
    assert trainer.file_bytes > 40_000
    assert trainer.streamer.staging_bytes > 0  # the float32 -> float64 staging buffer is counted
    assert isinstance(trainer.X, np.memmap) and trainer.X.dtype == np.float32  # the file is read as float32
    assert torch.equal(ref.linear.weight, model.linear.weight)
    assert torch.equal(ref.linear.bias, model.linear.bias)


def test_buffers_never_exceed_the_budget(tmp_path, monkeypatch):
    X, y = _data(n=4000, d=16)
    xp, yp = _files(tmp_path, X, y)
    budget = 40_000  # the file is 512,000 bytes
    seen = []
    original = BatchStreamer._account

    def spy(self, delta):
        original(self, delta)
        seen.append(self.bytes_in_use + self.staging_bytes)

    monkeypatch.setattr(BatchStreamer, "_account", spy)
    model = tl.LogisticRegression(16)
    trainer = StreamingTrainer(model, xp, yp, memory_budget_bytes=budget, batch_size=100, prefetch=8,
                               lr=0.1, epochs=2, tol=0.0, device="cpu", dtype="float64")
    assert trainer.file_bytes > 10 * budget
    trainer.run()
    s = trainer.streamer
    # 100 rows x (16 + 1) x 8 bytes = 13,600 per slot: only two slots fit, so prefetch drops to 1
    assert s.slot_bytes == 13_600 and s.n_slots == 2 and trainer.prefetch == 1
    assert 0 < s.allocated_bytes <= budget
    assert seen and max(seen) <= budget
    assert s.peak_bytes_in_use <= budget
    assert s.bytes_in_use == 0  # every slot handed back at the end of the epoch
    held = sum(t.numel() * t.element_size() for pair in s._slots for t in pair)
    assert held + (0 if s._staging is None else s._staging.nbytes) <= budget


def test_blocks_order_is_deterministic_and_reads_contiguous_batches(tmp_path):
    X, y = _data(n=1000, d=5)
    xp, yp = _files(tmp_path, X, y)
    weights = []
    for _ in range(2):
        model = tl.LogisticRegression(5)
        tr = StreamingTrainer(model, xp, yp, memory_budget_bytes=20_000, order="blocks", **KW)
        plan = tr._plan()
        assert all(isinstance(p, slice) for p in plan)
        assert sorted(p.start for p in plan) == list(range(0, 1000, 128))
        tr.generator.manual_seed(KW["seed"])
        tr.run()
        weights.append(model.linear.weight.clone())
    assert torch.equal(weights[0], weights[1])


def test_fit_streaming_learns(tmp_path):
    X, y = _data(n=2000, d=6)
    xp, yp = _files(tmp_path, X, y)
    kw = dict(solver="momentum", batch_size=64, lr=0.5, epochs=3, tol=0.0, seed=11, device="cpu", dtype="float64")
    ref = tl.LogisticRegression(6)
    ref_hist = tl.Trainer(ref, X, y, **kw).run()
    model = tl.LogisticRegression(6)
    # string paths through fit_streaming, default compute_threads (one thread fewer than the in-memory loop)
    hist = fit_streaming(model, str(xp), str(yp), memory_budget_bytes=30_000, **kw)
    assert hist.n_steps == ref_hist.n_steps == 3 * int(np.ceil(2000 / 64))
    # order="permutation" streams the in-memory run's batches; a different thread count changes only how the
    # sums are split, ~1e-16 per step over ~100 contractive steps, so 1e-12 leaves room and still catches any
    # wrong, missing or reordered batch (those move the weights by > 1e-4)
    for name, p in ref.named_parameters():
        q = dict(model.named_parameters())[name]
        assert ((p - q).abs().max() / p.abs().max()).item() <= 1e-12, name
    assert hist.train_loss == pytest.approx(ref_hist.train_loss, rel=1e-12)  # same reasoning as the weights
    acc = (model.predict(torch.from_numpy(X)).numpy() == y).mean()
    assert acc > 0.9  # and it learned: the labels follow a linear rule with little noise


def test_validation_data_and_early_stopping_work(tmp_path):
    """60 noisy training rows of 40 features overfit: the held-out loss turns up and the best weights come back."""
    X, y, Xv, yv = overfitting_data()
    xp, yp = _files(tmp_path, X.numpy(), y.numpy())
    model = tl.LogisticRegression(40)
    budget, patience = 2000, 5
    trainer = StreamingTrainer(model, xp, yp, memory_budget_bytes=15_000, batch_size=20, lr=0.1, epochs=budget,
                               patience=patience, X_val=Xv, y_val=yv, device="cpu", dtype="float64", tol=0.0)
    hist = trainer.run()
    assert trainer.file_bytes > 15_000  # streamed, not held whole
    assert hist.stop_reason == "early_stopping"
    assert len(hist.val_loss) == hist.n_epochs < budget
    assert hist.n_epochs == hist.best_epoch + patience  # stopped after `patience` epochs without improvement
    best = hist.epochs.index(hist.best_epoch)
    assert 0 < best and hist.val_loss[best] == min(hist.val_loss) < hist.val_loss[-1]
    # the best weights are restored: the model's validation objective is the best epoch's. The check computed it on
    # the same tensors with the same weights; 1e-12 only allows for a different reduction split, while the last
    # epoch's weights give a val loss higher by > 1e-3
    T = model.targets(yv, 500)
    assert model.objective(Xv, T).item() == pytest.approx(hist.val_loss[best], rel=1e-12)


def test_errors(tmp_path):
    X, y = _data(n=200, d=4)
    xp, yp = _files(tmp_path, X, y)
    with pytest.raises(ValueError, match="too small"):
        StreamingTrainer(tl.LogisticRegression(4), xp, yp, memory_budget_bytes=1000, batch_size=100)
    with pytest.raises(ValueError, match="features"):
        StreamingTrainer(tl.LogisticRegression(5), xp, yp, memory_budget_bytes=10_000, batch_size=10)
    with pytest.raises(FileNotFoundError):
        StreamingTrainer(tl.LogisticRegression(4), tmp_path / "nope.npy", yp, memory_budget_bytes=10_000)
    with pytest.raises(ValueError, match="order"):
        StreamingTrainer(tl.LogisticRegression(4), xp, yp, memory_budget_bytes=10_000, order="random")
    bad = X.copy()
    bad[150, 2] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(ValueError, match="row 150"):
        StreamingTrainer(tl.LogisticRegression(4), tmp_path / "bad.npy", yp, memory_budget_bytes=2000, batch_size=10)
    ybad = y.copy()
    ybad[120] = 3
    with pytest.raises(ValueError, match="0 or 1"):
        StreamingTrainer(tl.LogisticRegression(4), xp, ybad, memory_budget_bytes=2000, batch_size=10)


def test_reader_error_reaches_the_loop_and_the_thread_stops(tmp_path):
    X, y = _data(n=300, d=4)
    xp, yp = _files(tmp_path, X, y)
    model = tl.LogisticRegression(4)
    tr = StreamingTrainer(model, xp, yp, memory_budget_bytes=10_000, batch_size=10, validate=False, lr=0.1,
                          epochs=1, device="cpu", dtype="float64")
    tr.y = np.full(300, 5)  # invalid labels the up-front check did not see
    tr.streamer.y = tr.y
    with pytest.raises(ValueError, match="0 or 1"):
        tr.run()
    assert tr.streamer.bytes_in_use == 0


def test_streamed_run_with_a_thread_for_the_reader_matches_closely(tmp_path):
    gen = torch.Generator().manual_seed(3)
    X = torch.randn(20000, 50, generator=gen, dtype=torch.float64)
    y = (X[:, 0] + 0.3 * torch.randn(20000, generator=gen, dtype=torch.float64) > 0).long()
    xp, yp = _files(tmp_path, X.numpy(), y.numpy())
    kw = dict(KW, batch_size=4096)
    ref = tl.LogisticRegression(50)
    tl.Trainer(ref, X, y, **kw).run()
    before = torch.get_num_threads()
    seen = []

    class Threads(tl.Callback):
        def on_step(self, state):
            seen.append(torch.get_num_threads())

    model = tl.LogisticRegression(50)
    StreamingTrainer(model, xp, yp, memory_budget_bytes=X.numel() * 8 // 2, callbacks=[Threads()], **kw).run()
    assert torch.get_num_threads() == before  # restored
    assert set(seen) == {max(1, before - 1)}
    for p, q in zip(ref.parameters(), model.parameters()):
        assert ((p - q).abs().max() / p.abs().max()).item() <= 1e-12
    with pytest.raises(ValueError, match="compute_threads"):
        StreamingTrainer(tl.LogisticRegression(50), xp, yp, memory_budget_bytes=1 << 30, compute_threads=0, **kw)


@pytest.mark.parametrize("weighted", [False, True])
def test_a_subset_of_rows_with_a_transform_equals_the_in_memory_run_on_those_rows(tmp_path, weighted):
    """``rows`` (a training split) and ``transform`` (a standardizer) streamed from the whole file
    give the in-memory run on ``transform(X[rows])``, bit for bit in float64."""
    X, y = _data(n=2000)
    X[:, 3] = X[:, 3] * 50 + 7
    xp, yp = _files(tmp_path, X, y)
    rows = np.random.default_rng(1).permutation(2000)[:1300]
    mean, scale = X[rows].mean(0), X[rows].std(0)

    def transform(t):
        return (t - torch.from_numpy(mean)) / torch.from_numpy(scale)

    w = np.random.default_rng(2).uniform(0.2, 3.0, size=len(rows)) if weighted else None
    ref = tl.LogisticRegression(X.shape[1])
    tl.Trainer(ref, transform(torch.from_numpy(X[rows])), y[rows], solver="nesterov", sample_weight=w, **KW).run()
    model = tl.LogisticRegression(X.shape[1])
    trainer = StreamingTrainer(model, xp, yp, memory_budget_bytes=X.nbytes // 2, rows=rows, transform=transform,
                               solver="nesterov", sample_weight=w, compute_threads=torch.get_num_threads(), **KW)
    hist = trainer.run()
    assert trainer.n_samples == 1300 and hist.n_steps == 4 * int(np.ceil(1300 / 128))
    for name, p in ref.named_parameters():
        assert torch.equal(p, dict(model.named_parameters())[name]), name


def test_rows_outside_the_file_are_refused(tmp_path):
    X, y = _data(n=100)
    xp, yp = _files(tmp_path, X, y)
    for rows in ([], [0, 100], [-1]):
        with pytest.raises(tl.UsageError, match="rows must be"):
            StreamingTrainer(tl.LogisticRegression(12), xp, yp, memory_budget_bytes=1 << 20, rows=rows, **KW)
