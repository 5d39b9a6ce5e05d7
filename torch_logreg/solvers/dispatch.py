"""Which solver runs: the one rule the estimator, the regularization path and the command line share.

A solver is one of the loop's update rules (``registry.LOOP_SOLVERS``, run by the hand-written
loop of ``train.py``) or an exact solver (``registry.EXACT_SOLVERS``, this package). ``"auto"``
picks an exact solver from the problem's size (:func:`choose_solver`). An L1 term is minimised by
the exact solvers of ``registry.L1_SOLVERS`` and, in the loop, by those of
``registry.L1_LOOP_SOLVERS`` (a proximal step after each update); any other solver is refused
with one sentence naming those that can.
"""

from __future__ import annotations

from .. import arguments
from ..errors import UsageError
from ..registry import EXACT_SOLVERS, L1_SOLVERS

#: ``choose_solver``: Newton while its Hessian has at most this many rows, under an L2 penalty ...
NEWTON_MAX_PARAMS = 400
#: ... and without a penalty, where inference forms and factorises that Hessian anyway and L-BFGS approaches an
#: optimum with no ``l2`` to bound the curvature from below slowly; above either, L-BFGS
NEWTON_MAX_PARAMS_UNPENALISED = 1000
#: with an L1 term, proximal Newton (FISTA on the dense ``(KA, KA)`` Hessian, ``O((KA)^2)`` memory and work per
#: inner step) up to this many rows for dense X, and up to ``NEWTON_MAX_PARAMS`` for sparse X, whose Hessian is
#: dense where X is not; above, the proximal gradient
PROXIMAL_NEWTON_MAX_PARAMS = 2000


def is_exact(solver: str) -> bool:
    """Whether ``solver`` is an exact solver (else one of the loop's update rules)."""
    return solver in EXACT_SOLVERS


def choose_solver(n_params: int, *, l1: float = 0.0, penalised: bool = True, sparse: bool = False) -> str:
    """The exact solver for a problem of ``n_params = K A`` parameters (the Hessian's rows): with
    ``l1 > 0`` and ``sparse`` X, ``"cd"`` (coordinate descent: on sparse data 10-60x faster than
    the others to the same tolerance, as measured in benchmarks/README.md); with ``l1 > 0`` and
    dense X, ``"newton"`` (proximal Newton) while ``n_params`` is at most
    ``PROXIMAL_NEWTON_MAX_PARAMS``, else ``"proximal"`` (whose multi-threaded matrix products beat
    the coordinate passes on dense columns); with ``l1 = 0``, ``"newton"`` while it is at most
    ``NEWTON_MAX_PARAMS`` (``NEWTON_MAX_PARAMS_UNPENALISED`` when not ``penalised``), else
    ``"lbfgs"``. Without numba, ``"cd"`` gives way to newton (up to ``NEWTON_MAX_PARAMS``) or
    proximal."""
    if l1 > 0:
        if sparse:
            from .coordinate_kernels import available

            if available():
                return "cd"
        return "newton" if n_params <= (NEWTON_MAX_PARAMS if sparse else PROXIMAL_NEWTON_MAX_PARAMS) else "proximal"
    return "newton" if n_params <= (NEWTON_MAX_PARAMS if penalised else NEWTON_MAX_PARAMS_UNPENALISED) else "lbfgs"


def resolve(solver: str, n_params: int = 0, *, l1: float = 0.0, penalised: bool = True, sparse: bool = False,
            choices: tuple[str, ...] = ("auto", *EXACT_SOLVERS), l1_solvers: tuple[str, ...] = L1_SOLVERS,
            term: str | None = None) -> str:
    """The solver that runs for ``solver`` (one of ``choices``; ``"auto"``: :func:`choose_solver`'s
    rule for ``n_params`` parameters on dense or ``sparse`` X) under a penalty whose L1 weight is
    ``l1``. With ``l1 > 0`` a solver outside ``l1_solvers`` is a :class:`UsageError` naming the
    ones that can; ``term`` is how the caller wrote the L1 term (default ``l1=<l1>``)."""
    arguments.choice("solver", solver, choices)
    if l1 > 0 and solver != "auto" and solver not in l1_solvers:
        able = [s for s in choices if s == "auto" or s in l1_solvers]
        raise UsageError(f"solver={solver!r} cannot minimise an L1 penalty ({term or f'l1={l1:g}'}); "
                         f"solvers that can: {able}")
    if solver == "auto":
        return choose_solver(n_params, l1=l1, penalised=penalised, sparse=sparse)
    return solver
