"""Data: built-in and generated sets, CSV / .npy / .npz files, splits and standardization.

Everything a model needs to see the same columns at prediction time (the feature columns, the
one-hot categories, the radius feature, the class labels, the standardizer) is kept in plain
lists and tensors so it can be saved in a checkpoint and loaded with ``weights_only=True``.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import UsageError
from . import sources
from .tables import PARQUET_SUFFIXES, read_table

DEFAULT_SIZES = {"blobs": 600, "donut": 1000, "xor": 1000, "synthetic": 1_000_000}
DEFAULT_NOISE = {"blobs": 1.0, "donut": 1.0, "xor": 0.0, "synthetic": 0.0}


@dataclass
class Schema:
    """How raw input columns become model features (saved with the model).

    The features, in order: the CSV's columns that are not hashed (one-hot blocks in place of the
    categorical ones, without the first level when ``drop_first``), the radius feature, then the
    ``2**hash_bits`` columns the ``hashed`` ones share. A sparse file (svmlight, scipy ``.npz``)
    has no names: ``sparse_width`` columns, ``x1`` to ``x<sparse_width>``, not listed here."""

    columns: list[str]  # raw feature columns, in input order
    categorical: dict[str, list[str]] = field(default_factory=dict)  # column -> categories
    add_radius: bool = False
    target: str = ""
    drop_first: bool = False  # one-hot: each categorical column's first level has no column
    hashed: list[str] = field(default_factory=list)  # CSV columns hashed (signed) into the hash block
    hash_bits: int = 0  # the hash block has 2**hash_bits columns
    sparse_width: int = 0  # a sparse file's columns (0: not a sparse file)
    svmlight_base: int = 0  # an svmlight file's first feature index (0 or 1), as training read it
    weight: str = ""  # the CSV column of row weights (not a feature; new files may have it)

    @property
    def sparse(self) -> bool:
        """Whether the features are a sparse matrix (a sparse file, or hashed columns)."""
        return bool(self.sparse_width or self.hashed)

    def levels(self, column: str) -> list[str]:
        """The categories of ``column`` that have a one-hot column."""
        return self.categorical[column][int(self.drop_first):]

    @property
    def n_features(self) -> int:
        """The model's input width (without building :attr:`feature_names`)."""
        if self.sparse_width:
            return self.sparse_width
        dense = sum(len(self.levels(c)) if c in self.categorical else 1 for c in self.columns if c not in self.hashed)
        return dense + int(self.add_radius) + (1 << self.hash_bits if self.hashed else 0)

    @property
    def feature_names(self) -> list[str]:
        if self.sparse_width:
            return [f"x{j + 1}" for j in range(self.sparse_width)]
        names = []
        for c in self.columns:
            if c in self.hashed:
                continue
            if c in self.categorical:
                names.extend(f"{c}={v}" for v in self.levels(c))
            else:
                names.append(c)
        if self.add_radius:
            names.append("radius")
        if self.hashed:
            names.extend(f"hash{j}" for j in range(1 << self.hash_bits))
        return names

    def to_dict(self) -> dict:
        return {"columns": list(self.columns), "categorical": {k: list(v) for k, v in self.categorical.items()},
                "add_radius": self.add_radius, "target": self.target, "drop_first": self.drop_first,
                "hashed": list(self.hashed), "hash_bits": self.hash_bits, "sparse_width": self.sparse_width,
                "svmlight_base": self.svmlight_base, "weight": self.weight}

    @classmethod
    def from_dict(cls, d: dict) -> Schema:
        return cls(list(d["columns"]), {k: list(v) for k, v in d["categorical"].items()}, bool(d["add_radius"]), d["target"],
                   bool(d.get("drop_first", False)), list(d.get("hashed", [])), int(d.get("hash_bits", 0)),
                   int(d.get("sparse_width", 0)), int(d.get("svmlight_base", 0)), str(d.get("weight", "")))


@dataclass
class Dataset:
    X: Tensor  # (N, D) float64 features (after one-hot and radius); a sparse CSR tensor for sparse data
    y: np.ndarray | Tensor  # (N,) raw labels (classification) or values (regression)
    schema: Schema
    image_shape: tuple[int, int] | None = None  # digits: (8, 8)
    true_weights: Tensor | None = None  # synthetic: the logistic model the labels came from
    fingerprint: dict | None = None  # a file's size, mtime and SHA-256 (sources.fingerprint)
    weight: np.ndarray | None = None  # (N,) row weights (data.weight), or None


def listed(items) -> str:
    """Names for a one-line message: as written, or quoted with escapes when not printable."""
    return ", ".join(v if v.isprintable() else repr(v) for v in map(str, items))


# --- radius feature ---------------------------------------------------------------------------


def with_radius(X: Tensor) -> Tensor:
    """Append ``sqrt(x1^2 + x2^2)``: the donut's classes differ in radius, not in direction."""
    if X.shape[1] < 2:
        raise UsageError("data.add_radius needs at least two feature columns")
    return torch.cat([X, torch.sqrt(X[:, :1] ** 2 + X[:, 1:2] ** 2)], dim=1)


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
        raise UsageError(f"data.n_samples = {n} rows of {d} features need at least {sources.size_text(need)} of "
                         f"memory, more than this {device.type.upper()} device has ({sources.size_text(have)}); "
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


# --- files ------------------------------------------------------------------------------------


def encode_table(schema: Schema, table) -> Tensor:
    """A :class:`~.tables.Table`'s rows -> the (N, D) feature matrix of ``schema`` (numbers, one-hot
    blocks, radius, hash block); a sparse CSR tensor when columns are hashed."""
    path = table.path
    missing = [c for c in schema.columns if c not in table.header]
    if missing:
        raise UsageError(
            f"{path}: column {missing[0]!r} used in training is missing; expected columns "
            f"{listed(schema.columns)}"
        )
    parts = []
    for c in schema.columns:
        if c in schema.hashed:
            continue
        if c not in schema.categorical:
            parts.append(table.numbers(c)[:, None])
            continue
        cats = schema.categorical[c]
        values, inverse = np.unique(table.text(c).astype(str), return_inverse=True)
        lookup = {v: i for i, v in enumerate(cats)}
        codes = np.array([lookup.get(v, -1) for v in values.tolist()], dtype=np.int64)[inverse.reshape(-1)]
        if (codes < 0).any():
            r = int(np.nonzero(codes < 0)[0][0])
            raise UsageError(f"{path}, {table.where(r)}, column {c!r}: category {str(values[inverse.reshape(-1)[r]])!r} was "
                             f"not seen in training (known: {listed(cats)})")
        block = np.zeros((table.n_rows, len(cats)), dtype=np.float64)
        block[np.arange(table.n_rows), codes] = 1.0
        parts.append(block[:, int(schema.drop_first):])
    out = np.concatenate(parts, axis=1) if parts else np.zeros((table.n_rows, 0), dtype=np.float64)
    X = torch.from_numpy(np.ascontiguousarray(out))
    if schema.add_radius:
        X = with_radius(X)
    if schema.hashed:
        from .sparse_data import hash_block, join_dense

        X = join_dense(X, hash_block({c: table.text(c) for c in schema.hashed}, schema.hash_bits))
    return X


def _category_key(v: str):
    try:
        return (0, float(v), v)
    except ValueError:
        return (1, 0.0, v)


def load_table(path: Path, data_cfg, table=None, combine_levels=None) -> Dataset:
    """A CSV or Parquet file: the target column, the row weights, and the features of the others.

    ``table``: rows already read, one process's part of the file under torchrun; the categories
    found in it go through ``combine_levels`` (column -> sorted levels, in and out), which merges
    them with the other parts', so that every part is encoded alike."""
    target, categorical, hashed = data_cfg.target, list(data_cfg.categorical), list(data_cfg.hash)
    whole = table is None
    table = read_table(path, data_cfg.max_bytes) if whole else table
    header = table.header
    if not target:
        raise UsageError(f"{path}: set data.target to the name of the target column (one of {listed(header)})")
    if target not in header:
        raise UsageError(f"{path}: target column {target!r} is not in the header ({listed(header)})")
    weight = data_cfg.weight
    if weight and weight not in header:
        raise UsageError(f"{path}: data.weight column {weight!r} is not in the header ({listed(header)})")
    if weight and weight in (target, *categorical, *hashed):
        raise UsageError(f"{path}: the data.weight column {weight!r} cannot also be the target or a feature")
    for key, names in (("data.categorical", categorical), ("data.hash", hashed)):
        for c in names:
            if c not in header:
                raise UsageError(f"{path}: {key} column {c!r} is not in the header ({listed(header)})")
            if c == target:
                raise UsageError(f"{path}: the target column {c!r} cannot be in {key}")
    both = [c for c in categorical if c in hashed]
    if both:
        raise UsageError(f"column {both[0]!r} is in both data.categorical and data.hash; a column is one-hot encoded "
                         "or hashed, not both")
    columns = [c for c in header if c not in (target, weight)]
    if not columns:
        raise UsageError(f"{path}: no feature columns besides the target {target!r}")
    cats = {}
    for c in categorical:
        values = table.text(c)
        empty = np.nonzero(values == "")[0]
        if empty.size:
            raise UsageError(f"{path}, {table.where(int(empty[0]))}, column {c!r}: empty cell")
        cats[c] = sorted(set(values.tolist()), key=_category_key)
    if combine_levels is not None:
        cats = combine_levels(cats)
    schema = Schema(columns, cats, False, target, drop_first=data_cfg.drop_first, hashed=hashed,
                    hash_bits=data_cfg.hash_bits if hashed else 0, weight=weight)
    X = encode_table(schema, table)
    y = table.text(target)
    empty = np.nonzero(y == "")[0]
    if empty.size:
        raise UsageError(f"{path}, {table.where(int(empty[0]))}, column {target!r}: empty target cell")
    return Dataset(X, y.astype(str), schema, fingerprint=table.fingerprint, weight=_weights(table, weight, whole))


def merge_levels(parts: list[dict[str, list[str]]]) -> dict[str, list[str]]:
    """The categories of each column over several parts of one file, sorted as one part's are."""
    return {c: sorted(set().union(*(p[c] for p in parts)), key=_category_key) for c in parts[0]}


def _weights(table, column: str, whole: bool = True) -> np.ndarray | None:
    """The ``column`` of row weights: finite, non-negative numbers, not all zero (in a ``whole``
    file; a part of one may have only zeros)."""
    if not column:
        return None
    w = table.numbers(column)
    negative = np.nonzero(w < 0)[0]
    if negative.size:
        raise UsageError(f"{table.path}, {table.where(int(negative[0]))}, column {column!r}: a row weight must be "
                         f"non-negative, got {w[negative[0]]:g}")
    if whole and not (w > 0).any():
        raise UsageError(f"{table.path}: every row weight in column {column!r} is 0; at least one row must count")
    return w


def read_numpy(path: Path, max_bytes: int, need_y: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """The arrays of a .npy file (``(array, None)``) or of an .npz archive (``(X, y)``; ``y`` may
    be absent unless ``need_y``), checked to be numeric arrays; every failure names the file."""
    sources.check_source(path, max_bytes)
    npz = path.suffix.lower() == ".npz"
    try:
        with open(path, "rb") as fh:  # our own handle: closed even when NumPy gives up half way
            if npz:
                with sources.open_npz(fh, path, max_bytes) as archive:
                    missing = [k for k in ("X", "y") if k not in archive.files and (k == "X" or need_y)]
                    if missing:
                        raise UsageError(f"{path}: an .npz file needs arrays named 'X'" + (" and 'y'" if need_y else "")
                                         + f", found {listed(archive.files) or 'none'}")
                    X = archive["X"]
                    y = archive["y"] if "y" in archive.files else None
            else:
                X, y = np.load(fh), None
                if isinstance(X, np.lib.npyio.NpzFile):
                    X.close()
                    raise UsageError(f"{path} is an .npz archive, not a single array; name it .npz")
    except UsageError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, TypeError) as exc:
        raise UsageError(f"{path} is not a readable NumPy file: {sources.numpy_error(exc)}") from None
    for name, arr in (("X", X), ("y", y)):
        if arr is None:
            continue
        what = "the array" if not npz else f"{name!r}"
        if not isinstance(arr, np.ndarray):
            raise UsageError(f"{path}: {what} is not a NumPy array (not saved by numpy.save / numpy.savez)")
        if arr.dtype.kind not in "fiub" and not (name == "y" and arr.dtype.kind in "US"):
            raise UsageError(f"{path}: {what} must be numeric, got dtype {arr.dtype}")
    return X, y


def as_features(X: np.ndarray, path: Path) -> Tensor:
    """A numeric 2-D array as float64 features, every value finite."""
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise UsageError(f"{path}: the features must be a 2-D array with at least one row and one column, "
                         f"got shape {X.shape}")
    with np.errstate(invalid="ignore", over="ignore"):  # a signalling NaN or an overflow is reported below
        X = torch.from_numpy(np.asarray(X, dtype=np.float64))
    bad = ~torch.isfinite(X)
    if bool(bad.any()):
        r, c = (int(i) for i in bad.nonzero()[0])
        raise UsageError(f"{path}: row {r}, column {c}: {X[r, c].item()} is not a finite number")
    return X


def load_numpy(path: Path, target: str, max_bytes: int = sources.DEFAULT_MAX_BYTES) -> Dataset:
    """A .npz with arrays X and y, or a .npy whose target is column ``target`` (default: the last)."""
    print_ = sources.fingerprint(path, max_bytes)
    X, y = read_numpy(path, max_bytes, need_y=True)
    if y is None:
        if X.ndim != 2 or X.shape[1] < 2:
            raise UsageError(f"{path}: a .npy file must be a 2-D array with the target in one column, got shape {X.shape}")
        col = sources.target_column(target, X.shape[1], path, "a .npy file")
        y, X = np.asarray(X[:, col]), np.delete(X, col, axis=1)
    X = as_features(X, path)
    if y.shape != (X.shape[0],):
        raise UsageError(f"{path}: y must have shape ({X.shape[0]},), got {y.shape}")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise UsageError(f"{path}: the target has a non-finite value at row {int(np.nonzero(~np.isfinite(y))[0][0])}")
    return Dataset(X, y, Schema([f"x{i + 1}" for i in range(X.shape[1])]), fingerprint=print_)


def _load_sparse(path: Path, data_cfg) -> Dataset:
    """An svmlight file or a scipy sparse .npz as a data set with a CSR tensor ``X``."""
    from . import sparse_data

    if path.suffix.lower() in sparse_data.SVMLIGHT_SUFFIXES:
        if data_cfg.target:
            raise UsageError(f"{path}: an svmlight file has its label first on each line; leave data.target out")
        X, y, base, print_ = sparse_data.read_svmlight(path, data_cfg.max_bytes)
    else:
        matrix, print_ = sparse_data.read_scipy_npz(path, data_cfg.max_bytes)
        matrix, y = sparse_data.split_target(matrix, data_cfg.target, path)
        X, base = sparse_data.to_torch(matrix), 0
        sparse_data.check_finite(X, path)
        if not np.isfinite(y).all():
            raise UsageError(f"{path}: the target has a non-finite value at row {int(np.nonzero(~np.isfinite(y))[0][0])}")
    target = "" if base or path.suffix.lower() in sparse_data.SVMLIGHT_SUFFIXES else data_cfg.target
    return Dataset(X, y, Schema([], target=target, sparse_width=X.shape[1], svmlight_base=base), fingerprint=print_)


def is_sparse_file(path: Path) -> bool:
    """Whether ``path`` is read as sparse data: an svmlight file, or a scipy sparse .npz."""
    from . import sparse_data

    suffix = path.suffix.lower()
    return suffix in sparse_data.SVMLIGHT_SUFFIXES or (suffix == ".npz" and sparse_data.is_scipy_npz(path))


def refuse_table_options(path: Path, data_cfg) -> None:
    """A UsageError when the config names columns (categorical, hashed, weight) of ``path``, a file
    that is not a table."""
    named = [k for k, v in (("data.categorical", data_cfg.categorical), ("data.hash", data_cfg.hash),
                            ("data.weight", data_cfg.weight)) if v]
    if named:
        raise UsageError(f"{named[0]} applies to CSV and Parquet files only; {path} is neither")


def load_dataset(data_cfg, seed: int = 0, device: torch.device | str = "cpu") -> Dataset:
    """The data set a config's ``[data]`` section names, before any split."""
    if data_cfg.path:
        path = Path(data_cfg.path).expanduser()
        suffix = path.suffix.lower()
        if suffix in (".csv", ".txt", "", *PARQUET_SUFFIXES):
            ds = load_table(path, data_cfg)
        elif refuse_table_options(path, data_cfg) or is_sparse_file(path):
            ds = _load_sparse(path, data_cfg)
        elif suffix in (".npy", ".npz"):
            ds = load_numpy(path, data_cfg.target, data_cfg.max_bytes)
        else:
            raise UsageError(f"data file {path}: unsupported type {suffix!r}; use .csv, .parquet, .npy, .npz, .svm, "
                             ".svmlight or .libsvm")
    elif data_cfg.name in ("breast_cancer", "digits", "iris", "wine"):
        ds = _sklearn_set(data_cfg.name)
    else:
        n = data_cfg.n_samples or DEFAULT_SIZES[data_cfg.name]
        noise = data_cfg.noise if data_cfg.noise >= 0 else DEFAULT_NOISE[data_cfg.name]
        _check_fits(n, data_cfg.n_features or 20 if data_cfg.name == "synthetic" else 2, torch.device(device))
        ds = _generated(data_cfg.name, n, noise, data_cfg.n_features or 20, seed, torch.device(device))
    return finish_dataset(ds, data_cfg)


def finish_dataset(ds: Dataset, data_cfg, whole: bool = True) -> Dataset:
    """``data.keep_classes`` and ``data.add_radius`` applied to a data set as read (``whole``: all
    of it, so keeping no row is an error; a part of a file may keep none)."""
    if data_cfg.keep_classes:
        ds = _keep_classes(ds, [str(c) for c in data_cfg.keep_classes], whole)
    if data_cfg.add_radius:
        if ds.schema.sparse:
            raise UsageError("data.add_radius needs two dense columns; it does not apply to sparse or hashed features")
        ds.X = with_radius(ds.X)
        ds.schema.add_radius = True
    return ds


def take_rows(X: Tensor, index: Tensor) -> Tensor:
    """Rows ``index`` of a dense or CSR ``X``, in that order."""
    if X.layout == torch.sparse_csr:
        from ..functional import csr_rows

        return csr_rows(X, index.to(X.device))
    return X.index_select(0, index.to(X.device))


def _same_label(a: str, b: str) -> bool:
    try:
        return float(a) == float(b)
    except ValueError:
        return a == b


def keep_mask(y, keep: list[str]) -> np.ndarray:
    """Which rows data.keep_classes keeps: those whose label is one of ``keep`` (2 and 2.0 alike)."""
    labels = [str(v) for v in (y.cpu().numpy() if isinstance(y, Tensor) else np.asarray(y))]
    return np.array([any(_same_label(v, k) for k in keep) for v in labels], dtype=bool)


def _keep_classes(ds: Dataset, keep: list[str], whole: bool = True) -> Dataset:
    y = ds.y.cpu().numpy() if isinstance(ds.y, Tensor) else ds.y
    labels = np.array([str(v) for v in y])
    mask = keep_mask(y, keep)
    if whole and not mask.any():
        raise UsageError(f"data.keep_classes {keep} matches no row (labels present: {listed(sorted(set(labels))[:10])})")
    ds.X = take_rows(ds.X, torch.from_numpy(np.nonzero(mask)[0]))
    ds.y = y[mask]
    if ds.weight is not None:
        ds.weight = ds.weight[mask]
    return ds


def balanced_weights(y: Tensor, n_classes: int, weight: Tensor | None = None) -> Tensor:
    """Each row's class weight under ``class_weight = "balanced"``: ``S / (K * S_c)`` for a row of
    class ``c``, where ``S`` is the total weight of the rows of ``y`` (class indices), ``S_c`` that
    of class ``c`` (row counts without ``weight``) and ``K`` the classes present, so every class
    carries the same total weight (scikit-learn's ``compute_class_weight``)."""
    y = y.cpu()
    w = torch.ones(y.shape[0], dtype=torch.float64) if weight is None else weight.to(torch.float64).cpu()
    totals = torch.zeros(n_classes, dtype=torch.float64).index_add_(0, y, w)
    present = int((totals > 0).sum())
    per_class = torch.where(totals > 0, w.sum() / (present * totals.clamp(min=1e-300)), torch.zeros_like(totals))
    return per_class[y]


# --- labels, splits, standardization ----------------------------------------------------------


def encode_labels(y, kind: str) -> tuple[Tensor, list[str]]:
    """Raw labels -> class indices (N,) int64 and the class names; regression -> float64 values."""
    if isinstance(y, Tensor):
        if kind == "linear":
            return y.to(torch.float64), []
        classes = torch.unique(y)
        return torch.searchsorted(classes, y), [str(int(c)) if float(c).is_integer() else str(float(c)) for c in classes.cpu()]
    y = np.asarray(y)
    if kind == "linear":
        try:
            values = y.astype(np.float64)
        except ValueError:
            bad = next(v for v in y if not _is_number(v))
            raise UsageError(f"model.kind = 'linear' needs a numeric target; found {bad!r}") from None
        if not np.isfinite(values).all():
            raise UsageError(f"the target has a non-finite value at row {int(np.nonzero(~np.isfinite(values))[0][0])}")
        return torch.from_numpy(values), []
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise UsageError(f"the target has a non-finite value at row {int(np.nonzero(~np.isfinite(y))[0][0])}")
    names = np.array([label_name(v) for v in y])
    classes = sorted(set(names.tolist()), key=_category_key)
    lookup = {c: i for i, c in enumerate(classes)}
    return torch.tensor([lookup[v] for v in names], dtype=torch.int64), classes


def _is_number(v) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def label_name(v) -> str:
    """A class's name: a number as it reads (2.0 -> "2"); text exactly as written, so "02" and "2"
    stay two classes and "01" is not renamed "1"."""
    if isinstance(v, (str, np.str_)):
        return str(v).strip()
    if isinstance(v, (bool, np.bool_)):
        return str(int(v))
    try:
        f = float(v)
        return str(int(f)) if f.is_integer() else str(f)
    except (TypeError, ValueError, OverflowError):
        return str(v)


def split_indices(y: Tensor, n: int, val_fraction: float, test_fraction: float, seed: int, stratify: bool,
                  classes: list[str] | None = None):
    """Seeded train / val / test row indices; stratified by class when ``stratify`` (``classes``
    names the class indices in messages)."""
    if n < 3 and (val_fraction or test_fraction):
        raise UsageError(f"the data has only {n} rows: too few to split into train, validation and test sets")
    if not stratify or n > 2_000_000:
        gen = torch.Generator().manual_seed(seed)
        perm = torch.randperm(n, generator=gen)
        n_test, n_val = int(round(n * test_fraction)), int(round(n * val_fraction))
        return perm[n_test + n_val :], perm[n_test : n_test + n_val], perm[:n_test]
    from sklearn.model_selection import train_test_split

    labels = y.cpu().numpy()
    counts = np.bincount(labels)
    if counts.min() < 3 and (val_fraction or test_fraction):
        rare = int(np.argmin(counts))
        name = repr(classes[rare]) if classes else str(rare)
        raise UsageError(f"class {name} has only {counts.min()} row(s): too few for a stratified train/validation/test "
                         "split; drop its rows (data.keep_classes) or add more")
    idx = np.arange(n)
    try:
        rest, test = (idx, idx[:0]) if not test_fraction else train_test_split(
            idx, test_size=test_fraction, stratify=labels, random_state=seed)
        if val_fraction:
            train, val = train_test_split(rest, test_size=val_fraction / (1 - test_fraction), stratify=labels[rest],
                                          random_state=seed + 1)
        else:
            train, val = rest, rest[:0]
    except ValueError:  # a split smaller than the number of classes cannot hold one row of each
        raise UsageError(f"the data has {n} rows in {len(counts)} classes: too few for a stratified split with "
                         f"data.val_fraction = {val_fraction:g} and data.test_fraction = {test_fraction:g} (each part "
                         "needs a row of every class); add rows or set the fractions to 0") from None
    return (torch.from_numpy(np.sort(train)), torch.from_numpy(np.sort(val)), torch.from_numpy(np.sort(test)))


class _Alone:
    """The statistics of one process's rows are those of all the rows."""

    @staticmethod
    def sum(t: Tensor) -> Tensor:
        return t

    max = sum


class Standardizer:
    """``(x - mean) / scale`` with statistics from the training split only.

    A constant column gets scale 1, so it maps to zeros rather than NaN. Values up to the largest
    float64 work: the statistics are computed on each column scaled by a power of two (exact, so
    ordinary data gives the same bits as the plain formulas), and the transform halves both terms
    before subtracting, so neither can overflow.

    Sparse features (a CSR tensor) are scaled but not centred (mean 0), as scikit-learn's
    ``StandardScaler(with_mean=False)`` does: centring would fill in every zero. The scale is
    still the standard deviation about the column's mean.

    Under torchrun the training rows are spread over the processes: ``fit(X, combine)`` takes this
    process's rows and ``combine`` (``.sum(t)`` and ``.max(t)`` of a tensor over the processes), and
    every process gets the statistics of all the rows (the same two passes, summed in another order).
    """

    def __init__(self, mean: Tensor, scale: Tensor) -> None:
        self.mean, self.scale = mean, scale

    @classmethod
    def fit(cls, X: Tensor, combine=None) -> Standardizer:
        if X.layout == torch.sparse_csr:
            return cls._fit_sparse(X, combine or _Alone)
        if combine is not None:
            return cls.fit_parts(lambda: iter([X.to(torch.float64)]), combine)
        X = X.to(torch.float64)
        # 2^(e-1) > max |x| / 2 per column (2^e could overflow): X / 2^(e-1) lies in (-2, 2), and
        # scaling by a power of two is exact
        _, e = torch.frexp(X.abs().amax(dim=0))
        unit = torch.ldexp(torch.ones_like(e, dtype=torch.float64), e - 1)
        unit = torch.where(unit > 0, unit, torch.ones_like(unit))
        mean = (X / unit).mean(dim=0) * unit
        std = (X / unit).std(dim=0, unbiased=False) * unit
        scale = torch.where(std > 1e-12 * mean.abs().clamp(min=1.0), std, torch.ones_like(std))
        return cls(mean, scale)

    @classmethod
    def fit_parts(cls, parts, combine=None) -> Standardizer:
        """:meth:`fit` of rows read a part at a time: ``parts()`` yields them (dense, float64) anew
        for each of the three passes (the largest value, the mean, the deviation); ``combine``
        as for :meth:`fit`."""
        combine = combine or _Alone
        amax, rows = None, 0
        for X in parts():
            a = X.abs().amax(dim=0) if X.shape[0] else X.new_zeros(X.shape[1])
            amax, rows = (a if amax is None else torch.maximum(amax, a)), rows + X.shape[0]
        _, e = torch.frexp(combine.max(amax))
        unit = torch.ldexp(torch.ones_like(e, dtype=torch.float64), e - 1)
        unit = torch.where(unit > 0, unit, torch.ones_like(unit))
        n = combine.sum(torch.tensor(float(rows), dtype=torch.float64)).clamp(min=1.0)
        mean_u = combine.sum(sum((X / unit).sum(dim=0) for X in parts())) / n
        std = torch.sqrt(combine.sum(sum(((X / unit - mean_u) ** 2).sum(dim=0) for X in parts())) / n) * unit
        mean = mean_u * unit
        scale = torch.where(std > 1e-12 * mean.abs().clamp(min=1.0), std, torch.ones_like(std))
        return cls(mean, scale)

    @classmethod
    def _fit_sparse(cls, X: Tensor, combine) -> Standardizer:
        d = X.shape[1]
        values, cols = X.values().to(torch.float64).cpu(), X.col_indices().cpu()
        n = float(combine.sum(torch.tensor(float(X.shape[0]), dtype=torch.float64)))
        total = combine.sum(torch.zeros(d, dtype=torch.float64).index_add_(0, cols, values))
        mean = total / max(n, 1)
        # sum over all rows of (x - mean)^2: the stored entries', plus mean^2 for each absent zero
        count = combine.sum(torch.zeros(d, dtype=torch.float64).index_add_(0, cols, torch.ones_like(values)))
        dev = combine.sum(torch.zeros(d, dtype=torch.float64).index_add_(0, cols, (values - mean[cols]) ** 2))
        std = torch.sqrt((dev + (n - count) * mean**2) / max(n, 1))
        scale = torch.where(std > 1e-12 * mean.abs().clamp(min=1.0), std, torch.ones_like(std))
        return cls(torch.zeros(d, dtype=torch.float64), scale)

    @classmethod
    def identity(cls, n_features: int) -> Standardizer:
        return cls(torch.zeros(n_features, dtype=torch.float64), torch.ones(n_features, dtype=torch.float64))

    def transform(self, X: Tensor) -> Tensor:
        mean, scale = self.mean.to(X.device, X.dtype), self.scale.to(X.device, X.dtype)
        if X.layout == torch.sparse_csr:
            if bool((mean != 0).any()):
                raise UsageError("this model centres its inputs, so it was trained on dense features; give it dense data")
            values = X.values() / scale[X.col_indices()]
            return torch.sparse_csr_tensor(X.crow_indices(), X.col_indices(), values, size=X.shape, check_invariants=False)
        return (X * 0.5 - mean * 0.5) / (scale * 0.5)  # the halves are exact, and their difference cannot overflow

    def state_dict(self) -> dict:
        return {"mean": self.mean.cpu(), "scale": self.scale.cpu()}

    @classmethod
    def from_state_dict(cls, d: dict) -> Standardizer:
        return cls(d["mean"], d["scale"])
