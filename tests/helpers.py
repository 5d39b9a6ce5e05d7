"""Builders shared by the tests: random models and data of each kind."""

import pytest
import torch

import torch_logreg as tl

KINDS = ("binary", "multilabel", "softmax", "regression")


def make_model(kind: str, n_features: int, bias: bool = True, n_outputs: int = 3):
    if kind == "binary":
        return tl.LogisticRegression(n_features, bias=bias)
    if kind == "multilabel":
        return tl.LogisticRegression(n_features, n_outputs=n_outputs, bias=bias)
    if kind == "softmax":
        return tl.SoftmaxRegression(n_features, n_outputs, bias=bias)
    return tl.LinearRegression(n_features, bias=bias)


def make_targets(kind: str, n: int, gen: torch.Generator, n_outputs: int = 3):
    if kind == "binary":
        return torch.randint(0, 2, (n,), generator=gen)
    if kind == "multilabel":
        return torch.randint(0, 2, (n, n_outputs), generator=gen)
    if kind == "softmax":
        return torch.randint(0, n_outputs, (n,), generator=gen)
    return torch.randn(n, generator=gen, dtype=torch.float64)


def randomize(model, gen: torch.Generator, scale: float = 1.0) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)


def scale_to_logits(model, X: torch.Tensor, target: float) -> None:
    """Rescale the parameters so the largest |logit| equals ``target``."""
    with torch.no_grad():
        z = model.logits(X)
        factor = target / z.abs().max()
        for p in model.parameters():
            p.mul_(factor)


def flat_parameters(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).cpu()


def train_variants(kind: str, variants, *, n: int = 300, d: int = 6, seed: int = 0, then=None, **common):
    """Train the same float64 model on the same data once per keyword set in ``variants``
    (each added to ``common``); ``then(trainer)``, if given, runs after the first ``run`` and
    before a second one. Returns ``(trainer, final parameters, history)`` per variant."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = make_targets(kind, n, gen)
    out = []
    for kwargs in variants:
        model = make_model(kind, d).double()
        trainer = tl.Trainer(model, X, y, **common, **kwargs)
        history = trainer.run()
        if then is not None:
            then(trainer)
            history = trainer.run()
        out.append((trainer, flat_parameters(model), history))
    return out


def assert_same_fit(a, b, loss_rel: float = 1e-12) -> None:
    """Two results of :func:`train_variants` reach the same weights and losses."""
    (_, w_a, h_a), (_, w_b, h_b) = a, b
    assert ((w_a - w_b).abs().max() / w_b.abs().max()).item() <= 1e-12
    assert h_a.train_loss == pytest.approx(h_b.train_loss, rel=loss_rel)
