"""The selector's ``step`` option: "rule" (the default) takes the rule table's step, a named step is
forced or refused with a UsageError, names no longer offered ("blocked", "auto") are read as "rule"
with a warning, and every choice computes the reference step's objective and gradient. Nothing
here is timed."""

import pytest
import torch

import torch_logreg as tl
from torch_logreg.errors import UsageError
from torch_logreg.steps import batch_fused, fused_cpu, fused_k_cpu, row_major, select
from torch_logreg.steps.feature_major import FeatureMajorStep
from torch_logreg.steps.row_major import RowMajorStep

from helpers import KINDS, make_model, make_targets, randomize

needs_numba = pytest.mark.skipif(not fused_cpu.available(), reason="numba is not installed")


@pytest.fixture(autouse=True)
def larger_problem_rule(monkeypatch):
    """The problems here are small, and the rule gives a small CPU problem to the batch kernel:
    the rule of larger ones (the feature-major step) is taken unless a test restores it; and
    several outputs take the steps of a CPU without the K-output kernel (its own tests:
    test_fused_k_cpu.py)."""
    monkeypatch.setattr(batch_fused, "MAX_WORK", 0)
    monkeypatch.setattr(fused_k_cpu, "problem", lambda model, X: "is left out here")


def problem(kind: str = "softmax", n: int = 400, d: int = 6, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    model = make_model(kind, d).double()
    randomize(model, gen, 0.3)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    return model, X, model.targets(make_targets(kind, n, gen), n)


# --- the rule ------------------------------------------------------------------------------------


@needs_numba
def test_the_rule_gives_a_small_cpu_problem_to_the_batch_kernel(monkeypatch):
    monkeypatch.setattr(batch_fused, "MAX_WORK", 1 << 21)
    model, X, T = problem(n=300)
    chosen = select.full_batch(model, X, T, step="rule")
    assert isinstance(chosen, RowMajorStep) and chosen.kernel_name == "batch_fused" and chosen.selection.source == "rule"
    loss, grads = chosen.step(X, T, 0.1)
    loss_ref, grads_ref = model.objective_and_grad(X, T, 0.1)
    assert loss.item() == pytest.approx(loss_ref.item(), rel=1e-12)
    for k, g in grads_ref.items():
        assert (grads[k] - g).abs().max().item() <= 1e-12 * g.abs().max().item()
    # one element past the kernel's limit, the rule's step of larger problems
    monkeypatch.setattr(batch_fused, "MAX_WORK", X.numel() * model.n_outputs - 1)
    assert isinstance(select.full_batch(model, X, T, step="rule"), FeatureMajorStep)


@needs_numba
@pytest.mark.parametrize("n,d,k,takes", [(300, 6, 3, True), (342, 6, 3, False), (100, 300, 3, True),
                                         (100, 437, 3, False), (1024, 10, 1, True), (1025, 10, 1, False),
                                         (3000, 10, 1, False)])
def test_the_rule_keeps_the_batch_kernel_to_full_batches_it_is_faster_on(monkeypatch, n, d, k, takes):
    """At most ``row_major.RULE_MAX_ROWS_OUTPUTS`` rows x outputs and ``RULE_MAX_WORK`` rows x
    features x outputs: beyond, the kernel's per-row link costs more than the torch steps."""
    monkeypatch.setattr(batch_fused, "MAX_WORK", 1 << 21)
    model = (tl.LogisticRegression(d) if k == 1 else tl.SoftmaxRegression(d, k)).double()
    X = torch.randn(n, d, dtype=torch.float64)
    T = model.targets(torch.randint(0, 2 if k == 1 else k, (n,)), n)
    assert row_major.rule_takes(n, d, k) == takes
    assert isinstance(select.full_batch(model, X, T, step="rule"), RowMajorStep if takes else FeatureMajorStep)


def test_several_processes_and_streamed_data_take_the_rule():
    model, X, T = problem()
    cpu = torch.device("cpu")
    step = select.training_step(model, X, T, batch_size=400, dtype=torch.float64, device=cpu, data_parallel=True)
    assert step.name == "feature_major" and step.selection.source == "rule"
    step = select.training_step(model, X, T, batch_size=64, dtype=torch.float64, device=cpu, in_memory=False)
    assert step.name == "batch" and "streamed" in step.selection.reason


# --- forced steps --------------------------------------------------------------------------------


FORCED = [("reference", "reference"), ("feature_major", "feature_major"), ("row_major", "row_major"),
          pytest.param("fused", "fused_cpu", marks=needs_numba)]


@pytest.mark.parametrize("step,name", FORCED)
def test_a_forced_step_is_taken(step, name):
    X, y = torch.randn(50, 3), torch.randint(0, 2, (50,))
    trainer = tl.Trainer(tl.LogisticRegression(3), X, y, device="cpu", step=step, epochs=2)
    assert trainer.stepper.name == name and trainer.stepper.selection.source == "forced"
    trainer.run()


def test_forced_and_default_steps_on_mini_batches():
    X, y = torch.randn(50, 3), torch.randint(0, 2, (50,))
    for step, name in [("reference", "reference"), ("row_major", "batch"), ("rule", "batch")]:
        assert tl.Trainer(tl.LogisticRegression(3), X, y, batch_size=10, device="cpu", step=step).stepper.name == name
    assert tl.Trainer(tl.LogisticRegression(3), X, y, device="cpu").stepper.selection.source == "rule"
    history = tl.fit(tl.LogisticRegression(3), X, y, device="cpu", step="row_major", epochs=3)
    assert history.n_epochs == 3


REFUSED = [
    (dict(model=tl.MLP(3, [4]), step="feature_major"), "one Linear layer"),
    (dict(step="feature_major", batch_size=10), "full-batch training"),
    (dict(step="fused", batch_size=10), "full-batch training"),
    (dict(step="row_major", grad_check_every=5), "gradient checks"),
    (dict(step="feature_major", fast_path=False), "fast path"),
    (dict(step="row_major", dtype="bfloat16"), "bfloat16"),
    (dict(step="fastest"), "step must be one of"),
]


@pytest.mark.parametrize("kwargs,message", REFUSED)
def test_an_inapplicable_forced_step_is_refused(kwargs, message):
    kwargs = dict(kwargs)
    model = kwargs.pop("model", tl.LogisticRegression(3))
    n_classes = model.n_outputs if model.link == "softmax" else 2
    X, y = torch.randn(50, 3), torch.randint(0, n_classes, (50,))
    with pytest.raises(UsageError, match=message) as info:
        tl.Trainer(model, X, y, device="cpu", **kwargs)
    text = str(info.value)
    assert text.count(". ") == 0 and "\n" not in text  # one sentence
    if kwargs["step"] != "fastest":
        assert text.startswith(f"step={kwargs['step']!r} ")


def test_the_full_batch_selector_refuses_what_it_cannot_run():
    model, X, T = problem("binary")
    with pytest.raises(UsageError, match="sample weights"):
        select.full_batch(model, X, T, torch.ones(X.shape[0], dtype=X.dtype), step="feature_major")
    with pytest.raises(UsageError, match="contiguous"):
        select.full_batch(model, X.T.contiguous().T, T, step="fused")
    assert select.full_batch(model, X, T, torch.ones(X.shape[0], dtype=X.dtype), step="reference").name == "reference"


def test_the_config_key_reaches_the_loop():
    from torch_logreg.app.config import Config, load_config
    from torch_logreg.app.fitting import exact_options, loop_config, loop_options

    # the default is the fixed rule, the same step in every process
    assert Config().train.step == "rule" and loop_config(Config()).step == "rule"
    assert loop_options(load_config(None, ["train.step=reference"]))["step"] == "reference"
    # a run saved by an earlier version with train.step = "auto" resumes with the step it had
    # measured, where that is a step a run can force; the rule otherwise (read from "auto")
    auto = load_config(None, ["train.step=auto"])
    assert loop_config(auto, step="row_major").step == "row_major"
    assert loop_config(auto, step="rule").step == "auto" and loop_config(auto, step="sparse").step == "auto"
    assert loop_config(Config(), step="row_major").step == "rule"
    assert loop_config(load_config(None, ["train.step=reference"]), step="row_major").step == "reference"
    # an exact solver takes no loop step: a forced one is the rule there, "auto" is passed on (and warned of)
    assert exact_options(load_config(None, ["train.solver=lbfgs", "train.step=fused"]))["step"] == "rule"
    assert exact_options(load_config(None, ["train.solver=newton", "train.step=auto"]))["step"] == "auto"
    with pytest.raises(UsageError, match="train.step"):
        load_config(None, ["train.step=fastest"])


# --- every choice is the reference step ----------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("step", ["rule", "reference", "feature_major", "row_major", "fused"])
def test_every_choice_equals_the_reference_step(kind, step):
    model, X, T = problem(kind, n=700, d=9, seed=KINDS.index(kind))
    if step == "fused" and (not fused_cpu.available() or select.problem("fused", model, X, full=True)):
        pytest.skip("the fused kernel does not apply")
    loss_ref, grads_ref = model.objective_and_grad(X, T, 0.1)
    loss, grads = select.full_batch(model, X, T, step=step).step(X, T, 0.1)
    assert abs(loss.item() - loss_ref.item()) <= 1e-12 * abs(loss_ref.item())
    assert grads.keys() == grads_ref.keys()
    for name, g in grads_ref.items():
        assert (grads[name] - g).abs().max().item() <= 1e-12 * g.abs().max().item(), name


@pytest.mark.parametrize("where", ["trainer", "config"])
def test_the_removed_blocked_step_is_read_as_the_rule(where):
    """``step = "blocked"`` (a step no longer kept: benchmarks/README.md) still runs, as "rule", with a
    warning; a config naming it still loads."""
    if where == "config":
        from torch_logreg.app.config import load_config
        from torch_logreg.app.fitting import loop_options

        assert loop_options(load_config(None, ["train.step=blocked"]))["step"] == "blocked"
    X, y = torch.randn(50, 3), torch.randint(0, 2, (50,))
    with pytest.warns(FutureWarning, match="blocked"):
        trainer = tl.Trainer(tl.LogisticRegression(3), X, y, device="cpu", step="blocked", epochs=2)
    assert trainer.stepper.selection.source == "rule"
    trainer.run()


def _fit(where: str, step: str, X, y):
    """A model trained with ``step`` through the Trainer, ``tl.fit`` or a config's ``train.step``;
    returns its weights and the step's selection (the Trainer's only)."""
    from torch_logreg.app.config import load_config
    from torch_logreg.app.fitting import loop_options

    model = tl.LogisticRegression(6).double()
    selection = None
    if where == "config":
        options = loop_options(load_config(None, [f"train.step={step}", "train.epochs=20", "train.tol=0",
                                                  "train.device=cpu"]))
        tl.fit(model, X, y, **options)
    elif where == "fit":
        tl.fit(model, X, y, epochs=20, tol=0.0, device="cpu", step=step)
    else:
        trainer = tl.Trainer(model, X, y, epochs=20, tol=0.0, device="cpu", step=step)
        selection = trainer.stepper.selection
        trainer.run()
    return [p.detach().clone() for p in model.parameters()], selection


@pytest.mark.parametrize("where", ["trainer", "fit", "config"])
def test_auto_is_read_as_the_rule_with_a_warning_and_the_same_bits(where):
    """``step = "auto"`` (which measured the candidate steps: benchmarks/README.md) still runs, as
    "rule", with a FutureWarning; its weights are the rule's, bit for bit."""
    gen = torch.Generator().manual_seed(5)
    X = torch.randn(400, 6, generator=gen, dtype=torch.float64)
    y = (X[:, 0] + 0.5 * torch.randn(400, generator=gen, dtype=torch.float64) > 0).long()
    rule, rule_selection = _fit(where, "rule", X, y)
    with pytest.warns(FutureWarning, match="no longer measures"):
        auto, auto_selection = _fit(where, "auto", X, y)
    assert all(torch.equal(a, b) for a, b in zip(rule, auto))
    assert auto_selection == rule_selection
    if where == "trainer":
        assert auto_selection is not None and auto_selection.source == "rule"
