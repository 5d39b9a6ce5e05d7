"""Evaluation metrics on a split: loss, accuracy, ROC AUC (binary), R^2 (regression)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (the Mann-Whitney statistic, ties counted half); NaN if one class."""
    from sklearn.metrics import roc_auc_score

    if labels.min() == labels.max():
        return float("nan")
    return float(roc_auc_score(labels, scores))


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
    loss, _ = model._loss_fn(logits, T)
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
        out["auc"] = roc_auc(logits[:, 0].double().cpu().numpy(), truth.cpu().numpy())
    else:
        out["accuracy"] = (logits.argmax(dim=1) == T.argmax(dim=1)).double().mean().item()
    return out
