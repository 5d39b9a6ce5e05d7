"""What an exact solve returns and warns, and the bookkeeping each iteration shares."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import UsageError
from ..train import History

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
    per iterate, the starting point first, and ``data_losses`` the losses without the penalties
    (where the solve recorded them: :func:`~torch_logreg.solvers.fit_exact` does). ``stop_reason``
    is ``"converged"``, ``"max_iter"``, ``"line_search_failed"`` or ``"callback"``. ``separation``
    is set (a :class:`~torch_logreg.solvers.separation.Separation`) when an unpenalised
    classification fit found the classes (quasi-)completely separated. :attr:`history` is the run
    as a :class:`~torch_logreg.train.History`, the record the loop keeps.
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
    data_losses: list[float] = field(default_factory=list)
    #: the loss without the penalties of an iterate, from its objective (read at the iterate)
    data_loss: Callable[[float], float] | None = field(default=None, repr=False, compare=False)

    @property
    def penalized(self) -> bool:
        return self.l2 > 0 or self.l1 > 0

    @property
    def history(self) -> History:
        """The solve as the loop records a run: one entry per iterate (``epochs`` counts
        iterations from 0, the start), ``train_objective`` the objective, ``train_loss`` the loss
        without the penalties, ``grad_norm`` the optimality measure; ``n_epochs`` and ``n_steps``
        the iterations; the solver's ``stop_reason``."""
        unpenalised = list(self.losses) if not self.penalized else []
        return History(epochs=list(range(len(self.losses))), train_objective=list(self.losses),
                       train_loss=list(self.data_losses) or unpenalised, grad_norm=list(self.grad_norms),
                       stop_reason=self.stop_reason, n_epochs=self.n_iter, n_steps=self.n_iter,
                       wall_time=self.wall_time)

    @classmethod
    def from_history(cls, solver: str, history: History, *, l2: float = 0.0, tol: float = 0.0) -> SolverResult:
        """A run of the loop (update rule ``solver``) described as a solver's result, for what reads
        one (inference's summary): its epochs as iterations and, per check, its objective and
        gradient norm (Euclidean, the loop's measure)."""
        return cls(solver, history.stop_reason == "converged", history.n_epochs,
                   history.train_objective[-1] if history.train_objective else math.nan,
                   history.grad_norm[-1] if history.grad_norm else math.nan, history.stop_reason, l2=l2, tol=tol,
                   losses=list(history.train_objective), grad_norms=list(history.grad_norm),
                   wall_time=history.wall_time, data_losses=list(history.train_loss))

    def finish(self, n_iter: int) -> None:
        """Close a run after ``n_iter`` iterations: the last recorded iterate is the result."""
        self.n_iter = n_iter
        self.loss = self.losses[-1]
        self.grad_norm = self.grad_norms[-1]
        self.converged = self.stop_reason == "converged"


def record_iterate(result: SolverResult, it: int, objective: float, optimality: float, tol: float,
                    max_iter: int, callback, loss: float | None = None) -> bool:
    """Record iterate ``it`` in ``result``; True (with ``result.stop_reason`` set) when the run
    must stop: converged, stopped by the callback, or out of iterations. ``loss``: the loss
    without the penalties, where the solver has it (else ``result.data_loss`` gives it)."""
    result.losses.append(objective)
    result.grad_norms.append(optimality)
    if loss is None and result.data_loss is not None:
        loss = result.data_loss(objective)
    if loss is not None:
        result.data_losses.append(loss)
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
