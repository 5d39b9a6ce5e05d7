"""Builders shared by the tests: random models and data of each kind."""

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
