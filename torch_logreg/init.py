"""Named, seeded initialisations of a model's ``Linear`` layers.

An MLP must start from random weights (equal weights stay equal under every update); a convex
model may start anywhere, and starts at zero. Each scheme draws from one ``torch.Generator`` seeded
by the caller, layer by layer in the model's order, so a seed gives the same weights on any
machine (the draws are made on the CPU in float64, then cast and moved).

For a layer with ``fan_in`` inputs and ``fan_out`` outputs:

* ``xavier_uniform``: U(-a, a), ``a = sqrt(6 / (fan_in + fan_out))`` (Glorot & Bengio; for tanh and sigmoid)
* ``xavier_normal``: N(0, 2 / (fan_in + fan_out))
* ``kaiming_uniform``: U(-a, a), ``a = sqrt(6 / fan_in)`` (He et al.; for ReLU)
* ``kaiming_normal``: N(0, 2 / fan_in)
* ``uniform``: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), ``torch.nn.Linear``'s default
* ``zeros``

Biases start at zero, except under ``uniform`` (drawn like the weights, as ``nn.Linear`` does).
"""

from __future__ import annotations

import math

import torch

from .errors import UsageError
from .layers import Linear

SCHEMES = ("xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "uniform", "zeros")
#: what ``"auto"`` means for each activation
AUTO = {"relu": "kaiming_uniform", "tanh": "xavier_uniform", "sigmoid": "xavier_uniform"}


def _draw(shape, scheme: str, fan_in: int, fan_out: int, gen: torch.Generator) -> torch.Tensor:
    if scheme == "zeros":
        return torch.zeros(shape, dtype=torch.float64)
    if scheme.endswith("normal"):
        std = math.sqrt(2.0 / (fan_in + fan_out)) if scheme.startswith("xavier") else math.sqrt(2.0 / fan_in)
        return torch.randn(shape, generator=gen, dtype=torch.float64) * std
    bound = {"xavier_uniform": math.sqrt(6.0 / (fan_in + fan_out)), "kaiming_uniform": math.sqrt(6.0 / fan_in),
             "uniform": 1.0 / math.sqrt(fan_in)}[scheme]
    return (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound


@torch.no_grad()
def initialize(model, scheme: str, seed: int) -> None:
    """Set every ``Linear`` layer of ``model`` by ``scheme`` (one of :data:`SCHEMES`), drawn from a
    generator seeded with ``seed``."""
    if scheme not in SCHEMES:
        raise UsageError(f"init must be one of {list(SCHEMES)}, got {scheme!r}")
    gen = torch.Generator().manual_seed(seed)
    for layer in model.modules():
        if not isinstance(layer, Linear):
            continue
        w = layer.weight
        w.copy_(_draw(w.shape, scheme, layer.in_features, layer.out_features, gen).to(w))
        if layer.bias is not None:
            b = layer.bias
            drawn = _draw(b.shape, "uniform", layer.in_features, layer.out_features, gen) if scheme == "uniform" else None
            b.copy_(drawn.to(b) if drawn is not None else torch.zeros_like(b))
