"""What an exact solve returns and warns, and the bookkeeping each iteration shares."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import UsageError

#: Armijo's sufficient-decrease constant and the most halvings of a line search
ARMIJO = 1e-4
MAX_HALVINGS = 40


class ConvergenceWarning(UserWarning):
    """The solver stopped at ``max_iter`` (or its line search stalled) before reaching ``tol``."""


class NonFiniteError(UsageError, FloatingPointError):
    """A solver met an infinite or NaN objective, gradient, Hessian or step.

    A :class:`UsageError` (so a ``ValueError``: the scale of the input is what the caller can
    change) that is also a ``FloatingPointError``.
    """


#: what a non-finite intermediate most often means, and what to do about it
NON_FINITE_HINT = ("the features, sample weights or starting parameters are too large for the model's dtype; "
                   "rescale them or compute in float64")


@dataclass
class SolverResult:
    """What a call of :func:`fit_exact` did.

    ``grad_norm`` is the final optimality measure (max absolute gradient entry, or of the
    minimum-norm subgradient when ``l1 > 0``); ``losses`` and ``grad_norms`` hold one entry
    per iterate, the starting point first. ``stop_reason`` is ``"converged"``, ``"max_iter"``,
    ``"line_search_failed"`` or ``"callback"``. ``separation`` is set (a
    :class:`~torch_logreg.solvers.separation.Separation`) when an unpenalised classification fit found
    the classes (quasi-)completely separated.
    """

    solver: str
    converged: bool
    n_iter: int
    loss: float
    grad_norm: float
    stop_reason: str
    l2: float = 0.0
    l1: float = 0.0
    tol: float = 0.0
    weighted: bool = False
    losses: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    line_search_steps: list[float] = field(default_factory=list)
    wall_time: float = 0.0
    separation: object | None = None

    @property
    def penalized(self) -> bool:
        return self.l2 > 0 or self.l1 > 0

    def finish(self, n_iter: int) -> None:
        """Close a run after ``n_iter`` iterations: the last recorded iterate is the result."""
        self.n_iter = n_iter
        self.loss = self.losses[-1]
        self.grad_norm = self.grad_norms[-1]
        self.converged = self.stop_reason == "converged"


def record_iterate(result: SolverResult, it: int, objective: float, optimality: float, tol: float,
                    max_iter: int, callback) -> bool:
    """Record iterate ``it`` in ``result``; True (with ``result.stop_reason`` set) when the run
    must stop: converged, stopped by the callback, or out of iterations."""
    result.losses.append(objective)
    result.grad_norms.append(optimality)
    if not math.isfinite(objective) or not math.isfinite(optimality):
        if math.isfinite(objective):
            what = f"the largest gradient entry became {optimality}"
        else:
            what = f"the objective became {objective}"
        raise NonFiniteError(f"{result.solver}: {what} at iteration {it}; {NON_FINITE_HINT}")
    if optimality <= tol:
        result.stop_reason = "converged"
    elif callback is not None and callback(it, objective):
        result.stop_reason = "callback"
    elif it >= max_iter:
        result.stop_reason = "max_iter"
    return bool(result.stop_reason)
