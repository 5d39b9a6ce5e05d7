"""The plateau schedule's rates equal ``torch.optim.lr_scheduler.ReduceLROnPlateau``'s fed the same
metrics (plateaus, cool-downs, a floor, both modes and threshold modes), and its state resumes."""

import itertools
import math

import pytest
import torch

import torch_logreg as tl
from torch_logreg.schedules import Plateau

# --- the plateau schedule ----------------------------------------------------------------------


def metric_trace(seed: int, n: int = 150) -> list[float]:
    """A noisy decrease broken by plateaus (repeated values, tiny changes), jumps up, a NaN and a
    long plateau at the end."""
    gen = torch.Generator().manual_seed(seed)
    values, level = [], 1.0
    while len(values) < n:
        kind = torch.randint(0, 4, (1,), generator=gen).item()
        length = torch.randint(1, 15, (1,), generator=gen).item()
        for _ in range(length):
            if kind == 0:  # improving
                level *= 0.9 + 0.05 * torch.rand(1, generator=gen).item()
                values.append(level)
            elif kind == 1:  # a flat plateau
                values.append(level)
            elif kind == 2:  # changes within the threshold
                values.append(level * (1 + 1e-5 * torch.randn(1, generator=gen).item()))
            else:  # worse
                values.append(level * (1 + 0.3 * torch.rand(1, generator=gen).item()))
    values = values[:n]
    values[n // 2] = math.nan
    values[n - 30 :] = [values[n - 31]] * 30  # a plateau longer than any patience here
    return values


GRID = list(itertools.product(("min", "max"), ("rel", "abs"), (0, 3, 10), (0, 4), (0.0, 1e-3), (0.1, 0.5)))


@pytest.mark.parametrize("mode,threshold_mode,patience,cooldown,min_lr,factor", GRID)
def test_plateau_rates_equal_reduce_lr_on_plateau(mode, threshold_mode, patience, cooldown, min_lr, factor):
    lr = 0.1
    kwargs = {"mode": mode, "factor": factor, "patience": patience, "threshold_mode": threshold_mode,
              "cooldown": cooldown, "min_lr": min_lr}
    if threshold_mode == "abs":
        kwargs["threshold"] = 1e-3
    ours = Plateau(lr, **kwargs)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **kwargs)
    metrics = metric_trace(GRID.index((mode, threshold_mode, patience, cooldown, min_lr, factor)))
    if mode == "max":  # a positive score that rises as the loss falls (a relative threshold assumes > 0)
        metrics = [2.0 - m for m in metrics]
    ours_trace, torch_trace = [], []
    for m in metrics:
        ours_trace.append(ours.step(m))
        reference.step(m)
        torch_trace.append(optimizer.param_groups[0]["lr"])
    assert ours_trace == torch_trace  # the same float operations: equal, not close
    assert len(set(torch_trace)) > 1  # the trace cut the rate at least once
    if min_lr:
        assert min(torch_trace) >= min_lr


def test_plateau_defaults_are_torch_s_and_its_state_resumes():
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1))
    ours = Plateau(1.0)
    for name in ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "eps"):
        assert getattr(ours, name) == getattr(reference, name), name
    assert ours.min_lr == reference.min_lrs[0]
    metrics = metric_trace(99, 80)
    whole, first = Plateau(1.0, patience=2, cooldown=1), Plateau(1.0, patience=2, cooldown=1)
    expected = [whole.step(m) for m in metrics]
    got = [first.step(m) for m in metrics[:40]]
    second = Plateau(1.0, patience=2, cooldown=1)
    second.load_state_dict(first.state_dict())
    got += [second.step(m) for m in metrics[40:]]
    assert got == expected


def test_plateau_eps_keeps_a_cut_smaller_than_it_from_happening():
    ours = Plateau(1e-3, factor=0.5, patience=0, eps=1e-3)  # a cut of 5e-4 is below eps
    assert [ours.step(1.0) for _ in range(4)] == [1e-3] * 4


@pytest.mark.parametrize("kwargs", [{"factor": 1.0}, {"factor": -0.1}, {"patience": -1}, {"mode": "low"},
                                    {"threshold_mode": "relative"}, {"min_lr": -1.0}, {"cooldown": 1.5}])
def test_plateau_refuses_bad_arguments(kwargs):
    with pytest.raises(tl.UsageError):
        Plateau(0.1, **kwargs)
