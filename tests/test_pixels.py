"""Image-like CSVs: a pixels column expanded to features (its width checked on every row, named by
line), columns dropped, the split taken from a column, and a softmax and an MLP trained from it."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import expect_error, run_cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import make_fer_like  # noqa: E402

from torch_logreg.app.config import load_config  # noqa: E402
from torch_logreg.app.ingest.columns import SPLIT_NAMES, square_shape  # noqa: E402
from torch_logreg.app.ingest.datasets import load_dataset  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "fer_like.toml"


def write_csv(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def config(path, *sets):
    return load_config(CONFIG, [f"data.path={path}", *sets])


def test_a_pixels_column_becomes_features_and_a_square_image(tmp_path):
    path = write_csv(tmp_path / "f.csv", ["emotion,pixels,Usage,note",
                                          "0,1 2 3 4,Training,a", "1,5 6 7 8,PublicTest,b", "0,9 10 11 12,PrivateTest,c",
                                          "1,0 0 0 1,train,d", "0,1 1 1 1,val,e", "1,2 2 2 2,test,f"])
    ds = load_dataset(config(path, "data.drop=[\"note\"]").data)
    assert ds.X.shape == (6, 4) and ds.X[1].tolist() == [5.0, 6.0, 7.0, 8.0]
    assert ds.schema.feature_names == ["pixels1", "pixels2", "pixels3", "pixels4"]
    assert ds.image_shape == (2, 2)
    assert ds.split.tolist() == [0, 1, 2, 0, 1, 2]
    # the schema saved with a run reads the pixels of new rows alike
    from torch_logreg.app.ingest import Schema

    assert Schema.from_dict(ds.schema.to_dict()) == ds.schema
    assert square_shape(2304) == (48, 48) and square_shape(10) is None
    assert {"Training", "PublicTest", "PrivateTest", "train", "val", "test"} <= set(SPLIT_NAMES)


def test_a_row_of_another_width_is_named_by_its_line(tmp_path, capsys):
    path = write_csv(tmp_path / "f.csv", ["emotion,pixels,Usage", "0,1 2 3 4,Training", "1,5 6 7,Training",
                                          "0,1 2 3 4,PublicTest"])
    line = expect_error(capsys, "line 3", "train", "--config", CONFIG, "--set", f"data.path={path}",
                        "--run-dir", tmp_path / "run", "--quiet")
    assert "3 numbers where the first row has 4" in line
    path = write_csv(tmp_path / "g.csv", ["emotion,pixels,Usage", "0,1 2 3 4,Training", "1,5 6 x 8,Training"])
    assert "'x' is not a finite number" in expect_error(capsys, "line 3", "train", "--config", CONFIG, "--set",
                                                        f"data.path={path}", "--run-dir", tmp_path / "run2", "--quiet")
    path = write_csv(tmp_path / "h.csv", ["emotion,pixels,Usage", "0,1 2 3 4,Training", "1,5 6 7 8,Holdout"])
    assert "'Holdout' names no split" in expect_error(capsys, "line 3", "train", "--config", CONFIG, "--set",
                                                      f"data.path={path}", "--run-dir", tmp_path / "run3", "--quiet")
    expect_error(capsys, "data.pixels column 'image' is not in the header", "train", "--config", CONFIG, "--set",
                 f"data.path={path}", "--set", "data.pixels=image", "--run-dir", tmp_path / "run4", "--quiet")


def test_the_generator_is_seeded():
    assert make_fer_like.make_rows(20, 6, seed=3) == make_fer_like.make_rows(20, 6, seed=3)
    assert make_fer_like.make_rows(20, 6, seed=3) != make_fer_like.make_rows(20, 6, seed=4)


@pytest.mark.e2e
@pytest.mark.parametrize("model", [["model.kind=softmax"],
                                   ["model.kind=mlp", "model.hidden=[16]", "model.activation=relu"]])
def test_fer_like_trains_a_softmax_and_an_mlp_from_the_pixels_column(tmp_path, capsys, model):
    path = make_fer_like.write(tmp_path / "fer_like.csv", rows=300, side=8, seed=0)
    run_dir = tmp_path / "run"
    sets = [f"data.path={path}", "train.device=cpu", "train.epochs=15", "train.lr=0.01", *model]
    args = ["train", "--config", CONFIG, "--run-dir", run_dir, "--quiet"]
    for s in sets:
        args += ["--set", s]
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] > 0.5  # seven classes: chance is 1/7


def test_the_split_column_names_each_row_s_split(tmp_path):
    import torch

    from torch_logreg.app.fitting import prepare

    path = make_fer_like.write(tmp_path / "fer_like.csv", rows=120, side=4, seed=1)
    prep = prepare(config(path, "train.device=cpu"), torch.device("cpu"), torch.float64)
    usage = np.array([row[2] for row in make_fer_like.make_rows(120, 4, 1)])
    labels = np.array([row[0] for row in make_fer_like.make_rows(120, 4, 1)])
    for split, name in (("train", "Training"), ("val", "PublicTest"), ("test", "PrivateTest")):
        assert len(prep.y[split]) == int((usage == name).sum())
    assert [prep.classes[int(k)] for k in prep.y["test"]] == [str(v) for v in labels[usage == "PrivateTest"]]
    assert prep.image_shape == (4, 4)


@pytest.mark.e2e
def test_cv_deals_the_rows_outside_the_split_column_s_test_rows(tmp_path, capsys, monkeypatch):
    from torch_logreg.app import cv

    path = make_fer_like.write(tmp_path / "fer_like.csv", rows=150, side=4, seed=2)
    seen = []
    kfold = cv.folds_lib.kfold

    def spy(y, *args, **kwargs):
        seen.append(len(y))
        return kfold(y, *args, **kwargs)

    monkeypatch.setattr(cv.folds_lib, "kfold", spy)
    code, _, err = run_cli(capsys, "cv", "--quiet", "--config", CONFIG, "--set", f"data.path={path}", "--set",
                           "train.device=cpu", "--set", "train.epochs=3", "--grid", "train.lr=0.01", "--folds", "2",
                           "--run-dir", tmp_path / "cv")
    assert code == 0, err
    usage = [row[2] for row in make_fer_like.make_rows(150, 4, 2)]
    assert seen == [sum(u != "PrivateTest" for u in usage)]
