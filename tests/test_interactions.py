"""``data.interactions``: products of raw numeric columns appended as features by the one Schema,
the same in train, evaluate, predict, cv, path and export; saved with the run (runs without the
key still load); ``configs/xor_interaction.toml`` fits XOR with a logistic model."""

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from torch_logreg.app.export import load_state_dict_export
from torch_logreg.app.ingest import Schema
from torch_logreg.app.runs import model_from_checkpoint

from helpers import expect_error, run_cli, sample_then_predict

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
INTERACTIONS = '[["x1", "x2"], ["x1", "x2", "x3"]]'


def write_csv(path: Path, n: int = 200, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    colour = rng.choice(["red", "blue"], size=n)
    eta = 2.0 * X[:, 0] * X[:, 1] - 0.5 * X[:, 2]
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(int)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["x1", "x2", "x3", "colour", "y"])
        w.writerows([[f"{a:.6f}", f"{b:.6f}", f"{c:.6f}", k, t] for (a, b, c), k, t in zip(X, colour, y)])
    return path


def train_args(path, run_dir, *more):
    args = ["train", "--quiet", "--run-dir", run_dir]
    for s in (f"data.path={path}", "data.target=y", "data.categorical=['colour']", f"data.interactions={INTERACTIONS}",
              "train.solver=newton", "train.l2=0.01", "train.epochs=50", "train.device=cpu", *more):
        args += ["--set", s]
    return args


def test_schema_appends_products_of_raw_columns_and_names_them(tmp_path):
    from torch_logreg.app.config import load_config
    from torch_logreg.app.ingest import load_dataset

    path = write_csv(tmp_path / "d.csv", n=20)
    cfg = load_config(None, [f"data.path={path}", "data.target=y", "data.categorical=['colour']",
                             f"data.interactions={INTERACTIONS}"])
    ds = load_dataset(cfg.data)
    assert ds.schema.feature_names == ["x1", "x2", "x3", "colour=blue", "colour=red", "x1*x2", "x1*x2*x3"]
    assert ds.schema.n_features == 7
    raw = np.loadtxt(path, delimiter=",", skiprows=1, usecols=(0, 1, 2))
    X = ds.X.numpy()
    np.testing.assert_array_equal(X[:, 5], raw[:, 0] * raw[:, 1])
    np.testing.assert_array_equal(X[:, 6], raw[:, 0] * raw[:, 1] * raw[:, 2])
    again = Schema.from_dict(json.loads(json.dumps(ds.schema.to_dict())))
    assert again == ds.schema
    older = ds.schema.to_dict()
    del older["interactions"]  # a run saved before the key existed
    assert Schema.from_dict(older).interactions == [] and Schema.from_dict(older).n_features == 5


def test_built_in_set_takes_interactions():
    from torch_logreg.app.config import load_config
    from torch_logreg.app.ingest import load_dataset

    cfg = load_config(CONFIGS / "xor_interaction.toml", ["data.n_samples=50"])
    ds = load_dataset(cfg.data)
    assert ds.schema.feature_names == ["x1", "x2", "x1*x2"]
    np.testing.assert_array_equal(ds.X[:, 2], ds.X[:, 0] * ds.X[:, 1])


@pytest.mark.parametrize("value, message", [
    ('[["x1", "colour"]]', "data.interactions multiplies numeric columns; 'colour' is categorical"),
    ('[["x1", "x9"]]', "data.interactions column 'x9' is not a feature column"),
    ('[["x1"]]', "data.interactions must be a list of lists of two or more column names"),
])
def test_mistakes_are_one_sentence(capsys, tmp_path, value, message):
    path = write_csv(tmp_path / "d.csv", n=20)
    expect_error(capsys, message, "train", "--quiet", "--run-dir", tmp_path / "run", "--set", f"data.path={path}",
                 "--set", "data.target=y", "--set", "data.categorical=['colour']", "--set",
                 f"data.interactions={value}")
    assert not (tmp_path / "run").exists()


@pytest.mark.e2e
@pytest.mark.slow
def test_xor_interaction_config_fits_xor(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--quiet", "--config", CONFIGS / "xor_interaction.toml", "--run-dir",
                           tmp_path / "run", "--set", "train.device=cpu")
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] > 0.95
    # the plain logistic model on the same data cannot (at most ~75 %)
    code, _, err = run_cli(capsys, "train", "--quiet", "--config", CONFIGS / "xor_interaction.toml", "--run-dir",
                           tmp_path / "plain", "--set", "train.device=cpu", "--set", "data.interactions=[]")
    assert code == 0, err
    assert json.loads((tmp_path / "plain" / "metrics.json").read_text())["test"]["accuracy"] < 0.8


@pytest.mark.e2e
@pytest.mark.slow
def test_train_evaluate_predict_and_export_apply_the_same_products(capsys, tmp_path):
    path = write_csv(tmp_path / "d.csv")
    code, _, err = run_cli(capsys, *train_args(path, tmp_path / "run"))
    assert code == 0, err
    payload = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert payload["schema"]["interactions"] == [["x1", "x2"], ["x1", "x2", "x3"]]
    model = model_from_checkpoint(payload)

    new = write_csv(tmp_path / "new.csv", n=30, seed=5)
    code, _, err = run_cli(capsys, "predict", "--run", tmp_path / "run", "--input", new, "--output",
                           tmp_path / "p.csv")
    assert code == 0, err
    with open(tmp_path / "p.csv") as fh:
        predicted = np.array([float(r["p_1"]) for r in csv.DictReader(fh)])

    raw = np.loadtxt(new, delimiter=",", skiprows=1, usecols=(0, 1, 2))
    colour = np.loadtxt(new, delimiter=",", skiprows=1, usecols=3, dtype=str)
    features = np.column_stack([raw, colour == "blue", colour == "red", raw[:, 0] * raw[:, 1], raw.prod(1)])
    from torch_logreg.app.ingest import Standardizer

    std = Standardizer.from_state_dict(payload["standardizer"])
    X = std.transform(torch.from_numpy(features.astype(np.float64))).to(model.dtype)
    with torch.no_grad():
        expected = model(X)[:, 0].double().numpy()
    np.testing.assert_allclose(predicted, expected, rtol=0, atol=1e-6)

    code, out, err = run_cli(capsys, "evaluate", "--run", tmp_path / "run", "--data", new, "--json")
    assert code == 0, err

    codes = np.column_stack([raw, (colour == "red").astype(float)])  # categories by index: blue 0, red 1
    formats = ["torchscript", "state_dict"] + (["onnx"] if importlib.util.find_spec("onnxruntime") else [])
    for fmt in formats:
        out_file = tmp_path / f"m.{fmt}"
        code, _, err = run_cli(capsys, "export", "--run", tmp_path / "run", "--format", fmt, "--output", out_file)
        assert code == 0, err
        if fmt == "torchscript":
            got = torch.jit.load(str(out_file))(torch.from_numpy(codes)).double().numpy()[:, 0]
        elif fmt == "state_dict":
            got = load_state_dict_export(out_file)(torch.from_numpy(codes)).double().numpy()[:, 0]
        else:
            import onnxruntime

            session = onnxruntime.InferenceSession(str(out_file))
            got = session.run(None, {"features": codes})[0][:, 0].astype(np.float64)
        np.testing.assert_allclose(got, predicted, rtol=0, atol=1e-6, err_msg=fmt)


@pytest.mark.e2e
def test_cv_and_path_take_interactions(capsys, tmp_path):
    path = write_csv(tmp_path / "d.csv")
    sets = []
    for s in (f"data.path={path}", "data.target=y", "data.categorical=['colour']", f"data.interactions={INTERACTIONS}",
              "train.solver=newton", "train.epochs=30", "train.device=cpu"):
        sets += ["--set", s]
    code, _, err = run_cli(capsys, "cv", "--quiet", "--folds", "2", "--grid", "train.l2=0.01,0.1", "--run-dir",
                           tmp_path / "cv", *sets)
    assert code == 0, err
    code, _, err = run_cli(capsys, "path", "--quiet", "--folds", "2", "--n-penalties", "3", "--run-dir",
                           tmp_path / "path", *sets)
    assert code == 0, err
    model = model_from_checkpoint(torch.load(tmp_path / "path" / "refit" / "checkpoint.pt", weights_only=True))
    assert model.n_features == 7


@pytest.mark.e2e
def test_sample_writes_the_raw_columns_of_a_run_with_products(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--quiet", "--config", CONFIGS / "xor_interaction.toml", "--run-dir",
                           tmp_path / "run", "--set", "train.device=cpu", "--set", "data.n_samples=100")
    assert code == 0, err
    assert sample_then_predict(capsys, tmp_path / "run", tmp_path, 4) == "x1,x2,target"
