"""Random malformed input files (CSV data, TOML configs, .npy/.npz arrays) through the command line.

The contract for every run: it ends with exit status 2 and exactly one line on stderr, starting
``torch-logreg: error: ``, or with exit status 0 and a sound result (for a change that leaves the
data as it was, the very model trained on the clean file). No exception escapes ``main()``, no
traceback is printed, and a run trained earlier is never changed.
"""

import contextlib
import hashlib
import io
import itertools
import math
import os
import pickle
import struct
import tomllib
import warnings
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from torch_logreg.app.cli import main
from torch_logreg.app.config import Config

#: the command line end to end: left out of `make test-fast`
pytestmark = pytest.mark.e2e

PREFIX = "torch-logreg: error: "
#: examples a property tries (each a run of the command line): half hypothesis' default, 50, in the
#: suite; ten times more with `pytest --hypothesis-profile=thorough` (registered in conftest.py)
EXAMPLES = settings.default.max_examples // 2
SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

HEADER = ["a", "b", "c", "label"]
ROWS = [[str(i % 7), str((i * 3) % 5), f"{(i * 37) % 100 / 10:.1f}", str(i % 2)] for i in range(40)]
CLEAN_CSV = "".join(",".join(row) + "\n" for row in [HEADER, *ROWS])

# a small, fast run: 5 epochs of full-batch gradient descent on the CPU
BASE_CONFIG = """\
# a small run on a CSV file
[data]
path = {path}
target = "label"
val_fraction = 0.2
test_fraction = 0.2

[model]
kind = "logistic"
bias = true

[train]
solver = "gd"
lr = 0.1
epochs = 5
seed = 0
device = "cpu"
dtype = "float32"

[log]
every = 10
checkpoint_every = 5
"""
NUMPY_CONFIG = """\
[data]
path = {path}

[train]
epochs = 5
device = "cpu"

[log]
checkpoint_every = 5
"""
RUN_FILES = ("checkpoint.pt", "config.toml", "metrics.json", "best.pt")

# whole-data problems: they are about the data set, not about a place in one file
DATA_LEVEL = ("class", "rows", "training split", "training diverged")


def toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- running the command line -------------------------------------------------------------------


@dataclass
class Result:
    code: int
    out: str
    err: str  # stderr as a user sees it, with any warning Python would print


def run_cli(*args) -> Result:
    out, err = io.StringIO(), io.StringIO()
    with (warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err),
          mock.patch.dict(os.environ)):
        os.environ.pop("TORCH_LOGREG_DEBUG", None)  # which would turn an error into a traceback on purpose
        # what a plain `python` shows: every warning but the deprecation, import and resource ones
        warnings.simplefilter("always")
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.filterwarnings("ignore", category=category)
        code = main([str(a) for a in args])
    shown = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in caught)
    return Result(code, out.getvalue(), err.getvalue() + shown)


def check_contract(result: Result, *files: Path) -> None:
    """Exit 0 (anything on stderr in the program's own words), or exit 2 with one error line that
    names one of ``files`` (the inputs) unless the problem is one of the whole data set."""
    assert "Traceback" not in result.err and "Traceback" not in result.out, result.err
    assert result.code in (0, 2), (result.code, result.err)
    if result.code == 0:
        assert all(line.startswith("torch-logreg: ") for line in result.err.splitlines()), result.err
    else:
        lines = result.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith(PREFIX), result.err
        message = lines[0][len(PREFIX):]
        named = any(str(f) in message or f.name in message for f in files)
        assert named or any(word in message for word in DATA_LEVEL), (files, message)


def snapshot(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


def model_state(run_dir: Path) -> dict:
    payload = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    return {"model": payload["model"], "standardizer": payload["standardizer"], "classes": payload["classes"],
            "schema": payload["schema"]}


def same_state(a: dict, b: dict) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    return a == b


def assert_finite_run(run_dir: Path) -> None:
    assert (run_dir / "metrics.json").exists()
    for name, tensor in torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)["model"].items():
        assert bool(torch.isfinite(tensor).all()), (name, tensor)


def assert_no_half_run(result: Result, run_dir: Path) -> None:
    """A failed train leaves a run directory that can be resumed (it has a checkpoint) or none."""
    if result.code != 0:
        assert not run_dir.exists() or (run_dir / "checkpoint.pt").exists(), sorted(p.name for p in run_dir.iterdir())


class Reference:
    """The valid run every example is checked against, and where the examples write."""

    def __init__(self, root: Path, clean_csv: Path, config: Path, run: Path, predictions: str) -> None:
        self.root, self.clean_csv, self.config, self.run, self.predictions = root, clean_csv, config, run, predictions
        self.snapshot = snapshot(run)
        self.state = model_state(run)
        self.counter = itertools.count()

    def __repr__(self) -> str:  # what a failing example prints
        return f"Reference({self.run})"

    def fresh(self) -> Path:
        """A new, empty directory for one example."""
        path = self.root / f"example-{next(self.counter)}"
        path.mkdir()
        return path

    def check_unchanged(self) -> None:
        assert snapshot(self.run) == self.snapshot


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Reference:
    """One valid run on the clean CSV, its model and its predictions for the clean rows."""
    root = tmp_path_factory.mktemp("malformed")
    clean = root / "clean.csv"
    clean.write_text(CLEAN_CSV, encoding="utf-8")
    config = root / "config.toml"
    config.write_text(BASE_CONFIG.format(path=toml_string(str(clean))), encoding="utf-8")
    run = root / "reference-run"
    result = run_cli("train", "--config", config, "--run-dir", run, "--quiet")
    assert result.code == 0, result.err
    assert all((run / name).exists() for name in RUN_FILES)
    predictions = root / "reference-predictions.csv"
    result = run_cli("predict", "--run", run, "--input", clean, "--output", predictions)
    assert result.code == 0, result.err
    return Reference(root, clean, config, run, predictions.read_text(encoding="utf-8"))


# --- CSV data files -----------------------------------------------------------------------------

CELL_TEXTS = st.sampled_from([
    "", " ", "nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1e400", "1e-400", '"', '""', '"1"', '"1', "1\"",
    "ü", "١", "1,2", ",", "0x10", "1_000", "1 000", "\x00", "\u00a0", "\u2028", "--1", "1.2.3", "2", "0.5", "-0", "e",
    "label", "a", '"x\ny"', '"la\nbel"', '"1\r\n2"',
]) | st.text(max_size=6)
WHITESPACE = st.sampled_from(["", " ", "  ", "\t"])
BLANK_LINES = st.sampled_from(["", " ", ",,,", " , ,\t, "])
BAD_BYTES = st.sampled_from([b"\xff", b"\xfe\xff", b"\x80", b"\xc3\x28", b"\xed\xa0\x80", b"\xf0\x28\x8c\x28", b"\xc0\xaf"])
POSITION = st.integers(min_value=0, max_value=5000)

# changes that leave the data as it was
HARMLESS = {"space", "blank", "bom", "eol"}

CSV_MUTATIONS = st.one_of(
    st.tuples(st.just("cell"), POSITION, POSITION, CELL_TEXTS),
    st.tuples(st.just("drop_cell"), POSITION, POSITION),
    st.tuples(st.just("add_cell"), POSITION, CELL_TEXTS),
    st.tuples(st.just("dup_header"), POSITION, POSITION),
    st.tuples(st.just("drop_row"), POSITION),
    st.tuples(st.just("head"), st.integers(0, 40)),
    st.tuples(st.just("dup_row"), POSITION),
    st.tuples(st.just("space"), POSITION, POSITION, WHITESPACE, WHITESPACE),
    st.tuples(st.just("blank"), POSITION, BLANK_LINES),
    st.tuples(st.just("bom")),
    st.tuples(st.just("eol"), st.sampled_from(["\r\n", "\r"])),
    st.tuples(st.just("bad_bytes"), POSITION, BAD_BYTES),
    st.tuples(st.just("truncate"), POSITION),
    st.tuples(st.just("quote"), POSITION),
)


def byte_mutations(data: bytes, mutations) -> bytes:
    """The mutations that act on a file's bytes: invalid UTF-8 inserted, a truncation, a stray quote."""
    for op, *args in mutations:
        if op == "bad_bytes":
            i = args[0] % (len(data) + 1)
            data = data[:i] + args[1] + data[i:]
        elif op == "truncate":
            data = data[: args[0] % (len(data) + 1)]
        elif op == "quote":
            i = args[0] % (len(data) + 1)
            data = data[:i] + b'"' + data[i:]
    return data


def mutate_csv(mutations) -> bytes:
    """The clean CSV with ``mutations`` applied: the row and cell ones first, then the byte ones."""
    lines: list = [list(HEADER)] + [list(row) for row in ROWS]  # a list of cells, or a raw line (str)

    def cells_at(i: int) -> list[str] | None:
        line = lines[i % len(lines)]
        return line if isinstance(line, list) else None

    for op, *args in mutations:
        if op == "cell" and (cells := cells_at(args[0])):
            cells[args[1] % len(cells)] = args[2]
        elif op == "drop_cell" and (cells := cells_at(args[0])):
            del cells[args[1] % len(cells)]
        elif op == "add_cell" and (cells := cells_at(args[0])):
            cells.append(args[1])
        elif op == "dup_header":
            first, second = args[0] % len(HEADER), args[1] % len(HEADER)
            if first != second and isinstance(lines[0], list) and len(lines[0]) > max(first, second):
                lines[0][second] = lines[0][first]
        elif op == "drop_row" and len(lines) > 1:
            del lines[1 + args[0] % (len(lines) - 1)]
        elif op == "head":  # only the first rows
            del lines[1 + args[0]:]
        elif op == "dup_row":
            i = args[0] % len(lines)
            line = lines[i]
            lines.insert(i, list(line) if isinstance(line, list) else line)
        elif op == "space" and (cells := cells_at(args[0])):
            j = args[1] % len(cells)
            cells[j] = args[2] + cells[j] + args[3]
        elif op == "blank":
            lines.insert(1 + args[0] % len(lines), args[1])  # after the header
    text = "".join((",".join(line) if isinstance(line, list) else line) + "\n" for line in lines)
    for op, *args in mutations:
        if op == "eol":
            text = text.replace("\n", args[0])
    data = byte_mutations(text.encode("utf-8"), mutations)
    if any(op == "bom" for op, *_ in mutations):
        data = b"\xef\xbb\xbf" + data
    return data


@settings(max_examples=EXAMPLES, **SETTINGS)
@given(mutations=st.lists(CSV_MUTATIONS, min_size=1, max_size=3))
@example(mutations=[("head", 6)])  # 3 rows of each class: too few for a stratified split
@example(mutations=[("cell", 0, 3, '"x\ny"')])  # a header name with a line break, and no target column
def test_malformed_csv(reference, mutations):
    work = reference.fresh()
    data_path = work / "data.csv"
    data_path.write_bytes(mutate_csv(mutations))
    config = work / "config.toml"
    config.write_text(BASE_CONFIG.format(path=toml_string(str(data_path))), encoding="utf-8")
    harmless = all(op in HARMLESS for op, *_ in mutations)

    run_dir = work / "run"
    result = run_cli("train", "--config", config, "--run-dir", run_dir, "--quiet")
    check_contract(result, data_path, config)
    assert_no_half_run(result, run_dir)
    if harmless:
        assert result.code == 0, result.err
        assert same_state(model_state(run_dir), reference.state)
    elif result.code == 0:
        assert_finite_run(run_dir)

    output = work / "predictions.csv"
    result = run_cli("predict", "--run", reference.run, "--input", data_path, "--output", output)
    check_contract(result, data_path)
    if harmless:
        assert result.code == 0, result.err
        assert output.read_text(encoding="utf-8") == reference.predictions
    elif result.code == 0:
        assert output.exists()
    else:
        assert not output.exists()
    reference.check_unchanged()


# --- TOML config files --------------------------------------------------------------------------

KEYS = [f"{table.name}.{key.name}" for table in fields(Config) for key in fields(table.default_factory())] + [
    # unknown ones
    "train.lrr", "train.Epochs", "train.epoch", "data.paths", "model.kinds", "optim.lr", "Data.path", "train.",
    "train.lr.x", '"train".lr', "data.target2",
]
# TOML value texts for each kind of key (the edges of its range, and past them), then any value at all
INTS = ["0", "-1", "1", "2", "4294967296", "9223372036854775807", "-9223372036854775808", "0x10", "1_0"]
FLOATS = ["0", "-1", "0.5", "1.0", "-0.0", "1", "nan", "inf", "-inf", "1e308", "-1e308", "1e-320", "0.9999999999999999"]
STRINGS = ['""', '"x"', '"cpu"', '"cuda"', '"cuda:7"', '"auto"', '"newton"', '"lbfgs"', '"adam"', '"softmax"', '"mlp"',
           '"linear"', '"float64"', '"bfloat16"', '"label"', '"a"', '"ü"', '"relu"', '"step"', "'''x'''", '"\\u0000"',
           '" label"', '"cpu "']
LISTS = ["[]", "[1, 2]", "[0]", "[-1]", '["a"]', '["0", "1"]', "[0.9, 1.0]", "[0.9, 0.999, 0.5]", "[[1]]", "[true]"]
OTHERS = ["true", "false", "{a = 1}", "1979-05-27T07:32:00Z", "1979-05-27", "07:32:00"]
VALUES = INTS + FLOATS + STRINGS + LISTS + OTHERS
BY_TYPE = {int: INTS, float: FLOATS, str: STRINGS, list: LISTS, bool: ["true", "false", "1", '"true"']}
KEY_TYPES = {f"{table.name}.{key.name}": type(getattr(table.default_factory(), key.name))
             for table in fields(Config) for key in fields(table.default_factory())}
# keys whose valid large values would make a run long: only small or invalid values for them
LONG_KEYS = {"train.epochs", "data.n_samples", "data.n_features", "train.batch_size"}
SAFE_FOR_LONG = ["0", "-1", "1", "2", "0.5", "nan", "true", '"x"', "[]", "{a = 1}", "1979-05-27"]
SYNTAX_TOKENS = st.sampled_from([
    "[", "]", "=", '"', "'", "[[", "]]", "\x00", "\\", "= =", "[data]", "[train]", "epochs = 3", "lr = 0.1", "a.b.c = 1",
    "x =", "= 1", "[data", '"""', "\x7f", "\u2028", "\t\v", "[ ]", "[train.lr]",
])
HARMLESS_CONFIG = {"bom", "eol", "comment", "indent"}


@st.composite
def set_value(draw):
    key = draw(st.sampled_from(KEYS))
    if key in LONG_KEYS:
        pool = SAFE_FOR_LONG
    elif key in KEY_TYPES and draw(st.integers(0, 3)):  # mostly a value of the key's own kind
        pool = BY_TYPE[KEY_TYPES[key]]
    else:
        pool = VALUES
    return ("set", key, draw(st.sampled_from(pool)))


CONFIG_MUTATIONS = st.one_of(
    set_value(),
    st.tuples(st.just("drop_line"), POSITION),
    st.tuples(st.just("syntax"), POSITION, SYNTAX_TOKENS),
    st.tuples(st.just("bad_bytes"), POSITION, BAD_BYTES),
    st.tuples(st.just("truncate"), POSITION),
    st.tuples(st.just("empty")),
    st.tuples(st.just("bom")),
    st.tuples(st.just("eol")),
    st.tuples(st.just("comment"), POSITION),
    st.tuples(st.just("indent"), POSITION),
)


def set_line(lines: list[str], key: str, value: str) -> None:
    """``key = value`` in its table: the key's line replaced, or a new line after the table's
    header, or a new table at the end."""
    section, _, name = key.partition(".")
    try:
        start = lines.index(f"[{section}]")
    except ValueError:
        lines += [f"[{section}]", f"{name} = {value}"]
        return
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
    for i in range(start + 1, end):
        if lines[i].split("=", 1)[0].strip() == name:
            lines[i] = f"{name} = {value}"
            return
    lines.insert(start + 1, f"{name} = {value}")


def mutate_config(base: str, mutations) -> bytes:
    lines = base.splitlines()
    for op, *args in mutations:
        if op == "set":
            set_line(lines, args[0], args[1])
        elif op == "drop_line" and lines:
            del lines[args[0] % len(lines)]
        elif op == "syntax" and lines:
            i = args[0] % len(lines)
            lines[i] = lines[i] + " " + args[1] if args[0] % 2 else args[1] + lines[i]
        elif op == "comment":
            lines.insert(args[0] % (len(lines) + 1), "# a comment = [not, a, value]")
        elif op == "indent" and lines:
            i = args[0] % len(lines)
            lines[i] = "  \t" + lines[i] + "  "
        elif op == "empty":
            lines = []
    text = "".join(line + "\n" for line in lines)
    if any(op == "eol" for op, *_ in mutations):
        text = text.replace("\n", "\r\n")
    data = byte_mutations(text.encode("utf-8"), mutations)
    if any(op == "bom" for op, *_ in mutations):
        data = b"\xef\xbb\xbf" + data
    return data


def short_run(content: bytes) -> list[str]:
    """``--set train.epochs=5`` where a config that reads lost its epochs (cut off, a line dropped,
    an empty file), so it does not train for the default 1000 epochs; nothing otherwise."""
    try:
        train = tomllib.loads(content.decode("utf-8-sig")).get("train", {})
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []
    return ["--set", "train.epochs=5"] if isinstance(train, dict) and "epochs" not in train else []


def data_path_in(content: bytes) -> list[Path]:
    """The data file a config that reads names, if it names one."""
    try:
        path = tomllib.loads(content.decode("utf-8-sig")).get("data", {}).get("path")
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, AttributeError):
        return []
    return [Path(path)] if isinstance(path, str) and Path(path).name else []


@settings(max_examples=EXAMPLES, **SETTINGS)
@given(mutations=st.lists(CONFIG_MUTATIONS, min_size=1, max_size=3))
@example(mutations=[("empty",), ("set", "train.momentum", "0")])  # a value the default solver does not take
@example(mutations=[("set", "train.seed", "4294967296")])  # a seed past 32 bits
def test_malformed_config(reference, mutations):
    work = reference.fresh()
    config = work / "config.toml"
    base = BASE_CONFIG.format(path=toml_string(str(reference.clean_csv)))
    content = mutate_config(base, mutations)
    config.write_bytes(content)
    run_dir = work / "run"
    result = run_cli("train", "--config", config, "--run-dir", run_dir, "--quiet", *short_run(content))
    # a value can be wrong for the data (data.target, data.path), so the data file may be the one named
    check_contract(result, config, reference.clean_csv, *data_path_in(content))
    assert_no_half_run(result, run_dir)
    if all(op in HARMLESS_CONFIG for op, *_ in mutations):
        assert result.code == 0, result.err
        assert same_state(model_state(run_dir), reference.state)
    elif result.code == 0:
        assert_finite_run(run_dir)
    reference.check_unchanged()


# --- .npy / .npz files --------------------------------------------------------------------------

_rng = np.random.default_rng(0)
BASE_X = _rng.standard_normal((40, 3))
BASE_Y = np.arange(40) % 2

DTYPES = [np.float64, np.float32, np.float16, ">f8", np.int64, np.int8, np.uint8, np.bool_, np.complex128, "<U3", "S3",
          "datetime64[s]", "timedelta64[s]", [("a", "f8"), ("b", "i4")], object]


@st.composite
def random_array(draw):
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = tuple(draw(st.lists(st.integers(0, 6), max_size=3)))
    size = math.prod(shape)
    if dtype.kind == "O":
        items = draw(st.lists(st.one_of(st.integers(), st.text(max_size=3), st.none(), st.floats()), min_size=size,
                              max_size=size))
        array = np.empty(size, dtype=object)
        array[:] = items
        return array.reshape(shape)
    raw = draw(st.binary(min_size=size * dtype.itemsize, max_size=size * dtype.itemsize))
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


BASE_CHANGES = st.one_of(
    st.tuples(st.just("x_value"), POSITION, POSITION, st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 0.0])),
    st.tuples(st.just("y_value"), POSITION, st.sampled_from([math.nan, math.inf, 2, -1, 0.5, 1e308])),
    st.tuples(st.just("x_dtype"), st.sampled_from(DTYPES)),
    st.tuples(st.just("y_dtype"), st.sampled_from(DTYPES)),
    st.tuples(st.just("x_shape"), st.sampled_from([(120,), (40, 3, 1), (0, 3), (40, 0), (3, 40), (40, 2), (40, 4)])),
    st.tuples(st.just("y_shape"), st.sampled_from([(40, 1), (39,), (41,), (0,), (), (1, 40)])),
    st.tuples(st.just("rename"), st.sampled_from(["X", "y"]), st.sampled_from(["x", "Y", "arr_0", "X ", "", "data"])),
    st.tuples(st.just("extra"), st.sampled_from(["z", "X_val", "allow_pickle"])),
)


def _reshape(array: np.ndarray, shape: tuple) -> np.ndarray:
    size = math.prod(shape)
    flat = np.resize(array.reshape(-1), size) if size else array.reshape(-1)[:0]
    return flat.reshape(shape)


def changed_base(changes) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {"X": BASE_X.copy(), "y": BASE_Y.copy()}
    for op, *args in changes:
        with warnings.catch_warnings():  # NumPy's own remarks on a lossy cast: the loss is the point here
            warnings.simplefilter("ignore")
            try:
                change_one(arrays, op, args)
            except (TypeError, ValueError):  # a change NumPy itself refuses: the arrays stay as they were
                pass
    return arrays


def change_one(arrays: dict[str, np.ndarray], op: str, args) -> None:
    X, y = arrays.get("X"), arrays.get("y")
    if op == "x_value" and X is not None and X.size and X.dtype.kind == "f":
        X.reshape(-1)[(args[0] * 7 + args[1]) % X.size] = args[2]
    elif op == "y_value" and y is not None and y.size:
        arrays["y"] = y = y.astype(np.result_type(y, np.float64)) if y.dtype.kind in "iub" else y
        y.reshape(-1)[args[0] % y.size] = args[1]
    elif op == "x_dtype" and X is not None:
        arrays["X"] = X.astype(np.dtype(args[0]))
    elif op == "y_dtype" and y is not None:
        arrays["y"] = y.astype(np.dtype(args[0]))
    elif op == "x_shape" and X is not None:
        arrays["X"] = _reshape(X, args[0])
    elif op == "y_shape" and y is not None:
        arrays["y"] = _reshape(y, args[0])
    elif op == "rename" and args[0] in arrays:
        arrays[args[1]] = arrays.pop(args[0])
    elif op == "extra":
        arrays[args[0]] = np.zeros(3)


def _npz_bytes(arrays: dict[str, np.ndarray], compressed: bool = False) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def _npy_bytes(array, allow_pickle: bool = True) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def npy_of(arrays: dict[str, np.ndarray]) -> bytes:
    """A .npy file of the (changed) base: the features with the target as the last column."""
    X, y = arrays.get("X"), arrays.get("y")
    if X is None:
        return _npy_bytes(next(iter(arrays.values()), np.zeros(0)))
    try:
        return _npy_bytes(np.column_stack([X, y]) if y is not None else X)
    except (TypeError, ValueError):
        return _npy_bytes(X)


def foreign_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def damaged(data: bytes, how: str, position: int, byte: int) -> bytes:
    i = position % max(len(data), 1)
    if how == "truncate":
        return data[:i]
    if how == "flip":  # one byte changed somewhere (header, data or the zip directory)
        return data[:i] + bytes([data[i] ^ (byte or 1)]) + data[i + 1:] if data else data
    return data[:i] + bytes([byte]) * 8 + data[i:]  # "insert"


@st.composite
def numpy_file(draw) -> tuple[str, bytes]:
    """(suffix, content) of a malformed or odd .npy/.npz file."""
    suffix = draw(st.sampled_from([".npz", ".npy"]))
    kind = draw(st.sampled_from(["base", "random", "pickle", "damaged", "bytes", "zip"]))
    if kind == "base":
        arrays = changed_base(draw(st.lists(BASE_CHANGES, min_size=0, max_size=3)))
        return suffix, _npz_bytes(arrays) if suffix == ".npz" else npy_of(arrays)
    if kind == "random":
        if suffix == ".npy":
            return suffix, _npy_bytes(draw(random_array()))
        names = draw(st.lists(st.sampled_from(["X", "y", "x", "data", "arr_0"]), max_size=3, unique=True))
        return suffix, _npz_bytes({name: draw(random_array()) for name in names})
    if kind == "pickle":
        obj = draw(st.sampled_from(["dict", "object_array", "list"]))
        if obj == "dict":
            return suffix, pickle.dumps({"X": BASE_X, "y": BASE_Y})
        if obj == "list":
            return suffix, pickle.dumps(BASE_X.tolist())
        array = np.empty(40, dtype=object)
        array[:] = [[1.0, 2.0, 0]] * 40
        return suffix, _npz_bytes({"X": array, "y": BASE_Y}) if suffix == ".npz" else _npy_bytes(array)
    if kind == "damaged":
        compressed = draw(st.booleans())
        clean = (_npz_bytes({"X": BASE_X, "y": BASE_Y}, compressed) if suffix == ".npz"
                 else npy_of({"X": BASE_X, "y": BASE_Y}))
        return suffix, damaged(clean, draw(st.sampled_from(["truncate", "flip", "insert"])), draw(POSITION),
                               draw(st.integers(0, 255)))
    if kind == "bytes":
        start = draw(st.sampled_from([b"", b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY", b"\x93NUMPY\x01\x00", b"\x80\x04"]))
        return suffix, start + draw(st.binary(max_size=200))
    member = draw(st.sampled_from([b"", b"garbage", b"\x93NUMPY\x01\x00\xff\xff", _npy_bytes(BASE_X)[:60]]))
    return suffix, foreign_zip({"X.npy": member, "y.npy": _npy_bytes(BASE_Y)})


def broken_deflate() -> bytes:
    """A compressed .npz whose deflate stream for X starts with an invalid block type."""
    data = bytearray(_npz_bytes({"X": BASE_X, "y": BASE_Y}, compressed=True))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        offset = archive.getinfo("X.npy").header_offset
    name_length, extra_length = struct.unpack("<HH", data[offset + 26 : offset + 30])
    data[offset + 30 + name_length + extra_length] = 0xFF
    return bytes(data)


@settings(max_examples=EXAMPLES, **SETTINGS)
@given(file=numpy_file())
@example(file=(".npz", foreign_zip({"X.npy": b"garbage", "y.npy": b"garbage"})))  # zip members that are not arrays
@example(file=(".npy", foreign_zip({"X.npy": b"garbage", "y.npy": b"garbage"})))  # an archive named .npy
@example(file=(".npz", broken_deflate()))
@example(file=(".npy", _npy_bytes(BASE_X + 1j)))  # complex features
@example(file=(".npy", _npy_bytes(BASE_X)))  # three columns: the run's features, but no labels for evaluate
@example(file=(".npz", _npz_bytes(changed_base([("x_shape", (40, 0))]))))  # no feature columns
@example(file=(".npz", _npz_bytes(changed_base([("y_value", 0, math.nan)]))))  # a NaN label
@example(file=(".npz", _npz_bytes(changed_base([("x_value", 0, 6, 1e308)]))))  # a finite value too large for float32
@example(file=(".npy", _npy_bytes(np.frombuffer(b"\x01\x00\x80\x7f" * 3, dtype="<f4").reshape(1, 3))))  # signalling NaNs
def test_malformed_numpy_file(reference, file):
    suffix, content = file
    work = reference.fresh()
    data_path = work / f"data{suffix}"
    data_path.write_bytes(content)

    # as training data
    config = work / "config.toml"
    config.write_text(NUMPY_CONFIG.format(path=toml_string(str(data_path))), encoding="utf-8")
    run_dir = work / "run"
    result = run_cli("train", "--config", config, "--run-dir", run_dir, "--quiet")
    check_contract(result, data_path)
    assert_no_half_run(result, run_dir)
    if result.code == 0:
        assert_finite_run(run_dir)

    # as new rows for the reference run
    output = work / "predictions.csv"
    result = run_cli("predict", "--run", reference.run, "--input", data_path, "--output", output)
    check_contract(result, data_path)
    assert output.exists() == (result.code == 0)

    # as labelled rows to score the reference run on
    result = run_cli("evaluate", "--run", reference.run, "--data", data_path, "--json")
    check_contract(result, data_path)
    reference.check_unchanged()


# --- the earlier run ----------------------------------------------------------------------------


def test_earlier_run_is_never_changed(reference):
    """After all the above (in whatever order they ran), the reference run reads byte for byte as
    it did right after training; training into it or writing predictions over its files is refused."""
    config = reference.fresh() / "config.toml"
    config.write_text(BASE_CONFIG.format(path=toml_string(str(reference.clean_csv))), encoding="utf-8")
    result = run_cli("train", "--config", config, "--run-dir", reference.run, "--quiet")
    check_contract(result, reference.run)
    assert result.code == 2
    for name in RUN_FILES:
        result = run_cli("predict", "--run", reference.run, "--input", reference.clean_csv,
                         "--output", reference.run / name, "--force")
        check_contract(result, reference.run / name)
        assert result.code == 2
    reference.check_unchanged()


# --- svmlight, Parquet and scipy .npz files under combinations of settings ------------------------

SVM_VALUES = ["1", "-2.5", "0", "nan", "inf", "1e-400", "1_000", "1e39", "x", ""]
SVM_INDICES = [0, 1, 2, 3, 7, 2**31 - 2, 2**31, 2**40, -1]


def _svm_bytes(draw) -> bytes:
    lines = [f"{BASE_Y[i]} 1:{BASE_X[i, 0]:.4f} 2:{BASE_X[i, 1]:.4f} 3:{BASE_X[i, 2]:.4f}" for i in range(40)]
    for _ in range(draw(st.integers(0, 2))):
        label = draw(st.sampled_from(["0", "1", "2", "x", "nan"]))
        indices = sorted(set(draw(st.lists(st.sampled_from(SVM_INDICES), max_size=3))))
        pairs = [f"{j}:{draw(st.sampled_from(SVM_VALUES))}" for j in indices]
        lines.insert(draw(st.integers(0, len(lines))), " ".join([label, *pairs]))
    return ("\n".join(lines) + "\n").encode()


def _parquet_bytes(draw) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {"a": pa.array(BASE_X[:, 0]), "b": pa.array(BASE_X[:, 1]), "label": pa.array(BASE_Y)}
    extra = draw(st.sampled_from(["none", "list", "binary", "text numbers", "nulls", "huge"]))
    if extra == "list":
        columns["c"] = pa.array([[1.0, 2.0]] * 40, pa.list_(pa.float64()))
    elif extra == "binary":
        columns["c"] = pa.array([b"\xff\xfe"] * 40, pa.binary())
    elif extra == "text numbers":
        cell = draw(st.sampled_from(["1_000", "\u0661", "1e-400", "2.5", " 3 "]))
        columns["c"] = pa.array([cell if i == 7 else str(i) for i in range(40)])
    elif extra == "nulls":
        columns["c"] = pa.array([None if i == 3 else float(i) for i in range(40)])
    elif extra == "huge":
        columns["c"] = pa.array([1e39 if i == 5 else float(i) for i in range(40)])
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer, row_group_size=draw(st.sampled_from([7, 40])))
    return buffer.getvalue()


def _scipy_npz_bytes(draw) -> bytes:
    import scipy.sparse as sp

    dense = np.column_stack([BASE_X, BASE_Y]).astype(np.float64)
    if draw(st.booleans()):
        dense[draw(st.integers(0, 39)), draw(st.integers(0, 2))] = draw(st.sampled_from([np.nan, np.inf, 1e39, 1e308]))
    buffer = io.BytesIO()
    sp.save_npz(buffer, sp.csr_matrix(dense))
    return buffer.getvalue()


@st.composite
def sparse_or_parquet_file(draw) -> tuple[str, bytes]:
    """(suffix, content) of an svmlight, Parquet or scipy .npz file, clean or with odd values."""
    suffix = draw(st.sampled_from([".svm", ".parquet", ".npz"]))
    make = {".svm": _svm_bytes, ".parquet": _parquet_bytes, ".npz": _scipy_npz_bytes}[suffix]
    return suffix, make(draw)


#: settings drawn together: kinds, solvers, precisions and schedules that may not combine
SETTING_COMBINATIONS = st.tuples(
    st.sampled_from(["logistic", "softmax", "multilabel"]),
    st.sampled_from(["gd", "adam", "newton", "lbfgs"]),
    st.sampled_from(["float32", "float64", "bfloat16"]),
    st.sampled_from([(), ("train.schedule='exponential'", "train.gamma=1e300"), ("train.schedule='step'", "train.gamma=0.5"),
                     ("train.warmup_epochs=3",), ("train.warmup_epochs=10",)]),
)


@pytest.mark.slow
@settings(max_examples=max(30, EXAMPLES // 3), **SETTINGS)
@given(file=sparse_or_parquet_file(), combination=SETTING_COMBINATIONS)
@example(file=(".svm", b"1 1:1 1099511627776:1\n" * 3), combination=("logistic", "gd", "float32", ()))
@example(file=(".svm", b"0 1:1\n1 1000000:1\n" * 20), combination=("logistic", "newton", "float32", ()))
def test_sparse_parquet_and_npz_files_under_setting_combinations(reference, file, combination):
    """Exit 0 with finite metrics, or exit 2 with one sentence; never a traceback, never a run
    directory without a checkpoint."""
    suffix, content = file
    kind, solver, dtype, schedule = combination
    work = reference.fresh()
    data_path = work / f"data{suffix}"
    data_path.write_bytes(content)
    run_dir = work / "run"
    sets = [f"data.path={toml_string(str(data_path))}", f"data.target={'label' if suffix == '.parquet' else ''!r}",
            f"model.kind={kind!r}", f"train.solver={solver!r}", f"train.dtype={dtype!r}", "train.epochs=5",
            "train.device='cpu'", *schedule]
    result = run_cli("train", "--run-dir", run_dir, "--quiet", *(a for s in sets for a in ("--set", s)))
    assert "Traceback" not in result.err and result.code in (0, 2), (result.code, result.err)
    if result.code == 2:
        lines = result.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith(PREFIX), result.err
    assert_no_half_run(result, run_dir)
    if result.code == 0:
        assert_finite_run(run_dir)
        import json

        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert all(math.isfinite(v) for split in ("train", "test") for k, v in metrics[split].items()
                   if k in ("loss", "accuracy")), metrics
    reference.check_unchanged()
