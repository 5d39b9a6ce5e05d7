"""Nothing silently wrong, nothing lost: sizes checked before allocation, every reader's errors in
the file's terms, combinations refused (or handled) before training, the command line enforcing
what the library enforces, one writer per run directory, numbers as a CSV file writes them."""

import os
import signal
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch

from torch_logreg import memory
from torch_logreg.app.runs import LOCK_NAME, RunLock

from helpers import expect_error, run_cli

#: the command line end to end: left out of `make test-fast`
pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(0)
N = 300
X = RNG.normal(size=(N, 3))
Y = (X[:, 0] + 0.5 * RNG.normal(size=N) > 0).astype(int)


def write_csv(path: Path, cat=None, weight=None, cells=None) -> Path:
    """The rows x1, x2, x3, cat, w, y; ``cells`` {(row, column index): text} replaces cells."""
    cat = cat or (lambda i: "ab"[i % 2])
    weight = weight or (lambda i: "1")
    lines = ["x1,x2,x3,cat,w,y"]
    for i in range(N):
        row = [f"{X[i, 0]:.6f}", f"{X[i, 1]:.6f}", f"{X[i, 2]:.6f}", cat(i), weight(i), str(Y[i])]
        for (r, c), text in (cells or {}).items():
            if r == i:
                row[c] = text
        lines.append(",".join(row))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_svm(path: Path, extra: str = "") -> Path:
    lines = [f"{Y[i]} 1:{X[i, 0]:.6f} 2:{X[i, 1]:.6f} 3:{X[i, 2]:.6f}" for i in range(N)]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def train_args(data: Path, run_dir: Path, *sets: str, target: str = "y", categorical: str = '["cat"]'):
    args = ["train", "--quiet", "--run-dir", run_dir, "--set", f"data.path={str(data)!r}", "--set", "train.epochs=5",
            "--set", "train.device=cpu"]
    if data.suffix == ".csv":
        args += ["--set", f"data.target={target!r}", "--set", f"data.categorical={categorical}"]
    for s in sets:
        args += ["--set", s]
    return args


# --- 1. size before allocation -------------------------------------------------------------------


def test_an_svmlight_index_beyond_32_bits_is_named_by_its_line(capsys, tmp_path):
    data = write_svm(tmp_path / "d.svm", "1 1:1 1099511627776:1\n")
    expect_error(capsys, f"{data}, line 301: feature index 1099511627776 is outside 0 to 2,147,483,646",
                 *train_args(data, tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_newton_on_a_million_features_is_refused_by_its_hessian(capsys, tmp_path):
    data = write_svm(tmp_path / "d.svm", "1 1:1 1000000:1\n")
    line = expect_error(capsys, "train.solver = 'newton' on 1,000,000 features", *train_args(
        data, tmp_path / "run", "train.solver='newton'"))
    assert "dense Hessian that needs 8.0 TB" in line and "use train.solver = 'lbfgs'" in line
    assert not (tmp_path / "run").exists()


def test_fit_exact_newton_on_a_wide_csr_matrix_is_refused_before_allocating():
    import scipy.sparse as sp

    import torch_logreg as tl
    from torch_logreg.solvers import fit_exact

    X = sp.random(20, 1_000_000, density=1e-5, format="csr", random_state=0)
    model = tl.LogisticRegression(1_000_000)
    with pytest.raises(memory.MemoryBoundError, match=r"solver = 'newton' on 1,000,000 features .* needs 8\.0 TB"):
        fit_exact(model, X, np.arange(20) % 2, solver="newton")


def test_auto_never_picks_a_hessian_that_does_not_fit(monkeypatch):
    from torch_logreg.solvers import choose_solver

    assert choose_solver(300) == "newton"
    monkeypatch.setattr(memory, "device_memory", lambda device=None: 1 << 20)  # 1 MiB: 300^2 float64 do not fit
    assert choose_solver(300) == "lbfgs"
    assert choose_solver(300, l1=0.1) == "proximal"


def test_hash_bits_are_checked_against_the_memory_bound(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "device_memory", lambda device=None: 100 << 20)  # a 100 MiB machine
    data = write_csv(tmp_path / "d.csv")
    line = expect_error(capsys, "a model of 16,777,2", *train_args(
        data, tmp_path / "run", "data.hash=['cat']", "data.hash_bits=24", categorical="[]"))
    assert "more than this machine's memory" in line and "data.hash_bits = 24" in line
    assert not (tmp_path / "run").exists()


def test_a_huge_hidden_width_is_refused_from_the_config(capsys, tmp_path):
    data = write_csv(tmp_path / "d.csv")
    expect_error(capsys, "model.hidden = [1000000000000] (3,000,000,000,001 parameters and more) needs 72.0 TB",
                 *train_args(data, tmp_path / "run", "model.kind='mlp'", "model.hidden=[1000000000000]"))


# --- 2. every reader's errors in the file's terms ----------------------------------------------


def test_svmlight_values_and_labels_are_named_by_line_and_feature_index(capsys, tmp_path):
    data = write_svm(tmp_path / "d.svm", "# a comment\n\n1 1:nan\n")
    expect_error(capsys, f"{data}, line 303, feature index 1: nan is not a finite number",
                 *train_args(data, tmp_path / "run"))


def test_weights_are_named_in_the_file_s_terms(capsys, tmp_path):
    large = write_csv(tmp_path / "large.csv", weight=lambda i: "1e39" if i == 150 else "1")
    expect_error(capsys, f"{large}, line 152, column 'w': a row weight must be at most 3.403e+38",
                 *train_args(large, tmp_path / "run", "data.weight='w'"))
    # the rows with a weight are all in the test split
    from torch_logreg.app.ingest import split_indices

    _, _, test = split_indices(torch.from_numpy(Y), N, 0.0, 0.5, 0, stratify=True)
    held_out = set(test.tolist())
    only = write_csv(tmp_path / "only.csv", weight=lambda i: "1" if i in held_out else "0")
    expect_error(capsys, "every row of the training split has weight 0 in the data.weight column 'w'",
                 *train_args(only, tmp_path / "run", "data.weight='w'", "data.val_fraction=0", "data.test_fraction=0.5"))


def test_evaluate_ignores_a_list_column_it_does_not_use(capsys, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {"x1": X[:, 0], "x2": X[:, 1], "y": Y}
    pq.write_table(pa.table(columns), tmp_path / "d.parquet")
    run_dir = tmp_path / "run"
    assert run_cli(capsys, *train_args(tmp_path / "d.parquet", run_dir, "data.target='y'"))[0] == 0
    extra = {**columns, "l": pa.array([[1.0, 2.0]] * N, pa.list_(pa.float64())),
             "b": pa.array([b"\xff\xfe"] * N, pa.binary())}
    pq.write_table(pa.table(extra), tmp_path / "e.parquet")
    code, out, err = run_cli(capsys, "evaluate", "--run", run_dir, "--data", tmp_path / "e.parquet")
    assert code == 0 and "accuracy" in out, err


# --- 3. combinations up front --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["softmax", "multilabel"])
def test_a_two_output_model_on_two_classes_reports_its_metrics(capsys, tmp_path, kind):
    import json

    data = write_csv(tmp_path / "d.csv")
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, *train_args(data, run_dir, f"model.kind={kind!r}"))
    assert code == 0, err
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.5 < metrics["test"]["auc"] <= 1.0
    assert run_cli(capsys, "evaluate", "--run", run_dir)[0] == 0


@pytest.mark.parametrize("sets,message", [
    (("train.warmup_epochs=50",), "--set train.warmup_epochs=50: train.warmup_epochs = 50 is more than epochs = 5"),
    (("train.schedule='exponential'", "train.gamma=1e300"),
     "train.gamma = 1e+300 with schedule = 'exponential' raises the learning rate past 3.4e+38"),
    (("train.solver='adam'", "train.eps=0.0"), "--set train.eps=0.0: train.eps must be a finite number > 0"),
    (("train.solver='rmsprop'", "train.alpha=1.0"), "--set train.alpha=1.0: train.alpha must be a finite number >= 0 and < 1"),
    (("model.kind='mlp'", "model.hidden=[4]", "train.dtype='bfloat16'"), "an MLP trains in float32 or float64"),
])
def test_combinations_are_refused_before_training(capsys, tmp_path, sets, message):
    expect_error(capsys, message, *train_args(write_csv(tmp_path / "d.csv"), tmp_path / "run", *sets))
    assert not (tmp_path / "run").exists()


def test_bfloat16_on_sparse_features_is_refused_before_the_run_directory(capsys, tmp_path):
    data = write_svm(tmp_path / "d.svm")
    expect_error(capsys, "train.dtype = 'bfloat16' computes dense products", *train_args(
        data, tmp_path / "run", "train.dtype='bfloat16'"))
    assert not (tmp_path / "run").exists()


def test_adam_takes_weight_decay_zero(capsys, tmp_path):
    code, _, err = run_cli(capsys, *train_args(write_csv(tmp_path / "d.csv"), tmp_path / "run", "train.solver='adam'",
                                               "train.weight_decay=0.0"))
    assert code == 0, err


def test_gradcheck_runs_on_an_svmlight_file(capsys, tmp_path):
    data = write_svm(tmp_path / "d.svm")
    code, out, err = run_cli(capsys, "gradcheck", "--set", f"data.path={str(data)!r}", "--set", "train.device=cpu")
    assert code == 0 and "PASS" in out, err


def test_a_path_of_one_penalty_is_refused(capsys, tmp_path):
    from torch_logreg.errors import UsageError
    from torch_logreg.path import regularization_path

    expect_error(capsys, "--n-penalties 1: a path needs at least 2 penalties", "path", "--quiet", "--n-penalties", "1",
                 "--set", f"data.path={str(write_csv(tmp_path / 'd.csv'))!r}", "--set", "data.target='y'",
                 "--set", "data.categorical=['cat']", "--run-dir", tmp_path / "p")
    with pytest.raises(UsageError, match="n_penalties = 1 fits only the largest penalty"):
        regularization_path(X, Y, n_penalties=1)


def test_resume_refuses_fewer_epochs_than_done_and_keeps_config(capsys, tmp_path):
    run_dir = tmp_path / "run"
    assert run_cli(capsys, *train_args(write_csv(tmp_path / "d.csv"), run_dir, "train.epochs=8"))[0] == 0
    before = (run_dir / "config.toml").read_bytes()
    expect_error(capsys, "--set train.epochs=5: run", "resume", "--run", run_dir, "--quiet", "--set", "train.epochs=5")
    assert (run_dir / "config.toml").read_bytes() == before


# --- 4. the command line enforces what the library enforces ------------------------------------


def test_weights_of_one_class_only_are_refused_as_the_estimator_refuses_them(capsys, tmp_path):
    import torch_logreg as tl
    from torch_logreg.errors import UsageError

    data = write_csv(tmp_path / "d.csv", weight=lambda i: "0" if Y[i] == 0 else "1")
    expect_error(capsys, "only one class has a positive total weight", *train_args(
        data, tmp_path / "run", "data.weight='w'"))
    with pytest.raises(UsageError, match="only one class has a positive total weight"):
        tl.LogisticRegressionClassifier().fit(X, Y, sample_weight=(Y == 1).astype(float))


# --- 5. one writer per run directory ---------------------------------------------------------------

HOLDER = """
import sys, time
from pathlib import Path
from torch_logreg.app.runs import RunLock
lock = RunLock(Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(120)
"""


def _hold(run_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True, env=env)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_writer_is_refused_and_a_dead_writer_s_lock_is_taken_over(capsys, tmp_path):
    run_dir = tmp_path / "run"
    assert run_cli(capsys, *train_args(write_csv(tmp_path / "d.csv"), run_dir))[0] == 0
    assert (run_dir / LOCK_NAME).read_text() == ""  # released, and empty: the files read as before
    holder = _hold(run_dir)  # another process writing the run
    try:
        before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.name != LOCK_NAME}
        expect_error(capsys, f"run directory {run_dir} is being written by process {holder.pid}", "resume", "--run",
                     run_dir, "--quiet", "--set", "train.epochs=9")
        assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.name != LOCK_NAME} == before
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding it: the kernel releases the lock, the file keeps its id
        holder.wait()
    assert (run_dir / LOCK_NAME).read_text().strip() == str(holder.pid)
    lock = RunLock(run_dir)
    assert lock.stale == holder.pid
    lock.release()
    code, _, err = run_cli(capsys, "resume", "--run", run_dir, "--quiet", "--set", "train.epochs=9")
    assert code == 0, err


def test_two_trains_into_one_directory_are_one_writer(capsys, tmp_path):
    """A train that finds the directory locked (made, empty, by another train a moment earlier)
    is refused whichever reaches it first."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = _hold(run_dir)
    try:
        time.sleep(0.1)
        line = expect_error(capsys, "", *train_args(write_csv(tmp_path / "d.csv"), run_dir))
        assert "already exists and is not empty" in line or f"process {holder.pid}" in line
    finally:
        holder.kill()
        holder.wait()


# --- 6. numbers, category order and names ---------------------------------------------------------

LEVELS = """
import sys
from torch_logreg.app.config import load_config
from torch_logreg.app.ingest import load_dataset
cfg = load_config(None, [f"data.path={sys.argv[1]!r}", "data.target='y'", "data.categorical=['cat']"])
print(load_dataset(cfg.data).schema.categorical["cat"])
"""


def test_category_order_does_not_depend_on_string_hashing(tmp_path):
    data = write_csv(tmp_path / "d.csv", cat=lambda i: ["nan", "NaN", "b", "1", "inf", "-0", "1e5"][i % 7])
    orders = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", LEVELS, str(data)], capture_output=True, text=True, env=env,
                              check=True)
        orders.add(done.stdout.strip())
    assert len(orders) == 1, orders


def test_nfc_and_nfd_spellings_are_one_name(capsys, tmp_path):
    cafe = {form: unicodedata.normalize(form, "café") for form in ("NFC", "NFD")}
    data = write_csv(tmp_path / "d.csv", cat=lambda i: cafe["NFC" if i % 3 else "NFD"] if i % 2 else "tea")
    text = data.read_text(encoding="utf-8").replace("cat,", cafe["NFD"] + ",", 1)  # the header in NFD
    data.write_text(text, encoding="utf-8")
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, *train_args(data, run_dir, categorical=f"[{cafe['NFC']!r}]"))
    assert code == 0, err
    schema = torch.load(run_dir / "checkpoint.pt", weights_only=True)["schema"]
    assert schema["categorical"] == {cafe["NFC"]: [cafe["NFC"], "tea"]}


@pytest.mark.parametrize("cell,message", [
    ("1_000", "'1_000' is not a number"),
    ("\u0661\u0662", "'\u0661\u0662' is not a number"),
    ("\uff11", "'\uff11' is not a number"),
    ("1e-400", "'1e-400' is too small for a float64 (it would read as 0); write 0 if 0 is meant"),
])
def test_numbers_are_read_as_a_csv_file_writes_them(capsys, tmp_path, cell, message):
    data = write_csv(tmp_path / "d.csv", cells={(5, 1): cell})
    expect_error(capsys, f"{data}, line 7, column 'x2': {message}", *train_args(data, tmp_path / "run"))


def test_few_clusters_draw_a_warning():
    import torch_logreg as tl
    from torch_logreg.inference.covariance import FewClustersWarning

    with pytest.warns(FewClustersWarning, match="with 2 clusters: .* singular"):
        clf = tl.LogisticRegressionClassifier(penalty=None, cov_type="cluster").fit(X, Y, groups=np.arange(N) % 2)
        clf.inference_  # noqa: B018 (computed when first asked for)


# --- a Parquet row group larger than data.memory_budget ---------------------------------------------


def test_a_parquet_row_group_larger_than_the_memory_budget_is_named_with_how_to_rewrite_it(capsys, tmp_path):
    import re

    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 4000
    rng = np.random.default_rng(1)
    X4 = rng.normal(size=(n, 4))
    table = pa.table({**{f"x{j}": X4[:, j] for j in range(4)}, "y": (X4[:, 0] > 0).astype(np.int64)})
    data = tmp_path / "d.parquet"
    pq.write_table(table, data, row_group_size=n)  # one group of 4,000 rows x 5 columns x 8 bytes: 160 kB
    sets = ["data.target='y'", "data.memory_budget=100000", "train.batch_size=64", "train.solver='adam'",
            "train.epochs=2", "data.val_fraction=0.05", "data.test_fraction=0.05"]
    line = expect_error(capsys, f"{data}: row group 0 holds 4,000 rows that unpack to 156.2 KiB, more than "
                                "data.memory_budget = 100000 bytes", *train_args(data, tmp_path / "run", *sets))
    assert "data.max_bytes" not in line
    assert "pq.write_table(pq.read_table(" in line and "raise data.memory_budget" in line
    assert not (tmp_path / "run").exists()
    # the rewrite the sentence gives streams
    rows = int(re.search(r"row_group_size=(\d+)", line).group(1))
    assert 0 < rows < n
    pq.write_table(pq.read_table(data), data, row_group_size=rows)
    code, _, err = run_cli(capsys, *train_args(data, tmp_path / "run", *sets))
    assert code == 0, err
