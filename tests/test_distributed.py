"""Data-parallel training under torchrun (gloo, two CPU processes) against one process."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import torch_logreg as tl
from torch_logreg.distributed import shard_bounds

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    import torch_logreg as tl
    from torch_logreg.distributed import DistributedTrainer, cleanup, init_distributed, is_rank0
    from test_distributed import _data as data  # the same rows as the one-process reference
    from test_distributed import _weights as weights

    info = init_distributed()
    assert info.backend == "gloo" and info.world_size == 2
    X, y, ys = data()
    out = {"rank": info.rank}

    # full batch, binary, nesterov with l2: compared with one process
    model = tl.LogisticRegression(7)
    tr = DistributedTrainer(model, X, y, solver="nesterov", lr=0.5, epochs=40, l2=1e-3, tol=0.0, dtype="float64")
    h = tr.run()
    out["full"] = {"weight": model.linear.weight.tolist(), "bias": model.linear.bias.tolist(),
                   "train_loss": h.train_loss, "grad_norm": h.grad_norm, "local_n": tr.local_n}

    # full batch, sample-weighted: each rank keeps its rows' weights
    wm = tl.LogisticRegression(7)
    DistributedTrainer(wm, X, y, sample_weight=weights(), lr=0.5, epochs=30, tol=0.0, dtype="float64").run()
    out["weighted"] = {"weight": wm.linear.weight.tolist(), "bias": wm.linear.bias.tolist()}

    # full batch softmax, gd
    sm = tl.SoftmaxRegression(7, 3)
    h = DistributedTrainer(sm, X, ys, lr=0.5, epochs=25, tol=0.0, dtype="float64").run()
    out["softmax"] = {"weight": sm.linear.weight.tolist(), "bias": sm.linear.bias.tolist()}

    # mini-batches with uneven steps per rank (102 vs 101 rows, batch 34 -> 3 steps each; batch 51 -> 2 vs 2;
    # batch 101 -> 2 vs 1), stopping on a plateau: every rank must stop at the same epoch with equal weights
    mb = tl.LogisticRegression(7)
    tr = DistributedTrainer(mb, X, y, lr=0.2, epochs=200, batch_size=101, patience=3, min_delta=1e-3, tol=0.0,
                            dtype="float64", seed=3)
    h = tr.run()
    out["mb"] = {"weight": mb.linear.weight.tolist(), "bias": mb.linear.bias.tolist(), "epochs": h.n_epochs,
                 "stop": h.stop_reason, "steps": tr.steps_per_epoch, "train_loss": h.train_loss,
                 "local_n": tr.local_n, "batch_size": tr.batch_size}
    with open(sys.argv[1] + f".{info.rank}.json", "w") as f:
        json.dump(out, f)
    cleanup()
    """
)


def _rel(a, b):
    a, b = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture(scope="module")
def torchrun_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    script = tmp / "dp_script.py"
    script.write_text(SCRIPT)
    torchrun = Path(sys.executable).with_name("torchrun")
    launcher = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
    cmd = [*launcher,
           "--nproc_per_node=2", "--standalone", str(script), str(tmp / "out")]
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path)
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [json.loads((tmp / f"out.{r}.json").read_text()) for r in (0, 1)]


def _data():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(203, 7, generator=g, dtype=torch.float64)
    y = (X @ torch.randn(7, generator=g, dtype=torch.float64) + 0.5 * torch.randn(203, generator=g,
         dtype=torch.float64) > 0).long()
    ys = (X @ torch.randn(7, 3, generator=g, dtype=torch.float64)).argmax(1)
    return X, y, ys


def _weights():
    return torch.rand(203, generator=torch.Generator().manual_seed(9), dtype=torch.float64) * 2


@pytest.mark.e2e
def test_full_batch_matches_one_process(torchrun_results):
    X, y, _ = _data()
    ref = tl.LogisticRegression(7)
    h = tl.fit(ref, X, y, solver="nesterov", lr=0.5, epochs=40, l2=1e-3, tol=0.0, device="cpu", dtype="float64")
    assert [r["full"]["local_n"] for r in torchrun_results] == [102, 101]
    for r in torchrun_results:
        assert _rel(r["full"]["weight"], ref.linear.weight.tolist()) <= 1e-10
        assert _rel(r["full"]["bias"], ref.linear.bias.tolist()) <= 1e-10
        assert _rel(r["full"]["train_loss"], h.train_loss) <= 1e-10
        assert _rel(r["full"]["grad_norm"], h.grad_norm) <= 1e-10


@pytest.mark.e2e
def test_sample_weights_match_one_process(torchrun_results):
    X, y, _ = _data()
    ref = tl.LogisticRegression(7)
    tl.fit(ref, X, y, sample_weight=_weights(), lr=0.5, epochs=30, tol=0.0, device="cpu", dtype="float64")
    for r in torchrun_results:
        assert _rel(r["weighted"]["weight"], ref.linear.weight.tolist()) <= 1e-10
        assert _rel(r["weighted"]["bias"], ref.linear.bias.tolist()) <= 1e-10


@pytest.mark.e2e
def test_full_batch_softmax_matches_one_process(torchrun_results):
    X, _, ys = _data()
    ref = tl.SoftmaxRegression(7, 3)
    tl.fit(ref, X, ys, lr=0.5, epochs=25, tol=0.0, device="cpu", dtype="float64")
    for r in torchrun_results:
        assert _rel(r["softmax"]["weight"], ref.linear.weight.tolist()) <= 1e-10
        assert _rel(r["softmax"]["bias"], ref.linear.bias.tolist()) <= 1e-10


MB = dict(world=2, batch_size=101, lr=0.2, seed=3)  # the mini-batch run in SCRIPT


def _replay_mini_batches(n_epochs):
    """The distributed mini-batch run replayed in one process with torch.optim.SGD and autograd.

    As DistributedTrainer does: rank r keeps rows shard_bounds(n, r, world); its Trainer clips batch_size to its
    row count and then yields its whole shard as one batch without drawing a permutation, else draws
    randperm(local_n) from its own generator (seeded with seed) each epoch and cuts it into batch_size runs. Every
    epoch has as many steps as the rank with the most batches; a rank out of batches adds an empty one (weight 0).
    Step k descends the mean loss over the union of the ranks' k-th batches (weights n_r / B). Returns the final
    (weight, bias) and each epoch's global mean of the step losses weighted by the step's rows.
    """
    X, y, _ = _data()
    n, world, b = X.shape[0], MB["world"], MB["batch_size"]
    shards = [shard_bounds(n, r, world) for r in range(world)]
    gens = [torch.Generator().manual_seed(MB["seed"]) for _ in range(world)]
    steps = max(-(-(stop - start) // b) for start, stop in shards)
    w = torch.zeros(7, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([w, bias], lr=MB["lr"])
    epoch_losses = []
    for _ in range(n_epochs):
        batches = []  # per rank: its batches' global row indices, padded with empty ones
        for (start, stop), gen in zip(shards, gens):
            local_n = stop - start
            if b >= local_n:
                rows = [torch.arange(start, stop)]
            else:
                perm = torch.randperm(local_n, generator=gen) + start
                rows = [perm[i : i + b] for i in range(0, local_n, b)]
            batches.append(rows + [torch.arange(0)] * (steps - len(rows)))
        epoch_loss = 0.0
        for k in range(steps):
            idx = torch.cat([rows[k] for rows in batches])
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(X[idx] @ w + bias, y[idx].double())
            loss.backward()
            opt.step()
            epoch_loss += loss.item() * len(idx) / n
        epoch_losses.append(epoch_loss)
    return w.detach(), bias.detach(), epoch_losses


@pytest.mark.e2e
def test_mini_batches_keep_ranks_in_step(torchrun_results):
    r0, r1 = (r["mb"] for r in torchrun_results)
    assert [r0["local_n"], r1["local_n"]] == [102, 101] and r0["batch_size"] == r1["batch_size"] == 101
    assert r0["steps"] == r1["steps"] == 2  # rank 1 pads its second step with an empty batch
    assert r0["stop"] == r1["stop"] == "plateau"
    assert r0["epochs"] == r1["epochs"] < 200
    assert r0["train_loss"] == r1["train_loss"]
    assert r0["weight"] == r1["weight"]
    # Against one process: the same steps with torch.optim.SGD on autograd's gradient. Both sum the same rows in a
    # different order and grouping (~1e-16 per step over ~30 contractive steps); a wrongly weighted or dropped
    # batch moves the weights by > 1e-3, so 1e-10 separates the two with room on any machine.
    w, bias, _ = _replay_mini_batches(r0["epochs"])
    assert _rel(r0["weight"], [w.tolist()]) <= 1e-10
    assert _rel(r0["bias"], bias.tolist()) <= 1e-10


@pytest.mark.e2e
def test_mini_batch_epoch_loss_is_the_global_mean(torchrun_results):
    """Rank 1's shard fits in one batch but the epoch has two steps (the second a padding step):
    the epoch loss the stopping rules read is still the global mean over both steps."""
    r0 = torchrun_results[0]["mb"]
    _, _, losses = _replay_mini_batches(r0["epochs"])
    assert _rel(r0["train_loss"], losses) <= 1e-10  # same sums as the weights above, same room


def test_shard_bounds_cover_the_rows_once():
    for n in (1, 5, 203, 1000):
        for world in (1, 2, 3, 8):
            bounds = [shard_bounds(n, r, world) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            sizes = [b - a for a, b in bounds]
            assert max(sizes) - min(sizes) <= 1


def test_single_process_group_equals_plain_fit():
    import torch.distributed as dist

    from torch_logreg.distributed import DistributedTrainer, cleanup, init_distributed, is_rank0

    if dist.is_initialized():
        pytest.skip("a process group already exists in this process")
    saved = {k: os.environ.get(k) for k in ("MASTER_ADDR", "MASTER_PORT")}
    try:
        info = init_distributed(device="cpu")
        assert info.world_size == 1 and is_rank0()
        X, y, _ = _data()
        a, b = tl.LogisticRegression(7), tl.LogisticRegression(7)
        DistributedTrainer(a, X, y, lr=0.3, epochs=10, batch_size=32, tol=0.0, dtype="float64").run()
        tl.fit(b, X, y, lr=0.3, epochs=10, batch_size=32, tol=0.0, device="cpu", dtype="float64")
        assert torch.allclose(a.linear.weight, b.linear.weight, rtol=1e-12, atol=1e-14)
    finally:
        cleanup()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
