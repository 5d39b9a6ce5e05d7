"""Pictures for TensorBoard, drawn with NumPy alone: the probability map of a 2-D problem and
weight vectors shown as images."""

from __future__ import annotations

import numpy as np
import torch

# one colour per class (RGB, 0..1)
PALETTE = np.array([[0.12, 0.47, 0.71], [0.84, 0.15, 0.16], [0.17, 0.63, 0.17], [1.0, 0.5, 0.05],
                    [0.58, 0.4, 0.74], [0.55, 0.34, 0.29], [0.89, 0.47, 0.76], [0.5, 0.5, 0.5],
                    [0.74, 0.74, 0.13], [0.09, 0.75, 0.81]])


@torch.no_grad()
def probability_map(predict_proba, X2: np.ndarray, labels: np.ndarray, size: int = 240) -> np.ndarray:
    """An (H, W, 3) float image of the plane spanned by the two raw features.

    ``predict_proba`` maps raw (M, 2) points to (M, K) probabilities (K = 1: P(y=1)). The
    background is the colour of the predicted class, paler where the model is unsure; the
    decision boundary (p = 0.5, or where the top class changes) is black; data points are small
    squares in their true class's colour with a dark outline.
    """
    lo, hi = X2.min(axis=0), X2.max(axis=0)
    pad = 0.05 * (hi - lo + 1e-12)
    lo, hi = lo - pad, hi + pad
    xs = np.linspace(lo[0], hi[0], size)
    ys = np.linspace(hi[1], lo[1], size)  # image rows go downwards
    gx, gy = np.meshgrid(xs, ys)
    P = predict_proba(np.stack([gx.ravel(), gy.ravel()], axis=1))
    if P.shape[1] == 1:
        P = np.concatenate([1 - P, P], axis=1)
    cls = P.argmax(axis=1).reshape(size, size)
    conf = P.max(axis=1).reshape(size, size)
    k = P.shape[1]
    strength = (conf - 1.0 / k) / (1 - 1.0 / k)  # 0 at a tie, 1 when certain
    img = 1 - (1 - PALETTE[cls % len(PALETTE)]) * (0.15 + 0.55 * strength[..., None])
    edge = np.zeros((size, size), bool)
    edge[:, 1:] |= cls[:, 1:] != cls[:, :-1]
    edge[1:, :] |= cls[1:, :] != cls[:-1, :]
    img[edge] = 0.0
    cols = np.clip(((X2[:, 0] - lo[0]) / (hi[0] - lo[0]) * (size - 1)).round().astype(int), 2, size - 3)
    rows = np.clip(((hi[1] - X2[:, 1]) / (hi[1] - lo[1]) * (size - 1)).round().astype(int), 2, size - 3)
    for r, c, lab in zip(rows, cols, labels):
        img[max(r - 2, 0) : r + 3, max(c - 2, 0) : c + 3] = 0.1
        img[r - 1 : r + 2, c - 1 : c + 2] = PALETTE[int(lab) % len(PALETTE)]
    return img.astype(np.float32)


def weight_images(weight: torch.Tensor, shape: tuple[int, int], zoom: int = 8) -> np.ndarray:
    """(K, D) weights -> (K, 3, H*zoom, W*zoom) images: red positive, blue negative, white zero,
    each row scaled by its own largest magnitude; enlarged so 8x8 pixels stay visible."""
    w = weight.detach().cpu().double().numpy()
    scale = np.abs(w).max(axis=1, keepdims=True)
    scale[scale == 0] = 1.0
    v = (w / scale).reshape(w.shape[0], *shape)
    pos, neg = np.clip(v, 0, 1), np.clip(-v, 0, 1)
    rgb = np.stack([1 - neg, 1 - pos - neg * 0.5, 1 - pos], axis=1).clip(0, 1)
    return rgb.repeat(zoom, axis=2).repeat(zoom, axis=3).astype(np.float32)
