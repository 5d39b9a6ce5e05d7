"""Evaluation metrics on a split: loss, accuracy, ROC AUC (binary), R^2 (regression)."""

from __future__ import annotations

import torch
from torch import Tensor


def roc_auc(scores: Tensor, labels: Tensor) -> float:
    """Area under the ROC curve as the Mann-Whitney statistic, ties given their average rank;
    NaN when only one class is present. Computed on the scores' device."""
    labels = labels.to(torch.bool)
    n_pos = int(labels.sum())
    n_neg = labels.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    sorted_scores, order = scores.to(torch.float64).sort()
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).to(torch.float64)
    average_rank = ends - (counts.to(torch.float64) - 1) / 2  # ranks are 1-based
    rank_sum = average_rank[inverse][labels[order]].sum().item()
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


@torch.no_grad()
def evaluate(model, X: Tensor, T: Tensor) -> dict[str, float]:
    """Metrics of ``model`` on features ``X`` and prepared targets ``T`` (N, K).

    ``loss`` is the data term of the objective (no penalty). Classification adds ``accuracy``
    (argmax for softmax and one-sigmoid-per-class, p >= 0.5 for a single sigmoid) and, for a
    single sigmoid, ``auc``; regression adds ``r2``.
    """
    if X.shape[0] == 0:
        return {}
    logits = model.logits(X)
    loss, _ = model.loss_fn(logits, T)
    out = {"loss": loss.item()}
    if model.link == "identity":
        ss_res = ((logits - T) ** 2).sum()
        ss_tot = ((T - T.mean(dim=0)) ** 2).sum()
        out["r2"] = (1 - ss_res / ss_tot).item() if ss_tot > 0 else float("nan")
        return out
    if model.n_outputs == 1:
        pred = (logits[:, 0] >= 0).long()
        truth = T[:, 0].long()
        out["accuracy"] = (pred == truth).double().mean().item()
        out["auc"] = roc_auc(logits[:, 0], truth)
    else:
        out["accuracy"] = (logits.argmax(dim=1) == T.argmax(dim=1)).double().mean().item()
    return out
