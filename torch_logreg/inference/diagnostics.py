"""Whether the maximum-likelihood estimate and its covariance exist: separation and collinearity.

Separation. When a linear combination of the features classifies some samples perfectly, the
MLE does not exist: the likelihood keeps increasing as the coefficients grow. This is checked
exactly, following Albert & Anderson's characterisation, with a linear program: separation
exists iff some ``beta != 0`` gives every sample a non-negative margin
(binary: ``(2y_n - 1) x~_n^T beta >= 0``; K classes: ``x~_n^T (beta_{y_n} - beta_k) >= 0`` for
all k) and a positive margin to at least one sample. :func:`find_separation` solves it (scipy's
HiGHS, on the CPU; its home is :mod:`torch_logreg.solvers.separation`) and
:func:`~torch_logreg.inference.infer` refuses to report standard errors for such data.

Collinearity. Before inverting, the information matrix is scaled to unit diagonal
(``D^-1/2 I D^-1/2``, which removes the units of the columns, so a column in micrometres is as
good as one in metres) and its reciprocal condition number ``rcond = min |lambda| / max |lambda|``
is taken from its eigenvalues (float64). The information is computed in the model's dtype, whose
rounding leaves an exactly singular design with ``rcond`` of a few ``eps`` (about 1e-16 in
float64, 1e-7 in float32), while the inverse loses about ``eps / rcond`` in relative accuracy.
A design with ``rcond < eps ** 0.625`` (1.6e-10 in float64, 4.7e-5 in float32: several hundred
thousand, resp. several hundred, times that rounding floor) is refused as singular with a
``ValueError`` naming the columns that load on the near-null eigenvectors; one with
``rcond < eps ** 0.5`` (1.5e-8, resp. 3.5e-4: fewer than half the working digits survive the
inversion) still gets its results, with a :class:`CollinearityWarning` naming the columns.
A column with zero (or non-finite) information is refused by name before that.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import UsageError
from ..solvers.separation import (  # noqa: F401  (re-exported: the public home of these names)
    CERTAINTY,
    LP_MAX_ROWS,
    PerfectSeparationError,
    Separation,
    SeparationWarning,
    find_separation,
)

#: the unit-diagonal information matrix counts as singular below ``eps ** SINGULAR_RCOND_POWER`` of the dtype
#: it is computed in (float64: 1.6e-10, float32: 4.7e-5). Rounding alone leaves a singular matrix at a few eps,
#: so the bound sits eps ** -0.375 (7e5 in float64, 400 in float32) above it, while a design just above the
#: bound still gets standard errors with relative error eps / rcond <= eps ** 0.375 (1e-6, resp. 3e-3).
SINGULAR_RCOND_POWER = 0.625
#: below ``eps ** COLLINEAR_RCOND_POWER`` (float64: 1.5e-8, float32: 3.5e-4) the inversion keeps fewer than
#: half the working digits: the results are returned with a :class:`CollinearityWarning`
COLLINEAR_RCOND_POWER = 0.5
#: a column is named as responsible when its loading on the near-null eigenvectors (the norm of its rows
#: of their orthonormal basis, largest over the class contrasts) exceeds this
LOADING = 0.1
#: the refusal of a singular information matrix that no single column explains
SINGULAR = (
    "the information matrix (Hessian of the log-likelihood) is singular: some features are "
    "collinear or constant (the design matrix is rank deficient), so standard errors do not exist. "
    "Drop the redundant columns."
)


class CollinearityWarning(UserWarning):
    """The design is nearly singular: some columns are nearly collinear and their standard errors are unreliable."""


def rcond_bounds(dtype: torch.dtype) -> tuple[float, float]:
    """``(singular, collinear)``: the reciprocal condition numbers below which an information matrix
    computed in ``dtype`` is refused, resp. warned about."""
    eps = torch.finfo(dtype).eps
    return eps**SINGULAR_RCOND_POWER, eps**COLLINEAR_RCOND_POWER


def check_conditioning(info: Tensor, names: list[str], n_contrasts: int = 1) -> str | None:
    """Refuse a singular information matrix, naming the columns responsible; warn of an ill-conditioned one.

    ``info`` is ``(C A, C A)`` for ``C = n_contrasts`` class contrasts (class-major) of the ``A``
    parameters ``names``. It is scaled to unit diagonal and its eigenvalues (float64) give the
    reciprocal condition number ``rcond``; the bounds are :func:`rcond_bounds` of ``info.dtype``.
    Raises ``ValueError`` when a column has zero or non-finite information or ``rcond`` is below
    the singular bound; returns the text of a :class:`CollinearityWarning` when it is below the
    collinear bound, else None.
    """
    singular, collinear = rcond_bounds(info.dtype)
    a = len(names)
    dtype_name = str(info.dtype).removeprefix("torch.")
    device = info.device if info.device.type in ("cpu", "cuda") else torch.device("cpu")
    info = info.detach().to(device=device, dtype=torch.float64)
    diag = info.diagonal()
    empty = (~torch.isfinite(diag) | (diag <= 0)).view(n_contrasts, a).any(0)
    if bool(empty.any()):
        cols = [names[j] for j in empty.nonzero()[:, 0].tolist()]
        raise UsageError(
            f"the design is singular: {_columns(cols)} {'has' if len(cols) == 1 else 'have'} zero or non-finite "
            f"information (zero for every sample with positive weight, or too large for {dtype_name}); "
            f"drop {'it' if len(cols) == 1 else 'them'} so standard errors exist"
        )
    scale = diag.rsqrt()
    scaled = scale[:, None] * info * scale[None, :]
    if not bool(torch.isfinite(scaled).all()):
        raise UsageError(SINGULAR)
    size = torch.linalg.eigvalsh(scaled).abs()
    rcond = float(size.min() / size.max())
    if rcond >= collinear:
        return None
    values, vectors = torch.linalg.eigh(scaled)
    size = values.abs()
    bound = singular if rcond < singular else collinear
    near_null = vectors[:, size < bound * size.max()]
    if near_null.shape[1] == 0:  # eigh and eigvalsh disagree at the last digit
        near_null = vectors[:, size.argmin()].unsqueeze(1)
    loading = near_null.square().sum(1).sqrt().view(n_contrasts, a).amax(0)
    picked = (loading > LOADING).nonzero()[:, 0].tolist() or [int(loading.argmax())]
    cols = [names[j] for j in picked]
    relations = max(1, -(-near_null.shape[1] // n_contrasts))
    if rcond < singular:
        if len(cols) == 1:
            what, todo = f"{_columns(cols)} is a combination of the others", "drop it"
        else:
            todo = "drop one of them" if relations == 1 else f"drop {relations} of them (one per linear relation)"
            what = f"{_columns(cols)} are collinear"
        raise UsageError(
            f"the design is singular (reciprocal condition number {rcond:.2g} < {singular:.2g}): {what}; "
            f"{todo} so standard errors exist"
        )
    what = f"{_columns(cols)} " + ("is nearly a combination of the others" if len(cols) == 1 else "are nearly collinear")
    return (
        f"the design is nearly singular (reciprocal condition number {rcond:.2g} < {collinear:.2g}): {what}, "
        f"so their standard errors are large and keep fewer than half of the {dtype_name} digits; "
        "consider dropping or combining them"
    )


def _columns(cols: list[str]) -> str:
    return ("column " if len(cols) == 1 else "columns ") + ", ".join(repr(c) for c in cols)

