"""The selector's ``step`` option: "auto" measures the steps that apply once and keeps the fastest
(cached in the process and on disk, tiny problems not measured), a named step is forced or refused
with a UsageError, and every choice computes the reference step's objective and gradient.

No test here depends on how fast this machine is, or on how steady its timer is: where a test
compares timings, the selector's clock is replaced by one that only the steps advance, by a fixed
amount per call (a slow candidate far more than a fast one), or the thresholds are set so that the
outcome is fixed."""

import json
import logging

import pytest
import torch

import torch_logreg as tl
from torch_logreg.errors import UsageError
from torch_logreg.steps import batch_fused, fused_cpu, fused_k_cpu, measure, row_major, select
from torch_logreg.steps.batch import BatchStep
from torch_logreg.steps.blocked import BlockedStep
from torch_logreg.steps.feature_major import FeatureMajorStep
from torch_logreg.steps.reference import ReferenceStep
from torch_logreg.steps.row_major import RowMajorStep

from helpers import KINDS, assert_same_fit, make_model, make_targets, randomize, train_variants

#: what one call of a slow candidate, and of any other, adds to the selector's clock
SLOW_S = 0.03
FAST_S = 0.001
CLASSES = {"feature_major": FeatureMajorStep, "row_major": RowMajorStep, "blocked": BlockedStep,
           "reference": ReferenceStep, "fused": fused_cpu.FusedStep, "batch": BatchStep}
#: the full-batch candidates on dense CPU data when the fused kernel does not apply
DENSE = ("reference", "row_major", "blocked", "feature_major")
needs_numba = pytest.mark.skipif(not fused_cpu.available(), reason="numba is not installed")


@pytest.fixture(autouse=True)
def fresh_choices(monkeypatch):
    """No disk cache unless a test sets one, and no choice remembered from another test."""
    monkeypatch.setenv("TORCH_LOGREG_CACHE", "")
    monkeypatch.setattr(measure, "_warm", set())
    # the problems here are small, and the rule gives a small CPU problem to the batch kernel;
    # the measuring is tested with the rule of larger ones, the feature-major step
    monkeypatch.setattr(batch_fused, "MAX_WORK", 0)
    # and the candidates for several outputs are those of a CPU without the K-output kernel (its
    # own tests: test_fused_k_cpu.py)
    monkeypatch.setattr(fused_k_cpu, "problem", lambda model, X: "is left out here")
    measure.clear_cache()
    yield
    measure.clear_cache()


@pytest.fixture
def always_measure(monkeypatch):
    """Measure every problem, however small, and every candidate: the budget covers them all
    however slow (with four dense candidates, three slow challengers would use up the default
    budget before the last; the budget has its own test)."""
    monkeypatch.setattr(measure, "TINY_WORK", 0)
    monkeypatch.setattr(measure, "MIN_STEP_SECONDS", 0.0)
    monkeypatch.setattr(measure, "BUDGET_STEPS", 10**6)


def problem(kind: str = "softmax", n: int = 400, d: int = 6, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    model = make_model(kind, d).double()
    randomize(model, gen, 0.3)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    return model, X, model.targets(make_targets(kind, n, gen), n)


def count_calls(monkeypatch, slow: tuple[str, ...] = (), build: dict[str, float] | None = None) -> dict[str, int]:
    """Count each step class's calls, and replace the selector's clock by one that only the steps
    advance: SLOW_S per call of the classes named in ``slow``, FAST_S per call of the others, and
    ``build[name]`` per construction of the classes named there."""
    calls = dict.fromkeys(CLASSES, 0)
    now = [0.0]
    monkeypatch.setattr(measure, "clock", lambda: now[0])
    for name, seconds in (build or {}).items():
        original_init = CLASSES[name].__init__

        def init(self, *args, _seconds=seconds, _original=original_init, **kwargs):
            now[0] += _seconds
            _original(self, *args, **kwargs)

        monkeypatch.setattr(CLASSES[name], "__init__", init)
    for name, cls in CLASSES.items():
        original = cls.step

        def step(self, X, T, l2=0.0, _name=name, _original=original):
            calls[_name] += 1
            now[0] += SLOW_S if _name in slow else FAST_S
            return _original(self, X, T, l2)

        monkeypatch.setattr(cls, "step", step)
    return calls


# --- auto: measure once, keep the fastest ------------------------------------------------------


@pytest.mark.parametrize("fast", DENSE)
def test_auto_keeps_the_fastest_candidate(monkeypatch, always_measure, fast):
    monkeypatch.setattr(measure, "BUDGET_STEPS", 10**6)  # every candidate measured, however fast the rule's step
    model, X, T = problem()
    calls = count_calls(monkeypatch, slow=tuple(n for n in DENSE if n != fast))
    step = select.full_batch(model, X, T, step="auto")
    assert step.selection.step == fast and step.selection.source == "measured"
    assert isinstance(step, CLASSES[fast])
    assert set(step.selection.seconds) == set(DENSE)
    assert min(step.selection.seconds, key=step.selection.seconds.get) == fast
    assert calls["feature_major"] >= 2  # the rule's step is measured first


def test_auto_in_the_loop_fits_like_the_reference(monkeypatch, always_measure):
    count_calls(monkeypatch, slow=("feature_major", "blocked", "reference"))
    auto, ref = train_variants("softmax", [{"step": "auto"}, {"step": "reference"}], seed=3, solver="nesterov",
                               lr=0.2, epochs=15, l2=0.01, tol=0, device="cpu")
    assert auto[0].stepper.name == "row_major" and auto[0].stepper.selection.source == "measured"
    assert ref[0].stepper.name == "reference"
    assert_same_fit(auto, ref)


def test_auto_measures_mini_batches_too(monkeypatch, always_measure):
    calls = count_calls(monkeypatch, slow=("batch",))
    model, X, T = problem(n=300)
    step = select.training_step(model, X, T, batch_size=64, dtype=torch.float64, device=torch.device("cpu"),
                                step="auto")
    assert step.name == "reference" and step.selection.source == "measured"
    assert set(step.selection.seconds) == {"row_major", "reference"} and calls["batch"] >= 2
    trainer = tl.Trainer(make_model("binary", 6).double(), X, (X[:, 0] > 0).long(), batch_size=64, epochs=2,
                         device="cpu", step="auto")
    assert trainer.stepper.name == "reference"
    trainer.run()


def test_the_choice_is_remembered_in_the_process(monkeypatch, always_measure):
    model, X, T = problem()
    calls = count_calls(monkeypatch, slow=("feature_major", "blocked", "row_major"))
    assert select.full_batch(model, X, T, step="auto").selection.step == "reference"
    calls.update(dict.fromkeys(calls, 0))
    again = select.full_batch(model, X[:380], T[:380], step="auto")  # the same shape class (log2 of the rows)
    assert again.selection.step == "reference" and again.selection.source == "cache"
    assert not any(calls.values())  # nothing timed
    other, X2, T2 = problem(n=4000)  # another shape class is measured
    assert select.full_batch(other, X2, T2, step="auto").selection.source == "measured"


def test_the_rule_is_kept_unless_a_challenger_is_clearly_faster(monkeypatch, always_measure):
    model, X, T = problem()
    count_calls(monkeypatch, slow=DENSE)  # all equally slow
    step = select.full_batch(model, X, T, step="auto")
    assert step.selection.step == "feature_major" and step.selection.source == "measured"


def test_a_short_run_counts_each_steps_set_up(monkeypatch, always_measure, tmp_path):
    # the feature-major and blocked steps are as fast per step, but the first costs a copy of X
    monkeypatch.setenv("TORCH_LOGREG_CACHE", str(tmp_path))
    count_calls(monkeypatch, slow=("row_major", "reference"), build={"feature_major": 50 * FAST_S})
    model, X, T = problem()
    step = select.full_batch(model, X, T, step="auto", steps=5)
    assert step.name == "blocked" and step.selection.source == "measured" and "set-up" in step.selection.reason
    assert step.selection.setup["feature_major"] == pytest.approx(50 * FAST_S)
    assert select.full_batch(model, X, T, step="auto").name == "feature_major"  # per step: the rule's
    assert select.full_batch(model, X, T, step="auto", steps=10**6).name == "feature_major"  # the copy pays off
    cpu = torch.device("cpu")
    assert select.training_step(model, X, T, batch_size=X.shape[0], dtype=X.dtype, device=cpu, step="auto",
                                steps=5).name == "blocked"
    measure.clear_cache()  # as a new process would start: the disk cache keeps the set-up times
    again = select.full_batch(model, X, T, step="auto", steps=5)
    assert again.name == "blocked" and again.selection.source == "disk"


@needs_numba
def test_the_rule_gives_a_small_cpu_problem_to_the_batch_kernel(monkeypatch):
    monkeypatch.setattr(batch_fused, "MAX_WORK", 1 << 21)
    calls = count_calls(monkeypatch)
    model, X, T = problem(n=300)
    for step in ("rule", "auto"):  # "auto" does not measure a problem this small
        chosen = select.full_batch(model, X, T, step=step)
        assert isinstance(chosen, RowMajorStep) and chosen.kernel_name == "batch_fused" and chosen.selection.source == "rule"
    assert sum(calls.values()) == 0
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


def test_tiny_problems_are_not_measured(monkeypatch):
    calls = count_calls(monkeypatch)
    model, X, T = problem()
    step = select.full_batch(model, X, T, step="auto")
    assert step.name == "feature_major" and step.selection.source == "rule" and "tiny" in step.selection.reason
    assert not any(calls.values())
    monkeypatch.setattr(measure, "TINY_WORK", 0)
    monkeypatch.setattr(measure, "MIN_STEP_SECONDS", 10.0)  # every step counts as cheap
    step = select.full_batch(model, X, T, step="auto")
    assert step.name == "feature_major" and "under" in step.selection.reason
    assert calls["feature_major"] == 2  # a warm-up, one timed call
    assert calls["reference"] == calls["row_major"] == calls["blocked"] == 0


def test_measuring_stops_at_its_budget(monkeypatch, always_measure):
    monkeypatch.setattr(measure, "BUDGET_STEPS", 1)
    calls = count_calls(monkeypatch, slow=("feature_major",))
    model, X, T = problem()
    step = select.full_batch(model, X, T, step="auto")
    assert step.name == "feature_major" and "budget" in step.selection.reason
    assert calls["row_major"] == calls["reference"] == calls["blocked"] == 0


def test_several_processes_and_streamed_data_keep_the_rule(monkeypatch, always_measure):
    calls = count_calls(monkeypatch)
    model, X, T = problem()
    cpu = torch.device("cpu")
    step = select.training_step(model, X, T, batch_size=400, dtype=torch.float64, device=cpu, data_parallel=True,
                                step="auto")
    assert step.name == "feature_major" and "processes" in step.selection.reason
    step = select.training_step(model, X, T, batch_size=64, dtype=torch.float64, device=cpu, in_memory=False,
                                step="auto")
    assert step.name == "batch" and "streamed" in step.selection.reason
    assert not any(calls.values())


@needs_numba
def test_measuring_leaves_the_model_as_it_was(monkeypatch, always_measure):
    measure.mark_warm("fused")  # in the running even if its kernel was not loaded yet
    monkeypatch.setattr(measure, "BUDGET_STEPS", 10**6)
    model, X, T = problem("binary", n=1000, d=40)
    count_calls(monkeypatch, slow=("feature_major",))  # the budget then covers every candidate
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    step = select.full_batch(model, X, T, step="auto")
    assert set(step.selection.seconds) == {"feature_major", "fused", "row_major", "reference"}  # not blocked: fused runs
    assert all(torch.equal(p, before[k]) for k, p in model.named_parameters())


@needs_numba
def test_a_failing_compiled_candidate_is_left_out_with_a_warning(monkeypatch, always_measure):
    measure.mark_warm("fused")
    monkeypatch.setattr(measure, "BUDGET_STEPS", 10**6)

    def broken(self, X, T, l2=0.0):
        raise RuntimeError("no kernel")

    count_calls(monkeypatch, slow=("feature_major",))
    monkeypatch.setattr(fused_cpu.FusedStep, "step", broken)
    model, X, T = problem("binary", n=1000, d=40)
    with pytest.warns(RuntimeWarning, match="fused kernel could not run"):
        step = select.full_batch(model, X, T, step="auto")
    assert "fused" not in step.selection.seconds and step.selection.step != "fused"


def test_the_choice_and_the_timings_are_logged(monkeypatch, always_measure, caplog):
    count_calls(monkeypatch, slow=("feature_major", "blocked", "row_major"))
    model, X, T = problem()
    with caplog.at_level(logging.DEBUG, logger="torch_logreg"):
        select.full_batch(model, X, T, step="auto")
    message = "\n".join(r.getMessage() for r in caplog.records if r.name == "torch_logreg")
    assert "reference; measured" in message and "feature_major" in message and "ms" in message


# --- the disk cache ------------------------------------------------------------------------------


def test_the_disk_cache_round_trips(monkeypatch, always_measure, tmp_path):
    monkeypatch.setenv("TORCH_LOGREG_CACHE", str(tmp_path))
    calls = count_calls(monkeypatch, slow=("feature_major", "blocked", "reference"))
    model, X, T = problem()
    assert select.full_batch(model, X, T, step="auto").selection.step == "row_major"
    data = json.loads((tmp_path / "steps.json").read_text())
    assert data["version"] == measure.CACHE_VERSION
    (key, entry), = data["entries"].items()
    assert entry["step"] == "row_major" and set(entry["seconds"]) == set(DENSE)
    assert measure.cpu_model() in key and torch.__version__ in key
    measure.clear_cache()  # as a new process would start
    calls.update(dict.fromkeys(calls, 0))
    step = select.full_batch(model, X, T, step="auto")
    assert step.selection.step == "row_major" and step.selection.source == "disk"
    assert not any(calls.values())
    assert not list(tmp_path.glob(".steps-*"))  # no temporary file left behind


def test_timings_from_other_kernels_are_measured_again(monkeypatch, always_measure, tmp_path):
    """The disk key holds a digest of the steps' source: after an upgrade (or an edit) the cached
    timings describe other kernels, so the shape is measured afresh."""
    monkeypatch.setenv("TORCH_LOGREG_CACHE", str(tmp_path))
    calls = count_calls(monkeypatch, slow=("feature_major", "blocked", "reference"))
    model, X, T = problem()
    select.full_batch(model, X, T, step="auto")
    (key, _), = json.loads((tmp_path / "steps.json").read_text())["entries"].items()
    assert key.endswith("|" + measure.steps_fingerprint())
    measure.clear_cache()
    monkeypatch.setattr(measure, "steps_fingerprint", lambda: "other-source")
    calls.update(dict.fromkeys(calls, 0))
    step = select.full_batch(model, X, T, step="auto")
    assert step.selection.source == "measured" and any(calls.values())
    assert len(json.loads((tmp_path / "steps.json").read_text())["entries"]) == 2


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"version": 99, "entries": {}}', '{"version": 1}', "\x00\xff"])
def test_a_damaged_cache_file_is_ignored_and_replaced(monkeypatch, always_measure, tmp_path, text):
    monkeypatch.setenv("TORCH_LOGREG_CACHE", str(tmp_path))
    (tmp_path / "steps.json").write_text(text)
    count_calls(monkeypatch, slow=("feature_major", "blocked", "row_major"))
    model, X, T = problem()
    step = select.full_batch(model, X, T, step="auto")
    assert step.selection.step == "reference" and step.selection.source == "measured"
    entries = json.loads((tmp_path / "steps.json").read_text())["entries"]
    assert [e["step"] for e in entries.values()] == ["reference"]


def test_a_cached_step_that_no_longer_applies_is_measured_again(monkeypatch, always_measure, tmp_path):
    monkeypatch.setenv("TORCH_LOGREG_CACHE", str(tmp_path))
    count_calls(monkeypatch, slow=("feature_major", "blocked", "row_major"))
    model, X, T = problem()
    key = measure.disk_key(measure.shape_key("full", model, X, X.shape[0], select.full_batch_candidates(model, X, T)))
    (tmp_path / "steps.json").write_text(json.dumps({"version": 1, "entries": {key: {"step": "fused"}}}))
    step = select.full_batch(model, X, T, step="auto")
    assert step.selection.source == "measured" and step.selection.step == "reference"


def test_an_unwritable_cache_does_not_stop_training(monkeypatch, always_measure, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("TORCH_LOGREG_CACHE", str(blocker / "below"))  # a folder that cannot be made
    count_calls(monkeypatch, slow=("feature_major", "blocked", "row_major"))
    model, X, T = problem()
    assert select.full_batch(model, X, T, step="auto").selection.step == "reference"


def test_the_cache_file_location(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_LOGREG_CACHE", str(tmp_path))
    assert measure.cache_file() == tmp_path / "steps.json"
    monkeypatch.setenv("TORCH_LOGREG_CACHE", "")
    assert measure.cache_file() is None
    monkeypatch.delenv("TORCH_LOGREG_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert measure.cache_file() == tmp_path / "torch_logreg" / "steps.json"


# --- forced steps --------------------------------------------------------------------------------


FORCED = [("reference", "reference"), ("feature_major", "feature_major"), ("row_major", "row_major"),
          ("blocked", "blocked"), pytest.param("fused", "fused_cpu", marks=needs_numba)]


@pytest.mark.parametrize("step,name", FORCED)
def test_a_forced_step_is_taken(step, name):
    X, y = torch.randn(50, 3), torch.randint(0, 2, (50,))
    trainer = tl.Trainer(tl.LogisticRegression(3), X, y, device="cpu", step=step, epochs=2)
    assert trainer.stepper.name == name and trainer.stepper.selection.source == "forced"
    trainer.run()


def test_forced_and_default_steps_on_mini_batches():
    X, y = torch.randn(50, 3), torch.randint(0, 2, (50,))
    for step, name in [("reference", "reference"), ("row_major", "batch"), ("rule", "batch"), ("auto", "batch")]:
        assert tl.Trainer(tl.LogisticRegression(3), X, y, batch_size=10, device="cpu", step=step).stepper.name == name
    assert tl.Trainer(tl.LogisticRegression(3), X, y, device="cpu").stepper.selection.source == "rule"
    history = tl.fit(tl.LogisticRegression(3), X, y, device="cpu", step="row_major", epochs=3)
    assert history.n_epochs == 3


REFUSED = [
    (dict(model=tl.MLP(3, [4]), step="feature_major"), "one Linear layer"),
    (dict(step="feature_major", batch_size=10), "full-batch training"),
    (dict(step="fused", batch_size=10), "full-batch training"),
    (dict(step="blocked", batch_size=10), "full-batch training"),
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
    assert "reference" not in select.full_batch_candidates(model, X, T, graph=True)


def test_the_config_key_reaches_the_loop():
    from torch_logreg.app.config import Config, load_config
    from torch_logreg.app.fitting import exact_options, loop_config, loop_options

    assert Config().train.step == "auto" and loop_config(Config()).step == "auto"
    assert loop_options(load_config(None, ["train.step=reference"]))["step"] == "reference"
    # a resumed run keeps the step "auto" chose; a step the config forces stays forced
    assert loop_config(Config(), step="row_major").step == "row_major"
    assert loop_config(load_config(None, ["train.step=reference"]), step="row_major").step == "reference"
    # an exact solver takes no loop step: a forced one leaves its Hessian's BLAS to the rule
    assert exact_options(load_config(None, ["train.solver=lbfgs", "train.step=fused"]))["step"] == "rule"
    with pytest.raises(UsageError, match="train.step"):
        load_config(None, ["train.step=fastest"])


# --- every choice is the reference step ----------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("step", ["auto", "rule", "reference", "feature_major", "row_major", "blocked", "fused"])
def test_every_choice_equals_the_reference_step(monkeypatch, always_measure, kind, step):
    model, X, T = problem(kind, n=700, d=9, seed=KINDS.index(kind))
    if step == "fused" and (not fused_cpu.available() or select.problem("fused", model, X, full=True)):
        pytest.skip("the fused kernel does not apply")
    loss_ref, grads_ref = model.objective_and_grad(X, T, 0.1)
    loss, grads = select.full_batch(model, X, T, step=step).step(X, T, 0.1)
    assert abs(loss.item() - loss_ref.item()) <= 1e-12 * abs(loss_ref.item())
    assert grads.keys() == grads_ref.keys()
    for name, g in grads_ref.items():
        assert (grads[name] - g).abs().max().item() <= 1e-12 * g.abs().max().item(), name
