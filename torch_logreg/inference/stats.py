"""The scalar distributions the tests and intervals read, and the float64 NumPy copies every result is
returned as. Computed with torch's special functions (float64), so the library needs no scipy here."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..errors import UsageError


def normal_quantile(alpha: float) -> float:
    """``z_{1 - alpha/2} = sqrt 2 erfinv(1 - alpha)``."""
    if not 0 < alpha < 1:
        raise UsageError(f"alpha must be in (0, 1), got {alpha!r}")
    return math.sqrt(2.0) * float(torch.special.erfinv(torch.tensor(1.0 - alpha, dtype=torch.float64)))


def chi2_sf(x: float, df: float) -> float:
    """``P(chi2_df > x)``, the regularised upper incomplete gamma ``Q(df / 2, x / 2)`` (float64)."""
    if df <= 0:
        return math.nan
    half = torch.tensor([df / 2, max(x, 0.0) / 2], dtype=torch.float64)
    return float(torch.special.gammaincc(half[0], half[1]))


def to_numpy(t: Tensor) -> np.ndarray:
    """A float64 NumPy copy of ``t`` on the CPU."""
    return t.detach().to("cpu", torch.float64).numpy()
