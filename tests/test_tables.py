"""Tables of named columns: a CSV read by Arrow gives what the strict line-by-line reader gives,
cell for cell, or the strict reader reads it and names the line of what is wrong; a Parquet file
trains, evaluates and predicts as the same rows in a CSV do."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from torch_logreg.app import data as data_lib
from torch_logreg.app import tables
from torch_logreg.app.cli import main
from torch_logreg.app.config import load_config
from torch_logreg.errors import UsageError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

LIMIT = 1 << 20


def strict(path: Path) -> tables.RowsTable:
    header, rows, print_ = tables.read_csv_table(path, LIMIT)
    return tables.RowsTable(path, header, rows, print_)


CSV_FILES = {
    "plain": "a,b,y\n1,2.5,x\n-3e2,4,y\n",
    "quoted": 'a,b,y\n"1",2,"a, b"\n3,"4","line\nbreak"\n',
    "blanks": "a , b,y\n 1 ,2, x \n\n , ,\n3,4,y\n",
    "bom": "\ufeffa,b,y\n1,2,x\n",
    "crlf": "a,b,y\r\n1,2,x\r\n3,4,y\r\n",
    "no final newline": "a,b,y\n1,2,x",
    "numbers as CSV writes them": "a,b,y\n+.5,2.,x\n-1E+2,0.000e-500,y\n",
}


@pytest.mark.parametrize("name", list(CSV_FILES))
def test_arrow_reads_what_the_strict_reader_reads(tmp_path, name):
    path = tmp_path / "d.csv"
    path.write_text(CSV_FILES[name], newline="")
    fast, slow = tables.read_csv(path, LIMIT), strict(path)
    assert fast.header == slow.header and fast.n_rows == slow.n_rows
    for column in fast.header:
        assert fast.text(column).tolist() == slow.text(column).tolist()
        assert fast.raw(column) == slow.raw(column)
    for column in ("a", "b"):
        assert np.array_equal(fast.numbers(column), slow.numbers(column))
    assert [fast.where(r) for r in range(fast.n_rows)] == [slow.where(r) for r in range(slow.n_rows)]


@pytest.mark.parametrize("text,message", [
    ("a,y\n1,x\nspam,y\n", "line 3, column 'a': 'spam' is not a number"),
    ("a,y\n1,x\n,y\n", "line 3, column 'a': empty cell"),
    ("a,y\n1,x\nnan,y\n", "line 3, column 'a': 'nan' is not a finite number"),
    # what Python's float() reads and a CSV file does not write
    ("a,y\n1,x\n1_000,y\n", "line 3, column 'a': '1_000' is not a number"),
    ("a,y\n1,x\n\u0661\u0662,y\n", "line 3, column 'a': '\u0661\u0662' is not a number"),
    ("a,y\n1,x\n\uff11,y\n", "line 3, column 'a': '\uff11' is not a number"),
    ("a,y\n1,x\n1e-400,y\n", "line 3, column 'a': '1e-400' is too small for a float64 (it would read as 0)"),
    ("a,y\n1,x\n\n2,y,3\n", "line 4: expected 2 columns as in the header, found 3"),
    ('a,y\n1,x\n"2,y\n', "line 3: a quoted cell opened on this line is never closed"),
    ("a,a,y\n1,2,x\n", "column 'a' appears twice"),
])
def test_what_arrow_refuses_is_named_by_its_line(tmp_path, text, message):
    path = tmp_path / "d.csv"
    path.write_text(text)
    with pytest.raises(UsageError, match=re.escape(message)):
        table = tables.read_csv(path, LIMIT)
        table.numbers("a")


def test_a_large_csv_is_read_alike_by_both(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5000, 4)) * 10.0 ** rng.integers(-8, 8, size=(5000, 4))
    path = tmp_path / "d.csv"
    path.write_text("a,b,c,d\n" + "".join(",".join(repr(float(v)) for v in row) + "\n" for row in X))
    fast, slow = tables.read_csv(path, LIMIT * 8), strict(path)
    assert isinstance(fast, tables.ArrowTable)
    for column in "abcd":
        assert np.array_equal(fast.numbers(column), slow.numbers(column))  # both round correctly
    assert np.array_equal(fast.numbers("a"), X[:, 0])


# --- Parquet --------------------------------------------------------------------------------------


def shop(n: int = 120, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    num = rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue"], size=n)
    y = (num + (colour == "red") + 0.5 * rng.normal(size=n) > 0.3).astype(np.int64)
    return {"num": num, "count": rng.integers(0, 5, size=n), "colour": colour, "y": y}


def write_both(tmp_path: Path, columns: dict) -> tuple[Path, Path]:
    parquet, csv = tmp_path / "d.parquet", tmp_path / "d.csv"
    pq.write_table(pa.table(columns), parquet, row_group_size=50)
    names = list(columns)
    rows = zip(*(columns[c] for c in names))
    csv.write_text(",".join(names) + "\n" + "".join(",".join(repr(v.item()) if isinstance(v, np.floating) else str(v)
                                                             for v in row) + "\n" for row in rows))
    return parquet, csv


@pytest.mark.e2e
def test_parquet_trains_like_the_same_rows_in_a_csv(tmp_path, capsys):
    parquet, csv = write_both(tmp_path, shop())
    sets = ["data.target=y", 'data.categorical=["colour"]', "train.solver=newton", "train.dtype=float64",
            "train.device=cpu", "train.epochs=50"]
    outputs = []
    for path, run in ((parquet, "pq"), (csv, "csv")):
        args = ["train", "--quiet", "--run-dir", str(tmp_path / run), "--set", f"data.path={path}"]
        for s in sets:
            args += ["--set", s]
        assert main(args) == 0, capsys.readouterr().err
        out = tmp_path / f"{run}.csv"
        assert main(["predict", "--run", str(tmp_path / run), "--input", str(parquet), "--output", str(out),
                     "--keep", "y"]) == 0, capsys.readouterr().err
        outputs.append(np.loadtxt(out, delimiter=",", skiprows=1))
    assert np.array_equal(outputs[0], outputs[1])
    cfg = load_config(None, [f"data.path={parquet}", *sets[:2]])
    ds = data_lib.load_dataset(cfg.data)
    assert ds.schema.feature_names == ["num", "count", "colour=blue", "colour=green", "colour=red"]
    assert ds.y.tolist() == [str(v) for v in shop()["y"]]


@pytest.mark.parametrize("columns,message", [
    ({"a": pa.array([1.0, None, 3.0]), "y": pa.array([0, 1, 0])}, "row 1, column 'a': a missing value (null)"),
    ({"a": pa.array([1.0, float("inf"), 3.0]), "y": pa.array([0, 1, 0])}, "row 1, column 'a': inf is not a finite"),
    ({"a": pa.array(["1", "x", "3"]), "y": pa.array([0, 1, 0])}, "row 1, column 'a': 'x' is not a number"),
])
def test_bad_parquet_cells_are_named_by_their_row(tmp_path, columns, message):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table(columns), path)
    cfg = load_config(None, [f"data.path={path}", "data.target=y"])
    with pytest.raises(UsageError, match=re.escape(message)):
        data_lib.load_dataset(cfg.data)


def test_a_file_that_is_not_parquet_is_one_sentence(tmp_path):
    path = tmp_path / "d.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(UsageError, match="is not a readable Parquet file"):
        tables.read_table(path, LIMIT)


def test_parquet_unpacked_past_the_limit_is_refused(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"a": np.zeros(100_000), "y": np.zeros(100_000, dtype=np.int64)}), path)
    assert path.stat().st_size < 100_000  # zeros compress well
    with pytest.raises(UsageError, match="unpacks to"):
        tables.read_table(path, 200_000)


def test_parquet_weights_and_hashing(tmp_path):
    columns = shop()
    columns["w"] = np.linspace(0.5, 2.0, 120)
    parquet, _ = write_both(tmp_path, columns)
    cfg = load_config(None, [f"data.path={parquet}", "data.target=y", "data.weight=w", 'data.hash=["colour"]',
                             "data.hash_bits=4"])
    ds = data_lib.load_dataset(cfg.data)
    assert np.array_equal(ds.weight, columns["w"]) and ds.X.layout == torch.sparse_csr and ds.X.shape == (120, 2 + 16)
