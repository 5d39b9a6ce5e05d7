"""``cv --random N --space KEY=SCALE:LO:HI``: seeded draws (log-uniform, uniform, integer), scored
and saved as the grid's are."""

import json
import math

import pytest

from torch_logreg.app import cv
from torch_logreg.app.config import load_config

from helpers import expect_error, run_cli


def test_draws_are_seeded_in_range_and_on_their_scale():
    cfg = load_config("configs/xor_mlp.toml")
    space = cv.parse_space(["train.lr=log:1e-4:1e-1", "model.hidden=int:8:128", "train.momentum=uniform:0:0.5"], cfg)
    assert space == {"train.lr": ("log", 1e-4, 0.1), "model.hidden": ("int", 8.0, 128.0),
                     "train.momentum": ("uniform", 0.0, 0.5)}
    draws = cv.draw(space, 400, seed=3, cfg=cfg)
    assert draws == cv.draw(space, 400, seed=3, cfg=cfg) and draws != cv.draw(space, 400, seed=4, cfg=cfg)
    lrs = [d["train.lr"] for d in draws]
    widths = [d["model.hidden"] for d in draws]
    assert all(1e-4 <= v <= 0.1 for v in lrs)
    assert all(len(w) == 1 and isinstance(w[0], int) and 8 <= w[0] <= 128 for w in widths)
    assert {8, 128} <= {w[0] for w in widths}  # both ends can be drawn
    # log-uniform: each decade about equally often (a uniform draw would put ~90% in the top one)
    decades = [sum(10.0 ** (k - 4) <= v < 10.0 ** (k - 3) for v in lrs) for k in range(3)]
    assert min(decades) > 80
    assert all(0 <= d["train.momentum"] <= 0.5 for d in draws)
    assert all(v == float(f"{v:.6g}") for v in lrs)


@pytest.mark.parametrize("item,message", [
    ("train.lr=log:0:1", "a log scale needs LO > 0"),
    ("train.lr=exp:1:2", "--space expects KEY=SCALE:LO:HI"),
    ("train.lr=uniform:2:1", "needs finite LO <= HI"),
    ("train.epochs=int:1.5:3", "an int scale needs integer ends"),
    ("train.momentum=uniform:0:1.5", "train.momentum must be"),
    ("data.val_fraction=uniform:0:0.3", "cv compares training settings"),
])
def test_bad_spaces_are_one_sentence(item, message):
    from torch_logreg.errors import UsageError

    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        cv.parse_space([item], load_config("configs/xor_mlp.toml"))


@pytest.mark.e2e
def test_cv_random_ranks_its_draws_in_the_grid_s_table(capsys, tmp_path):
    args = ["cv", "--quiet", "--config", "configs/xor_mlp.toml", "--random", "3", "--space", "train.lr=log:0.01:1",
            "--space", "model.hidden=int:2:8", "--folds", "2", "--set", "train.epochs=10", "--set", "train.patience=0",
            "--set", "train.device=cpu"]
    code, out, err = run_cli(capsys, *args, "--run-dir", tmp_path / "a")
    assert code == 0, err
    assert "rank" in out and "train.lr" in out and "model.hidden" in out and "mean_loss" in out
    result = json.loads((tmp_path / "a" / "results.json").read_text())
    assert result["random"] == 3 and result["space"]["train.lr"] == ["log", 0.01, 1.0] and result["seed"] == 0
    rows = result["rows"]
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1)) and 1 <= len(rows) <= 3
    assert all(isinstance(r["model.hidden"], list) for r in rows)
    assert [r["mean_loss"] for r in rows] == sorted(r["mean_loss"] for r in rows if not math.isnan(r["mean_loss"]))
    assert len(list((tmp_path / "a").glob("trial-*"))) == len(rows)
    code, _, err = run_cli(capsys, *args, "--run-dir", tmp_path / "b")  # the same command draws the same trials
    again = json.loads((tmp_path / "b" / "results.json").read_text())["rows"]
    assert [(r["train.lr"], r["model.hidden"]) for r in again] == [(r["train.lr"], r["model.hidden"]) for r in rows]
    expect_error(capsys, "leave --grid out", "cv", "--random", "2", "--grid", "train.l2=0,1", "--space",
                 "train.lr=log:0.01:1")
    expect_error(capsys, "add --random N", "cv", "--space", "train.lr=log:0.01:1")
