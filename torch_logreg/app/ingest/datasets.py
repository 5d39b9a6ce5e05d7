"""The training data of a config's ``[data]`` section, before any split: a file read through its
format's reader and encoded by the schema found in it, or a built-in or generated set."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ...errors import UsageError
from . import files
from .columns import split_codes, square_shape
from .labels import keep_mask, take_rows
from .reader import Request
from .registry import reader_for
from .schema import Schema, check_interactions, infer_schema, merge_levels, row_weights
from .table import listed

DEFAULT_SIZES = {"blobs": 600, "donut": 1000, "xor": 1000, "synthetic": 1_000_000}
DEFAULT_NOISE = {"blobs": 1.0, "donut": 1.0, "xor": 0.0, "synthetic": 0.0}
BUILT_IN = ("breast_cancer", "digits", "iris", "wine")


@dataclass
class Dataset:
    X: Tensor  # (N, D) float64 features (after one-hot and radius); a sparse CSR tensor for sparse data
    y: np.ndarray | Tensor  # (N,) raw labels (classification) or values (regression)
    schema: Schema
    image_shape: tuple[int, int] | None = None  # digits: (8, 8)
    true_weights: Tensor | None = None  # synthetic: the logistic model the labels came from
    fingerprint: dict | None = None  # a file's size, mtime and SHA-256 (files.fingerprint)
    weight: np.ndarray | None = None  # (N,) row weights (data.weight), or None
    split: np.ndarray | None = None  # (N,) each row's split from data.split_column (0 train, 1 val, 2 test), or None
    offset: np.ndarray | None = None  # (N,) each row's offset (data.offset), or None


def load_dataset(data_cfg, seed: int = 0, device: torch.device | str = "cpu") -> Dataset:
    """The data set a config's ``[data]`` section names, before any split."""
    if data_cfg.path:
        ds = read_file(Path(data_cfg.path).expanduser(), data_cfg)
    elif data_cfg.name in BUILT_IN:
        ds = _sklearn_set(data_cfg.name)
    else:
        n = data_cfg.n_samples or DEFAULT_SIZES[data_cfg.name]
        noise = data_cfg.noise if data_cfg.noise >= 0 else DEFAULT_NOISE[data_cfg.name]
        _check_fits(n, data_cfg.n_features or 20 if data_cfg.name == "synthetic" else 2, torch.device(device))
        ds = _generated(data_cfg.name, n, noise, data_cfg.n_features or 20, seed, torch.device(device))
    if data_cfg.path:
        return ds
    if data_cfg.keep_classes:  # as a file's rows are kept when read
        ds = keep_classes(ds, [str(c) for c in data_cfg.keep_classes])
    ds.schema.add_radius = bool(data_cfg.add_radius)
    ds.schema.interactions = check_interactions(data_cfg.interactions, ds.schema.columns, {}, f"data set {data_cfg.name!r}")
    ds.X = ds.schema.extend(ds.X)
    return ds


def request_of(data_cfg, max_bytes: int | None = None) -> Request:
    """What training asks of its file."""
    return Request(data_cfg.target, data_cfg.max_bytes if max_bytes is None else max_bytes)


def read_file(path: Path, data_cfg) -> Dataset:
    """A training file, whole: its rows encoded by the schema found in them, data.keep_classes applied."""
    reader = reader_for(path)
    reader.refuse_column_options(path, data_cfg)
    return encode(reader.read(path, request_of(data_cfg)), data_cfg)


def read_part(path: Path, data_cfg, rank: int, world_size: int) -> tuple[Dataset, int] | None:
    """``(part, first_row)``: rank ``rank``'s part of a training file and the file's row number
    of its first row (before data.keep_classes), read and encoded as the whole file would be, the
    categories agreed by all ranks; None when every process reads the whole file (its format has
    no parts). A collective call."""
    from .collective import gather

    reader = reader_for(path)
    reader.refuse_column_options(path, data_cfg)
    table = reader.read_part(path, request_of(data_cfg), rank, world_size)
    if table is None:
        return None
    return encode(table, data_cfg, lambda levels: merge_levels(gather(levels)), whole=False), table.first_row


def streams(data_cfg) -> bool:
    """Whether ``data.path`` is larger than ``data.memory_budget`` (when set) once read, and its
    format can be read a part at a time, so that training streams it (:mod:`.stream`)."""
    if not data_cfg.memory_budget or not data_cfg.path:
        return False
    path = Path(data_cfg.path).expanduser()
    if not path.is_file():
        return False
    size = reader_for(path).unpacked_bytes(path)
    return size is not None and size > data_cfg.memory_budget


def encode(table, data_cfg, combine_levels=None, whole: bool = True) -> Dataset:
    """Training rows (a whole file, or a part of one: not ``whole``) as a Dataset: the schema found
    in them, their features, labels and row weights, then data.keep_classes."""
    schema = infer_schema(table, data_cfg, combine_levels)
    X = schema.features(table)
    ds = Dataset(X, schema.labels(table), schema, fingerprint=table.fingerprint,
                 weight=row_weights(table, schema.weight, whole),
                 split=split_codes(table, data_cfg.split_column) if data_cfg.split_column else None,
                 offset=schema.offsets(table))
    if schema.pixels and schema.n_features == schema.pixels_width:  # the features are one image
        ds.image_shape = square_shape(schema.pixels_width)
    if data_cfg.keep_classes:
        ds = keep_classes(ds, [str(c) for c in data_cfg.keep_classes], whole)
    return ds


def keep_classes(ds: Dataset, keep: list[str], whole: bool = True) -> Dataset:
    y = ds.y.cpu().numpy() if isinstance(ds.y, Tensor) else ds.y
    labels = np.array([str(v) for v in y])
    mask = keep_mask(y, keep)
    if whole and not mask.any():
        raise UsageError(f"data.keep_classes {keep} matches no row (labels present: {listed(sorted(set(labels))[:10])})")
    ds.X = take_rows(ds.X, torch.from_numpy(np.nonzero(mask)[0]))
    ds.y = y[mask]
    if ds.weight is not None:
        ds.weight = ds.weight[mask]
    if ds.split is not None:
        ds.split = ds.split[mask]
    if ds.offset is not None:
        ds.offset = ds.offset[mask]
    return ds



# --- built-in and generated sets --------------------------------------------------------------


def _sklearn_set(name: str) -> Dataset:
    from sklearn import datasets

    loader = {"breast_cancer": datasets.load_breast_cancer, "digits": datasets.load_digits,
              "iris": datasets.load_iris, "wine": datasets.load_wine}[name]
    bunch = loader()
    names = [str(n) for n in bunch.feature_names]
    shape = (8, 8) if name == "digits" else None
    # the target is named as scikit-learn's as_frame=True names it, so a CSV of the set reads back
    return Dataset(torch.from_numpy(bunch.data.astype(np.float64)), bunch.target, Schema(names, target="target"), shape)


def _generated(name: str, n: int, noise: float, n_features: int, seed: int, device: torch.device) -> Dataset:
    rng = np.random.default_rng(seed)
    if name == "blobs":
        from sklearn.datasets import make_blobs

        X, y = make_blobs(n_samples=n, centers=3, n_features=2, cluster_std=noise, random_state=seed)
    elif name == "donut":
        # two rings of radius 5 and 10 with Gaussian noise on the radius
        half = n // 2
        radius = np.concatenate([5 + noise * rng.standard_normal(half), 10 + noise * rng.standard_normal(n - half)])
        angle = rng.uniform(0, 2 * math.pi, n)
        X = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
        y = np.concatenate([np.zeros(half, np.int64), np.ones(n - half, np.int64)])
    elif name == "xor":
        X = rng.uniform(-1, 1, (n, 2))
        X = X + 0.05 * np.sign(X)  # a small margin around the axes, where the label flips
        y = ((X[:, 0] > 0) ^ (X[:, 1] > 0)).astype(np.int64)
        if noise > 0:
            X = X + noise * rng.standard_normal(X.shape)
    else:
        return _synthetic(n, n_features, seed, device)
    return Dataset(torch.from_numpy(np.asarray(X, np.float64)), y, Schema(["x1", "x2"]))


def _memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _check_fits(n: int, d: int, device: torch.device) -> None:
    """Refuse a generated set that cannot fit in memory before allocating any of it: its features
    and labels take at least ``8 (d + 1)`` bytes a row (the split copies take as much again)."""
    need, have = 8 * n * (d + 1), _memory(device)
    if need > have:
        raise UsageError(f"data.n_samples = {n} rows of {d} features need at least {files.size_text(need)} of "
                         f"memory, more than this {device.type.upper()} device has ({files.size_text(have)}); "
                         "lower data.n_samples")


def _synthetic(n: int, d: int, seed: int, device: torch.device, chunk: int = 1 << 18) -> Dataset:
    """Rows drawn on ``device`` in chunks from a known logistic model ``P(y=1|x) = sigmoid(x w + b)``."""
    gen = torch.Generator(device=device).manual_seed(seed)
    w = torch.randn(d, generator=gen, device=device, dtype=torch.float64) * (2.0 / math.sqrt(d))
    b = torch.randn((), generator=gen, device=device, dtype=torch.float64)
    X = torch.empty(n, d, dtype=torch.float32 if n * d > 50_000_000 else torch.float64, device=device)
    y = torch.empty(n, dtype=torch.int64, device=device)
    for start in range(0, n, chunk):
        rows = min(chunk, n - start)
        xc = torch.randn(rows, d, generator=gen, device=device, dtype=torch.float64)
        p = torch.sigmoid(xc @ w + b)
        y[start : start + rows] = (torch.rand(rows, generator=gen, device=device, dtype=torch.float64) < p).long()
        X[start : start + rows] = xc
    schema = Schema([f"x{i + 1}" for i in range(d)])
    return Dataset(X, y, schema, true_weights=torch.cat([w, b[None]]).cpu())

