"""How a file's rows become model features: one :class:`Schema`, found from the training rows
(:func:`infer_schema`), saved with the run, and applied to any rows of any format by
:meth:`Schema.features` for train, resume, evaluate, predict, cv, path and export alike.

The features, in order: the raw columns that are not hashed (one-hot blocks in place of the
categorical ones, without the first level when ``drop_first``), the radius feature
``sqrt(x1^2 + x2^2)``, the products of ``interactions`` (each a list of raw numeric columns,
named ``x1*x2``: the product of the raw values, standardized afterwards like any feature), then
the ``2**hash_bits`` columns the hashed ones share: each cell is
split on whitespace and every token ``t`` of column ``c`` adds ``±1`` to column
``h("c=t") mod 2**hash_bits`` (signed hashing, so collisions cancel on average; scikit-learn's
``FeatureHasher`` with MurmurHash3, the same on every machine and in every process). A sparse
file (svmlight, scipy ``.npz``) has no names: ``sparse_width`` columns ``x1`` to
``x<sparse_width>``, as stored.

Everything is kept in plain lists and numbers so that it is saved in a checkpoint and loaded with
``weights_only=True``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ...errors import UsageError
from ...validation import as_sparse_csr
from .columns import expand_pixels, pixel_width
from .table import listed, nfc, parse_number

#: the largest float32: a row weight above it is refused (it may be kept in float32)
FLOAT32_MAX = float(np.finfo(np.float32).max)
#: data.hash_bits: the hash block's width is 2**bits
HASH_BITS_RANGE = (1, 30)


@dataclass
class Schema:
    """How raw input columns become model features (see the module docstring)."""

    columns: list[str]  # raw feature columns, in input order
    categorical: dict[str, list[str]] = field(default_factory=dict)  # column -> categories
    add_radius: bool = False
    # data.target: a column's name, an index for a file whose columns have no names, or several
    # columns' names (a multilabel target, one 0/1 column per output)
    target: str | list[str] = ""
    drop_first: bool = False  # one-hot: each categorical column's first level has no column
    hashed: list[str] = field(default_factory=list)  # columns hashed (signed) into the hash block
    hash_bits: int = 0  # the hash block has 2**hash_bits columns
    sparse_width: int = 0  # a sparse file's columns (0: not a sparse file)
    svmlight_base: int = 0  # an svmlight file's first feature index (0 or 1), as training read it
    weight: str = ""  # the column of row weights (not a feature; new files may have it)
    pixels: str = ""  # the column of space-separated numbers expanded to pixels_width features
    pixels_width: int = 0
    interactions: list[list[str]] = field(default_factory=list)  # raw numeric columns whose product is a feature
    offset: str = ""  # the column added to each row's logits (not a feature; new rows need it)

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
        dense = sum(len(self.levels(c)) if c in self.categorical else self.pixels_width if c == self.pixels else 1
                    for c in self.columns if c not in self.hashed)
        return dense + int(self.add_radius) + len(self.interactions) + (1 << self.hash_bits if self.hashed else 0)

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
            elif c == self.pixels:
                names.extend(f"{c}{j + 1}" for j in range(self.pixels_width))
            else:
                names.append(c)
        if self.add_radius:
            names.append("radius")
        names.extend("*".join(t) for t in self.interactions)
        if self.hashed:
            names.extend(f"hash{j}" for j in range(1 << self.hash_bits))
        return names

    def to_dict(self) -> dict:
        return {"columns": list(self.columns), "categorical": {k: list(v) for k, v in self.categorical.items()},
                "add_radius": self.add_radius, "target": self.target, "drop_first": self.drop_first,
                "hashed": list(self.hashed), "hash_bits": self.hash_bits, "sparse_width": self.sparse_width,
                "svmlight_base": self.svmlight_base, "weight": self.weight, "pixels": self.pixels,
                "pixels_width": self.pixels_width, "interactions": [list(t) for t in self.interactions],
                "offset": self.offset}

    @classmethod
    def from_dict(cls, d: dict) -> Schema:
        """The saved schema, its names and categories in Unicode NFC as files are read (a run of an
        earlier version may have saved another spelling; the order is kept)."""
        return cls([nfc(c) for c in d["columns"]], {nfc(k): [nfc(v) for v in levels] for k, levels in d["categorical"].items()},
                   bool(d["add_radius"]), [nfc(t) for t in d["target"]] if isinstance(d["target"], list) else nfc(d["target"]),
                   bool(d.get("drop_first", False)), [nfc(c) for c in d.get("hashed", [])], int(d.get("hash_bits", 0)),
                   int(d.get("sparse_width", 0)), int(d.get("svmlight_base", 0)), nfc(str(d.get("weight", ""))),
                   nfc(str(d.get("pixels", ""))), int(d.get("pixels_width", 0)),
                   [[nfc(c) for c in t] for t in d.get("interactions", [])], nfc(str(d.get("offset", ""))))

    @classmethod
    def of_run(cls, payload: dict) -> Schema:
        """The schema a run's checkpoint saved. Runs of earlier versions saved an array's target
        index only in their config; it is taken from there."""
        schema = cls.from_dict(payload["schema"])
        if not schema.target:
            schema.target = str(payload.get("config", {}).get("data", {}).get("target", "") or "")
        return schema

    # --- encoding --------------------------------------------------------------------------------

    def features(self, table) -> Tensor:
        """A table's rows -> the (N, D) float64 features (see the module docstring): a dense
        tensor, or a sparse CSR one for a sparse file or hashed columns."""
        if table.sparse:
            return as_sparse_csr(table.matrix, "X", torch.float64)
        path = table.path
        header = set(table.header)
        missing = [c for c in self.columns if c not in header]
        if missing:
            raise UsageError(f"{path}: column {missing[0]!r} used in training is missing; expected columns "
                             f"{listed(self.columns)}")
        parts, plain = [], []  # plain: a run of number columns, read as one block (a file may have a million)
        hashed = set(self.hashed)
        for c in self.columns:
            if c in hashed:
                continue
            if c not in self.categorical and c != self.pixels:
                plain.append(c)
                continue
            if plain:
                parts.append(table.numbers_of(plain))
                plain = []
            parts.append(expand_pixels(table, c, self.pixels_width) if c == self.pixels else self._one_hot(table, c))
        if plain:
            parts.append(table.numbers_of(plain))
        out = np.concatenate(parts, axis=1) if parts else np.zeros((table.n_rows, 0), dtype=np.float64)
        X = torch.from_numpy(np.ascontiguousarray(out, dtype=np.float64))
        if self.add_radius:
            X = with_radius(X)
        if self.interactions:
            X = torch.cat([X, products(lambda c: torch.tensor(table.numbers(c), dtype=torch.float64), self.interactions)], dim=1)
        if self.hashed:
            X = join_dense(X, hash_block({c: table.text(c) for c in self.hashed}, self.hash_bits))
        return X

    def extend(self, X: Tensor) -> Tensor:
        """``X`` ``(N, C)`` the raw numeric columns, in :attr:`columns`' order (a built-in set's, a
        plane's points) -> its features: the radius and the products appended."""
        out = with_radius(X) if self.add_radius else X
        if self.interactions:
            out = torch.cat([out, products(lambda c: X[:, self.columns.index(c)], self.interactions)], dim=1)
        return out

    def _one_hot(self, table, c: str) -> np.ndarray:
        cats = self.categorical[c]
        values, inverse = np.unique(table.text(c).astype(str), return_inverse=True)
        inverse = inverse.reshape(-1)
        lookup = {v: i for i, v in enumerate(cats)}
        codes = np.array([lookup.get(v, -1) for v in values.tolist()], dtype=np.int64)[inverse]
        if (codes < 0).any():
            r = int(np.nonzero(codes < 0)[0][0])
            raise UsageError(f"{table.path}, {table.where(r)}, column {c!r}: category {str(values[inverse[r]])!r} was "
                             f"not seen in training (known: {listed(cats)})")
        block = np.zeros((table.n_rows, len(cats)), dtype=np.float64)
        block[np.arange(table.n_rows), codes] = 1.0
        return block[:, int(self.drop_first):]

    def offsets(self, table) -> np.ndarray | None:
        """``(N,)`` float64: the ``offset`` column of a table's rows (finite numbers), or None
        without one; a file that lacks it, or a value that is not finite, is named."""
        if not self.offset:
            return None
        if self.offset not in table.header:
            raise UsageError(f"{table.path}: the offset column {self.offset!r} (data.offset) is needed: the model adds "
                             f"it to each row's logit (columns: {listed(table.header)})")
        o = table.numbers(self.offset)
        bad = np.nonzero(~np.isfinite(o))[0]
        if bad.size:
            raise UsageError(f"{table.path}, {table.where(int(bad[0]))}, column {self.offset!r}: an offset must be a "
                             f"finite number, got {o[bad[0]]:g}")
        return o

    def labels(self, table, need: bool = True) -> np.ndarray | None:
        """The target values of a table's rows (text, or numbers as an array stores them); None
        when the file has no target and ``need`` is false."""
        if table.sparse:
            return table.y
        if isinstance(self.target, list):
            return multilabel_targets(table, self.target, need)
        name = table.target_name(self.target or "target")
        if name not in table.header:
            if need:
                raise UsageError(f"{table.path}: the target column {name!r} is needed to evaluate (columns: "
                                 f"{listed(table.header)})")
            return None
        y = table.labels(name)
        if y.dtype.kind in "OUS":
            empty = np.nonzero(y == "")[0]
            if empty.size:
                raise UsageError(f"{table.path}, {table.where(int(empty[0]))}, column {name!r}: empty target cell")
        return y


def infer_schema(table, data_cfg, combine_levels=None) -> Schema:
    """The schema of training rows: ``data.target`` and ``data.weight`` set apart, the other
    columns features, the categories of each ``data.categorical`` column as found (``table``: one
    process's part under torchrun, whose categories go through ``combine_levels``, column -> sorted
    levels in and out, which merges them with the other parts')."""
    if table.sparse:
        if data_cfg.add_radius:
            raise UsageError("data.add_radius needs two dense columns; it does not apply to sparse or hashed features")
        for key in ("interactions", "offset"):
            if getattr(data_cfg, key):
                raise UsageError(f"{table.path}: data.{key} names columns of a CSV or Parquet file; a sparse file has none")
        return Schema([], target=data_cfg.target, sparse_width=table.matrix.shape[1], svmlight_base=table.base)
    path, header = table.path, table.header
    categorical, hashed, weight = [nfc(c) for c in data_cfg.categorical], [nfc(c) for c in data_cfg.hash], \
        nfc(data_cfg.weight)
    if isinstance(data_cfg.target, list):  # several 0/1 columns: checked here, read by Schema.labels
        if not table.named:
            raise UsageError(f"{path}: data.target as a list of columns needs a CSV or Parquet file")
        for c in data_cfg.target:
            if nfc(c) not in header:
                raise UsageError(f"{path}: data.target column {c!r} is not in the header ({listed(header)})")
    target = nfc(data_cfg.target[0]) if isinstance(data_cfg.target, list) else nfc(table.target_name(data_cfg.target))
    if not target:
        raise UsageError(f"{path}: set data.target to the name of the target column (one of {listed(header)})")
    if target not in header:
        raise UsageError(f"{path}: target column {target!r} is not in the header ({listed(header)})")
    if weight and weight not in header:
        raise UsageError(f"{path}: data.weight column {weight!r} is not in the header ({listed(header)})")
    offset = nfc(data_cfg.offset)
    if offset and (not table.named or offset not in header):
        raise UsageError(f"{path}: data.offset column {offset!r} is not in the header ({listed(header)})"
                         if table.named else f"{path}: data.offset names a column of a CSV or Parquet file")
    if offset and offset in ([target] if isinstance(data_cfg.target, str) else data_cfg.target) + [weight]:
        raise UsageError(f"{path}: the data.offset column {offset!r} cannot also be the target or the weight")
    if weight and weight in (*([target] if isinstance(data_cfg.target, str) else data_cfg.target), *categorical, *hashed):
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
    pixels, left_out = data_cfg.pixels, [*data_cfg.drop, *([data_cfg.split_column] if data_cfg.split_column else [])]
    for key, names in (("data.pixels", [pixels] if pixels else []), ("data.drop", data_cfg.drop),
                       ("data.split_column", [data_cfg.split_column] if data_cfg.split_column else [])):
        for c in names:
            if c not in header:
                raise UsageError(f"{path}: {key} column {c!r} is not in the header ({listed(header)})")
            if c in (target, weight) or (key != "data.drop" and c in data_cfg.drop):
                raise UsageError(f"{path}: the {key} column {c!r} cannot also be the target, the weight or dropped")
    targets = data_cfg.target if isinstance(data_cfg.target, list) else [target]
    apart = {*targets, weight, offset, *left_out}
    columns = [c for c in header if c not in apart]
    if not columns:
        raise UsageError(f"{path}: no feature columns besides the target {target!r}")
    if data_cfg.add_radius and hashed:
        raise UsageError("data.add_radius needs two dense columns; it does not apply to sparse or hashed features")
    cats = {}
    for c in categorical:
        values = table.text(c)
        empty = np.nonzero(values == "")[0]
        if empty.size:
            raise UsageError(f"{path}, {table.where(int(empty[0]))}, column {c!r}: empty cell")
        cats[c] = sorted(set(values.tolist()), key=category_key)
    if combine_levels is not None:
        cats = combine_levels(cats)
    interactions = check_interactions(data_cfg.interactions, columns, {**{c: "categorical" for c in categorical},
                                                                       **{c: "hashed" for c in hashed},
                                                                       **({pixels: "a pixels column"} if pixels else {})},
                                      path)
    return Schema(columns, cats, bool(data_cfg.add_radius), data_cfg.target, drop_first=data_cfg.drop_first,
                  hashed=hashed, hash_bits=data_cfg.hash_bits if hashed else 0, weight=weight, pixels=pixels,
                  pixels_width=pixel_width(table, pixels) if pixels else 0, interactions=interactions, offset=offset)


def check_interactions(interactions, columns: list[str], not_numeric: dict[str, str], where) -> list[list[str]]:
    """``data.interactions`` (lists of column names) in NFC, each name a raw feature column that holds numbers
    (``not_numeric``: column -> what it is instead); anything else is a UsageError naming it."""
    out = []
    for names in interactions:
        names = [nfc(c) for c in names]
        for c in names:
            if c not in columns:
                raise UsageError(f"{where}: data.interactions column {c!r} is not a feature column ({listed(columns)})")
            if c in not_numeric:
                raise UsageError(f"{where}: data.interactions multiplies numeric columns; {c!r} is {not_numeric[c]}")
        out.append(names)
    return out


def products(column, interactions: list[list[str]]) -> Tensor:
    """``(N, P)`` float64: for each of the ``P`` interactions the product of its columns' raw values
    (``column(name)``: that column, ``(N,)``)."""
    parts = []
    for names in interactions:
        p = column(names[0]).to(torch.float64)
        for c in names[1:]:
            p = p * column(c).to(torch.float64)
        parts.append(p[:, None])
    return torch.cat(parts, dim=1)


def multilabel_targets(table, names: list[str], need: bool = True) -> np.ndarray | None:
    """``(N, K)`` int64: the 0/1 target columns ``names`` (one per output of a multilabel model);
    None when the file has none of them and ``need`` is false; another value names its line."""
    missing = [c for c in names if c not in table.header]
    if missing and (need or len(missing) < len(names)):
        raise UsageError(f"{table.path}: the target column {missing[0]!r} is missing (columns: {listed(table.header)})")
    if missing:
        return None
    Y = np.stack([table.numbers(c) for c in names], axis=1)
    bad = np.argwhere((Y != 0) & (Y != 1))
    if bad.size:
        r, k = (int(v) for v in bad[0])
        raise UsageError(f"{table.path}, {table.where(r)}, column {names[k]!r}: a multilabel target is 0 or 1, "
                         f"got {Y[r, k]:g}")
    return Y.astype(np.int64)


def category_key(v: str):
    """Categories sort as numbers where they read as finite numbers (:func:`.table.parse_number`),
    then as text: a total order, so the order never depends on the order the levels were met in
    (nor on Python's string hashing, which orders a set)."""
    try:
        f = parse_number(v.strip())
    except ValueError:
        return (1, 0.0, v)
    return (0, f, v) if math.isfinite(f) else (1, 0.0, v)


def merge_levels(parts: list[dict[str, list[str]]]) -> dict[str, list[str]]:
    """The categories of each column over several parts of one file, sorted as one part's are."""
    return {c: sorted(set().union(*(p[c] for p in parts)), key=category_key) for c in parts[0]}


def row_weights(table, column: str, whole: bool = True) -> np.ndarray | None:
    """The ``column`` of row weights: finite, non-negative numbers, not all zero (in a ``whole``
    file; a part of one may have only zeros)."""
    if not column or table.sparse:
        return None
    w = table.numbers(column)
    negative = np.nonzero(w < 0)[0]
    if negative.size:
        raise UsageError(f"{table.path}, {table.where(int(negative[0]))}, column {column!r}: a row weight must be "
                         f"non-negative, got {w[negative[0]]:g}")
    large = np.nonzero(w > FLOAT32_MAX)[0]
    if large.size:  # the loop may keep weights in float32, where it would be infinite
        raise UsageError(f"{table.path}, {table.where(int(large[0]))}, column {column!r}: a row weight must be at most "
                         f"{FLOAT32_MAX:.4g} (the largest float32), got {w[large[0]]:g}; scale the weights down")
    if whole and not (w > 0).any():
        raise UsageError(f"{table.path}: every row weight in column {column!r} is 0; at least one row must count")
    return w


def with_radius(X: Tensor) -> Tensor:
    """Append ``sqrt(x1^2 + x2^2)``: the donut's classes differ in radius, not in direction."""
    if X.shape[1] < 2:
        raise UsageError("data.add_radius needs at least two feature columns")
    return torch.cat([X, torch.sqrt(X[:, :1] ** 2 + X[:, 1:2] ** 2)], dim=1)


def hash_block(columns: dict, bits: int) -> Tensor:
    """The ``(N, 2**bits)`` signed hash block of ``columns`` (name -> the column's stripped cells):
    the whitespace tokens of each cell, as ``"name=token"``."""
    from sklearn.feature_extraction import FeatureHasher

    hasher = FeatureHasher(n_features=1 << bits, input_type="string", alternate_sign=True)
    names = list(columns)
    cells = [columns[c] for c in names]
    tokens = ([f"{c}={t}" for c, cell in zip(names, row) for t in cell.split()] for row in zip(*cells))
    return as_sparse_csr(hasher.transform(tokens), "X", torch.float64)


def join_dense(dense: Tensor, block: Tensor) -> Tensor:
    """``[dense, block]`` as one CSR tensor: the dense columns' non-zeros, then the block's."""
    import scipy.sparse

    left = scipy.sparse.csr_matrix(dense.numpy())
    right = scipy.sparse.csr_matrix((block.values().numpy(), block.col_indices().numpy(), block.crow_indices().numpy()),
                                    shape=tuple(block.shape))
    return as_sparse_csr(scipy.sparse.hstack([left, right], format="csr"), "X", torch.float64)
