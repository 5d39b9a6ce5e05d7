"""Sample weights in the hand-written loop: full batch and mini-batch, dense and sparse, in memory
and streamed. The objective is fit_exact's, ``(1/N) sum_n w_n loss_n`` (a mini-batch's
``(1/B) sum_b w_b loss_b``); each path is compared with an exact reference: the weighted optimum
of the exact solver, a loop written out here step by step, or the same run on repeated rows."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import torch_logreg as tl
from torch_logreg.errors import UsageError

from conftest import DEVICES
from helpers import KINDS, make_model, make_targets, max_gradient


def problem(kind: str, n: int = 120, d: int = 5, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = make_targets(kind, n, gen)
    w = torch.rand(n, generator=gen, dtype=torch.float64) * 3
    w[::7] = 0.0  # some rows count for nothing
    return X, y, w


def params(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize("kind", KINDS)
def test_full_batch_reaches_the_weighted_optimum(kind):
    X, y, w = problem(kind)
    model = make_model(kind, X.shape[1]).double()
    history = tl.fit(model, X, y, sample_weight=w, solver="nesterov", lr=0.3, epochs=20_000, tol=1e-11, l2=0.01,
                     device="cpu")
    assert history.stop_reason == "converged"
    # the optimality condition of the weighted objective itself, and the exact solver's optimum
    assert max_gradient(model, X, y, 0.01, sample_weight=w) <= 1e-10
    exact = make_model(kind, X.shape[1]).double()
    tl.fit_exact(exact, X, y, sample_weight=w, l2=0.01, tol=1e-13)
    assert (params(model) - params(exact)).abs().max() <= 1e-8


def test_integer_weights_equal_repeated_rows_on_the_full_batch():
    X, y, _ = problem("binary")
    counts = torch.randint(1, 4, (X.shape[0],), generator=torch.Generator().manual_seed(1))
    # (1/N) sum w_n loss_n with w = c N / sum(c) is the mean loss over the repeated rows
    w = counts.double() * X.shape[0] / counts.sum()
    a, b = tl.LogisticRegression(5).double(), tl.LogisticRegression(5).double()
    b.load_state_dict(a.state_dict())
    ha = tl.fit(a, X, y, sample_weight=w, lr=0.5, epochs=40, tol=0, device="cpu", step="reference")
    hb = tl.fit(b, X.repeat_interleave(counts, 0), y.repeat_interleave(counts), lr=0.5, epochs=40, tol=0, device="cpu",
                step="reference")
    assert (params(a) - params(b)).abs().max() <= 1e-12
    assert np.allclose(ha.train_loss, hb.train_loss, rtol=1e-12, atol=0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sparse", [False, True])
def test_mini_batches_follow_a_loop_written_out(kind, sparse):
    X, y, w = problem(kind)
    start = make_model(kind, X.shape[1]).double()
    model = make_model(kind, X.shape[1]).double()
    model.load_state_dict(start.state_dict())
    Xin = sp.csr_matrix(X.numpy()) if sparse else X
    tl.fit(model, Xin, y, sample_weight=w, batch_size=32, lr=0.2, epochs=3, tol=0, l2=0.05, seed=4, device="cpu")
    # the reference: the Trainer's permutation, each batch's weighted objective_and_grad, plain gd
    ref = start
    T = ref.targets(y, X.shape[0])
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for _ in range(3):
            perm = torch.randperm(X.shape[0], generator=gen)
            for s in range(0, X.shape[0], 32):
                idx = perm[s : s + 32]
                _, grads = ref.objective_and_grad(X[idx], T[idx], 0.05, w[idx])
                for name, p in ref.named_parameters():
                    p -= 0.2 * grads[name]
    assert (params(model) - params(ref)).abs().max() <= 1e-12


def test_doubled_weights_at_half_the_rate_are_the_same_run():
    X, y, w = problem("softmax")
    a, b = make_model("softmax", 5).double(), make_model("softmax", 5).double()
    b.load_state_dict(a.state_dict())
    tl.fit(a, X, y, sample_weight=w, batch_size=16, lr=0.2, epochs=4, tol=0, device="cpu")
    tl.fit(b, X, y, sample_weight=2 * w, batch_size=16, lr=0.1, epochs=4, tol=0, device="cpu")
    assert (params(a) - params(b)).abs().max() <= 1e-12


def test_streamed_batches_carry_their_rows_weights(tmp_path):
    X, y, w = problem("binary", n=150)
    np.save(tmp_path / "X.npy", X.numpy())
    np.save(tmp_path / "y.npy", y.numpy())
    a, b = tl.LogisticRegression(5).double(), tl.LogisticRegression(5).double()
    b.load_state_dict(a.state_dict())
    common = dict(sample_weight=w, batch_size=32, lr=0.3, epochs=3, tol=0, seed=2, device="cpu", dtype="float64")
    tl.fit(a, X, y, **common)
    tl.fit_streaming(b, tmp_path / "X.npy", tmp_path / "y.npy", memory_budget_bytes=1 << 20, **common)
    assert (params(a) - params(b)).abs().max() <= 1e-12


@pytest.mark.parametrize("kwargs,message", [
    (dict(grad_check_every=1), "do not combine with gradient checks"),
    (dict(batch_size=16, step="row_major"), "does not take sample weights on mini-batches"),
    (dict(step="feature_major"), "sample weights"),
])
def test_what_weights_do_not_combine_with_is_refused(kwargs, message):
    X, y, w = problem("binary")
    with pytest.raises(UsageError, match=message):
        tl.Trainer(tl.LogisticRegression(5).double(), X, y, sample_weight=w, device="cpu", **kwargs)


@pytest.mark.parametrize("bad,message", [
    (-torch.ones(120), "non-negative"), (torch.zeros(120), "sums to zero"), (torch.ones(7), r"shape \(120,\)"),
    (torch.full((120,), float("nan")), "non-finite"),
])
def test_bad_weights_are_refused(bad, message):
    X, y, _ = problem("binary")
    with pytest.raises(UsageError, match=message):
        tl.Trainer(tl.LogisticRegression(5).double(), X, y, sample_weight=bad, device="cpu")


@pytest.mark.parametrize("device", DEVICES)
def test_weighted_training_on_each_device_matches_the_cpu(device):
    X, y, w = problem("softmax")
    a, b = make_model("softmax", 5).double(), make_model("softmax", 5).double()
    b.load_state_dict(a.state_dict())
    tl.fit(a, X, y, sample_weight=w, batch_size=40, lr=0.2, epochs=3, tol=0, device="cpu")
    tl.fit(b, X, y, sample_weight=w, batch_size=40, lr=0.2, epochs=3, tol=0, device=device)
    assert (params(a) - params(b).cpu()).abs().max() <= 1e-10
