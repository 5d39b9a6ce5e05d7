"""The same layers stacked into an MLP: manual backward = autograd; XOR becomes separable."""

import pytest
import torch

import torch_logreg as tl
from torch_logreg.gradients import autograd_gradient
from torch_logreg.layers import ACTIVATIONS


def xor_data(n=400, seed=0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 2, generator=gen, dtype=torch.float64) * 2 - 1
    X = X + 0.1 * torch.sign(X)  # keep points off the axes, where the label flips
    y = ((X[:, 0] > 0) ^ (X[:, 1] > 0)).long()
    return X, y


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
@pytest.mark.parametrize("link,n_out", [("sigmoid", 1), ("softmax", 3), ("identity", 2)])
@pytest.mark.parametrize("l2", [0.0, 0.1])
def test_stacked_manual_backward_matches_autograd(activation, link, n_out, l2):
    torch.manual_seed(0)
    model = tl.StackedModel(
        {
            "fc1": tl.Linear(5, 8).double(),
            "act1": ACTIVATIONS[activation](),
            "fc2": tl.Linear(8, 6).double(),
            "act2": ACTIVATIONS[activation](),
            "out": tl.Linear(6, n_out).double(),
        },
        link=link,
        n_outputs=n_out,
    )
    X = torch.randn(30, 5, dtype=torch.float64)
    if link == "softmax":
        y = torch.randint(0, n_out, (30,))
    elif link == "sigmoid":
        y = torch.randint(0, 2, (30,))
    else:
        y = torch.randn(30, n_out, dtype=torch.float64)
    T = model.targets(y, 30)
    _, manual = model.objective_and_grad(X, T, l2)
    reference = autograd_gradient(model, X, T, l2)
    assert set(manual) == set(reference) == {n for n, _ in model.named_parameters()}
    for name in manual:
        scale = reference[name].abs().max().item()
        assert (manual[name] - reference[name]).abs().max().item() <= 1e-10 * max(scale, 1e-300), name


@pytest.mark.slow
def test_mlp_learns_xor_where_logistic_regression_cannot():
    X, y = xor_data()
    logistic = tl.LogisticRegression(2).double()
    tl.fit(logistic, X, y, solver="nesterov", lr=0.5, epochs=2000, device="cpu")
    acc_logistic = (logistic.predict(X) == y).double().mean().item()

    torch.manual_seed(0)
    mlp = tl.MLP(2, [8], n_outputs=1, activation="tanh").double()
    tl.fit(mlp, X, y, solver="nesterov", lr=0.5, epochs=2000, device="cpu", grad_check_every=500)
    acc_mlp = (mlp.predict(X) == y).double().mean().item()
    assert acc_logistic <= 0.75
    assert acc_mlp == 1.0


# --- MLPs from configs and the command line ------------------------------------------------------


def _cli(capsys, *args):
    from torch_logreg.app.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _metrics(run_dir):
    import json

    return json.loads((run_dir / "metrics.json").read_text())


CONFIGS = __import__("pathlib").Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("config", ["xor_mlp.toml", "donut_mlp.toml"])
def test_mlp_configs_fit_what_logistic_regression_cannot(capsys, tmp_path, config):
    """XOR, and the donut without its radius feature: a linear boundary stays near chance (see
    test_cli's donut test), a hidden layer reaches 0.95 on held-out data."""
    code, out, err = _cli(capsys, "train", "--config", CONFIGS / config, "--quiet", "--run-dir", tmp_path / "run",
                          "--set", "train.device=cpu")
    assert code == 0, err
    metrics = _metrics(tmp_path / "run")
    assert metrics["test"]["accuracy"] >= 0.95
    from torch_logreg.app.checkpoint import load_checkpoint

    payload = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert payload["model_class"] == "MLP" and payload["model_args"]["hidden"]


@pytest.mark.e2e
def test_mlp_run_gradchecks_evaluates_predicts_and_cross_validates(capsys, tmp_path):
    import csv

    sets = ["--set", "train.device=cpu", "--set", "train.epochs=30", "--set", "model.hidden=[4]"]
    code, out, err = _cli(capsys, "gradcheck", "--config", CONFIGS / "xor_mlp.toml", *sets)
    assert code == 0 and "PASS" in out and "autograd" in out and "finite_difference" in out, out + err
    code, _, err = _cli(capsys, "train", "--config", CONFIGS / "xor_mlp.toml", "--quiet", "--run-dir", tmp_path / "r",
                        *sets)
    assert code == 0, err
    code, out, err = _cli(capsys, "evaluate", "--run", tmp_path / "r")
    test_row = next(line for line in out.splitlines() if line.startswith("test "))  # the summary table's row
    assert code == 0 and f"{_metrics(tmp_path / 'r')['test']['loss']:.4f}" in test_row.split(), out + err
    rows = tmp_path / "in.csv"
    rows.write_text("x1,x2\n0.5,0.5\n-0.5,0.5\n")
    code, _, err = _cli(capsys, "predict", "--run", tmp_path / "r", "--input", rows, "--output", tmp_path / "p.csv")
    assert code == 0, err
    table = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert len(table) == 2 and all(0 <= float(r["p_1"]) <= 1 for r in table)
    code, out, err = _cli(capsys, "cv", "--config", CONFIGS / "xor_mlp.toml", "--quiet", "--grid", "train.lr=0.1,0.3",
                          "--folds", "2", "--run-dir", tmp_path / "cv", *sets)
    assert code == 0 and "mean_loss" in out, err


@pytest.mark.parametrize(
    "sets,message",
    [
        (["model.hidden=[8]"], "model.hidden applies to model.kind = 'mlp'; model.kind is 'logistic'"),
        (["model.kind=mlp"], "model.kind = 'mlp' needs model.hidden"),
        (["model.kind=mlp", "model.hidden=[8, 0]"], "each width in model.hidden must be an integer >= 1, got 0"),
        (["model.kind=mlp", "model.hidden=[8.5]"], "model.hidden must be a list of integers"),
        (["model.kind=mlp", "model.hidden=[8]", "model.activation=gelu"], "model.activation must be one of"),
        (["model.kind=mlp", "model.hidden=[8]", "model.init=orthogonal"], "model.init must be one of"),
        (["model.kind=mlp", "model.hidden=[8]", "train.solver=newton"], "train.solver = 'newton' needs a model without"),
        (["model.kind=mlp", "model.hidden=[8]", "train.solver=proximal"], "train.solver = 'proximal' needs a model"),
    ],
)
def test_mlp_config_mistakes_are_one_sentence(capsys, tmp_path, sets, message):
    args = ["train", "--quiet", "--run-dir", tmp_path / "r"]
    for s in sets:
        args += ["--set", s]
    code, _, err = _cli(capsys, *args)
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("scheme,bound", [("xavier_uniform", (6 / (5 + 7)) ** 0.5), ("kaiming_uniform", (6 / 5) ** 0.5),
                                          ("uniform", 5 ** -0.5)])
def test_named_initialisations_are_seeded_and_in_range(scheme, bound):
    from torch_logreg.init import initialize

    a, b, c = (tl.MLP(5, [7], 2, link="softmax").double() for _ in range(3))
    initialize(a, scheme, seed=1)
    initialize(b, scheme, seed=1)
    initialize(c, scheme, seed=2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.fc0.weight, c.fc0.weight)
    w = a.fc0.weight.abs()
    assert w.max() <= bound and w.max() > 0.7 * bound  # 35 draws of U(-bound, bound)
    if scheme != "uniform":
        assert torch.equal(a.fc0.bias, torch.zeros(7, dtype=torch.float64))


def test_normal_initialisations_have_their_variance():
    from torch_logreg.init import initialize

    model = tl.MLP(400, [300], 1).double()
    for scheme, var in (("xavier_normal", 2 / 700), ("kaiming_normal", 2 / 400)):
        initialize(model, scheme, seed=0)
        # 120,000 draws: the sample variance is within 2% of the target (its sd is ~0.4%)
        assert model.fc0.weight.var().item() == pytest.approx(var, rel=0.02)


@pytest.mark.e2e
def test_mlp_run_logs_each_layers_histograms_and_the_decision_map(capsys, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    code, _, err = _cli(capsys, "train", "--config", CONFIGS / "xor_mlp.toml", "--quiet", "--run-dir", tmp_path / "r",
                        "--set", "train.device=cpu", "--set", "train.epochs=6", "--set", "log.histograms_every=2",
                        "--set", "model.hidden=[4, 3]", "--set", "log.every=1")
    assert code == 0, err
    acc = EventAccumulator(str(tmp_path / "r"), size_guidance={"images": 0, "histograms": 0})
    acc.Reload()
    names = {f"{kind}/{layer}.{p}" for kind in ("weights", "gradients") for layer in ("fc0", "fc1", "out")
             for p in ("weight", "bias")}
    assert names <= set(acc.Tags()["histograms"])
    assert "probability_map" in acc.Tags()["images"]
    assert {"train/objective", "train/loss", "val/loss", "lr"} <= set(acc.Tags()["scalars"])
