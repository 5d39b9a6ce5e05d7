"""Data in: one reader per file format behind one registry (the only place a file's suffix is
read), one schema that encodes rows for every command, built-in and generated sets, labels,
splits and standardization.

- :mod:`.registry`: :func:`reader_for` a path; a new format is one module and one line there.
- :mod:`.reader`: the interface (:class:`Reader`): the whole file, one rank's part, blocks of rows.
- :mod:`.schema`: :class:`Schema`, found in training rows and applied to any rows alike.
- :mod:`.datasets`: the training data of a config; :mod:`.new_rows`: rows for evaluate and predict;
  :mod:`.stream`: a file larger than the memory budget, as a memory map.
"""

#: public name -> the module that defines it (imported when first asked for, so that reading a
#: config, which needs only the file checks, loads neither torch nor the readers)
NAMES = {
    "BUILT_IN": "datasets",
    "Dataset": "datasets",
    "load_dataset": "datasets",
    "read_part": "datasets",
    "streams": "datasets",
    "CONFIG_MAX_BYTES": "files",
    "DEFAULT_MAX_BYTES": "files",
    "NO_LIMIT": "files",
    "change": "files",
    "check_source": "files",
    "fingerprint": "files",
    "read_bytes": "files",
    "size_text": "files",
    "balanced_weights": "labels",
    "encode_labels": "labels",
    "keep_mask": "labels",
    "label_name": "labels",
    "split_indices": "labels",
    "take_rows": "labels",
    "NewData": "new_rows",
    "read_new": "new_rows",
    "Reader": "reader",
    "Request": "reader",
    "READERS": "registry",
    "reader_for": "registry",
    "HASH_BITS_RANGE": "schema",
    "Schema": "schema",
    "infer_schema": "schema",
    "merge_levels": "schema",
    "with_radius": "schema",
    "Standardizer": "standardize",
    "check_standardized": "standardize",
    "Source": "stream",
    "open_source": "stream",
    "listed": "table",
}


def __getattr__(name: str):
    if name not in NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{NAMES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *NAMES])
