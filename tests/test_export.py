"""``torch-logreg export``: each format, loaded in a fresh process, gives ``predict``'s probabilities on
the same raw rows; the models script with ``torch.jit.script``; a prediction keeps no reference to its
input; user mistakes get one sentence and exit 2 with the run untouched."""

import csv
import gc
import hashlib
import importlib.util
import json
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

import torch_logreg as tl
from torch_logreg.app.cli import main
from torch_logreg.app.export import RawFeatureModel
from torch_logreg.models import MODELS

# torch 2.13 deprecates torch.jit.script; the torchscript export and the models' scriptability rest on it, so
# the tests script on purpose
pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")]

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
FORMATS = ("torchscript", "state_dict", "onnx")
ONNX_STACK = ("onnx", "onnxscript", "onnxruntime")
HAVE_ONNX = all(importlib.util.find_spec(m) is not None for m in ONNX_STACK)
#: float32 models: the exported graph and predict run the same float32 model on the same float64
#: preparation; onnxruntime's kernels differ in rounding only (measured max difference 1.8e-7)
TOL = 1e-6

SHOP_HEADER = ["is_mobile", "n_products_viewed", "visit_duration", "is_returning_visitor", "time_of_day"]


def shop_rows(rng, n):
    return [[str(rng.integers(0, 2)), str(rng.integers(0, 6)), f"{rng.exponential(2):.4f}", str(rng.integers(0, 2)),
             str(rng.integers(0, 4))] for _ in range(n)]


def write_csv(path: Path, header, rows) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def raw_inputs(kind: str, directory: Path) -> Path:
    """A CSV of raw rows in the run's training columns (a few dozen rows)."""
    rng = np.random.default_rng(1)
    if kind in ("binary", "softmax", "mlp"):
        from sklearn import datasets

        bunch = datasets.load_breast_cancer() if kind == "binary" else datasets.load_iris()
        rows = [[repr(float(v)) for v in row] for row in bunch.data[::12]]
        return write_csv(directory / f"{kind}.csv", list(bunch.feature_names), rows)
    if kind == "radius":
        radius, angle = rng.uniform(3, 12, 40), rng.uniform(0, 2 * np.pi, 40)
        rows = [[repr(float(r * np.cos(a))), repr(float(r * np.sin(a)))] for r, a in zip(radius, angle)]
        return write_csv(directory / "radius.csv", ["x1", "x2"], rows)
    if kind == "offset":
        rows = [row + [f"{rng.normal():.4f}"] for row in shop_rows(rng, 40)]
        return write_csv(directory / "offset.csv", [*SHOP_HEADER, "log_exposure"], rows)
    return write_csv(directory / f"{kind}.csv", SHOP_HEADER, shop_rows(rng, 40))


def shop_training_csv(path: Path, offset: bool = False) -> Path:
    """The shop rows with a target; ``offset``: with a column ``log_exposure`` added to the logit."""
    rng = np.random.default_rng(0)
    rows = []
    for row in shop_rows(rng, 200):
        dur, viewed, tod = float(row[2]), int(row[1]), int(row[4])
        o = rng.normal() if offset else 0.0
        action = int(rng.random() < 1 / (1 + np.exp(-(dur - 2 + 0.5 * viewed - 1.0 * (tod == 3) + o))))
        rows.append(row + [f"{o:.4f}"] * offset + [str(action)])
    return write_csv(path, [*SHOP_HEADER, *["log_exposure"] * offset, "user_action"], rows)


def train_run(directory: Path, kind: str) -> Path:
    config, sets = {
        "binary": ("breast_cancer.toml", []),
        "radius": ("donut_radius.toml", ["data.n_samples=300"]),
        "softmax": ("digits.toml", ["data.name=iris"]),
        # evaluation mode in every format: batch norm's running statistics, no dropout
        "mlp": ("digits_mlp.toml", ["data.name=iris", "model.dropout=0.2", "model.batch_norm=true",
                                    "train.batch_size=16"]),
        "categorical": ("ecommerce_csv.toml", [f"data.path={shop_training_csv(directory / 'shop.csv')}"]),
        "drop_first": ("ecommerce_csv.toml", [f"data.path={shop_training_csv(directory / 'shop.csv')}",
                                              "data.drop_first=true"]),
        "offset": ("ecommerce_csv.toml", [f"data.path={shop_training_csv(directory / 'exposure.csv', offset=True)}",
                                          "data.offset=log_exposure"]),
    }[kind]
    run_dir = directory / kind
    args = ["train", "--config", str(CONFIGS / config), "--run-dir", str(run_dir), "--quiet",
            "--set", "train.device=cpu", "--set", "train.epochs=15"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    return run_dir


def predicted(path: Path, outputs: list[str]) -> np.ndarray:
    """The columns of a ``predict`` CSV that hold the export's ``outputs`` (``probability_<c>`` is
    predict's ``p_<c>``), as float64."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    names = [name.replace("probability_", "p_", 1) for name in outputs]
    columns = [rows[0].index(name) for name in names]
    return np.array([[float(r[i]) for i in columns] for r in rows[1:]])


def encoded(csv_path: Path, meta: dict) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw CSV rows -> the exported model's float64 inputs: numbers as they are, a category as its
    index in the run's category list; and the offset column, where the run has one."""
    with open(csv_path, newline="") as fh:
        rows = list(csv.reader(fh))
    header = rows[0]
    out = np.empty((len(rows) - 1, len(meta["columns"])))
    for j, column in enumerate(meta["columns"]):
        i = header.index(column)
        for r, row in enumerate(rows[1:]):
            cats = meta["categorical"].get(column)
            out[r, j] = cats.index(row[i]) if cats else float(row[i])
    offset = np.array([float(row[header.index(meta["offset"])]) for row in rows[1:]]) if meta["offset"] else None
    return out, offset


# loads each exported file in a new process that has imported nothing of this test run; the TorchScript and
# ONNX files must not need torch_logreg at all
FRESH = r"""
import json, sys
import numpy as np
jobs = json.loads(sys.argv[1])
for fmt, model_path, x_path, out_path in sorted(jobs, key=lambda j: j[0] == "state_dict"):
    with np.load(x_path) as f:
        X, O = f["x"], f["offset"] if "offset" in f.files else None
    if fmt == "onnx":
        import onnxruntime
        session = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
        run = lambda x, o: session.run(None, {"features": x} if o is None else {"features": x, "offset": o})[0]
    else:
        import torch
        if fmt == "torchscript":
            model = torch.jit.load(model_path)
        else:
            from torch_logreg.app.export import load_state_dict_export
            model = load_state_dict_export(model_path)
        def run(x, o):
            with torch.no_grad():
                args = (torch.from_numpy(x),) if o is None else (torch.from_numpy(x), torch.from_numpy(o))
                return model(*args).double().numpy()
    part = lambda s: None if O is None else O[s]
    np.savez(out_path, all=run(X, O), one=run(X[:1], part(slice(0, 1))), three=run(X[1:4], part(slice(1, 4))),
             needs_library="torch_logreg" in sys.modules)
"""

KINDS = ("binary", "radius", "softmax", "categorical", "drop_first", "mlp", "offset")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Per run kind: the predict output and, per format, the fresh process's outputs on the same rows."""
    root = tmp_path_factory.mktemp("export")
    formats = FORMATS if HAVE_ONNX else FORMATS[:2]
    jobs, results = [], {}
    for kind in KINDS:
        run_dir = train_run(root, kind)
        rows = raw_inputs(kind, root)
        assert main(["predict", "--run", str(run_dir), "--input", str(rows), "--output", str(root / f"{kind}.pred.csv")]) == 0
        for fmt in formats:
            out = root / f"{kind}.{fmt}"
            assert main(["export", "--run", str(run_dir), "--format", fmt, "--output", str(out)]) == 0
            jobs.append((fmt, str(out), str(root / f"{kind}.x.npz"), str(root / f"{kind}.{fmt}.out.npz")))
        meta = torch.load(root / f"{kind}.state_dict", weights_only=True)["metadata"]
        X, offset = encoded(rows, meta)
        np.savez(root / f"{kind}.x.npz", x=X, **({} if offset is None else {"offset": offset}))
        results[kind] = {"predict": predicted(root / f"{kind}.pred.csv", meta["outputs"]), "meta": meta,
                         "run_dir": run_dir}
    subprocess.run([sys.executable, "-c", FRESH, json.dumps(jobs)], check=True, cwd=root, timeout=300)
    for fmt, _, _, out_path in jobs:
        kind = Path(out_path).name.split(".")[0]
        with np.load(out_path) as f:
            results[kind][fmt] = {k: f[k] for k in f.files}
    return results


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", KINDS)
def test_export_in_a_fresh_process_matches_predict(exported, kind, fmt):
    if fmt == "onnx":
        for module in ONNX_STACK:
            pytest.importorskip(module)
    expected, out = exported[kind]["predict"], exported[kind][fmt]
    n_outputs = {"binary": 1, "radius": 1, "categorical": 1, "drop_first": 1, "offset": 1, "softmax": 3,
                 "mlp": 3}[kind]
    assert out["all"].shape == expected.shape == (expected.shape[0], n_outputs)
    assert np.abs(out["all"] - expected).max() <= TOL
    # the batch dimension is dynamic: one row and three rows give the same values as in the batch
    assert np.abs(out["one"] - out["all"][:1]).max() <= TOL
    assert np.abs(out["three"] - out["all"][1:4]).max() <= TOL
    if fmt != "state_dict":
        assert not out["needs_library"]


def test_export_metadata_names_the_inputs_and_outputs(exported):
    meta = exported["categorical"]["meta"]
    assert meta["columns"] == SHOP_HEADER
    assert meta["categorical"] == {"time_of_day": ["0", "1", "2", "3"]}
    assert meta["outputs"] == ["probability_1"] and meta["input_dtype"] == "float64"
    assert exported["radius"]["meta"]["columns"] == ["x1", "x2"] and exported["radius"]["meta"]["add_radius"]
    assert exported["softmax"]["meta"]["outputs"] == ["probability_0", "probability_1", "probability_2"]
    assert exported["drop_first"]["meta"]["drop_first"] and not meta["drop_first"]
    assert meta["inputs"] == ["features"] and meta["offset"] == ""
    offset = exported["offset"]["meta"]
    assert offset["inputs"] == ["features", "offset"] and offset["offset"] == "log_exposure"
    assert offset["columns"] == SHOP_HEADER  # the offset is an input of its own, not a feature column


def test_an_offset_model_refuses_to_run_without_its_offset(exported, tmp_path):
    out = tmp_path / "m.pt"
    assert main(["export", "--run", str(exported["offset"]["run_dir"]), "--format", "state_dict", "--output",
                 str(out)]) == 0
    from torch_logreg.app.export import load_state_dict_export

    model = load_state_dict_export(out)
    x = torch.tensor([[1.0, 3.0, 2.5, 0.0, 3.0]], dtype=torch.float64)
    for bad in (None, torch.zeros(2, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64)):
        with pytest.raises(ValueError, match="log_exposure"):
            model(x, bad)
    with torch.no_grad():  # the offset moves the logit by its value: logit(p) grows by 1
        p0, p1 = (model(x, torch.tensor([o], dtype=torch.float64))[0, 0].double() for o in (0.0, 1.0))
    assert float(torch.logit(p1) - torch.logit(p0)) == pytest.approx(1.0, abs=1e-5)


def test_state_dict_export_is_a_plain_weights_only_dict(exported, tmp_path):
    run_dir = exported["categorical"]["run_dir"]
    out = tmp_path / "m.pt"
    assert main(["export", "--run", str(run_dir), "--format", "state_dict", "--output", str(out)]) == 0
    payload = torch.load(out, weights_only=True)
    assert payload["wrapper_class"] == "torch_logreg.app.export.RawFeatureModel"
    assert payload["model_class"] == "LogisticRegression"
    assert set(payload["state_dict"]) == {"mean", "scale", "model.linear.weight", "model.linear.bias"}
    assert payload["state_dict"]["mean"].dtype == torch.float64
    model = RawFeatureModel(**payload["wrapper_args"])
    model.load_state_dict(payload["state_dict"])
    # an unseen category code (or a fraction) gives NaN outputs, never a silent guess; a known one does not
    x = torch.tensor([[1.0, 3.0, 2.5, 0.0, 3.0], [1.0, 3.0, 2.5, 0.0, 4.0], [1.0, 3.0, 2.5, 0.0, 0.5]], dtype=torch.float64)
    with torch.no_grad():
        p = model(x)[:, 0]
    assert torch.isfinite(p[0]) and torch.isnan(p[1:]).all()


@pytest.mark.skipif(not HAVE_ONNX, reason="needs onnx, onnxscript and onnxruntime")
def test_onnx_unknown_category_gives_nan(exported):
    import onnxruntime

    path = Path(exported["categorical"]["run_dir"]).parent / "categorical.onnx"
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (features,) = session.get_inputs()
    assert features.name == "features" and features.type == "tensor(double)" and features.shape[1] == 5
    x = np.array([[1.0, 3.0, 2.5, 0.0, 3.0], [1.0, 3.0, 2.5, 0.0, 7.0]])
    p = session.run(None, {"features": x})[0][:, 0]
    assert np.isfinite(p[0]) and np.isnan(p[1])


# --- user mistakes --------------------------------------------------------------------------------


def snapshot(directory: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


def expect_error(capsys, message, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("torch-logreg: error: "), err
    assert message in lines[0], lines[0]


def test_export_mistakes_get_one_sentence_and_leave_the_run_alone(exported, tmp_path, capsys, monkeypatch):
    run_dir = exported["binary"]["run_dir"]
    before = snapshot(run_dir)
    out = tmp_path / "model.bin"
    expect_error(capsys, "unknown export format 'pickle'; use one of onnx, torchscript, state_dict",
                 "export", "--run", run_dir, "--format", "pickle", "--output", out)
    expect_error(capsys, "run directory", "export", "--run", tmp_path / "nothing", "--format", "torchscript",
                 "--output", out)
    expect_error(capsys, f"directory {tmp_path / 'missing'} does not exist",
                 "export", "--run", run_dir, "--format", "torchscript", "--output", tmp_path / "missing" / "m.pt")
    expect_error(capsys, "it is a directory", "export", "--run", run_dir, "--format", "state_dict", "--output", tmp_path)
    expect_error(capsys, "is a file of the run",
                 "export", "--run", run_dir, "--format", "state_dict", "--output", run_dir / "checkpoint.pt")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real_find_spec(name, *a))
    expect_error(capsys, "needs the package(s) onnxscript", "export", "--run", run_dir, "--format", "onnx", "--output", out)
    assert not out.exists()
    assert snapshot(run_dir) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temporary file left behind


# --- the models under torch.jit.script, and predictions that keep no reference to their input -----


def every_model():
    yield tl.LogisticRegression(4, n_outputs=2)
    yield tl.SoftmaxRegression(4, 3)
    yield tl.LinearRegression(4, bias=False)
    for activation in ("tanh", "sigmoid", "relu"):
        yield tl.MLP(4, [5, 3], n_outputs=3, activation=activation, link="softmax")


MODEL_CASES = list(every_model())


def test_every_model_class_is_covered():
    assert {type(m).__name__ for m in MODEL_CASES} == set(MODELS)


@pytest.mark.parametrize("model", MODEL_CASES, ids=lambda m: f"{type(m).__name__}-{getattr(m, 'link', '')}")
def test_models_script_and_keep_no_reference_to_a_predicted_input(model):
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    X = torch.randn(7, 4, generator=gen)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        assert torch.equal(scripted(X), model(X))
        assert torch.equal(scripted(X[:1]), model(X[:1]))

    probe = weakref.ref(X)
    with torch.no_grad():
        model(X)
        model.logits(X)
    del X
    gc.collect()
    assert probe() is None

    # the manual backward still has its cache, and drops it once read
    X = torch.randn(7, 4, generator=gen)
    if model.link == "softmax":
        y = torch.randint(0, model.n_outputs, (7,), generator=gen)
    elif model.link == "sigmoid":
        y = torch.randint(0, 2, (7, model.n_outputs), generator=gen)
    else:
        y = torch.randn(7, generator=gen)
    T = model.targets(y, 7)
    _, grads = model.objective_and_grad(X, T, 0.1)
    assert set(grads) == {n for n, _ in model.named_parameters()}
    probe = weakref.ref(X)
    del X
    gc.collect()
    assert probe() is None


def test_the_wrapper_scripts_with_an_mlp_inside():
    args = {"n_features": 3, "hidden": [4], "n_outputs": 1, "activation": "tanh", "link": "sigmoid", "bias": True}
    wrapper = RawFeatureModel("MLP", args, ["a", "b"], {"b": ["x", "y"]}, add_radius=False, dtype="float64")
    x = torch.tensor([[0.5, 1.0], [-2.0, 0.0]], dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(torch.jit.script(wrapper)(x), wrapper(x))
