"""Standardization, ``(x - mean) / scale`` with statistics from the training rows only."""

from __future__ import annotations

import torch
from torch import Tensor

from ...errors import UsageError


class _Alone:
    """The statistics of one process's rows are those of all the rows."""

    @staticmethod
    def sum(t: Tensor) -> Tensor:
        return t

    max = sum


class Standardizer:
    """``(x - mean) / scale`` with statistics from the training split only.

    A constant column gets scale 1, so it maps to zeros rather than NaN. Values up to the largest
    float64 work: the statistics are computed on each column scaled by a power of two (exact, so
    ordinary data gives the same bits as the plain formulas), and the transform halves both terms
    before subtracting, so neither can overflow.

    Sparse features (a CSR tensor) are scaled but not centred (mean 0), as scikit-learn's
    ``StandardScaler(with_mean=False)`` does: centring would fill in every zero. The scale is
    still the standard deviation about the column's mean.

    Under torchrun the training rows are spread over the processes: ``fit(X, combine)`` takes this
    process's rows and ``combine`` (``.sum(t)`` and ``.max(t)`` of a tensor over the processes), and
    every process gets the statistics of all the rows (the same two passes, summed in another order).
    """

    def __init__(self, mean: Tensor, scale: Tensor) -> None:
        self.mean, self.scale = mean, scale

    @classmethod
    def fit(cls, X: Tensor, combine=None) -> Standardizer:
        if X.layout == torch.sparse_csr:
            return cls._fit_sparse(X, combine or _Alone)
        if combine is not None:
            return cls.fit_parts(lambda: iter([X.to(torch.float64)]), combine)
        X = X.to(torch.float64)
        # 2^(e-1) > max |x| / 2 per column (2^e could overflow): X / 2^(e-1) lies in (-2, 2), and
        # scaling by a power of two is exact
        _, e = torch.frexp(X.abs().amax(dim=0))
        unit = torch.ldexp(torch.ones_like(e, dtype=torch.float64), e - 1)
        unit = torch.where(unit > 0, unit, torch.ones_like(unit))
        mean = (X / unit).mean(dim=0) * unit
        std = (X / unit).std(dim=0, unbiased=False) * unit
        scale = torch.where(std > 1e-12 * mean.abs().clamp(min=1.0), std, torch.ones_like(std))
        return cls(mean, scale)

    @classmethod
    def fit_parts(cls, parts, combine=None) -> Standardizer:
        """:meth:`fit` of rows read a part at a time: ``parts()`` yields them (dense, float64) anew
        for each of the three passes (the largest value, the mean, the deviation); ``combine``
        as for :meth:`fit`."""
        combine = combine or _Alone
        amax, rows = None, 0
        for X in parts():
            a = X.abs().amax(dim=0) if X.shape[0] else X.new_zeros(X.shape[1])
            amax, rows = (a if amax is None else torch.maximum(amax, a)), rows + X.shape[0]
        _, e = torch.frexp(combine.max(amax))
        unit = torch.ldexp(torch.ones_like(e, dtype=torch.float64), e - 1)
        unit = torch.where(unit > 0, unit, torch.ones_like(unit))
        n = combine.sum(torch.tensor(float(rows), dtype=torch.float64)).clamp(min=1.0)
        mean_u = combine.sum(sum((X / unit).sum(dim=0) for X in parts())) / n
        std = torch.sqrt(combine.sum(sum(((X / unit - mean_u) ** 2).sum(dim=0) for X in parts())) / n) * unit
        mean = mean_u * unit
        scale = torch.where(std > 1e-12 * mean.abs().clamp(min=1.0), std, torch.ones_like(std))
        return cls(mean, scale)

    @classmethod
    def _fit_sparse(cls, X: Tensor, combine) -> Standardizer:
        d = X.shape[1]
        values, cols = X.values().to(torch.float64).cpu(), X.col_indices().cpu()
        n = float(combine.sum(torch.tensor(float(X.shape[0]), dtype=torch.float64)))
        total = combine.sum(torch.zeros(d, dtype=torch.float64).index_add_(0, cols, values))
        mean = total / max(n, 1)
        # sum over all rows of (x - mean)^2: the stored entries', plus mean^2 for each absent zero
        count = combine.sum(torch.zeros(d, dtype=torch.float64).index_add_(0, cols, torch.ones_like(values)))
        dev = combine.sum(torch.zeros(d, dtype=torch.float64).index_add_(0, cols, (values - mean[cols]) ** 2))
        std = torch.sqrt((dev + (n - count) * mean**2) / max(n, 1))
        scale = torch.where(std > 1e-12 * mean.abs().clamp(min=1.0), std, torch.ones_like(std))
        return cls(torch.zeros(d, dtype=torch.float64), scale)

    @classmethod
    def identity(cls, n_features: int) -> Standardizer:
        return cls(torch.zeros(n_features, dtype=torch.float64), torch.ones(n_features, dtype=torch.float64))

    def transform(self, X: Tensor) -> Tensor:
        mean, scale = self.mean.to(X.device, X.dtype), self.scale.to(X.device, X.dtype)
        if X.layout == torch.sparse_csr:
            if bool((mean != 0).any()):
                raise UsageError("this model centres its inputs, so it was trained on dense features; give it dense data")
            values = X.values() / scale[X.col_indices()]
            return torch.sparse_csr_tensor(X.crow_indices(), X.col_indices(), values, size=X.shape, check_invariants=False)
        return (X * 0.5 - mean * 0.5) / (scale * 0.5)  # the halves are exact, and their difference cannot overflow

    def state_dict(self) -> dict:
        return {"mean": self.mean.cpu(), "scale": self.scale.cpu()}

    @classmethod
    def from_state_dict(cls, d: dict) -> Standardizer:
        return cls(d["mean"], d["scale"])


def check_standardized(X: Tensor, raw: Tensor, source: str, names: list[str], rows: Tensor | None = None) -> None:
    """A finite value whose standardized form the storage dtype cannot hold (far outside the
    training rows' range) is the data's problem, named here, not an infinity in the model. For a
    CSR ``X`` (whose non-zeros sit where ``raw``'s do) the stored values are checked."""
    sparse = X.layout == torch.sparse_csr
    bad = ~torch.isfinite(X.values() if sparse else X)
    if not bool(bad.any()):
        return
    if sparse:
        k = int(bad.nonzero()[0, 0])
        r = int(torch.searchsorted(X.crow_indices(), torch.tensor(k, device=X.device), right=True)) - 1
        c, value = int(X.col_indices()[k]), raw.values()[k].item()
    else:
        r, c = (int(i) for i in bad.nonzero()[0])
        value = raw[r, c].item()
    dtype = str(X.dtype).replace("torch.", "")
    row = int(rows[r]) if rows is not None else r
    raise UsageError(f"{source}: row {row}, column {names[c]!r}: {value:g} is so far from the training "
                     f"rows' values that, standardized, it exceeds what {dtype} can hold; check the value"
                     + (", or set train.dtype = 'float64'" if dtype != "float64" else ""))
