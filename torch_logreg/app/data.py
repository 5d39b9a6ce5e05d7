"""The names this module had before the readers, the schema and standardization moved to
:mod:`torch_logreg.app.ingest`, kept for code that imports them from here."""

from .ingest.datasets import Dataset, load_dataset
from .ingest.labels import balanced_weights, encode_labels, keep_mask, label_name, split_indices, take_rows
from .ingest.schema import Schema, merge_levels, with_radius
from .ingest.standardize import Standardizer
from .ingest.table import listed

__all__ = ["Dataset", "Schema", "Standardizer", "balanced_weights", "encode_labels", "keep_mask", "label_name",
           "listed", "load_dataset", "merge_levels", "split_indices", "take_rows", "with_radius"]
