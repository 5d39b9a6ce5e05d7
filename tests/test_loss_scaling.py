"""float16 with dynamic loss scaling: the scaler's rule pinned to ``torch.amp.GradScaler`` (on the
CPU, in float32, non-finite gradients injected), the float16 step's gradient against the
reference step, the loop's skips and an exact resume (on the CPU with the step put in by hand),
the CPU's refusal, and on CUDA a float16 fit against a float32 one."""

import math
import re

import pytest
import torch

import torch_logreg as tl
from torch_logreg.errors import UsageError
from torch_logreg.loss_scaling import LossScaler
from torch_logreg.steps.mixed import LossScaledStep
from torch_logreg.steps.reference import ReferenceStep

from conftest import CUDA
from helpers import expect_error, run_cli

INF, NAN = math.inf, math.nan
#: scaled gradients of two parameters, step by step: a weight (2, 3) and a bias (2,); None marks a
#: finite step (drawn), a number is put into the weight's first entry (inf, -inf or nan)
TRACE = [None, INF, None, None, None, NAN, None, None, None, None, -INF, INF, None, None, None, None, None]


def scaled_grads(step: int, scale: float, poison) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    grads = {"w": torch.randn(2, 3, generator=g) * scale, "b": torch.randn(2, generator=g) * scale}
    if poison is not None:
        grads["w"][0, 0] = poison
    return grads


def test_skips_backoff_and_growth_equal_gradscaler_s():
    """Scale, skips, the unscaled gradients and the weights of SGD step for step as GradScaler's."""
    kw = {"init_scale": 8.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 3}
    ours, theirs = LossScaler(**kw), torch.amp.GradScaler("cpu", **kw)
    theirs.scale(torch.ones(()))  # GradScaler makes its scale on first use
    p = {"w": torch.nn.Parameter(torch.zeros(2, 3)), "b": torch.nn.Parameter(torch.zeros(2))}
    mine = {k: v.detach().clone() for k, v in p.items()}
    opt = torch.optim.SGD(list(p.values()), lr=0.1)
    for step, poison in enumerate(TRACE):
        scale = theirs.get_scale()
        assert float(ours.scale) == scale, step
        grads = scaled_grads(step, scale, poison)
        for k in p:
            p[k].grad = grads[k].clone()
        before = {k: v.detach().clone() for k, v in p.items()}
        theirs.step(opt)
        theirs.update()
        ours.unscale_(grads)
        applied = ours.finite()
        assert applied == (poison is None), step
        if applied:
            for k in mine:
                assert torch.equal(grads[k], p[k].grad), (step, k)  # the same unscaled bits
                mine[k].add_(grads[k], alpha=-0.1)  # as SGD updates
        else:
            assert all(torch.equal(before[k], p[k].detach()) for k in p), step  # GradScaler skipped it too
        ours.update()
        for k in mine:
            assert torch.equal(mine[k], p[k].detach()), (step, k)
    assert float(ours.scale) == theirs.get_scale()
    assert ours.skipped == sum(poison is not None for poison in TRACE)
    state = ours.state_dict()
    assert {k: state[k] for k in theirs.state_dict()} == theirs.state_dict()


def test_the_default_scale_grows_after_2000_good_steps_and_halves_on_an_overflow():
    scaler = LossScaler()
    assert float(scaler.scale) == 2.0**16
    grads = {"w": torch.ones(3)}
    for _ in range(1999):
        scaler.unscale_(grads)
        assert scaler.finite()
        scaler.update()
    assert float(scaler.scale) == 2.0**16 and int(scaler.growth_tracker) == 1999
    scaler.unscale_(grads)
    scaler.finite()
    scaler.update()
    assert float(scaler.scale) == 2.0**17 and int(scaler.growth_tracker) == 0
    scaler.unscale_({"w": torch.tensor([1.0, NAN])})
    assert not scaler.finite()
    scaler.update()
    assert float(scaler.scale) == 2.0**16 and scaler.skipped == 1


def test_a_scale_that_would_overflow_float32_does_not_grow():
    scaler = LossScaler(init_scale=2.0**127, growth_interval=1)
    scaler.unscale_({"w": torch.ones(2)})
    scaler.finite()
    scaler.update()
    assert float(scaler.scale) == 2.0**127  # 2**128 is inf in float32: GradScaler keeps the scale too


def test_a_non_finite_gradient_after_the_unscale_skips_the_step():
    """The gradient the update takes is checked too (after a reduce across processes, one process's
    overflow reaches all), and the scale backs off on every process alike."""
    scaler = LossScaler()
    assert not scaler.finite({"w": torch.tensor([INF])})
    scaler.update()
    assert float(scaler.scale) == 2.0**15


def _softmax_data(n=400, d=6, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g)
    y = (X[:, :k] + 0.5 * torch.randn(n, k, generator=g)).argmax(dim=1)
    return X, y


def test_the_float16_step_returns_the_reference_gradient_unscaled():
    """Three outputs, so that the backward's product G^T X runs in float16 under the CPU's autocast
    too; its rounding (2**-11 relative, summed over 400 rows) is the tolerance."""
    X, y = _softmax_data()
    model = tl.SoftmaxRegression(6, 3)
    torch.nn.init.normal_(model.linear.weight, std=0.3, generator=torch.Generator().manual_seed(1))
    T = model.targets(y, len(y))
    step = LossScaledStep(model, torch.device("cpu"))
    loss, grads = step.step(X, T, 0.01)
    ref_loss, ref = ReferenceStep(model).step(X, T, 0.01)
    assert float(step.scaler.found_inf) == 0
    assert abs(float(loss) - float(ref_loss)) < 1e-2
    for k in ref:
        assert grads[k].dtype == torch.float32
        assert torch.allclose(grads[k], ref[k], rtol=1e-2, atol=1e-3), k
    step.scaler.scale.fill_(2.0**40)  # S G^T X beyond float16's 65504
    step.step(X, T)
    assert float(step.scaler.found_inf) == 1


def _trainer(epochs, init_scale, X, y, **kw):
    """A float32 Trainer on the CPU whose step is the float16 one, put in by hand (the CPU refuses
    dtype='float16'): the loop's handling of the scale is the same on any device."""
    model = tl.SoftmaxRegression(6, 3)
    trainer = tl.Trainer(model, X, y, solver="adam", lr=0.05, epochs=epochs, fast_path=False, device="cpu", **kw)
    trainer.stepper = LossScaledStep(model, torch.device("cpu"))
    trainer.scaler.scale.fill_(init_scale)
    return trainer


@pytest.mark.parametrize("batch_size", [0, 200])
def test_the_loop_skips_overflowing_steps_then_trains_as_float32(batch_size):
    """From a scale of 2**28 the first steps overflow float16 and are skipped, the scale halving
    each time; then the run follows the float32 run (to float16's rounding) with as many fewer
    steps. An epoch whose every step was skipped is not checked (it has no gradient)."""
    X, y = _softmax_data()
    trainer = _trainer(24, 2.0**28, X, y, batch_size=batch_size)
    history = trainer.run()
    skipped = trainer.scaler.skipped
    assert 5 <= skipped < 20
    assert float(trainer.scaler.scale) == 2.0 ** (28 - skipped)
    assert trainer.optimizer.steps == trainer.step - skipped
    assert all(math.isfinite(v) for v in history.grad_norm)
    if batch_size == 0:  # full batch: the same steps, shifted
        assert history.epochs == list(range(skipped + 1, 25))
        ref = tl.SoftmaxRegression(6, 3)
        tl.fit(ref, X, y, solver="adam", lr=0.05, epochs=24 - skipped, fast_path=False, device="cpu")
        assert torch.allclose(trainer.model.linear.weight, ref.linear.weight, rtol=2e-2, atol=2e-2)


def test_a_float16_run_resumes_bit_identically():
    X, y = _softmax_data()
    straight = _trainer(16, 2.0**24, X, y, batch_size=200)
    straight.run()
    first = _trainer(6, 2.0**24, X, y, batch_size=200)
    first.run()
    state, weights = first.state_dict(), {k: v.clone() for k, v in first.model.state_dict().items()}
    assert state["loss_scaler"]["skipped"] == first.scaler.skipped > 0
    second = _trainer(16, 1.0, X, y, batch_size=200)
    second.model.load_state_dict(weights)
    second.load_state_dict(state)
    second.run()
    assert torch.equal(second.model.linear.weight, straight.model.linear.weight)
    assert second.scaler.state_dict() == straight.scaler.state_dict()


# --- the CPU refuses float16 ------------------------------------------------------------------------

SENTENCE = "'float16' (float16 products with dynamic loss scaling) runs on a CUDA device only"


def test_fit_refuses_float16_on_the_cpu():
    X, y = _softmax_data()
    with pytest.raises(UsageError, match=re.escape(SENTENCE)):
        tl.fit(tl.SoftmaxRegression(6, 3), X, y, dtype="float16", device="cpu")


def test_the_config_refuses_float16_on_the_cpu(capsys, tmp_path):
    expect_error(capsys, f"--set train.dtype=float16: train.dtype {SENTENCE}", "train", "--quiet", "--run-dir",
                 tmp_path / "run", "--set", "train.dtype=float16", "--set", "train.device=cpu")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(CUDA, reason="the automatic device is a GPU here")
def test_float16_on_an_automatic_device_without_cuda_is_refused_before_the_data_is_read(capsys, tmp_path):
    expect_error(capsys, f"dtype {SENTENCE}", "train", "--quiet", "--run-dir", tmp_path / "run",
                 "--set", "train.dtype=float16")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("sets,message", [
    (("model.kind='mlp'", "model.hidden=[4]"), "an MLP trains in float32 or float64"),
    (("train.solver='newton'",), "train.dtype = 'float16' is for the loop's update rules"),
])
def test_float16_combinations_are_refused_as_bfloat16_s(capsys, tmp_path, sets, message):
    args = ["train", "--quiet", "--run-dir", tmp_path / "run", "--set", "train.dtype=float16"]
    for s in sets:
        args += ["--set", s]
    expect_error(capsys, message, *args)


# --- on a GPU -------------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="no CUDA GPU")
@pytest.mark.parametrize("batch_size", [0, 64])
def test_a_float16_fit_matches_the_float32_fit_on_cuda(cancer, batch_size):
    """Breast cancer (569 x 30, standardized), gradient descent for 60 epochs: the float16 fit's
    weights within 0.02 of the float32 fit's (where no step was skipped) and its validation loss
    within 0.01. float16 keeps 11 bits, so each product is off by ~2**-11 relative, and gradient
    descent adds up such errors linearly over the steps, the weights staying float32. From a scale
    of 2**16 a step of this data overflows rarely if ever (a mini-batch of outlying rows may):
    each skip halves the scale."""
    X, y = torch.as_tensor(cancer[0], dtype=torch.float32), torch.as_tensor(cancer[1])
    fits = {}
    for dtype in ("float32", "float16"):
        model = tl.LogisticRegression(30)
        trainer = tl.Trainer(model, X[:450], y[:450], X_val=X[450:], y_val=y[450:], solver="gd", lr=0.5, epochs=60,
                             batch_size=batch_size, device="cuda", dtype=dtype)
        history = trainer.run()
        fits[dtype] = (model.linear.weight.detach().cpu(), history.val_loss[-1], trainer)
    trainer = fits["float16"][2]
    assert trainer.stepper.name == "loss_scaled_float16"
    skipped = trainer.scaler.skipped
    assert skipped <= 3 and float(trainer.scaler.scale) == 2.0 ** (16 - skipped)
    assert trainer.optimizer.steps == trainer.step - skipped
    if not skipped:  # a skipped step leaves one batch's update out: the weights then differ by it
        assert torch.allclose(fits["float16"][0], fits["float32"][0], rtol=0, atol=2e-2)
    assert abs(fits["float16"][1] - fits["float32"][1]) < 1e-2


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="no CUDA GPU")
def test_float16_on_cuda_skips_the_overflowing_steps(cancer):
    """From a scale of 2**40 the float16 products overflow: the first steps are skipped (the scale
    halving each) until the scaled gradient fits, then the run trains; skips counted, saved."""
    X, y = torch.as_tensor(cancer[0], dtype=torch.float32), torch.as_tensor(cancer[1])
    model = tl.LogisticRegression(30)
    trainer = tl.Trainer(model, X, y, solver="adam", lr=0.01, epochs=40, device="cuda", dtype="float16")
    trainer.scaler.scale.fill_(2.0**40)
    history = trainer.run()
    skipped = trainer.scaler.skipped
    assert 10 <= skipped < 40
    assert float(trainer.scaler.scale) == 2.0 ** (40 - skipped)
    assert trainer.optimizer.steps == 40 - skipped
    assert trainer.state_dict()["loss_scaler"]["skipped"] == skipped
    assert history.epochs == list(range(skipped + 1, 41))


def test_tensorboard_logs_the_loss_scale_and_the_skipped_steps():
    from torch_logreg.app.tensorboard import TensorBoardLogger

    class Writer:
        def __init__(self):
            self.scalars = {}

        def add_scalar(self, tag, value, step):
            self.scalars.setdefault(tag, []).append((step, value))

        def add_custom_scalars(self, layout): ...

        def add_histogram(self, *args): ...

        def flush(self): ...

    X, y = _softmax_data()
    trainer = _trainer(12, 2.0**24, X, y)
    writer = Writer()
    trainer.callbacks.append(TensorBoardLogger(writer, every=1, histograms_every=0, lr=0.05))
    trainer.run()
    assert writer.scalars["loss_scale"][0] == (1, 2.0**23)  # the first step overflowed: halved
    assert writer.scalars["loss_scale/skipped_steps"][-1] == (12, trainer.scaler.skipped)


@pytest.mark.cuda
@pytest.mark.e2e
@pytest.mark.skipif(not CUDA, reason="no CUDA GPU")
def test_a_float16_run_on_cuda_resumes_to_the_run_it_would_have_been(capsys, tmp_path):
    """The command line: the scale, its count and the skips saved in the checkpoint; 3 epochs then
    a resume to 6 give the weights of 6 epochs straight, bit for bit."""
    from torch_logreg.app.checkpoint import load_checkpoint

    sets = ["train.dtype=float16", "train.device=cuda", "train.solver=adam", "train.batch_size=64", "train.tol=0",
            "train.patience=0", "log.checkpoint_every=1"]

    def train(run, epochs):
        args = ["train", "--quiet", "--run-dir", tmp_path / run]
        for s in [*sets, f"train.epochs={epochs}"]:
            args += ["--set", s]
        code, _, err = run_cli(capsys, *args)
        assert code == 0, err
        return tmp_path / run / "checkpoint.pt"

    straight = load_checkpoint(train("straight", 6))
    first = train("first", 3)
    code, _, err = run_cli(capsys, "resume", "--run", tmp_path / "first", "--quiet", "--set", "train.epochs=6")
    assert code == 0, err
    resumed = load_checkpoint(first)
    assert resumed["trainer"]["loss_scaler"] == straight["trainer"]["loss_scaler"]
    assert resumed["trainer"]["loss_scaler"]["scale"] == 2.0 ** (16 - resumed["trainer"]["loss_scaler"]["skipped"])
    for k in straight["model"]:
        assert torch.equal(straight["model"][k], resumed["model"][k]), k
