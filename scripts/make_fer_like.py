"""Write a small CSV shaped like the facial-expression data set (``fer2013.csv``): columns
``emotion`` (0-6), ``pixels`` (side x side space-separated integers 0-255, row-major) and ``Usage``
(Training / PublicTest / PrivateTest, about 80 / 10 / 10 %).

Each class is a faint pattern of its own (a bright patch at a class-dependent place) under noise,
so a softmax or an MLP can learn it; the same seed writes the same file.

    python scripts/make_fer_like.py fer_like.csv --rows 700 --side 12 --seed 0
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

N_CLASSES = 7


def make_rows(rows: int, side: int, seed: int) -> list[tuple[int, str, str]]:
    """``rows`` rows of ``(emotion, pixels, usage)``."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij"), axis=-1) / max(side - 1, 1)
    angles = 2 * np.pi * np.arange(N_CLASSES) / N_CLASSES
    centres = 0.5 + 0.3 * np.stack([np.cos(angles), np.sin(angles)], axis=1)  # one place per class
    labels = rng.integers(0, N_CLASSES, rows)
    usage = rng.choice(["Training", "PublicTest", "PrivateTest"], size=rows, p=[0.8, 0.1, 0.1])
    out = []
    for y, u in zip(labels, usage):
        patch = np.exp(-((grid - centres[y]) ** 2).sum(axis=-1) / 0.02)
        image = 110 + 90 * patch + 40 * rng.standard_normal((side, side))
        pixels = np.clip(np.rint(image), 0, 255).astype(int).reshape(-1)
        out.append((int(y), " ".join(map(str, pixels)), str(u)))
    return out


def write(path: Path, rows: int = 700, side: int = 12, seed: int = 0) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["emotion", "pixels", "Usage"])
        writer.writerows(make_rows(rows, side, seed))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="the CSV to write")
    parser.add_argument("--rows", type=int, default=700, help="rows (default 700)")
    parser.add_argument("--side", type=int, default=12, help="image side in pixels (default 12; the real set has 48)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args()
    write(args.path, args.rows, args.side, args.seed)


if __name__ == "__main__":
    main()
