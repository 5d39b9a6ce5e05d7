"""Configs: defaults, TOML files, --set overrides, and one clear error per mistake."""

import tomllib
from pathlib import Path

import pytest

from torch_logreg.app.config import Config, config_from_dict, load_config
from torch_logreg.errors import UsageError

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.toml"))


def test_shipped_configs_load_and_round_trip():
    names = {p.stem for p in CONFIGS}
    assert {"breast_cancer", "digits", "ecommerce_csv", "donut", "donut_radius", "xor", "synthetic_gpu"} <= names
    for path in CONFIGS:
        cfg = load_config(path)
        again = config_from_dict(tomllib.loads(cfg.to_toml()))
        assert again == cfg


def test_overrides_are_typed():
    cfg = load_config(None, ["train.lr=0.05", "train.epochs=7", "data.categorical=[\"a\", \"b\"]",
                             "train.solver=momentum", "data.standardize=false", "train.l2=1"])
    assert cfg.train.lr == 0.05 and cfg.train.epochs == 7 and cfg.train.solver == "momentum"
    assert cfg.data.categorical == ["a", "b"] and cfg.data.standardize is False
    assert cfg.train.l2 == 1.0 and isinstance(cfg.train.l2, float)


def test_defaults_match_the_documented_keys():
    cfg = Config()
    assert (cfg.data.name, cfg.model.kind, cfg.train.solver, cfg.train.batch_size) == ("breast_cancer", "logistic", "gd", 0)
    assert (cfg.log.dir, cfg.log.every, cfg.log.checkpoint_every) == ("runs", 10, 50)


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.lrr=1", "unknown key 'train.lrr'; did you mean 'lr'?"),
        ("trian.lr=1", "unknown section [trian]; did you mean 'train'?"),
        ("train.lr=abc", "train.lr must be a number, got 'abc'"),
        ("train.lr=0", "--set train.lr=0: train.lr must be a finite number > 0, got 0.0"),
        ("train.epochs=2.5", "train.epochs must be an integer, got 2.5"),
        ("train.momentum=1", "train.momentum must be a finite number >= 0 and < 1, got 1.0"),
        ("train.solver=sgd", "train.solver must be one of ['gd', 'momentum', 'nesterov', 'adagrad', 'rmsprop', 'adam', "
                             "'adamw', 'newton', 'lbfgs', 'proximal', 'cd'], got 'sgd'"),
        ("train.betas=[0.8, 0.9]", "train.solver='gd' takes no betas"),
        ("train.schedule=linear", "train.schedule must be one of ['constant', 'step', 'exponential', 'cosine', 'plateau']"),
        ("train.device=tpu", "train.device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
        ("train.dtype=float8", "train.dtype must be one of ['float32', 'float64', 'bfloat16', 'float16'], got 'float8'"),
        ("data.name=mnist", "data.name must be one of"),
        ("model.kind=probit", "model.kind must be one of"),
        ("data.test_fraction=0.9", "must be < 1"),
        ("train.lr", "--set expects key=value"),
        ("lr=1", "keys look like section.name"),
    ],
)
def test_bad_override(override, message):
    with pytest.raises(UsageError) as info:
        load_config(None, [override])
    assert message in str(info.value)


def test_bad_file_names_file_and_line(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[train]\nlr = 0.1\n\nepochs = -3\n")
    with pytest.raises(UsageError, match=r"c.toml, line 4: train.epochs must be an integer >= 1, got -3"):
        load_config(path)
    path.write_text("[train]\nlr = = 1\n")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_config(path)
    path.write_text("[trainn]\nlr = 1\n")
    with pytest.raises(UsageError, match="did you mean 'train'"):
        load_config(path)
    with pytest.raises(UsageError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_a_byte_order_mark_and_a_home_directory_are_read(tmp_path, monkeypatch):
    path = tmp_path / "c.toml"
    path.write_bytes("\ufeff[train]\nlr = 0.25\n[log]\ndir = \"~/runs\"\n".encode("utf-8"))
    cfg = load_config(path)
    assert cfg.train.lr == 0.25
    from torch_logreg.app.runs import new_run_dir

    monkeypatch.setenv("HOME", str(tmp_path))
    run = new_run_dir(cfg, "x", None)
    assert run.parent == tmp_path / "runs"  # ~ expanded, as in data.path


def test_an_empty_data_path_means_the_built_in_set_in_a_file_but_not_from_set(tmp_path):
    """A saved config.toml writes path = "" for a built-in data set, and must read back (train
    --config runs/X/config.toml repeats a run); an empty --set data.path=$DATA is a mistake."""
    path = tmp_path / "c.toml"
    path.write_text('[data]\nname = "digits"\npath = ""\n')
    assert load_config(path).data.name == "digits"
    with pytest.raises(UsageError, match="data.path is empty"):
        load_config(path, ["data.path="])
