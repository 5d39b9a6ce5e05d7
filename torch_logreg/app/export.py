"""``torch-logreg export``: a trained run as one self-contained model on raw feature columns.

The exported module is :class:`RawFeatureModel`: the run's model with everything ``predict`` does
to a row before the model folded in as buffers and tensor ops, so nothing of the run directory
(checkpoint, schema, standardizer) is needed to use it.

Input ``features``: float64, shape ``(N, C)``, one column per raw feature column of the training
data, in the training order (``schema.columns``, listed in the export's metadata and printed by
the command):

* a numeric column holds its value, as in the CSV;
* a categorical column holds the 0-based **index of its category in the run's saved category
  list** (``schema.categorical[column]``, the order training sorted them in: numeric labels by
  value, then the others as text). E.g. with categories ``["0", "1", "2", "3"]`` the category
  ``"2"`` is ``2.0``; with ``["evening", "morning"]`` the category ``"morning"`` is ``1.0``. The
  model one-hot encodes the index itself. A code that is none of ``0 .. k-1`` (an unseen category,
  a fraction, NaN) makes that row's outputs NaN, never a silent guess (``predict`` refuses such a
  row with an error). With ``data.drop_first`` the first category's column is left out, as in
  training;
* the radius feature of a run trained with ``data.add_radius`` is *not* an input: the model
  appends ``sqrt(f1^2 + f2^2)`` of the first two encoded features itself, as training did; nor
  are the products of ``data.interactions``: the model appends the product of each interaction's
  raw columns after it (the metadata's ``interactions`` names them).

A run trained with ``data.offset`` takes a second input, ``offset``: float64, shape ``(N,)``, each
row's value of that column (not a feature: it is added to each of the row's logits as it is, as
``predict`` and training add it; the metadata's ``offset`` names the column). Its absence is an
error, never a silent zero.

Then ``(x - mean) / scale`` with the training split's statistics (float64 buffers ``mean`` and
``scale``, the identity for ``data.standardize = false``), a cast to the run's dtype, and the
model with its link. Float64 input keeps the preparation exactly as ``predict`` computes it.

Output (the run's dtype, shape ``(N, K)``), the probability columns of ``predict``'s CSV: binary
``P(class 1)`` as ``(N, 1)``; K classes (softmax) or K labels (K sigmoids) ``(N, K)`` in the order
of the run's classes; regression the predictions.

Formats:

* ``torchscript``: ``torch.jit.script`` of the wrapper, written by ``torch.jit.save``; load with
  ``torch.jit.load(F)`` (needs only torch). The metadata JSON is the extra file
  ``torch_logreg.json`` (``torch.jit.load(F, _extra_files={"torch_logreg.json": ""})``).
* ``onnx``: ``torch.onnx.export(..., dynamo=True)``, the ``torch.export``-based exporter (it
  needs the packages ``onnx`` and ``onnxscript``; run it with e.g. onnxruntime), one input
  ``features`` (two with an offset: ``features``, ``offset``) with a dynamic batch dimension
  ``batch`` and one output, ``probabilities`` (or
  ``predictions`` for regression), the exporter's default opset (20 with torch 2.13); the
  metadata JSON is the model's ``metadata_props`` entry ``torch_logreg``.
* ``state_dict``: ``torch.save`` of a plain dict, loadable with ``weights_only=True``::

      {"format": "torch_logreg.export/1",
       "wrapper_class": "torch_logreg.app.export.RawFeatureModel",
       "model_class": "LogisticRegression",        # a name in torch_logreg.models.MODELS
       "wrapper_args": {...},                      # RawFeatureModel(**wrapper_args) rebuilds it
       "state_dict": {...},                        # its state_dict: mean, scale, model.<layer>.<param>
       "metadata": {...}}                          # the metadata JSON below, as a dict

  :func:`load_state_dict_export` rebuilds the module from it.

Metadata (all three formats): ``columns``, ``categorical`` (column -> category list, index =
code), ``drop_first`` (the first category of each has no one-hot column), ``add_radius``,
``input`` / ``input_dtype``, ``offset`` (the offset column's name, or ``""``), ``inputs`` (the input
names, in order), ``output`` and ``outputs`` (the output
columns' names as in ``predict``'s header), ``classes``, ``model_class``, ``dtype``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from ..devices import resolve_precision
from ..errors import UsageError
from ..models import MODELS
from .files import atomic_write, check_output
from .ingest import Schema, Standardizer
from .runs import load_run, model_from_checkpoint

FORMATS = ("onnx", "torchscript", "state_dict")
EXPORT_FORMAT = "torch_logreg.export/1"
METADATA_NAME = "torch_logreg.json"
INPUT_NAME = "features"
OFFSET_NAME = "offset"


class RawFeatureModel(nn.Module):
    """Raw feature columns ``(N, C)`` float64 -> the model's outputs ``(N, K)`` (see the module
    docstring for the encoding): one-hot of categorical codes, the radius feature, the saved
    standardizer, a cast to the model's dtype, the model.

    ``RawFeatureModel(model_class, model_args, columns, categorical, add_radius, dtype, drop_first,
    interactions, offset)``: the model is rebuilt as ``MODELS[model_class](**model_args)`` in
    ``dtype`` (``"float32"`` or ``"float64"``); ``mean`` and ``scale`` start as the identity until a
    state_dict is loaded (:meth:`from_run` fills them from a run). ``offset`` names the column a run
    trained with ``data.offset`` adds to each logit (``forward(x, offset)`` then needs its values;
    ``""``: none).
    """

    def __init__(self, model_class: str, model_args: dict, columns: list[str], categorical: dict[str, list[str]],
                 add_radius: bool, dtype: str = "float32", drop_first: bool = False,
                 interactions: list[list[str]] | None = None, offset: str = "") -> None:
        super().__init__()
        if model_class not in MODELS:
            raise UsageError(f"unknown model class {model_class!r}; one of {', '.join(MODELS)}")
        self.model = MODELS[model_class](**model_args).to(resolve_precision(dtype)[0])
        interactions = [list(t) for t in interactions or []]
        schema = Schema(list(columns), {k: list(v) for k, v in categorical.items()}, bool(add_radius),
                        drop_first=bool(drop_first), interactions=interactions)
        n_features = len(schema.feature_names)
        if n_features != self.model.n_features:
            raise UsageError(f"the schema gives {n_features} features but {model_class} takes {self.model.n_features}")
        self.n_columns = len(columns)
        # per raw column: its number of categories, 0 for a numeric column
        self.n_categories = [len(schema.categorical[c]) if c in schema.categorical else 0 for c in columns]
        self.has_categorical = any(k > 0 for k in self.n_categories)
        self.add_radius = bool(add_radius)
        self.drop_first = bool(drop_first)
        self.interactions = [[list(columns).index(c) for c in t] for t in interactions]
        self.dtype = resolve_precision(dtype)[0]
        self.offset = str(offset)
        self.register_buffer("mean", torch.zeros(n_features, dtype=torch.float64))
        self.register_buffer("scale", torch.ones(n_features, dtype=torch.float64))
        self._args = {"model_class": model_class, "model_args": dict(model_args), "columns": list(columns),
                      "categorical": {k: list(v) for k, v in categorical.items()}, "add_radius": bool(add_radius),
                      "dtype": dtype, "drop_first": bool(drop_first), "interactions": interactions,
                      "offset": self.offset}

    def constructor_args(self) -> dict:
        """Keyword arguments that rebuild this module (saved in the ``state_dict`` format)."""
        return json.loads(json.dumps(self._args))

    @classmethod
    def from_run(cls, payload: dict, dtype: str) -> RawFeatureModel:
        """The wrapper of a run's checkpoint ``payload`` (its weights, schema and standardizer)."""
        schema = Schema.of_run(payload)
        if schema.sparse:
            raise UsageError("this run's features are sparse (an svmlight or scipy .npz file, or hashed CSV columns), "
                             "which the export formats do not take as raw columns; use predict with the run")
        wrapper = cls(payload["model_class"], payload["model_args"], schema.columns, schema.categorical,
                      schema.add_radius, dtype, schema.drop_first, schema.interactions, schema.offset)
        model = model_from_checkpoint(payload, torch.device("cpu"), resolve_precision(dtype)[0])
        wrapper.model.load_state_dict(model.state_dict())
        standardizer = Standardizer.from_state_dict(payload["standardizer"])
        with torch.no_grad():
            wrapper.mean.copy_(standardizer.mean.to(torch.float64))
            wrapper.scale.copy_(standardizer.scale.to(torch.float64))
        return wrapper.requires_grad_(False).eval()

    def encode(self, x: Tensor) -> Tensor:
        """Raw columns ``(N, C)`` -> standardized model features ``(N, D)`` in float64."""
        if x.dim() != 2 or x.shape[1] != self.n_columns:
            raise UsageError("expected raw features of shape (N, " + str(self.n_columns) + "), got "
                             + str(list(x.shape)))
        x = x.to(torch.float64)
        raw = x
        if self.has_categorical:
            parts: list[Tensor] = []
            for j, k in enumerate(self.n_categories):
                column = x[:, j : j + 1]
                if k == 0:
                    parts.append(column)
                else:
                    codes = torch.arange(k, dtype=torch.float64, device=x.device)
                    one_hot = (column == codes).to(torch.float64)
                    # an exact one-hot row divided by its sum 1 is unchanged; a code matching no
                    # category gives 0 / 0 = NaN, so the row's outputs are NaN
                    one_hot = one_hot / one_hot.sum(dim=1, keepdim=True)
                    parts.append(one_hot[:, 1:] if self.drop_first else one_hot)
            x = torch.cat(parts, dim=1)
        if self.add_radius:  # as data.with_radius, on the encoded features before standardization
            x = torch.cat([x, torch.sqrt(x[:, :1] ** 2 + x[:, 1:2] ** 2)], dim=1)
        for columns in self.interactions:  # as Schema.features: the product of the raw columns
            product = raw[:, columns[0] : columns[0] + 1]
            for j in columns[1:]:
                product = product * raw[:, j : j + 1]
            x = torch.cat([x, product], dim=1)
        return (x - self.mean) / self.scale

    def forward(self, x: Tensor, offset: Tensor | None = None) -> Tensor:
        h = self.encode(x).to(self.dtype)
        if not self.offset:
            return self.model(h)
        if offset is None or offset.dim() != 1 or offset.shape[0] != x.shape[0]:
            raise ValueError("this model adds the column '" + self.offset + "' to each logit: pass its values as "
                             "the second input, offset, of shape (N,)")
        return self.model(h, offset.to(self.dtype).unsqueeze(1))  # as predict: cast, then added to the logits


# TorchScript types an attribute by its class annotation, which this module's postponed annotations
# leave a string it does not parse; an empty list has no type to infer
RawFeatureModel.__annotations__["interactions"] = list[list[int]]


def metadata(wrapper: RawFeatureModel, classes: list[str]) -> dict:
    """What a user of the exported file needs to feed it and read its output."""
    args = wrapper.constructor_args()
    link, k = wrapper.model.link, wrapper.model.n_outputs
    if link == "identity":
        outputs = ["prediction"] if k == 1 else [f"prediction_{i}" for i in range(k)]
    elif link == "sigmoid" and k == 1:
        outputs = [f"probability_{classes[1]}"]
    else:
        outputs = [f"probability_{c}" for c in classes]
    return {
        "format": EXPORT_FORMAT,
        "columns": args["columns"],
        "categorical": args["categorical"],
        "categorical_encoding": "0-based index of the category in categorical[column]",
        "add_radius": args["add_radius"],
        "drop_first": args["drop_first"],
        "interactions": args["interactions"],
        "input": INPUT_NAME,
        "input_dtype": "float64",
        "offset": args["offset"],
        "inputs": [INPUT_NAME, OFFSET_NAME] if args["offset"] else [INPUT_NAME],
        "output": "predictions" if link == "identity" else "probabilities",
        "outputs": outputs,
        "classes": list(classes),
        "model_class": args["model_class"],
        "dtype": args["dtype"],
    }


def load_state_dict_export(path: str | Path) -> RawFeatureModel:
    """Rebuild the :class:`RawFeatureModel` of a ``state_dict`` export (read with weights_only=True)."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != EXPORT_FORMAT:
        raise UsageError(f"{path} is not a torch_logreg state_dict export (no {EXPORT_FORMAT!r} marker)")
    wrapper = RawFeatureModel(**payload["wrapper_args"])
    wrapper.load_state_dict(payload["state_dict"])
    return wrapper.requires_grad_(False).eval()


def _needs(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"the onnx format needs the package(s) {', '.join(missing)}: pip install {' '.join(missing)} "
                         "(or, in a clone of the project, .venv/bin/pip install -e '.[onnx]')")


def _torchscript_bytes(wrapper: RawFeatureModel, meta: dict) -> bytes:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit")
        scripted = torch.jit.script(wrapper)
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer, _extra_files={METADATA_NAME: json.dumps(meta)})
    return buffer.getvalue()


def _onnx_bytes(wrapper: RawFeatureModel, meta: dict) -> bytes:
    _needs("onnx", "onnxscript")
    example = torch.zeros(2, wrapper.n_columns, dtype=torch.float64)  # code 0: a valid category everywhere
    batch = torch.export.Dim("batch")
    args: tuple[Tensor, ...] = (example,)
    shapes: dict = {"x": {0: batch}}
    if wrapper.offset:
        args, shapes = (example, torch.zeros(2, dtype=torch.float64)), {"x": {0: batch}, "offset": {0: batch}}
    # the exporter prints its progress to stdout and warns about torch internals: the command
    # prints its own summary
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(wrapper, args, dynamo=True, input_names=meta["inputs"],
                                        output_names=[meta["output"]], dynamic_shapes=shapes,
                                        external_data=False, verbose=False)
    finally:
        log.setLevel(level)
    program.model.metadata_props["torch_logreg"] = json.dumps(meta)
    return program.model_proto.SerializeToString()


def export(run_dir: str | Path, fmt: str, output: str | Path, force: bool = False) -> dict:
    """Write the run's model as ``fmt`` to ``output``; returns the metadata. Nothing is written
    unless the whole export succeeds (the file appears at once), and the run is only read."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    output = Path(output)
    path, payload, cfg = load_run(run_dir)
    output = check_output(output, run_dir=path, force=force)
    wrapper = RawFeatureModel.from_run(payload, cfg.train.dtype)  # the dtype predict runs the model in
    meta = metadata(wrapper, list(payload["classes"]))
    if fmt == "torchscript":
        data = _torchscript_bytes(wrapper, meta)
    elif fmt == "onnx":
        data = _onnx_bytes(wrapper, meta)
    else:
        buffer = io.BytesIO()
        torch.save({"format": EXPORT_FORMAT, "wrapper_class": f"{__name__}.{RawFeatureModel.__name__}",
                    "model_class": meta["model_class"], "wrapper_args": wrapper.constructor_args(),
                    "state_dict": {k: v.detach().cpu().clone() for k, v in wrapper.state_dict().items()},
                    "metadata": meta}, buffer)
        data = buffer.getvalue()
    try:
        with atomic_write(output, "wb") as fh:
            fh.write(data)
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from None
    return meta
