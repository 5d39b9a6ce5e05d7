"""The strong Wolfe line search of L-BFGS (``solvers/wolfe.py``) on one-dimensional functions."""

import math

import pytest

from torch_logreg.solvers import wolfe
from torch_logreg.solvers.result import ARMIJO


def along(f, df):
    """``phi(t) -> (f(t), f'(t), t)`` counting its calls in ``phi.calls``."""

    def phi(t):
        phi.calls += 1
        return f(t), df(t), t

    phi.calls = 0
    return phi


def meets_strong_wolfe(f0, d0, t, ft, dt):
    return ft <= f0 + ARMIJO * t * d0 and abs(dt) <= -wolfe.CURVATURE * d0


@pytest.mark.parametrize("t0", [1e-6, 0.3, 1.0, 50.0, 1e6])
def test_any_first_trial_ends_at_a_strong_wolfe_step(t0):
    # a quadratic with its minimum at t = 7: a tiny first trial is lengthened, a huge one shortened
    f = lambda t: (t - 7.0) ** 2  # noqa: E731
    df = lambda t: 2 * (t - 7.0)  # noqa: E731
    phi = along(f, df)
    t, ft, payload = wolfe.search(phi, f(0.0), df(0.0), t0)
    assert payload == t and ft == f(t)
    assert meets_strong_wolfe(f(0.0), df(0.0), t, ft, df(t))
    assert phi.calls <= 12


def test_a_step_that_passes_at_once_costs_one_evaluation():
    f = lambda t: (t - 1.0) ** 2  # noqa: E731
    df = lambda t: 2 * (t - 1.0)  # noqa: E731
    phi = along(f, df)
    assert wolfe.search(phi, f(0.0), df(0.0), 1.0)[0] == 1.0 and phi.calls == 1


def test_a_non_finite_trial_is_shortened():
    # log(1 - t) + t^2 is undefined from t = 1 on: the search comes back inside
    f = lambda t: -math.log(1 - t) - 2 * t if t < 1 else math.inf  # noqa: E731
    df = lambda t: 1 / (1 - t) - 2 if t < 1 else math.nan  # noqa: E731
    t, ft, _ = wolfe.search(along(f, df), f(0.0), df(0.0), 10.0)
    assert 0 < t < 1 and meets_strong_wolfe(f(0.0), df(0.0), t, ft, df(t))


def test_no_decrease_at_all_gives_none():
    # the slope says descent, the values never decrease (a wrong gradient)
    assert wolfe.search(along(lambda t: t, lambda t: -1.0), 0.0, -1.0, 1.0) is None
