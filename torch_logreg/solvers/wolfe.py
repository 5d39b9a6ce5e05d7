"""A line search for the strong Wolfe conditions, by bracketing and safeguarded cubic interpolation.

Along a descent direction ``d`` from ``x``, with ``phi(t) = f(x + t d)`` and ``phi'(t) = g(x + t d) . d``
(``phi'(0) < 0``), a step ``t`` is accepted when

    phi(t) <= phi(0) + c1 t phi'(0) + slack         (sufficient decrease, Armijo)
    |phi'(t)| <= c2 |phi'(0)|                       (curvature: the slope has flattened)

with ``c1 = ARMIJO`` (1e-4) and ``c2 = 0.9``, the values quasi-Newton methods use (Nocedal & Wright,
*Numerical Optimization*, ch. 3; Moré & Thuente 1994 is a refinement of the same scheme). ``slack``
(a few ulps of ``phi(0)``) lets a step at the optimum pass despite rounding: there a trial may
not lower the value at all, and one within ``slack`` of the best so far counts as no higher.

Unlike backtracking, the search may lengthen a step: while the Armijo condition holds and the slope
is still steep and negative, ``t`` grows (by cubic extrapolation, between 1.1 and 4 times). Once an
interval is known to hold an acceptable step (its low end passes Armijo with a negative slope; its
high end fails Armijo, is no lower, or has a non-negative slope), each trial is the minimiser of
the cubic through both ends' values and slopes, kept a hundredth of the interval from either end;
it bisects where the cubic has no real minimiser, or where two trials have not shrunk the interval
to two thirds (as Moré and Thuente safeguard theirs). Every trial costs one evaluation of the
objective and the gradient together, which is what the quasi-Newton update needs at the accepted
point anyway: a step that passes at once (the usual ``t = 1`` of L-BFGS) costs one evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .result import ARMIJO

#: the curvature constant of the strong Wolfe conditions
CURVATURE = 0.9
#: most trials a search makes
MAX_TRIALS = 40
#: an interpolated trial is kept at least this fraction of the interval from either end
MARGIN = 0.01
#: where the interval is not below this fraction of its width two trials before, the next trial
#: bisects it (interpolation alone can creep towards one end)
SHRINK = 0.66


def cubic_minimizer(a: float, fa: float, da: float, b: float, fb: float, db: float) -> float | None:
    """The minimiser of the cubic with values ``fa``, ``fb`` and slopes ``da``, ``db`` at ``a`` and
    ``b``, or None where it has none (or it is not finite)."""
    d1 = da + db - 3 * (fa - fb) / (a - b)
    disc = d1 * d1 - da * db
    if not (disc >= 0 and math.isfinite(disc)):
        return None
    d2 = math.copysign(math.sqrt(disc), b - a)
    denom = db - da + 2 * d2
    if denom == 0:
        return None
    t = b - (b - a) * (db + d2 - d1) / denom
    return t if math.isfinite(t) else None


def search(phi: Callable[[float], tuple[float, float, Any]], f0: float, d0: float, t: float,
           slack: float = 0.0) -> tuple[float, float, Any] | None:
    """A step ``t`` along the direction, its ``phi(t)`` and what ``phi`` returned with it.

    ``phi(t) -> (value, slope, payload)`` evaluates the objective and its slope along the direction
    (``payload``: whatever the caller keeps of that evaluation, e.g. the point and its gradient);
    ``f0``, ``d0 < 0``: value and slope at ``t = 0``; ``t``: the first trial. Returns the first
    trial meeting the strong Wolfe conditions, else (after :data:`MAX_TRIALS` trials) the lowest
    trial that met the Armijo condition, else None."""
    lo = (0.0, f0, d0, None)  # the end that passes Armijo with the lower value
    widths = [math.inf, math.inf]  # the interval's widths so far
    hi: tuple[float, float, float, Any] | None = None
    for _ in range(MAX_TRIALS):
        f, d, payload = phi(t)
        armijo = math.isfinite(f) and f <= f0 + ARMIJO * t * d0 + slack
        if armijo and math.isfinite(d) and abs(d) <= -CURVATURE * d0:
            return t, f, payload
        if not armijo or f > lo[1] + slack or not math.isfinite(d):  # within slack counts as no higher
            hi = (t, f, d, payload)
        elif d * ((hi[0] if hi is not None else t) - lo[0]) >= 0:  # a minimum lies between t and the low end
            hi, lo = lo, (t, f, d, payload)
        else:  # descending towards the high end (or, with none yet, steeply: a longer step)
            lo = (t, f, d, payload)
        if hi is None:
            guess = cubic_minimizer(lo[0], lo[1], lo[2], 0.0, f0, d0) if lo[0] > 0 else None
            t = min(max(guess if guess is not None else 4 * t, 1.1 * t), 4 * t)
            continue
        a, b = lo[0], hi[0]
        width = abs(b - a)
        if width <= 1e-12 * max(abs(a), abs(b), 1e-300):
            break
        guess = None
        if math.isfinite(hi[1]) and math.isfinite(hi[2]) and width <= SHRINK * widths[-2]:
            guess = cubic_minimizer(a, lo[1], lo[2], b, hi[1], hi[2])
        widths.append(width)
        low, high = min(a, b) + MARGIN * width, max(a, b) - MARGIN * width
        t = (a + b) / 2 if guess is None else min(max(guess, low), high)
    if lo[0] > 0:
        return lo[0], lo[1], lo[3]
    return None
