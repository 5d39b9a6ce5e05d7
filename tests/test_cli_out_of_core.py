"""`torch-logreg train` on a .npy file larger than data.memory_budget: the training rows are
streamed from the file (torch_logreg/app/out_of_core.py), and the run equals the in-memory one."""

import json

import numpy as np
import pytest
import torch

from torch_logreg.app.checkpoint import load_checkpoint
from torch_logreg.streaming import BatchStreamer

from helpers import expect_error, run_cli

#: the command line end to end: left out of `make test-fast`
pytestmark = pytest.mark.e2e

BASE = ["train.device=cpu", "train.dtype=float64", "train.epochs=4", "train.solver=nesterov", "train.batch_size=128",
        "train.patience=0", "train.tol=0", "data.val_fraction=0.05", "data.test_fraction=0.05", "log.checkpoint_every=2"]
BUDGET = 600_000  # the files below take 1 MB (float32) or 2 MB


def _file(path, n=10000, d=24, k=2, target_first=False, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * rng.uniform(0.1, 30, size=d) + rng.uniform(-5, 5, size=d)
    z = X @ rng.standard_normal((d, k))
    y = z.argmax(axis=1) if k > 2 else (z[:, 0] > np.median(z[:, 0])).astype(int)
    array = np.column_stack([y, X] if target_first else [X, y]).astype(dtype)
    np.save(path, array)
    return path


def _train(capsys, run_dir, data, *sets):
    args = ["train", "--quiet", "--run-dir", run_dir, "--set", f"data.path={data}"]
    for s in BASE + list(sets):
        args += ["--set", s]
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    return load_checkpoint(run_dir / "checkpoint.pt"), json.loads((run_dir / "metrics.json").read_text())


def _close(a, b, rtol):
    for k in a:
        rel = ((a[k] - b[k]).abs().max() / a[k].abs().max().clamp(min=1e-300)).item()
        assert rel <= rtol, (k, rel)


CASES = {
    "binary": dict(sets=[]),
    "softmax, target first, balanced": dict(k=4, target_first=True,
                                            sets=["model.kind=softmax", 'data.target="0"', "train.class_weight=balanced"]),
    "multilabel, kept classes": dict(k=4, sets=["model.kind=multilabel", "data.keep_classes=[0, 1, 3]"]),
    "float32 file, adam": dict(dtype=np.float32, sets=["train.solver=adam", "train.lr=0.01"]),
}


@pytest.mark.parametrize("case", CASES)
def test_a_streamed_run_equals_the_in_memory_run(tmp_path, capsys, monkeypatch, case):
    spec = CASES[case]
    data = _file(tmp_path / "d.npy", k=spec.get("k", 2), target_first=spec.get("target_first", False),
                 dtype=spec.get("dtype", np.float64))
    assert data.stat().st_size > 1.5 * BUDGET
    peaks = []
    stream = BatchStreamer.stream

    def watched(self, plan):  # the loop's buffers, as the streamer counts them
        yield from stream(self, plan)
        peaks.append(self.peak_bytes_in_use)

    monkeypatch.setattr(BatchStreamer, "stream", watched)
    mem_ckpt, mem = _train(capsys, tmp_path / "mem", data, *spec["sets"])
    assert not peaks  # in memory: no streamer
    # data.max_bytes below the file's size: a read of the whole file would be refused
    ooc_ckpt, ooc = _train(capsys, tmp_path / "ooc", data, *spec["sets"], f"data.memory_budget={BUDGET}",
                           f"data.max_bytes={BUDGET}")
    assert peaks and max(peaks) <= BUDGET
    # the same batches of the same rows; the streamed loop leaves a thread to its reader, so sums
    # may round differently
    _close(mem_ckpt["model"], ooc_ckpt["model"], 1e-9)
    _close(mem_ckpt["standardizer"], ooc_ckpt["standardizer"], 1e-12)
    assert mem_ckpt["classes"] == ooc_ckpt["classes"] and mem_ckpt["schema"] == ooc_ckpt["schema"]
    for split in ("train", "val", "test"):
        assert mem[split].keys() == ooc[split].keys()
        for key, value in mem[split].items():
            assert ooc[split][key] == pytest.approx(value, rel=1e-7, abs=1e-9), (split, key)
    code, out, err = run_cli(capsys, "evaluate", "--run", tmp_path / "ooc", "--json")
    assert code == 0, err
    assert json.loads(out)["train"]["loss"] == pytest.approx(mem["train"]["loss"], rel=1e-7)


def test_a_streamed_run_resumes_to_the_run_it_would_have_been(tmp_path, capsys):
    data = _file(tmp_path / "d.npy")
    straight, _ = _train(capsys, tmp_path / "straight", data, f"data.memory_budget={BUDGET}", "train.epochs=6")
    _train(capsys, tmp_path / "first", data, f"data.memory_budget={BUDGET}", "train.epochs=3")
    code, _, err = run_cli(capsys, "resume", "--run", tmp_path / "first", "--quiet", "--set", "train.epochs=6")
    assert code == 0, err
    resumed = load_checkpoint(tmp_path / "first" / "checkpoint.pt")
    for k in straight["model"]:
        assert torch.equal(straight["model"][k], resumed["model"][k]), k


@pytest.mark.parametrize("sets, message", [
    (["train.batch_size=0"], "set train.batch_size"),
    (["train.solver=newton"], "needs the training rows in memory"),
    (['data.target="3"'], "the first or the last column"),
    (["data.val_fraction=0.4"], "data.memory_budget = 600000 bytes is too small"),
    (["train.batch_size=5000"], "data.memory_budget = 600000 bytes is too small"),
])
def test_what_a_streamed_run_cannot_do_is_said(tmp_path, capsys, sets, message):
    data = _file(tmp_path / "d.npy")
    args = ["train", "--quiet", "--run-dir", tmp_path / "r", "--set", f"data.path={data}",
            "--set", f"data.memory_budget={BUDGET}"]
    for s in BASE + sets:
        args += ["--set", s]
    expect_error(capsys, message, *args)
    assert not (tmp_path / "r").exists()


def test_a_bad_value_is_named_by_row_and_column(tmp_path, capsys):
    data = _file(tmp_path / "d.npy")
    array = np.load(data)
    array[2222, 5] = np.nan
    np.save(data, array)
    args = ["train", "--quiet", "--run-dir", tmp_path / "r", "--set", f"data.path={data}",
            "--set", f"data.memory_budget={BUDGET}"]
    for s in BASE:
        args += ["--set", s]
    expect_error(capsys, "row 2222, column 5: nan is not a finite number", *args)


def test_a_file_within_the_budget_is_read_into_memory(tmp_path, capsys, monkeypatch):
    data = _file(tmp_path / "d.npy", n=200)

    def refuse(*args, **kwargs):
        raise AssertionError("streamed")

    monkeypatch.setattr(BatchStreamer, "stream", refuse)
    _train(capsys, tmp_path / "r", data, f"data.memory_budget={10 * data.stat().st_size}")


def test_a_streamed_parquet_file_equals_the_in_memory_run(tmp_path, capsys, monkeypatch):
    """A Parquet file whose columns unpack to more than the budget: encoded a row group at a time
    into a temporary file (categories from every group), then streamed as a .npy."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(5)
    n = 6000
    X = rng.standard_normal((n, 12)) * rng.uniform(0.5, 20, size=12)
    colour = rng.choice(["red", "green", "blue", "teal", "plum"], size=n)
    colour[:3000] = np.where(colour[:3000] == "plum", "red", colour[:3000])  # a level only the later groups have
    z = X @ rng.standard_normal(12) / 10 + (colour == "plum") * 2.0
    table = pa.table({**{f"f{j}": X[:, j] for j in range(12)}, "colour": colour,
                      "w": rng.uniform(0.5, 2.0, size=n), "label": np.where(z > 0, "yes", "no")})
    data = tmp_path / "d.parquet"
    pq.write_table(table, data, row_group_size=1000)
    sets = ["data.target=label", 'data.categorical=["colour"]', "data.weight=w", "data.drop_first=true"]
    peaks = []
    stream = BatchStreamer.stream

    def watched(self, plan):
        yield from stream(self, plan)
        peaks.append(self.peak_bytes_in_use)

    monkeypatch.setattr(BatchStreamer, "stream", watched)
    mem_ckpt, mem = _train(capsys, tmp_path / "mem", data, *sets)
    ooc_ckpt, ooc = _train(capsys, tmp_path / "ooc", data, *sets, "data.memory_budget=500000")
    assert peaks and max(peaks) <= 500_000
    assert mem_ckpt["schema"] == ooc_ckpt["schema"]
    assert ooc_ckpt["schema"]["categorical"]["colour"] == ["blue", "green", "plum", "red", "teal"]
    _close(mem_ckpt["model"], ooc_ckpt["model"], 1e-9)
    for split in ("train", "val", "test"):
        for key, value in mem[split].items():
            assert ooc[split][key] == pytest.approx(value, rel=1e-7, abs=1e-9), (split, key)
    # a row group larger than the budget is named
    pq.write_table(table, data, row_group_size=6000)
    args = ["train", "--quiet", "--run-dir", tmp_path / "big", "--set", f"data.path={data}",
            "--set", "data.memory_budget=500000"]
    for s in BASE + sets:
        args += ["--set", s]
    expect_error(capsys, "row group 0", *args)
