"""Pictures for TensorBoard, drawn with matplotlib on its Agg canvas (no window, no pyplot state):
the probability map of a 2-D problem, a confusion matrix, a reliability diagram and weight vectors
shown as images. Each function returns an (H, W, 3) uint8 array for
``writer.add_image(tag, img, step, dataformats="HWC")``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

# one colour per class (RGB, 0..1)
PALETTE = np.array([[0.12, 0.47, 0.71], [0.84, 0.15, 0.16], [0.17, 0.63, 0.17], [1.0, 0.5, 0.05],
                    [0.58, 0.4, 0.74], [0.55, 0.34, 0.29], [0.89, 0.47, 0.76], [0.5, 0.5, 0.5],
                    [0.74, 0.74, 0.13], [0.09, 0.75, 0.81]])
DPI = 80


def _figure(width: float, height: float):
    """A figure (inches) on its own Agg canvas, laid out by matplotlib's constrained layout."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _pixels(fig) -> np.ndarray:
    """The drawn figure as an (H, W, 3) uint8 array."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def _short(label: str, width: int = 14) -> str:
    label = str(label)
    return label if len(label) <= width else label[: width - 1] + "…"


def _colour(k: int) -> np.ndarray:
    return PALETTE[k % len(PALETTE)]


def _tint(colour: np.ndarray, strength: np.ndarray) -> np.ndarray:
    """``colour`` paled towards white: faint at strength 0 (a tie), deep at 1 (certain)."""
    return 1 - (1 - colour) * (0.15 + 0.55 * np.asarray(strength)[..., None])


@torch.no_grad()
def probability_map(predict_proba: Callable[[np.ndarray], np.ndarray], X2: np.ndarray, labels: np.ndarray,
                    classes: Sequence[str], feature_names: Sequence[str] = ("x1", "x2"), title: str = "",
                    size: int = 200) -> np.ndarray:
    """The plane spanned by the two raw features, as an image.

    ``predict_proba`` maps raw (M, 2) points to (M, K) probabilities (K = 1: P(y = classes[1])).
    Two classes: the background is P(classes[1]) on a scale from the first class's colour through
    white (p = 0.5) to the second's, with the colour bar of that scale and the decision boundary
    (p = 0.5) in black. K classes: the background is the predicted class's colour, paler where the
    model is unsure, with a colour bar of that confidence (the top class's probability) and black
    where the predicted class changes. The points ``X2`` are drawn in their true class's colour
    (``labels``: class indices); axes are named by ``feature_names``, the legend by ``classes``.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize
    from matplotlib.lines import Line2D

    lo, hi = X2.min(axis=0), X2.max(axis=0)
    pad = 0.05 * (hi - lo + 1e-12)
    lo, hi = lo - pad, hi + pad
    xs, ys = np.linspace(lo[0], hi[0], size), np.linspace(lo[1], hi[1], size)
    gx, gy = np.meshgrid(xs, ys)  # row 0 is the lowest y: drawn with origin="lower"
    P = np.asarray(predict_proba(np.stack([gx.ravel(), gy.ravel()], axis=1)), dtype=np.float64)
    if P.shape[1] == 1:
        P = np.concatenate([1 - P, P], axis=1)
    k = P.shape[1]
    extent = (lo[0], hi[0], lo[1], hi[1])
    fig = _figure(5.6, 5.0)
    ax = fig.add_subplot()
    ramp = np.linspace(0, 1, 256)
    if k == 2:
        cmap = ListedColormap(np.where(ramp[:, None] >= 0.5, _tint(_colour(1), 2 * ramp - 1), _tint(_colour(0), 1 - 2 * ramp)))
        p1 = P[:, 1].reshape(size, size)
        image = ax.imshow(p1, origin="lower", extent=extent, aspect="auto", cmap=cmap, vmin=0, vmax=1,
                          interpolation="bilinear")
        if p1.min() < 0.5 < p1.max():
            ax.contour(xs, ys, p1, levels=[0.5], colors="k", linewidths=1.2)
        fig.colorbar(image, ax=ax, fraction=0.05).set_label(f"P({_short(classes[1], 24)})")
    else:
        cls = P.argmax(axis=1).reshape(size, size)
        strength = (P.max(axis=1).reshape(size, size) - 1 / k) / (1 - 1 / k)  # 0 at a tie, 1 when certain
        img = _tint(PALETTE[cls % len(PALETTE)], strength)
        edge = np.zeros((size, size), bool)
        edge[:, 1:] |= cls[:, 1:] != cls[:, :-1]
        edge[1:, :] |= cls[1:, :] != cls[:-1, :]
        img[edge] = 0.0
        ax.imshow(img, origin="lower", extent=extent, aspect="auto", interpolation="nearest")
        scale = ScalarMappable(Normalize(1 / k, 1), ListedColormap(_tint(np.array([0.25, 0.25, 0.25]), ramp)))
        fig.colorbar(scale, ax=ax, fraction=0.05).set_label("probability of the predicted class")
    handles = []
    for c in range(k):
        mine = labels == c
        handles.append(ax.scatter(X2[mine, 0], X2[mine, 1], s=14, color=_colour(c), edgecolors="0.1",
                                  linewidths=0.5, label=_short(classes[c], 24)))
    handles.append(Line2D([], [], color="k", linewidth=1.2, label="decision boundary"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 5), fontsize=8, frameon=False,
               markerscale=1.5, title="points: true class", title_fontsize=8)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_xlabel(feature_names[0])
    ax.set_ylabel(feature_names[1])
    if title:
        ax.set_title(title)
    return _pixels(fig)


def confusion_matrix_image(y: np.ndarray, pred: np.ndarray, classes: Sequence[str], title: str = "") -> np.ndarray:
    """Two panels: the counts of (true, predicted) class pairs (scikit-learn's confusion matrix) and
    the same rows normalised to sum to 1 (the diagonal is each class's recall), each with a colour
    bar, class labels on both axes and the values written in the cells (up to 20 classes)."""
    from sklearn.metrics import confusion_matrix

    k = len(classes)
    counts = confusion_matrix(y, pred, labels=list(range(k)))
    totals = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    side = float(np.clip(1.6 + 0.42 * k, 3.4, 9.0))
    fig = _figure(2 * side + 1.4, side + 0.8)
    names = [_short(c) for c in classes]
    long_names = max(len(n) for n in names) > (6 if k <= 4 else 2)
    for ax, data, name, fmt, vmax in zip(fig.subplots(1, 2), (counts, rates), ("counts", "row-normalised (recall)"),
                                         ("{:d}", "{:.2f}"), (max(int(counts.max()), 1), 1.0)):
        image = ax.imshow(data, cmap="Blues", vmin=0, vmax=vmax, interpolation="nearest")
        fig.colorbar(image, ax=ax, fraction=0.046)
        ticks = list(range(k))
        ax.set_xticks(ticks, names, rotation=45 if long_names else 0, ha="right" if long_names else "center",
                      fontsize=8 if k > 10 else 10)
        ax.set_yticks(ticks, names, fontsize=8 if k > 10 else 10)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(name)
        if k <= 20:
            for (i, j), v in np.ndenumerate(data):
                ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=8 if k > 8 else 10,
                        color="white" if v > 0.6 * vmax else "black")
    if title:
        fig.suptitle(title)
    return _pixels(fig)


def reliability_image(y: np.ndarray, proba: np.ndarray, classes: Sequence[str], n_bins: int = 10,
                      title: str = "") -> np.ndarray:
    """A reliability (calibration) diagram over ``n_bins`` equal-width bins of [0, 1], from
    scikit-learn's ``calibration_curve``: two classes, the fraction of ``classes[1]`` against the
    mean predicted P(classes[1]); K classes, the accuracy of the predicted class against its mean
    probability (the confidence). The diagonal is perfect calibration; below, the samples per bin."""
    from sklearn.calibration import calibration_curve

    if proba.shape[1] == 2:
        hit, p = (y == 1).astype(int), proba[:, 1]
        xlabel, ylabel = f"mean predicted P({_short(classes[1], 24)})", f"fraction of {_short(classes[1], 24)}"
    else:
        hit, p = (proba.argmax(axis=1) == y).astype(int), proba.max(axis=1)
        xlabel, ylabel = "mean probability of the predicted class", "accuracy of the predicted class"
    edges = np.linspace(0, 1, n_bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], p), minlength=n_bins)  # the bins calibration_curve uses
    fig = _figure(5.0, 5.4)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot([0, 1], [0, 1], linestyle="--", color="0.5", label="perfectly calibrated")
    if 0 < hit.sum() < len(hit):
        frac, mean_p = calibration_curve(hit, p, n_bins=n_bins, strategy="uniform")
    else:  # one outcome only: each non-empty bin's fraction is that outcome
        mean_p = np.array([p[np.searchsorted(edges[1:-1], p) == b].mean() for b in np.nonzero(counts)[0]])
        frac = np.full(mean_p.shape, float(hit[0]) if len(hit) else 0.0)
    top.plot(mean_p, frac, marker="o", color=_colour(0), label="model")
    top.set_xlim(0, 1)
    top.set_ylim(-0.02, 1.02)
    top.set_ylabel(ylabel)
    top.legend(loc="upper left", fontsize=8)
    top.set_title(title or "reliability")
    bottom.bar(edges[:-1], counts, width=1 / n_bins, align="edge", color=_colour(0), alpha=0.6, edgecolor="white")
    bottom.set_xlabel(xlabel)
    bottom.set_ylabel("samples")
    return _pixels(fig)


def weight_images(weight: torch.Tensor, shape: tuple[int, int], names: Sequence[str]) -> list[np.ndarray]:
    """(K, D) weights -> one image per row, the row reshaped to ``shape`` on a red (positive) /
    white (zero) / blue (negative) scale symmetric about zero, with a colour bar of the row's values."""
    w = weight.detach().cpu().double().numpy()
    images = []
    for row, name in zip(w, names):
        m = float(np.abs(row).max()) or 1.0
        fig = _figure(3.4, 2.8)
        ax = fig.add_subplot()
        image = ax.imshow(row.reshape(shape), cmap="RdBu_r", vmin=-m, vmax=m, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"class {_short(name)}")
        fig.colorbar(image, ax=ax).set_label("weight")
        images.append(_pixels(fig))
    return images


def path_images(penalties: np.ndarray, coef_path: np.ndarray, names: Sequence[str], mean: np.ndarray, se: np.ndarray,
                scoring: str, best: int, one_se: int, max_lines: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """A regularization path as two pictures: the coefficients ``coef_path`` ``(P, K, D)`` against
    ``log10`` of the penalties ``(P,)`` (the ``max_lines`` largest in absolute value, named in a
    legend by ``names`` of the ``D`` features), and the cross-validated ``scoring`` (``mean`` and
    its standard error ``se`` per penalty) with the best and the one-standard-error penalties."""
    x = np.log10(penalties)
    P, K, D = coef_path.shape
    flat = coef_path.reshape(P, K * D)
    order = np.argsort(-np.abs(flat).max(axis=0))[:max_lines]
    fig = _figure(7.0, 4.0)
    ax = fig.add_subplot()
    for n, j in enumerate(order):
        k, d = divmod(int(j), D)
        label = _short(names[d], 20) + (f" [{k}]" if K > 1 else "")
        ax.plot(x, flat[:, j], color=_colour(n), linewidth=1.2, label=label)
    ax.axhline(0.0, color="0.6", linewidth=0.8)
    for index, style in ((best, "-"), (one_se, "--")):
        ax.axvline(x[index], color="0.3", linestyle=style, linewidth=0.8)
    ax.invert_xaxis()  # the path runs from the largest penalty to the smallest
    ax.set_xlabel("log10 penalty")
    ax.set_ylabel("coefficient")
    shown = "" if K * D <= max_lines else f" ({max_lines} largest of {K * D})"
    ax.set_title("coefficients along the path" + shown)
    if len(order):
        ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    coefficients = _pixels(fig)

    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot()
    ax.errorbar(x, mean, yerr=se, fmt="o-", markersize=3, color=_colour(1), ecolor="0.6", capsize=2, linewidth=1)
    ax.axvline(x[best], color="0.3", linestyle="-", linewidth=0.8, label=f"best ({penalties[best]:.3g})")
    ax.axvline(x[one_se], color="0.3", linestyle="--", linewidth=0.8, label=f"1 s.e. ({penalties[one_se]:.3g})")
    ax.invert_xaxis()
    ax.set_xlabel("log10 penalty")
    ax.set_ylabel(f"held-out {scoring} (mean ± s.e.)")
    ax.set_title("cross-validation")
    ax.legend(fontsize=8)
    return coefficients, _pixels(fig)
