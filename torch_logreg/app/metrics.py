"""Evaluation metrics on a split.

:func:`evaluate` is what a finished run reports: ``loss`` (the mean NLL the model minimised), then
for a classifier scikit-learn's accuracy, ROC AUC, log-loss, Brier score and precision, recall and
F1 (macro, and per class named by its label); for regression, R^2. :func:`training_metrics` is
the cheap subset the TensorBoard logger reads during training, computed on the run's device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
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


@dataclass
class Predictions:
    """A classifier's predictions on a split, on the host in float64.

    ``y``: true class indices (N,); ``pred``: predicted indices (N,) (argmax of the logits, logit
    >= 0 for a single sigmoid); ``proba``: (N, K) class probabilities whose rows sum to 1 (a single
    sigmoid gives [1 - p, p]; one sigmoid per class is normalised over the classes, as scikit-learn's
    one-vs-rest ``predict_proba`` does); ``scores``: what ROC AUC ranks (the logit of a single
    sigmoid, each class's own sigmoid of a one-per-class model, the softmax probabilities).
    """

    y: np.ndarray
    pred: np.ndarray
    proba: np.ndarray
    scores: np.ndarray

    @property
    def n_classes(self) -> int:
        return self.proba.shape[1]


@torch.no_grad()
def predictions(model, X: Tensor, T: Tensor, logits: Tensor | None = None) -> Predictions:
    """The :class:`Predictions` of a classifier ``model`` on features ``X`` and prepared targets
    ``T`` (N, K); ``logits`` when already computed."""
    z = (model.logits(X) if logits is None else logits).detach().to(device="cpu", dtype=torch.float64)
    truth = T.detach().cpu()
    if model.n_outputs == 1:
        p = torch.sigmoid(z[:, 0])
        return Predictions(truth[:, 0].long().numpy(), (z[:, 0] >= 0).long().numpy(),
                           torch.stack([1 - p, p], dim=1).numpy(), z[:, 0].numpy())
    y, pred = truth.argmax(dim=1).numpy(), z.argmax(dim=1).numpy()
    if model.link == "softmax":
        proba = torch.softmax(z, dim=1)
        return Predictions(y, pred, proba.numpy(), proba.numpy())
    p = torch.sigmoid(z)
    return Predictions(y, pred, (p / p.sum(dim=1, keepdim=True).clamp_min(1e-300)).numpy(), p.numpy())


def classification_metrics(P: Predictions, classes: list[str] | None = None) -> dict[str, float]:
    """scikit-learn's scores of ``P``, every value a float.

    ``accuracy``; ``auc``: ROC AUC (binary: of the second class's score where a model has two
    outputs), or the macro mean of the one-vs-rest AUCs of the
    classes that occur in ``y`` with both outcomes (K classes; NaN when none does); ``log_loss``;
    ``brier``: binary, the mean of (p - y)^2 (scikit-learn's ``brier_score_loss``); K classes, the
    mean over samples of the sum over classes of (p_k - y_k)^2 against the one-hot truth, as
    scikit-learn >= 1.7 defines the multi-class Brier score (0 best, 2 worst);
    ``precision_macro``, ``recall_macro``, ``f1_macro``: unweighted means over the classes that
    occur in the labels or the predictions; with ``classes`` (the labels in output order), also
    ``precision[<label>]``, ``recall[<label>]`` and ``f1[<label>]`` per class. A class with no
    prediction (or no sample) scores 0 precision (recall), not NaN.
    """
    from sklearn.metrics import (
        accuracy_score,
        brier_score_loss,
        log_loss,
        mean_squared_error,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    k = P.n_classes
    labels = list(range(k))
    out = {"accuracy": float(accuracy_score(P.y, P.pred))}
    if k == 2:
        both = 0 < int(P.y.sum()) < len(P.y)
        # two outputs for two classes (softmax, one sigmoid per class): the second class's score ranks
        scores = P.scores if P.scores.ndim == 1 else P.scores[:, 1]
        out["auc"] = float(roc_auc_score(P.y, scores)) if both else math.nan
    else:
        onehot = np.eye(k)[P.y]
        present = [c for c in labels if 0 < onehot[:, c].sum() < len(P.y)]
        out["auc"] = float(roc_auc_score(onehot[:, present], P.scores[:, present], average="macro")) if present else math.nan
    out["log_loss"] = float(log_loss(P.y, P.proba, labels=labels))
    if k == 2:
        out["brier"] = float(brier_score_loss(P.y, P.proba[:, 1], pos_label=1))
    else:
        out["brier"] = float(mean_squared_error(np.eye(k)[P.y], P.proba, multioutput="raw_values").sum())
    precision, recall, f1, _ = precision_recall_fscore_support(P.y, P.pred, average="macro", zero_division=0)
    out.update(precision_macro=float(precision), recall_macro=float(recall), f1_macro=float(f1))
    if classes is not None:
        if len(classes) != k:
            raise ValueError(f"{len(classes)} class labels for a model with {k} classes")
        precision, recall, f1, _ = precision_recall_fscore_support(P.y, P.pred, labels=labels, average=None,
                                                                   zero_division=0)
        for i, name in enumerate(classes):
            out.update({f"precision[{name}]": float(precision[i]), f"recall[{name}]": float(recall[i]),
                        f"f1[{name}]": float(f1[i])})
    return out


def multilabel_metrics(logits: Tensor, T: Tensor, names: list[str] | None = None) -> dict[str, float]:
    """Scores of ``K`` sigmoid outputs against ``(N, K)`` 0/1 targets where a row may have several
    1s (a multilabel target of several columns), each output a yes/no at logit >= 0:
    ``accuracy``: the rows with every output right (scikit-learn's subset accuracy);
    ``hamming_accuracy``: the outputs right; ``auc``: the macro mean of the outputs' ROC AUCs
    (those with both outcomes); ``log_loss``: the mean binary cross-entropy per output;
    ``brier``: the mean of ``(p - t)^2``; ``precision_macro``, ``recall_macro``, ``f1_macro``
    over the outputs, and with ``names`` each output's."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support, roc_auc_score

    z = logits.detach().to(device="cpu", dtype=torch.float64)
    t = T.detach().cpu().to(torch.float64)
    p, truth, pred = torch.sigmoid(z).numpy(), t.numpy().astype(np.int64), (z >= 0).long().numpy()
    out = {"accuracy": float(accuracy_score(truth, pred)), "hamming_accuracy": float((truth == pred).mean())}
    present = [k for k in range(truth.shape[1]) if 0 < truth[:, k].sum() < len(truth)]
    out["auc"] = float(roc_auc_score(truth[:, present], p[:, present], average="macro")) if present else math.nan
    # -log sigmoid(z) = softplus(-z), -log(1 - sigmoid(z)) = softplus(z)
    nll = t * torch.nn.functional.softplus(-z) + (1 - t) * torch.nn.functional.softplus(z)
    out["log_loss"] = float(nll.mean())
    out["brier"] = float(((p - truth) ** 2).mean())
    precision, recall, f1, _ = precision_recall_fscore_support(truth, pred, average="macro", zero_division=0)
    out.update(precision_macro=float(precision), recall_macro=float(recall), f1_macro=float(f1))
    if names is not None:
        precision, recall, f1, _ = precision_recall_fscore_support(truth, pred, average=None, zero_division=0)
        for i, name in enumerate(names):
            out.update({f"precision[{name}]": float(precision[i]), f"recall[{name}]": float(recall[i]),
                        f"f1[{name}]": float(f1[i])})
    return out


@torch.no_grad()
def evaluate(model, X: Tensor | None, T: Tensor, classes: list[str] | None = None,
             logits: Tensor | None = None, multilabel: bool = False) -> dict[str, float]:
    """Metrics of ``model`` on features ``X`` (or their ``logits``, computed elsewhere) and
    prepared targets ``T`` (N, K), flat scalars.

    ``loss`` is the data term of the objective (no penalty). Regression adds ``r2``; a classifier
    adds :func:`classification_metrics` (``accuracy``, ``auc``, ``log_loss``, ``brier``,
    ``precision_macro``, ``recall_macro``, ``f1_macro``, and with ``classes`` the per-class
    ``precision[<label>]``, ``recall[<label>]``, ``f1[<label>]``). An empty split gives ``{}``.
    ``multilabel``: the targets are several 0/1 columns, scored by :func:`multilabel_metrics`.
    """
    logits, out = _loss(model, X, T, logits)
    if logits is None or model.link == "identity":
        return out
    if multilabel:
        out.update(multilabel_metrics(logits, T, classes))
        return out
    out.update(classification_metrics(predictions(model, X, T, logits), classes))
    return out


def _loss(model, X: Tensor | None, T: Tensor, logits: Tensor | None = None) -> tuple[Tensor | None, dict[str, float]]:
    """The logits and ``{"loss": ..., "r2": ... (regression)}``; ``(None, {})`` for no rows."""
    if T.shape[0] == 0:
        return None, {}
    logits = model.logits(X) if logits is None else logits
    loss, _ = model.loss_fn(logits, T)
    out = {"loss": loss.item()}
    if model.link == "identity":
        out["r2"] = _r2(logits, T)
    return logits, out


@torch.no_grad()
def training_metrics(model, X: Tensor, T: Tensor, offset: Tensor | None = None) -> dict[str, float]:
    """The cheap metrics read during training, on the run's device: ``loss``, then ``accuracy``
    (argmax for softmax and one-sigmoid-per-class, logit >= 0 for a single sigmoid) and, for a
    single sigmoid, ``auc``; regression ``r2``. The same values :func:`evaluate` reports.
    ``offset`` ``(N, 1)`` or ``(N, K)``: added to the logits (data.offset)."""
    logits, out = _loss(model, X, T, None if offset is None else model.logits(X) + offset)
    if logits is None or model.link == "identity":
        return out
    if model.n_outputs == 1:
        pred = (logits[:, 0] >= 0).long()
        truth = T[:, 0].long()
        out["accuracy"] = (pred == truth).double().mean().item()
        out["auc"] = roc_auc(logits[:, 0], truth)
    else:
        out["accuracy"] = (logits.argmax(dim=1) == T.argmax(dim=1)).double().mean().item()
    return out


def _r2(outputs: Tensor, T: Tensor) -> float:
    ss_res = ((outputs - T) ** 2).sum()
    ss_tot = ((T - T.mean(dim=0)) ** 2).sum()
    return (1 - ss_res / ss_tot).item() if ss_tot > 0 else float("nan")


#: the splits a summary table lists, in this order (``data``: ``evaluate --data``'s file)
TABLE_SPLITS = ("train", "val", "test", "data")


def _cell(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def summary_table(metrics: dict) -> str:
    """The splits' scalar metrics (those without ``[class]``) as a table, a split per row and a
    metric per column, in :func:`evaluate`'s order. ``log_loss`` is left out where it reads as
    ``loss`` on every split (a single sigmoid or a softmax: both are the mean negative
    log-likelihood); a model with one sigmoid per class keeps both, since there they differ."""
    rows = {s: {k: v for k, v in metrics[s].items() if "[" not in k} for s in TABLE_SPLITS if metrics.get(s)}
    if not rows:
        return ""
    columns = list(dict.fromkeys(k for r in rows.values() for k in r))
    if "log_loss" in columns and all(_cell(r.get("log_loss")) == _cell(r.get("loss")) for r in rows.values()):
        columns.remove("log_loss")
    widths = [max(len(c), 6) for c in columns]
    lines = ["split " + "  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    for split, r in rows.items():
        lines.append(f"{split:<5} " + "  ".join(_cell(r.get(c)).rjust(w) for c, w in zip(columns, widths)))
    return "\n".join(lines)


#: longest class label a per-class table shows (a longer one is cut, ending in "~")
LABEL_WIDTH = 16


def per_class_table(metrics: dict, splits: tuple[str, ...] = TABLE_SPLITS) -> str:
    """Precision, recall and F1 of each class (``precision[<label>]`` ...) as a table: a class per
    row, the three scores of each split side by side; at most :data:`LABEL_WIDTH` characters of
    each label. Empty when the splits hold no per-class scores (regression)."""
    present = [s for s in splits if metrics.get(s) and any(k.startswith("f1[") for k in metrics[s])]
    if not present:
        return ""
    labels = [k[3:-1] for k in metrics[present[0]] if k.startswith("f1[")]
    shown = [lab if len(lab) <= LABEL_WIDTH else lab[: LABEL_WIDTH - 1] + "~" for lab in labels]
    width = max(5, *(len(s) for s in shown))
    scores = (("precision", "prec"), ("recall", "recall"), ("f1", "f1"))
    lines = [" " * width + "".join(f"  {s:^20}" for s in present),
             f"{'class':<{width}}" + ("  " + " ".join(f"{h:>6}" for _, h in scores)) * len(present)]
    for lab, text in zip(labels, shown):
        lines.append(f"{text:<{width}}" + "".join(
            "  " + " ".join(f"{_cell(metrics[s].get(f'{m}[{lab}]')):>6}" for m, _ in scores) for s in present))
    return "\n".join(line.rstrip() for line in lines)
