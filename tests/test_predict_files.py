"""``evaluate --data`` and ``predict --input`` on the user's own files, for a run of every shipped
config: the target column named as training (or scikit-learn's "target" for a built-in set),
keep_classes applied to new rows, id columns copied with --keep, one p_<class> column per class,
--threshold, and CSV or Parquet output."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from torch_logreg.app.config import load_config
from torch_logreg.app.data import load_dataset

from helpers import run_cli

#: the command line end to end: left out of `make test-fast`
pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
#: fer_like.toml reads a generated pixels file (tests/test_pixels.py trains on one); not covered here
CONFIGS = sorted(p.name for p in (ROOT / "configs").glob("*.toml") if p.name != "fer_like.toml")
QUICK = ["train.device=cpu", "train.epochs=3", "log.checkpoint_every=1", "train.patience=0"]


def predict(capsys, run_dir: Path, rows: Path, output: Path, *extra):
    """``predict --keep id`` of ``rows`` into ``output``: (exit status, stderr)."""
    code, _, err = run_cli(capsys, "predict", "--run", run_dir, "--input", rows, "--keep", "id", "--output", output,
                           *extra)
    return code, err


def ecommerce_like(path: Path, n: int = 300, seed: int = 0) -> Path:
    """A CSV with the e-commerce columns (values generated: four actions, time_of_day categorical)."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["is_mobile", "n_products_viewed", "visit_duration", "is_returning_visitor", "time_of_day",
                    "user_action"])
        for _ in range(n):
            mobile, viewed, duration = rng.integers(0, 2), rng.integers(0, 5), rng.exponential(1.0)
            action = min(3, int(rng.poisson(0.4 * viewed + 0.3 * duration)))
            w.writerow([mobile, viewed, f"{duration:.6f}", rng.integers(0, 2), rng.integers(0, 4), action])
    return path


def train_config(capsys, tmp_path: Path, config: str) -> tuple[Path, list[str]]:
    sets = list(QUICK)
    if config == "ecommerce_csv.toml":
        sets.append(f"data.path={ecommerce_like(tmp_path / 'shop.csv')}")
    if config == "synthetic_gpu.toml":
        sets += ["data.n_samples=3000", "data.n_features=5"]
    args = ["train", "--config", ROOT / "configs" / config, "--run-dir", tmp_path / "run", "--quiet"]
    for s in sets:
        args += ["--set", s]
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    return tmp_path / "run", sets


def new_rows(tmp_path: Path, config: str, sets: list[str], n: int = 30, with_target: bool = True) -> Path:
    """``n`` rows of the config's data as a user would have them: an id column, the raw feature
    columns and the target column."""
    path = tmp_path / ("new.csv" if with_target else "new_no_target.csv")
    if config == "ecommerce_csv.toml":
        lines = (tmp_path / "shop.csv").read_text().splitlines()[: n + 1]
        rows = [line.split(",") for line in lines]
        if not with_target:
            rows = [r[:-1] for r in rows]
        path.write_text("\n".join(",".join([("id" if i == 0 else f"row-{i}"), *r]) for i, r in enumerate(rows)) + "\n")
        return path
    cfg = load_config(ROOT / "configs" / config, [s for s in sets if not s.startswith("log.")])
    ds = load_dataset(cfg.data, seed=cfg.train.seed)
    names = ds.schema.columns
    X = ds.X[:n, : len(names)].numpy()
    y = np.asarray(ds.y.cpu() if isinstance(ds.y, torch.Tensor) else ds.y)[:n]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", *names, *(["target"] if with_target else [])])
        for i in range(n):
            w.writerow([f"row-{i}", *[repr(float(v)) for v in X[i]], *([y[i]] if with_target else [])])
    return path


@pytest.mark.parametrize("config", CONFIGS)
def test_evaluate_and_predict_take_the_users_file(capsys, tmp_path, config):
    run_dir, sets = train_config(capsys, tmp_path, config)
    rows = new_rows(tmp_path, config, sets)
    code, out, err = run_cli(capsys, "evaluate", "--run", run_dir, "--data", rows)
    assert code == 0, err
    header, data = out.splitlines()[:2]
    assert header.split()[:2] == ["split", "loss"] and data.startswith("data ")
    classes = torch.load(run_dir / "checkpoint.pt", weights_only=True)["classes"]
    for source in (rows, new_rows(tmp_path, config, sets, with_target=False)):
        out_path = tmp_path / f"pred-{source.stem}.csv"
        code, out, err = run_cli(capsys, "predict", "--run", run_dir, "--input", source, "--keep", "id",
                                 "--output", out_path)
        assert code == 0, err
        with open(out_path, newline="") as fh:
            table = list(csv.DictReader(fh))
        assert [r["id"] for r in table] == [f"row-{i}" for i in range(1, 31)] if config == "ecommerce_csv.toml" \
            else [r["id"] for r in table] == [f"row-{i}" for i in range(30)]
        assert list(table[0]) == ["id", *[f"p_{c}" for c in classes], "label"]
        p = np.array([[float(r[f"p_{c}"]) for c in classes] for r in table])
        assert np.allclose(p.sum(axis=1), 1.0, atol=1e-6)
        assert [r["label"] for r in table] == [classes[int(k)] for k in p.argmax(axis=1)]


def test_keep_classes_applies_to_new_rows(capsys, tmp_path):
    run_dir, sets = train_config(capsys, tmp_path, "ecommerce_csv.toml")
    rows = tmp_path / "shop.csv"  # all four actions; the run kept 0 and 1
    code, out, err = run_cli(capsys, "evaluate", "--run", run_dir, "--data", rows)
    assert code == 0, err
    labels = [line.rsplit(",", 1)[1] for line in rows.read_text().splitlines()[1:]]
    left_out = sum(v not in ("0", "1") for v in labels)
    assert left_out > 0 and f"{left_out} of {len(labels)} rows have labels outside data.keep_classes" in err


def test_an_unused_column_points_to_keep(capsys, tmp_path):
    run_dir, sets = train_config(capsys, tmp_path, "breast_cancer.toml")
    rows = new_rows(tmp_path, "breast_cancer.toml", sets)
    code, _, err = run_cli(capsys, "predict", "--run", run_dir, "--input", rows, "--output", tmp_path / "p.csv")
    assert code == 2 and "column 'id' was not used in training; pass --keep id" in err


def test_threshold_moves_the_binary_label(capsys, tmp_path):
    run_dir, sets = train_config(capsys, tmp_path, "breast_cancer.toml")
    rows = new_rows(tmp_path, "breast_cancer.toml", sets)
    tables = {}
    for t in (0.05, 0.5, 0.95):
        out_path = tmp_path / f"p{t}.csv"
        code, err = predict(capsys, run_dir, rows, out_path, "--threshold", t)
        assert code == 0, err
        with open(out_path, newline="") as fh:
            tables[t] = list(csv.DictReader(fh))
        for r in tables[t]:
            assert r["label"] == ("1" if float(r["p_1"]) >= t else "0")
    assert sum(r["label"] == "1" for r in tables[0.05]) >= sum(r["label"] == "1" for r in tables[0.95])
    code, err = predict(capsys, run_dir, rows, tmp_path / "x.csv", "--threshold", 1.5)
    assert code == 2 and "between 0 and 1" in err


def test_threshold_is_refused_for_k_classes(capsys, tmp_path):
    run_dir, sets = train_config(capsys, tmp_path, "digits.toml")
    rows = new_rows(tmp_path, "digits.toml", sets)
    code, err = predict(capsys, run_dir, rows, tmp_path / "x.csv", "--threshold", 0.3)
    assert code == 2 and "--threshold applies to a binary classifier" in err


def test_probabilities_are_written_at_the_models_precision(capsys, tmp_path):
    run_dir, sets = train_config(capsys, tmp_path, "breast_cancer.toml")
    rows = new_rows(tmp_path, "breast_cancer.toml", sets)
    out_path = tmp_path / "p.csv"
    assert predict(capsys, run_dir, rows, out_path)[0] == 0
    with open(out_path, newline="") as fh:
        values = [r["p_1"] for r in csv.DictReader(fh)]
    # float32: the shortest text that reads back to the same float32, never 17 digits of noise
    assert all(np.float32(v) == np.float32(float(v)) and len(v.replace("-", "").replace(".", "")) <= 12 for v in values)


def test_parquet_output_equals_the_csv(capsys, tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    run_dir, sets = train_config(capsys, tmp_path, "digits.toml")
    rows = new_rows(tmp_path, "digits.toml", sets)
    for suffix in ("csv", "parquet"):
        code, err = predict(capsys, run_dir, rows, tmp_path / f"p.{suffix}")
        assert code == 0, err
    a = pd.read_csv(tmp_path / "p.csv", dtype={"id": str, "label": str})
    b = pd.read_parquet(tmp_path / "p.parquet")
    assert list(a.columns) == list(b.columns)
    assert (a["id"] == b["id"]).all() and (a["label"] == b["label"]).all()
    np.testing.assert_array_equal(a.filter(like="p_").to_numpy(np.float32), b.filter(like="p_").to_numpy(np.float32))


def test_unknown_output_format_is_refused_before_work(capsys, tmp_path):
    run_dir, sets = train_config(capsys, tmp_path, "breast_cancer.toml")
    rows = new_rows(tmp_path, "breast_cancer.toml", sets)
    code, err = predict(capsys, run_dir, rows, tmp_path / "p.xlsx")
    assert code == 2 and "written as .csv or .parquet" in err and not (tmp_path / "p.xlsx").exists()
