"""The rows of a fit, kept on the model's device for what an inference result computes on demand
(marginal effects at any point, profile-likelihood intervals)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class FitData:
    """``Xa`` ``(N, A)``, the design with the intercept column first when the model has one; ``T`` ``(N, K)``
    the targets (binary: ``K = 1``); ``w`` ``(N,)`` the sample weights (ones without weights); ``offset``
    ``(N,)`` or None (binary only); ``softmax``: a K-class model (else one sigmoid output); ``firth``: the fit
    maximised Firth's penalised likelihood."""

    Xa: Tensor
    T: Tensor
    w: Tensor
    offset: Tensor | None
    softmax: bool
    firth: bool = False

    @property
    def omega(self) -> Tensor:
        """The averaging weights ``w / sum w`` ``(N,)``."""
        return self.w / self.w.sum()
