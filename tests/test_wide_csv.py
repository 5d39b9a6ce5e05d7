"""A CSV file of many columns: its width checked against the memory bound before it is parsed
(one sentence naming the file, its columns, the size implied and what to do), and read in time
and memory linear in its cells, the per-column cost of Arrow's reader avoided."""

from pathlib import Path

import numpy as np
import pytest

from torch_logreg import memory
from torch_logreg.app import tables
from torch_logreg.app.config import DataConfig
from torch_logreg.app.ingest import csv_file
from torch_logreg.app.ingest.schema import infer_schema
from torch_logreg.errors import UsageError

from helpers import expect_error

WIDTH = 100_000


def write_wide(path: Path, n_rows: int = 3, width: int = WIDTH, cell=None) -> np.ndarray:
    """``n_rows`` rows of ``width`` features (two decimals) and a 0/1 target ``y``; ``cell``
    (row, column, text) replaces one cell. Returns the features as written."""
    X = np.round(np.random.default_rng(0).normal(size=(n_rows, width)), 2)
    lines = [",".join([*(f"x{j + 1}" for j in range(width)), "y"])]
    for i in range(n_rows):
        cells = [f"{v:.2f}" for v in X[i]] + [str(i % 2)]
        if cell is not None and cell[0] == i:
            cells[cell[1]] = cell[2]
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return X


@pytest.mark.slow
def test_a_wide_csv_is_read_line_by_line_and_encoded_as_written(tmp_path):
    X = write_wide(tmp_path / "wide.csv")
    table = tables.read_csv(tmp_path / "wide.csv", 1 << 30)
    assert isinstance(table, tables.RowsTable)  # Arrow's reader would hold ~10 kB a column
    schema = infer_schema(table, DataConfig(path=str(tmp_path / "wide.csv"), target="y"))
    assert schema.n_features == WIDTH
    assert np.array_equal(schema.features(table).numpy(), X)


@pytest.mark.parametrize("text", ["spam", "1_000", "nan", ""])
def test_a_bad_cell_of_a_wide_csv_is_named_by_its_line_and_column(tmp_path, text):
    write_wide(tmp_path / "wide.csv", width=csv_file.WIDE + 1, cell=(1, 4_321, text))
    table = tables.read_csv(tmp_path / "wide.csv", 1 << 30)
    schema = infer_schema(table, DataConfig(path=str(tmp_path / "wide.csv"), target="y"))
    with pytest.raises(UsageError, match="wide.csv, line 3, column 'x4322': "):
        schema.features(table)


@pytest.mark.parametrize("reader", ["arrow", "strict"])
def test_columns_read_as_one_block_equal_those_read_one_by_one(tmp_path, reader):
    path = tmp_path / "d.csv"
    path.write_text("a, b,c,y\n 1 ,2.5,+.5,x\n-3e2,4,1E+2,y\n0.000e-500,5,6,x\n")
    table = tables.read_csv(path, 1 << 20) if reader == "arrow" else tables.RowsTable(
        path, *tables.read_csv_table(path, 1 << 20))
    assert isinstance(table, tables.ArrowTable if reader == "arrow" else tables.RowsTable)
    block = table.numbers_of(["a", "b", "c"])
    assert np.array_equal(block, np.stack([table.numbers(c) for c in "abc"], axis=1))


def test_a_csv_too_wide_for_the_memory_bound_is_refused_before_it_is_parsed(capsys, tmp_path, monkeypatch):
    data = tmp_path / "wide.csv"
    write_wide(data)
    monkeypatch.setattr(memory, "device_memory", lambda device=None: 10_000_000)  # a 10 MB machine
    monkeypatch.setattr(csv_file, "_rows", lambda *a: pytest.fail("parsed before the bound was checked"))
    line = expect_error(capsys, f"reading {data} (100,001 columns, 4 lines) needs ", "train", "--quiet", "--run-dir",
                        tmp_path / "run", "--set", f"data.path={str(data)!r}", "--set", "data.target='y'",
                        "--set", "train.device=cpu")
    assert "more than this machine's memory (10.0 MB)" in line
    assert "convert it to svmlight or a scipy sparse .npz" in line and "data.drop" in line and "data.hash" in line
    assert not (tmp_path / "run").exists()


def test_text_columns_of_two_arrow_types_are_read_one_by_one(tmp_path):
    pa = pytest.importorskip("pyarrow")
    columns = {"a": pa.array(["1", " 2.5"]), "b": pa.array(["3", "-4e1"], type=pa.large_string())}
    table = tables.ArrowTable(tmp_path / "d.parquet", ["a", "b"], columns, None)
    assert table.numbers_of(["a", "b"]).tolist() == [[1.0, 3.0], [2.5, -40.0]]
