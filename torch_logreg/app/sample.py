"""``torch-logreg sample``: rows of a run's own data as a CSV of raw columns, the file ``predict``
and ``evaluate --data`` take (the training feature columns, a data.offset column, then the target column), written
without pandas.

The rows are the first ``rows`` of a split (the test split by default) as the run prepares them,
mapped back through the saved standardizer, ``x = z * scale + mean``, in float64: equal to the
source's values to a few units in the last place. Runs whose features are not the raw columns
themselves (one-hot categories, the radius feature, hashed or sparse columns) are refused: their
own data file already holds such rows.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import torch

from ..errors import UsageError
from .config import target_is_real
from .files import check_output, write_text_atomic
from .ingest.registry import output_format

SPLITS = ("train", "val", "test")


def sample(run_dir: str | Path, output: str | Path, rows: int = 10, split: str = "test", force: bool = False) -> int:
    """Write the first ``rows`` rows of ``split`` of the run's data to the CSV ``output``; returns
    how many were written (fewer when the split is smaller)."""
    from . import ingest
    from .fitting import prepare
    from .runs import load_run

    if split not in SPLITS:
        raise UsageError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    if rows < 1:
        raise UsageError(f"--rows must be at least 1, got {rows}")
    path, payload, cfg = load_run(run_dir)
    out = check_output(output, run_dir=path, force=force)
    if output_format(out, (".csv",)) is None:
        raise UsageError(f"cannot write {out}: sample writes CSV; name the file *.csv")
    schema = ingest.Schema.from_dict(payload["schema"])
    if schema.categorical or schema.add_radius or schema.hashed or schema.sparse_width:
        raise UsageError(f"run {path} encodes its columns (categories, the radius feature, hashed or sparse columns); "
                         "sample writes raw numeric columns only: take rows of the run's own data file instead")
    standardizer = ingest.Standardizer.from_state_dict(payload["standardizer"])
    prep = prepare(cfg, torch.device("cpu"), torch.float64, standardizer)
    # the training rows come from their source (in memory, or read from the file); the others are held
    Z = prep.rows.head(rows)[0].to(torch.float64) if split == "train" else prep.X[split][:rows]
    if Z.shape[0] == 0:
        raise UsageError(f"run {path} has no {split} split (data.{split}_fraction = 0); use --split train")
    X = (Z * standardizer.scale.to(Z) + standardizer.mean.to(Z)).numpy()
    X = X[:, : len(schema.columns)]  # the raw columns; data.interactions' products are computed from them again
    offset = None if prep.offset is None else prep.offset[split][: Z.shape[0], 0].numpy()
    y = prep.y[split][: Z.shape[0]].cpu().numpy()
    labels = [repr(float(v)) for v in y] if target_is_real(cfg.model) else [prep.classes[int(i)] for i in y]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow([*schema.columns, *([schema.offset] if offset is not None else []), schema.target or "target"])
    for i, (x, label) in enumerate(zip(X, labels)):
        writer.writerow([*(repr(float(v)) for v in x), *([repr(float(offset[i]))] if offset is not None else []), label])
    write_text_atomic(out, text.getvalue())
    return len(labels)
