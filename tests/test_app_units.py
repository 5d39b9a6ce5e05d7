"""Unit tests of the application's pieces that the commands use, on a few rows and in process:
the old module names, predict's output table, a new file's rows and a streamed file's rows
encoded as training encoded them, and the path command on a small problem."""

import csv
import importlib
import json

import numpy as np
import pytest
import torch

from torch_logreg.app import predictions
from torch_logreg.app.config import Config, DataConfig
from torch_logreg.app.ingest import load_dataset
from torch_logreg.app.ingest.new_rows import read_new
from torch_logreg.app.ingest.stream import open_source
from torch_logreg.errors import UsageError

ALIASES = {  # a module's old name -> where its names live now
    "torch_logreg.app.data": "torch_logreg.app.ingest",
    "torch_logreg.app.sources": "torch_logreg.app.ingest.files",
    "torch_logreg.app.tables": "torch_logreg.app.ingest",
    "torch_logreg.app.shards": "torch_logreg.app.ingest",
}


def test_old_module_names_export_the_objects_of_their_new_homes():
    for old, new in ALIASES.items():
        module, home = importlib.import_module(old), importlib.import_module(new)
        assert module.__all__, old
        for name in module.__all__:
            obj = getattr(module, name)
            where = getattr(obj, "__module__", None)
            if hasattr(home, name):
                assert getattr(home, name) is obj, (old, name)
            else:  # defined below the new home, or a small helper the old module keeps itself
                assert where is not None and (where.startswith(new) or where == old), (old, name, where)


def test_predict_table_columns_labels_and_threshold():
    out = np.array([[0.2], [0.5], [0.9]])
    cols = predictions.table(out, "sigmoid", ["no", "yes"], None, np.float32)
    assert list(cols) == ["p_no", "p_yes", "label"]
    assert cols["p_yes"].dtype == np.float32 and list(cols["label"]) == ["no", "yes", "yes"]
    assert list(predictions.table(out, "sigmoid", ["no", "yes"], 0.6, np.float32)["label"]) == ["no", "no", "yes"]
    k = predictions.table(np.array([[0.1, 0.7, 0.2]]), "softmax", ["a", "b", "c"], None, np.float64)
    assert list(k) == ["p_a", "p_b", "p_c", "label"] and k["label"][0] == "b"
    assert list(predictions.table(np.array([[1.5]]), "identity", [], None, np.float64)) == ["prediction"]
    with pytest.raises(UsageError, match="binary classifier"):
        predictions.check_threshold(0.5, "softmax", 3)
    with pytest.raises(UsageError, match="between 0 and 1"):
        predictions.check_threshold(1.0, "sigmoid", 1)


def test_predictions_are_written_in_the_shortest_form_that_reads_back(tmp_path):
    p = np.array([1 / 3, 2 / 3], dtype=np.float32)
    path = tmp_path / "out.csv"
    assert predictions.write(path, {"id": ["r1", "r2"]}, {"p_yes": p, "label": np.array(["no", "yes"])}) == 2
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["id", "p_yes", "label"] and rows[1][0] == "r1"
    assert np.float32(rows[1][1]) == p[0] and len(rows[1][1]) <= 11  # float32: ~7 digits, not 17
    with pytest.raises(UsageError, match="name of an output column"):
        predictions.write(path, {"label": ["x", "y"]}, {"label": np.array(["no", "yes"])})
    with pytest.raises(UsageError, match=r"\.csv or \.parquet"):
        predictions.check_format(tmp_path / "out.xlsx")


@pytest.fixture
def shop(tmp_path):
    """A small CSV with a categorical column, and the same columns in another order."""
    rng = np.random.default_rng(0)
    rows = [(f"{x:.3f}", c, str(int(x + (c == 'b') > 0.5))) for x, c in zip(rng.normal(size=30), "abc" * 10)]
    train = tmp_path / "train.csv"
    train.write_text("x,colour,y\n" + "".join(",".join(r) + "\n" for r in rows))
    new = tmp_path / "new.csv"
    new.write_text("colour,y,x\n" + "".join(f"{c},{y},{x}\n" for x, c, y in rows[:7]))
    return train, new


def test_a_new_files_rows_are_encoded_as_training_encoded_them(shop):
    train, new = shop
    cfg = DataConfig(path=str(train), target="y", categorical=["colour"])
    ds = load_dataset(cfg)
    got = read_new(new, ds.schema, need_target=True, max_bytes=1 << 20)
    assert torch.equal(got.X, ds.X[:7])
    assert list(got.y) == list(ds.y[:7])


def test_a_streamed_files_rows_equal_the_rows_read_whole(shop):
    import pyarrow.csv
    import pyarrow.parquet as pq

    train, _ = shop
    parquet = train.with_suffix(".parquet")
    pq.write_table(pyarrow.csv.read_csv(train), parquet, row_group_size=8)
    source = open_source(DataConfig(path=str(parquet), target="y", categorical=["colour"], memory_budget=1000))
    whole = load_dataset(DataConfig(path=str(train), target="y", categorical=["colour"]))
    assert np.array_equal(np.asarray(source.X, dtype=np.float64), whole.X.numpy())
    assert [str(v) for v in source.y] == [str(v) for v in whole.y]


def test_the_path_command_writes_its_table_and_refits(tmp_path, capsys):
    from torch_logreg.app.regpath import run_path

    cfg = Config()
    cfg.data.name, cfg.data.n_samples, cfg.data.noise = "xor", 120, 0.3
    cfg.train.solver, cfg.train.device, cfg.log.dir = "newton", "cpu", str(tmp_path)
    _, run_dir, _ = run_path(cfg, folds=2, n_penalties=3, quiet=True)
    table = json.loads((run_dir / "path.json").read_text())
    assert len(table["rows"]) == 3 and (run_dir / "refit" / "checkpoint.pt").exists()
