"""Under torchrun each rank reads only its part of a .npy, svmlight or Parquet file
(torch_logreg/app/shards.py): the parts cover the file exactly once, the statistics combined over
the parts equal those of the whole, and two ranks train to one process's weights and metrics."""

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from torch_logreg.app import data as D
from torch_logreg.app.checkpoint import load_checkpoint
from torch_logreg.app.shards import byte_range, row_groups
from torch_logreg.distributed import shard_bounds

from helpers import run_cli

#: the command line end to end: left out of `make test-fast`
pytestmark = pytest.mark.e2e

LINES = [b"1 1:0.5 3:2\n", b"\n", b"-1 2:1.5\r\n", b"# a comment\n", b"1 " + b"7:1 " * 40 + b"\n", b"-1 1:1",
         b"1 4:4\n" * 7]


@pytest.mark.parametrize("world_size", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("ending", [b"", b"\n"])
def test_byte_ranges_give_every_line_to_one_rank_whole(tmp_path, world_size, ending):
    text = b"".join(LINES) + ending
    path = tmp_path / "f.svm"
    path.write_bytes(text)
    parts = [byte_range(path, r, world_size, 1 << 20) for r in range(world_size)]
    assert b"".join(p for p, _ in parts) == text  # in order, each byte once
    for content, start in parts:
        assert start == 0 or text[start - 1 : start] == b"\n"  # a part starts at a line's start
        assert text[start : start + len(content)] == content


def test_a_byte_range_longer_than_the_limit_is_refused(tmp_path):
    path = tmp_path / "f.svm"
    path.write_bytes(b"1 1:1\n" * 1000)
    with pytest.raises(Exception, match="more than data.max_bytes"):
        byte_range(path, 0, 2, 100)


@pytest.mark.parametrize("sizes", [[10], [3, 3, 3, 3], [1, 100, 1], [5] * 9, [50, 1, 1, 1]])
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_row_groups_are_dealt_out_once_in_order(sizes, world_size):
    dealt = [row_groups(sizes, r, world_size) for r in range(world_size)]
    assert [g for groups, _ in dealt for g in groups] == list(range(len(sizes)))
    firsts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    for r, (groups, first) in enumerate(dealt):
        lo, hi = shard_bounds(sum(sizes), r, world_size)
        assert all(lo <= firsts[g] < hi for g in groups)
        if groups:
            assert first == firsts[groups[0]]


class _TwoParts:
    """Sums and maxima over two threads that each hold part of the rows, as over two ranks."""

    def __init__(self) -> None:
        self.slots, self.barrier = [None, None], threading.Barrier(2)

    def at(self, i):
        parts = self

        class Combine:
            @staticmethod
            def _reduce(t, op):
                parts.slots[i] = t
                parts.barrier.wait()
                out = op(parts.slots[0], parts.slots[1])
                parts.barrier.wait()
                return out

            def sum(self, t):
                return self._reduce(t, torch.add)

            def max(self, t):
                return self._reduce(t, torch.maximum)

        return Combine()


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("split", [1, 37, 99])
def test_standardizer_over_parts_equals_the_whole(sparse, split):
    g = torch.Generator().manual_seed(split)
    X = torch.randn(100, 5, generator=g, dtype=torch.float64) * torch.tensor([1.0, 1e3, 1e-3, 0.0, 7.0]) + 3.0
    X[:, 4] = X[:, 4].round().clamp(min=0)  # zeros for the sparse layout
    whole = D.Standardizer.fit(X.to_sparse_csr() if sparse else X)
    parts = [X[:split], X[split:]]
    fitted, two = [None, None], _TwoParts()

    def run(i):
        part = parts[i].to_sparse_csr() if sparse else parts[i]
        fitted[i] = D.Standardizer.fit(part, two.at(i))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for f in fitted:
        torch.testing.assert_close(f.mean, whole.mean, rtol=1e-13, atol=1e-13)
        # column 2 has mean 3 and deviation 1e-3: its deviation carries ~ eps * 3e3 of rounding
        torch.testing.assert_close(f.scale, whole.scale, rtol=1e-11, atol=0)


# --- two ranks against one process -----------------------------------------------------------------

SETS = ["train.device=cpu", "train.dtype=float64", "train.patience=0", "train.tol=0", "train.epochs=40",
        "train.solver=nesterov", "log.checkpoint_every=20"]


def _files(tmp_path: Path) -> dict[str, list[str]]:
    """Each format's data file and the config keys it needs."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.datasets import dump_svmlight_file, make_classification

    X, y = make_classification(n_samples=400, n_features=6, n_informative=4, random_state=3)
    np.save(tmp_path / "d.npy", np.column_stack([X, y]))
    Xs = np.where(np.abs(X) > 0.8, X, 0.0)  # a sparse file: about half the entries stored
    dump_svmlight_file(Xs, y, str(tmp_path / "d.svm"), zero_based=False)
    rng = np.random.default_rng(0)
    table = pa.table({**{f"f{j}": X[:, j] for j in range(4)},
                      "colour": rng.choice(["red", "green", "blue", "teal"], size=len(y)),
                      "w": rng.uniform(0.5, 2.0, size=len(y)), "label": np.where(y == 1, "yes", "no")})
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=50)
    return {"npy": [f"data.path={tmp_path / 'd.npy'}"],
            "svmlight": [f"data.path={tmp_path / 'd.svm'}"],
            "parquet": [f"data.path={tmp_path / 'd.parquet'}", "data.target=label", 'data.categorical=["colour"]',
                        "data.weight=w", "train.class_weight=balanced"]}


def _train_args(run_dir: Path, sets: list[str]) -> list[str]:
    return ["train", "--quiet", "--run-dir", str(run_dir), *(a for s in SETS + sets for a in ("--set", s))]


def _train(command: list[str], run_dir: Path, sets: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*command, *_train_args(run_dir, sets)], capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["npy", "svmlight", "parquet"])
def test_two_ranks_reading_their_parts_match_one_process(tmp_path, capsys, fmt):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    sets = _files(tmp_path)[fmt]
    code, _, err = run_cli(capsys, *_train_args(tmp_path / "one", sets))  # one process: this one
    assert code == 0, err
    two = _train([torchrun, "--standalone", "--nproc_per_node=2", "-m", "torch_logreg.app.cli"], tmp_path / "two",
                 sets, tmp_path)
    assert two.returncode == 0, two.stderr
    a, b = (load_checkpoint(tmp_path / d / "checkpoint.pt") for d in ("one", "two"))
    for k in a["model"]:  # full batch: the same objective, summed in another order
        rel = ((a["model"][k] - b["model"][k]).abs().max() / a["model"][k].abs().max()).item()
        assert rel <= 1e-10, (k, rel)
    assert a["schema"] == b["schema"] and a["classes"] == b["classes"]
    for k in a["standardizer"]:
        torch.testing.assert_close(a["standardizer"][k], b["standardizer"][k], rtol=1e-12, atol=1e-12)
    m1, m2 = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    for split in ("train", "val", "test"):  # the same split, and the training split's metrics over all ranks
        assert m1[split].keys() == m2[split].keys()
        for key, value in m1[split].items():
            assert m2[split][key] == pytest.approx(value, rel=1e-8, abs=1e-10), (split, key)
