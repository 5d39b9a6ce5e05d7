"""Every format the registry reads, with every encoding, through every command: the same rows
written as a CSV file and as a file of each format give the same numbers (train's metrics,
evaluate's metrics, predict's probabilities). A format added to the registry without a writer
here fails :func:`test_every_registered_format_is_tested`. And the faults that reading new rows
through a second path once had: a categorical column of an array, an array's target column
given by index, and a Parquet column of a type the model cannot read."""

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.datasets import dump_svmlight_file

from torch_logreg.app.ingest import READERS

from helpers import expect_error, run_cli

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

N = 90
NAMES = ["x1", "x2", "x3", "x4"]  # as an array's columns are named; x2: a category code; x4: weights, or a feature


def rows() -> tuple[np.ndarray, np.ndarray]:
    """Features (N, 4): two real columns, a category code (0, 1, 2) and a positive weight; labels."""
    rng = np.random.default_rng(7)
    a, b = np.round(rng.normal(size=N), 3), np.round(rng.normal(size=N) * 10, 2)
    colour = rng.integers(0, 3, size=N).astype(np.float64)
    w = np.round(rng.uniform(0.5, 2.0, size=N), 2)
    y = ((a + 0.1 * b + (colour == 1) - 0.5 + rng.normal(size=N)) > 0).astype(np.float64)
    return np.column_stack([a, colour, b, w]), y


# --- the encodings: what is set, and which formats cannot express it ---------------------------

SPARSE = "a sparse file's columns have no names, so none can be named categorical, hashed or a weight"
NO_WEIGHTS = "an array's columns are features and the target; it has no column set apart for row weights"

ENCODINGS = {
    "plain numeric": {"sets": [], "target_first": False},
    "categorical": {"sets": ['data.categorical=["x2"]'], "target_first": False, "names": True},
    "hashed": {"sets": ['data.hash=["x2"]', "data.hash_bits=3"], "target_first": False, "names": True},
    "standardized": {"sets": ["data.standardize=true"], "target_first": False},
    "target column not last": {"sets": [], "target_first": True},
    "weights": {"sets": ["data.weight=x4"], "target_first": False, "weights": True},
}


def skip_reason(reader, encoding: str) -> str | None:
    spec = ENCODINGS[encoding]
    if reader.sparse and (spec.get("names") or spec.get("weights")):
        return SPARSE
    if spec.get("weights") and "data.weight" not in reader.options:
        return NO_WEIGHTS
    return None


# --- one writer per format: the rows as that format holds them ---------------------------------


def table_of(X, y, target_first: bool) -> tuple[list[str], list[np.ndarray]]:
    columns = [y, *X.T] if target_first else [*X.T, y]
    return (["y", *NAMES] if target_first else [*NAMES, "y"]), columns


def write_csv(path: Path, X, y, target_first: bool) -> dict:
    names, columns = table_of(X, y, target_first)
    text = [",".join(names)] + [",".join(_text(v) for v in row) for row in zip(*columns)]
    path.write_text("\n".join(text) + "\n")
    return {"data.target": "y"}


def _text(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def write_parquet(path: Path, X, y, target_first: bool) -> dict:
    names, columns = table_of(X, y, target_first)
    pq.write_table(pa.table([pa.array(c) for c in columns], names=names), path)
    return {"data.target": "y"}


def array_of(X, y, target_first: bool) -> np.ndarray:
    return np.column_stack([y, X] if target_first else [X, y])


def write_npy(path: Path, X, y, target_first: bool) -> dict:
    np.save(path, array_of(X, y, target_first))
    return {"data.target": "0" if target_first else ""}


def write_npz(path: Path, X, y, target_first: bool) -> dict:
    np.savez(path, X=X, y=y)  # the target is an array of its own: first or last is the same file
    return {}


def write_scipy_npz(path: Path, X, y, target_first: bool) -> dict:
    sp.save_npz(path, sp.csr_matrix(array_of(X, y, target_first)))
    return {"data.target": "0" if target_first else ""}


def write_svmlight(path: Path, X, y, target_first: bool) -> dict:
    dump_svmlight_file(X, y, str(path), zero_based=False)  # the label is first on every line
    return {}


WRITERS = {"CsvReader": (".csv", write_csv), "ParquetReader": (".parquet", write_parquet),
           "NpyReader": (".npy", write_npy), "NpzReader": (".npz", write_npz),
           "ScipyNpzReader": (".npz", write_scipy_npz), "SvmlightReader": (".svm", write_svmlight)}
FORMATS = [type(r).__name__ for r in READERS]


def test_every_registered_format_is_tested():
    assert set(FORMATS) == set(WRITERS)
    for name, (suffix, _) in WRITERS.items():
        reader = next(r for r in READERS if type(r).__name__ == name)
        assert suffix in reader.suffixes


# --- the runs ----------------------------------------------------------------------------------

BASE = ["train.solver=newton", "train.dtype=float64", "train.tol=1e-12", "train.l2=0.05", "train.epochs=100",
        "data.standardize=false", "data.val_fraction=0", "data.test_fraction=0.3"]


_RUNS: dict = {}


def trained(capsys, root: Path, fmt: str, encoding: str) -> tuple[Path, Path]:
    """(run directory, data file) of a run trained on the rows in ``fmt`` with ``encoding``."""
    key = (fmt, encoding)
    if key not in _RUNS:
        suffix, write = WRITERS[fmt]
        X, y = rows()
        folder = root / f"{fmt}-{encoding.replace(' ', '-')}"
        folder.mkdir(parents=True)
        data = folder / f"d{suffix}"
        spec = ENCODINGS[encoding]
        sets = write(data, X, y, spec["target_first"])
        args = ["train", "--quiet", "--run-dir", folder / "run", "--set", f"data.path={data}"]
        for s in [*BASE, *(f'{k}="{v}"' for k, v in sets.items()), *spec["sets"]]:
            args += ["--set", s]
        code, _, err = run_cli(capsys, *args)
        assert code == 0, err
        _RUNS[key] = (folder / "run", data)
    return _RUNS[key]


def numbers(capsys, command: str, run: Path, data: Path, out: Path) -> dict:
    """What ``command`` gives for ``run`` (and ``data``): metrics, or the predicted probabilities."""
    if command == "train":
        metrics = json.loads((run / "metrics.json").read_text())
        return {f"{s}/{k}": v for s in ("train", "test") for k, v in metrics[s].items() if k in ("loss", "accuracy")}
    if command == "evaluate":
        code, text, err = run_cli(capsys, "evaluate", "--run", run, "--data", data, "--json")
        assert code == 0, err
        return {k: v for k, v in json.loads(text)["data"].items() if k in ("loss", "accuracy", "auc")}
    code, _, err = run_cli(capsys, "predict", "--run", run, "--input", data, "--output", out, "--force")
    assert code == 0, err
    return {"p": np.loadtxt(out, delimiter=",", skiprows=1, usecols=1)}


CASES = [pytest.param(fmt, enc, cmd, marks=pytest.mark.skip(reason=why) if (why := skip_reason(r, enc)) else ())
         for fmt, r in zip(FORMATS, READERS) for enc in ENCODINGS for cmd in ("train", "evaluate", "predict")
         if fmt != "CsvReader"]


@pytest.mark.parametrize("fmt,encoding,command", CASES)
def test_a_format_gives_the_numbers_of_the_same_rows_in_a_csv(capsys, tmp_path_factory, fmt, encoding, command):
    root = tmp_path_factory.getbasetemp() / "registry"
    csv_run, csv_data = trained(capsys, root, "CsvReader", encoding)
    run, data = trained(capsys, root, fmt, encoding)
    expected = numbers(capsys, command, csv_run, csv_data, root / "csv.csv")
    got = numbers(capsys, command, run, data, root / "got.csv")
    # the same rows, encoded alike: the same optimum (a sparse file takes other kernels; its sums differ
    # in the last bits, and a sparse run's standardizer scales without centring, which the bias absorbs)
    rtol = 1e-6 if next(r for r in READERS if type(r).__name__ == fmt).sparse else 1e-9
    assert expected.keys() == got.keys()
    for k in expected:
        np.testing.assert_allclose(got[k], expected[k], rtol=rtol, atol=1e-9, err_msg=k)


# --- new rows in another format than training's -------------------------------------------------


def train_csv(capsys, tmp_path, *sets) -> tuple[Path, Path]:
    X, y = rows()
    tmp_path.mkdir(exist_ok=True)
    data = tmp_path / "d.csv"
    names = ["a", "colour", "b", "y"]
    data.write_text(",".join(names) + "\n" + "".join(
        f"{_text(r[0])},{_text(r[1])},{_text(r[2])},{_text(t)}\n" for r, t in zip(X, y)))
    args = ["train", "--quiet", "--run-dir", tmp_path / "run", "--set", f"data.path={data}", "--set", "data.target=y"]
    for s in [*BASE, *sets]:
        args += ["--set", s]
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    return tmp_path / "run", data


def evaluate(capsys, run: Path, data: Path) -> dict:
    code, text, err = run_cli(capsys, "evaluate", "--run", run, "--data", data, "--json")
    assert code == 0, err
    return json.loads(text)["data"]


def test_a_categorical_run_evaluates_and_predicts_an_array_of_the_same_raw_columns(capsys, tmp_path):
    run, csv = train_csv(capsys, tmp_path, 'data.categorical=["colour"]', "data.standardize=true")
    X, y = rows()
    np.save(tmp_path / "d.npy", np.column_stack([X[:, :3], y]))
    np.savez(tmp_path / "d.npz", X=X[:, :3], y=y)
    expected = evaluate(capsys, run, csv)
    for name in ("d.npy", "d.npz"):
        got = evaluate(capsys, run, tmp_path / name)
        assert got["loss"] == pytest.approx(expected["loss"], rel=1e-12) and got["accuracy"] == expected["accuracy"]
    np.save(tmp_path / "new.npy", X[:, :3])  # predict: the raw columns alone
    code, _, err = run_cli(capsys, "predict", "--run", run, "--input", tmp_path / "new.npy", "--output",
                           tmp_path / "p.csv")
    assert code == 0, err
    code, _, err = run_cli(capsys, "predict", "--run", run, "--input", csv, "--output", tmp_path / "q.csv", "--keep", "y")
    assert code == 0, err
    p = np.loadtxt(tmp_path / "p.csv", delimiter=",", skiprows=1, usecols=1)
    q = np.loadtxt(tmp_path / "q.csv", delimiter=",", skiprows=1, usecols=2)
    np.testing.assert_allclose(p, q, rtol=1e-12)
    X[0, 1] = 7  # a category training did not see is named
    np.save(tmp_path / "odd.npy", X[:, :3])
    expect_error(capsys, "category '7' was not seen in training", "predict", "--run", run, "--input",
                 tmp_path / "odd.npy", "--output", tmp_path / "r.csv")


def test_an_array_evaluates_with_the_target_column_training_named(capsys, tmp_path):
    X, y = rows()
    data = tmp_path / "d.npy"
    np.save(data, np.column_stack([y, X[:, :3]]))  # the target first: data.target = "0"
    args = ["train", "--quiet", "--run-dir", tmp_path / "run", "--set", f"data.path={data}", "--set", 'data.target="0"']
    for s in BASE:
        args += ["--set", s]
    assert run_cli(capsys, *args)[0] == 0
    csv_run, csv = train_csv(capsys, tmp_path / "csv")
    expected = evaluate(capsys, csv_run, csv)
    got = evaluate(capsys, tmp_path / "run", data)
    assert got["loss"] == pytest.approx(expected["loss"], rel=1e-9) and got["accuracy"] == expected["accuracy"]
    # a run saved before the schema kept an array's target index: its config says where it is
    for name in ("checkpoint.pt", "best.pt"):
        payload = torch.load(tmp_path / "run" / name, weights_only=True)
        payload["schema"]["target"] = ""
        torch.save(payload, tmp_path / "run" / name)
    got = evaluate(capsys, tmp_path / "run", data)
    assert got["loss"] == pytest.approx(expected["loss"], rel=1e-9)


def test_parquet_columns_the_model_does_not_use_are_never_read(capsys, tmp_path):
    run, csv = train_csv(capsys, tmp_path / "csv")
    X, y = rows()
    columns = {"a": X[:, 0], "colour": X[:, 1], "b": X[:, 2], "y": y}
    odd = {"tags": pa.array([[1, 2]] * N), "point": pa.array([{"u": 1.0, "v": 2.0}] * N),
           "blob": pa.array([b"\xff\x00"] * N, type=pa.binary()), "gaps": pa.array([None, 1.0] * (N // 2))}
    data = tmp_path / "d.parquet"
    pq.write_table(pa.table({**{k: pa.array(v) for k, v in columns.items()}, **odd}), data)
    expected = evaluate(capsys, run, csv)
    got = evaluate(capsys, run, data)
    assert got["loss"] == pytest.approx(expected["loss"], rel=1e-12)
    # a column the model uses that cannot be read as numbers is one sentence naming it
    used = tmp_path / "used.parquet"
    pq.write_table(pa.table({"a": odd["tags"], "colour": columns["colour"], "b": columns["b"], "y": columns["y"]}), used)
    line = expect_error(capsys, "column 'a' holds list<", "evaluate", "--run", run, "--data", used)
    assert line.endswith("values, not numbers")
    for name, message in (("blob", "column 'blob' holds binary values, which are neither numbers nor text"),
                          ("gaps", "row 0, column 'gaps': a missing value (null)")):
        kept = tmp_path / f"{name}.parquet"
        pq.write_table(pa.table({**{k: pa.array(v) for k, v in columns.items()}, name: odd[name]}), kept)
        expect_error(capsys, message, "predict", "--run", run, "--input", kept, "--output", tmp_path / "p.csv",
                     "--keep", name)
