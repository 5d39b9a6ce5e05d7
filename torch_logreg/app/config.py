"""Run configuration: typed dataclasses read from TOML, overridden by ``--set key=value``.

An unknown key is an error (with a "did you mean"), a value of the wrong type or out of range
is an error, and the resolved configuration is written back as TOML into every run directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from .. import arguments
from ..errors import UsageError
from ..init import SCHEMES as INIT_SCHEMES
from ..layers import ACTIVATIONS
from ..registry import EXACT_SOLVERS, L1_LOOP_SOLVERS, L1_SOLVERS, LOOP_SOLVERS, SOLVERS, STEPS
from ..schedules import SCHEDULES, Schedule
from .ingest.files import CONFIG_MAX_BYTES, DEFAULT_MAX_BYTES, read_bytes

DATASETS = ("breast_cancer", "digits", "iris", "wine", "blobs", "donut", "xor", "synthetic")
MODEL_KINDS = ("logistic", "multilabel", "softmax", "linear", "mlp")
#: list keys whose entries are integers (the others hold strings)
INT_LISTS = ("model.hidden",)
FLOAT_LISTS = ("train.betas",)
#: list keys whose entries are lists of strings
NESTED_LISTS = ("data.interactions",)
#: keys that map feature names to numbers (a TOML table), the exact solvers' per-coefficient terms
COEFFICIENT_TABLES = ("train.penalty_factor", "train.lower_bounds", "train.upper_bounds")


@dataclass
class DataConfig:
    # a built-in data set, used when path is empty; with a path, the data's name (runs are named after it),
    # by default the file's name without its suffix
    name: str = "breast_cancer"
    path: str = ""  # a CSV, .npy, .npz (NumPy or scipy sparse) or svmlight (.svm, .svmlight, .libsvm) file
    # CSV: the target column's name (or, for model.kind = "multilabel", a list of 0/1 columns, one per
    # output); .npy, sparse .npz: its column index (default: last)
    target: str | list[str] = ""
    categorical: list[str] = field(default_factory=list)  # columns to one-hot encode (an array's: x1, x2, ...)
    drop_first: bool = False  # one-hot without each column's first level (a full-rank design for inference)
    hash: list[str] = field(default_factory=list)  # columns hashed (whitespace tokens, signed) into a sparse block
    hash_bits: int = 20  # the hash block has 2**hash_bits columns
    pixels: str = ""  # CSV, Parquet: a column of space-separated numbers (an image a row), expanded to features
    drop: list[str] = field(default_factory=list)  # columns left out of the features
    split_column: str = ""  # a column naming each row's split: Training/PublicTest/PrivateTest or train/val/test
    weight: str = ""  # CSV, Parquet: a column of row weights (non-negative), each row's loss multiplied by its weight
    keep_classes: list[str] = field(default_factory=list)  # keep only rows with these labels
    add_radius: bool = False  # append sqrt(x1^2 + x2^2): what makes the donut separable
    # products of raw numeric columns appended as features (standardized like any), e.g. [["x1", "x2"]]
    interactions: list[list[str]] = field(default_factory=list)
    offset: str = ""  # a column added to each row's logit as it is (an exposure's log, a prior model's score)
    n_samples: int = 0  # generated sets: rows (0 = the set's default)
    n_features: int = 0  # synthetic: columns (0 = the default, 20)
    noise: float = -1.0  # generated sets: noise level (< 0 = the set's default)
    standardize: bool = True  # fitted on the training split only, saved with the model
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    max_bytes: int = DEFAULT_MAX_BYTES  # the largest data file read (2 GiB), checked before reading
    memory_budget: int = 0  # bytes; a larger .npy or Parquet file trains streamed from disk (0 = always in memory)


@dataclass
class ModelConfig:
    kind: str = "logistic"  # logistic | multilabel (one sigmoid per class) | softmax | linear | mlp
    bias: bool = True
    hidden: list[int] = field(default_factory=list)  # mlp: hidden widths, e.g. [16, 16]
    activation: str = "tanh"  # mlp: tanh | relu | sigmoid
    link: str = "auto"  # mlp output: auto (sigmoid for 2 classes, softmax for more) | sigmoid | softmax | identity
    init: str = "auto"  # mlp: auto (kaiming_uniform for relu, else xavier_uniform) or a scheme of init.py
    dropout: float = 0.0  # mlp: the rate of dropout after each hidden activation (0 = none)
    batch_norm: bool = False  # mlp: batch normalization before each hidden activation


@dataclass
class TrainConfig:
    solver: str = "gd"  # gd | momentum | nesterov | adagrad | rmsprop | adam | adamw (the loop) | newton | lbfgs | proximal | cd
    lr: float = 0.1
    epochs: int = 1000  # for the exact solvers: the iteration limit
    batch_size: int = 0  # 0 = full batch
    l2: float = 0.0
    l1: float = 0.0  # L1 penalty l1 * ||W||_1 (newton, proximal, cd; gd by a proximal step after each update)
    class_weight: str = ""  # "" | "balanced": rows weighted by N / (K * rows of their class), training split
    momentum: float = 0.9  # momentum, nesterov
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam, adamw
    eps: float = -1.0  # adagrad, rmsprop, adam, adamw; < 0 = the optimizer's default (as torch.optim's)
    alpha: float = 0.99  # rmsprop
    weight_decay: float = 0.01  # adamw (decoupled; l2 is the penalty every solver minimises)
    schedule: str = "constant"  # constant | step | exponential | cosine | plateau (learning rate per epoch)
    step_size: int = 1  # step: epochs between decays
    gamma: float = 0.1  # step, exponential: the decay factor
    warmup_epochs: int = 0  # a linear warm-up before the schedule; 0 = none
    warmup_start_factor: float = 0.3333333333333333  # the warm-up's first rate over lr
    # plateau (torch's ReduceLROnPlateau, its names and defaults): on the validation loss, or the
    # training objective without a validation split, lr *= factor after more than plateau_patience
    # checks without a relative improvement of threshold, then cooldown checks uncounted, never below min_lr
    factor: float = 0.1
    plateau_patience: int = 10
    threshold: float = 1e-4
    cooldown: int = 0
    min_lr: float = 0.0
    clip_grad_norm: float = 0.0  # the loop: each step's global gradient 2-norm clipped to this; 0 = off
    tol: float = 1e-6  # stop when the gradient norm falls below
    patience: int = 20  # early stopping / plateau, in epochs; 0 = off
    grad_check_every: int = 0  # steps; 0 = off
    check_every: int = 1  # epochs between stopping checks
    cuda_graph: bool = False  # CUDA, full batch: replay the step + update as one CUDA graph
    # the loop's step: rule (the fixed rule: the same step, and bits, in every process) | reference |
    # feature_major | row_major | fused (blocked and auto: no longer offered, read as rule with a warning)
    step: str = "rule"
    seed: int = 0
    device: str = "auto"
    # float32 | float64 | bfloat16 | float16 (the loop: float32 weights, 16-bit products; float16: CUDA, loss-scaled)
    dtype: str = "float32"
    # newton, cd on a binary model, by feature name (a TOML table, e.g. {x1 = 0.0}): each coefficient's
    # multiplier of l1 and l2 (0 = unpenalised), and bounds on the coefficients (inf and -inf allowed)
    penalty_factor: dict[str, float] = field(default_factory=dict)
    lower_bounds: dict[str, float] = field(default_factory=dict)
    upper_bounds: dict[str, float] = field(default_factory=dict)


@dataclass
class LogConfig:
    dir: str = "runs"
    every: int = 10  # steps between scalar logs (the only host syncs besides the checks)
    checkpoint_every: int = 50  # epochs
    histograms_every: int = 0  # epochs between weight/gradient histograms; 0 = at checkpoints


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        return dumps_toml(self.to_dict())


SECTIONS = {f.name: f.default_factory for f in fields(Config)}

# key -> (low, high); a bound in a list is exclusive, a bare number inclusive, None = unbounded
RANGES = {
    "data.n_samples": (0, None),
    "data.n_features": (0, None),
    "data.max_bytes": (1, None),
    "data.memory_budget": (0, None),
    "data.hash_bits": (1, 30),
    "data.val_fraction": (0.0, [1.0]),
    "data.test_fraction": (0.0, [1.0]),
    "model.dropout": (0.0, [1.0]),
    "train.lr": ([0.0], None),
    "train.epochs": (1, None),
    "train.batch_size": (0, None),
    "train.l2": (0.0, None),
    "train.l1": (0.0, None),
    "train.momentum": (0.0, [1.0]),
    "train.tol": (0.0, None),
    "train.factor": (0.0, [1.0]),
    "train.plateau_patience": (0, None),
    "train.threshold": (0.0, None),
    "train.cooldown": (0, None),
    "train.min_lr": (0.0, None),
    "train.clip_grad_norm": (0.0, None),
    "train.patience": (0, None),
    "train.grad_check_every": (0, None),
    "train.check_every": (1, None),
    "train.seed": (0, 2**32 - 1),  # what NumPy and scikit-learn take as a seed
    "log.every": (1, None),
    "log.checkpoint_every": (1, None),
    "log.histograms_every": (0, None),
}
CHOICES = {
    "data.name": DATASETS,
    "model.kind": MODEL_KINDS,
    "model.activation": tuple(ACTIVATIONS),
    "model.link": ("auto", "sigmoid", "softmax", "identity"),
    "model.init": ("auto", *INIT_SCHEMES),
    "train.solver": SOLVERS,
    "train.schedule": SCHEDULES,
    "train.step": STEPS,
    "train.dtype": ("float32", "float64", "bfloat16", "float16"),
    "train.class_weight": ("", "balanced"),
}


def _suggest(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(options)}"


def _field_types(section: str) -> dict[str, type]:
    return {f.name: type(getattr(SECTIONS[section](), f.name)) for f in fields(SECTIONS[section]())}


def _coerce(key: str, value, kind: type, where: str):
    """Check ``value`` against the field's type; ints are accepted where floats are expected."""
    if key == "data.target" and isinstance(value, list):  # several 0/1 columns: a multilabel target
        if value and all(isinstance(v, str) and v for v in value):
            return list(value)
        raise UsageError(f"{where}: data.target must be a column name or a list of column names, got {value!r}")
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    elif kind is dict:
        if isinstance(value, dict) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                           for v in value.values()):
            return {str(k): float(v) for k, v in value.items()}
        raise UsageError(f"{where}: {key} must be a table of feature names and numbers (e.g. {{x1 = 0.0}}), "
                         f"got {value!r}")
    elif kind is list:
        if isinstance(value, list) and key in NESTED_LISTS:
            if all(isinstance(v, list) and len(v) >= 2 and all(isinstance(c, str) and c for c in v) for v in value):
                return [list(v) for v in value]
            raise UsageError(f"{where}: {key} must be a list of lists of two or more column names "
                             f"(e.g. [[\"x1\", \"x2\"]]), got {value!r}")
        if isinstance(value, list) and key in FLOAT_LISTS:
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                return [float(v) for v in value]
            raise UsageError(f"{where}: {key} must be a list of numbers, got {value!r}")
        if isinstance(value, list) and key in INT_LISTS:
            if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                return list(value)
            raise UsageError(f"{where}: {key} must be a list of integers, got {value!r}")
        if isinstance(value, list):
            return [str(v) for v in value]
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "a table"}
    raise UsageError(f"{where}: {key} must be {names[kind]}, got {value!r}")


def validate(cfg: Config, sources: dict[str, str]) -> None:
    """Every value checked by :mod:`torch_logreg.arguments` (the checks the library applies to
    the same values), each mistake one UsageError naming where the value came from."""

    def check(key: str, fn, *args, **kwargs) -> None:
        section, name = key.split(".")
        try:
            fn(key, getattr(getattr(cfg, section), name), *args, **kwargs)
        except ValueError as exc:
            raise UsageError(f"{sources.get(key, 'config')}: {exc}") from None

    for key, (low, high) in RANGES.items():
        integer = _field_types(key.split(".")[0])[key.split(".")[1]] is int
        check(key, arguments.number, low=None if low is None else (low[0] if isinstance(low, list) else low),
              low_open=isinstance(low, list), high=None if high is None else (high[0] if isinstance(high, list) else high),
              high_open=isinstance(high, list), integer=integer)
    for key, options in CHOICES.items():
        if key != "data.name" or not cfg.data.path.strip():
            check(key, arguments.choice, options)
    _validate_model(cfg, sources)
    _validate_sizes(cfg, sources)
    # "--set data.path=$DATA" with $DATA unset would silently mean the default data set (in a file,
    # path = "" is how a saved config.toml says "the built-in data set")
    if sources.get("data.path", "").startswith("--set") and not cfg.data.path.strip():
        raise UsageError(f"{sources['data.path']}: data.path is empty; leave it out to use data.name "
                         f"({cfg.data.name!r}), or give a file")
    if cfg.data.path.strip() and cfg.data.name in ("", *DATASETS):  # a built-in set's name never names a file
        cfg.data.name = Path(cfg.data.path.strip()).stem or cfg.data.name
    _validate_update_rule(cfg, sources)
    where = sources.get("data.test_fraction", sources.get("data.val_fraction", "config"))
    if cfg.data.val_fraction + cfg.data.test_fraction >= 1.0:
        raise UsageError(
            f"{where}: data.val_fraction + data.test_fraction must be < 1 "
            f"(got {cfg.data.val_fraction} + {cfg.data.test_fraction}); nothing would be left to train on"
        )
    if cfg.train.l1 > 0 and cfg.train.solver not in L1_SOLVERS + L1_LOOP_SOLVERS:
        where = sources.get("train.l1", "config")
        raise UsageError(f"{where}: train.l1 = {cfg.train.l1} needs train.solver in {list(L1_SOLVERS + L1_LOOP_SOLVERS)}; "
                         f"train.solver is {cfg.train.solver!r}")
    if cfg.train.class_weight and target_is_real(cfg.model):
        raise UsageError(f"{sources.get('train.class_weight', 'config')}: train.class_weight needs classes; "
                         f"this model ({cfg.model.kind}) predicts real values")
    if isinstance(cfg.data.target, list):
        where = sources.get("data.target", "config")
        if cfg.model.kind != "multilabel":
            raise UsageError(f"{where}: data.target as a list of columns is for model.kind = 'multilabel' (one sigmoid "
                             f"per column); model.kind is {cfg.model.kind!r}")
        if cfg.train.class_weight:
            raise UsageError(f"{where}: train.class_weight needs one class a row; data.target lists several columns")
    check("train.device", arguments.device_name)
    if cfg.train.dtype == "float16" and cfg.train.device == "cpu":  # on a machine without CUDA: when training starts
        from ..devices import FLOAT16_CUDA_ONLY

        raise UsageError(f"{sources.get('train.dtype', 'config')}: train.{FLOAT16_CUDA_ONLY}")
    _validate_coefficients(cfg, sources)
    _validate_offset(cfg, sources)


def _validate_offset(cfg: Config, sources: dict[str, str]) -> None:
    """data.offset: a column of a file, taken by the loop (any model) or, among the exact solvers, by
    newton and cd on a binary model (:mod:`torch_logreg.solvers.glm`)."""
    if not cfg.data.offset:
        return
    where = sources.get("data.offset", "config")
    if not cfg.data.path.strip():
        raise UsageError(f"{where}: data.offset names a column of a CSV or Parquet file (data.path); the built-in "
                         f"data set {cfg.data.name!r} has none")
    t = cfg.train
    if t.solver in EXACT_SOLVERS and (t.solver not in ("newton", "cd") or cfg.model.kind != "logistic"):
        raise UsageError(f"{where}: data.offset is taken by the loop's update rules and, among the exact solvers, by "
                         f"train.solver = 'newton' or 'cd' on a binary model (model.kind = 'logistic'); this config has "
                         f"train.solver = {t.solver!r}, model.kind = {cfg.model.kind!r}")


def _validate_coefficients(cfg: Config, sources: dict[str, str]) -> None:
    """train.penalty_factor, train.lower_bounds, train.upper_bounds: the combinations refused before
    any data is read (the names are checked against the features once the data is read:
    :func:`.fitting.coefficient_options`). They are terms of the exact binary solve of
    :mod:`torch_logreg.solvers.glm`, which newton and cd run."""
    t = cfg.train
    given = [k for k in COEFFICIENT_TABLES if getattr(t, k.split(".")[1])]
    if not given:
        return
    key = given[0]
    where = sources.get(key, "config")
    if t.solver not in ("newton", "cd"):
        raise UsageError(f"{where}: {key} is honoured by train.solver = 'newton' or 'cd' (the exact solvers with "
                         f"per-coefficient terms); train.solver is {t.solver!r}")
    if cfg.model.kind != "logistic":
        raise UsageError(f"{where}: {key} applies to a binary model (model.kind = 'logistic'); model.kind is "
                         f"{cfg.model.kind!r}")
    for k in given:
        for name, v in getattr(t, k.split(".")[1]).items():
            bad = v != v or (k == "train.penalty_factor" and not (0 <= v < float("inf")))
            if bad:
                need = "a finite number >= 0" if k == "train.penalty_factor" else "a number (inf and -inf allowed)"
                raise UsageError(f"{sources.get(k, 'config')}: {k}[{name!r}] is {v!r}; each value must be {need}")
    for name, low in t.lower_bounds.items():
        high = t.upper_bounds.get(name, float("inf"))
        if low > high:
            raise UsageError(f"{sources.get('train.lower_bounds', 'config')}: train.lower_bounds[{name!r}] = {low:g} "
                             f"exceeds train.upper_bounds[{name!r}] = {high:g}")


def target_is_real(model_cfg: ModelConfig) -> bool:
    """Whether the target is read as real values (linear regression, an MLP with an identity
    output) rather than class labels."""
    return model_cfg.kind == "linear" or (model_cfg.kind == "mlp" and model_cfg.link == "identity")


def _validate_model(cfg: Config, sources: dict[str, str]) -> None:
    m, where = cfg.model, sources.get("model.kind", "config")
    if m.kind == "mlp":
        if not m.hidden:
            raise UsageError(f"{sources.get('model.hidden', where)}: model.kind = 'mlp' needs model.hidden, the hidden "
                             "widths (e.g. [16] or [16, 16])")
        for width in m.hidden:
            try:
                arguments.number("each width in model.hidden", width, low=1, integer=True)
            except ValueError as exc:
                raise UsageError(f"{sources.get('model.hidden', where)}: {exc}") from None
        if cfg.train.dtype in ("bfloat16", "float16"):
            raise UsageError(f"{sources.get('train.dtype', where)}: train.dtype = {cfg.train.dtype!r} computes a single "
                             "linear layer's products under autocast; an MLP trains in float32 or float64")
        if cfg.train.solver in ("newton", "proximal", "cd"):
            raise UsageError(f"{sources.get('train.solver', where)}: train.solver = {cfg.train.solver!r} needs a model "
                             "without hidden layers; an MLP trains with lbfgs or the loop "
                             f"({', '.join(LOOP_SOLVERS)})")
        if (m.dropout or m.batch_norm) and cfg.train.solver not in LOOP_SOLVERS:
            key = "model.dropout" if m.dropout else "model.batch_norm"
            raise UsageError(f"{sources.get(key, where)}: {key} trains with the loop's update rules "
                             f"({', '.join(LOOP_SOLVERS)}), which switch between training and evaluation mode; "
                             f"train.solver is {cfg.train.solver!r}")
        return
    for key, default in (("hidden", []), ("activation", "tanh"), ("link", "auto"), ("init", "auto"),
                         ("dropout", 0.0), ("batch_norm", False)):
        if getattr(m, key) != default:
            raise UsageError(f"{sources.get(f'model.{key}', where)}: model.{key} applies to model.kind = 'mlp'; "
                             f"model.kind is {m.kind!r}")


def _validate_sizes(cfg: Config, sources: dict[str, str]) -> None:
    """The size the config alone implies (an MLP's hidden widths), checked against the machine's
    memory (:mod:`torch_logreg.memory`) before any data is read; those the data implies (its width,
    hashed features, newton's Hessian on them) once it is read (:func:`.fitting.check_sizes`)."""
    from .. import memory

    itemsize = 8 if cfg.train.dtype == "float64" else 4
    m = cfg.model
    if m.kind == "mlp":
        params = memory.mlp_parameters(1, m.hidden, 1, m.bias)
        try:
            memory.check(memory.model_bytes(0, params, itemsize),
                         f"model.hidden = {m.hidden} ({params:,} parameters and more)", "use smaller widths")
        except memory.MemoryBoundError as exc:
            raise memory.MemoryBoundError(f"{sources.get('model.hidden', 'config')}: {exc}") from None


def update_rule_options(t: TrainConfig) -> dict:
    """The update rule's hyper-parameters as the loop takes them (``eps < 0``: the rule's default)."""
    return {"momentum": t.momentum, "betas": tuple(t.betas), "eps": t.eps if t.eps >= 0 else None,
            "alpha": t.alpha, "weight_decay": t.weight_decay}


def schedule_options(t: TrainConfig) -> dict:
    return {"schedule": t.schedule, "step_size": t.step_size, "gamma": t.gamma, "warmup_epochs": t.warmup_epochs,
            "warmup_start_factor": t.warmup_start_factor, "factor": t.factor, "plateau_patience": t.plateau_patience,
            "threshold": t.threshold, "cooldown": t.cooldown, "min_lr": t.min_lr}


def _validate_update_rule(cfg: Config, sources: dict[str, str]) -> None:
    """The loop's update rule and schedule, checked as the loop will check them: a hyper-parameter
    the rule does not take (e.g. train.betas with gd) is a mistake, not ignored."""
    from .. import optimizers

    t = cfg.train
    if t.solver not in LOOP_SOLVERS:
        if t.dtype in ("bfloat16", "float16"):
            raise UsageError(f"{sources.get('train.dtype', 'config')}: train.dtype = {t.dtype!r} is for the loop's "
                             f"update rules; train.solver = {t.solver!r} needs float32 or float64")
        return
    where = sources.get("train.solver", "config")
    try:
        optimizers.make(t.solver, {}, **update_rule_options(t))
        Schedule(t.schedule, epochs=t.epochs, step_size=t.step_size, gamma=t.gamma, warmup_epochs=t.warmup_epochs,
                 warmup_start_factor=t.warmup_start_factor).check_rate(t.lr)
    except ValueError as exc:
        # name where the offending value was set (e.g. momentum in the file), else where the solver was
        # (the setting the message starts with, else one it names)
        text = str(exc)
        named = sorted((k for k in sources if k.startswith("train.") and k != "train.solver" and k.split(".")[1] in text),
                       key=lambda k: not text.startswith(k.split(".")[1]))
        raise UsageError(f"{sources[named[0]] if named else where}: train.{exc}") from None


def _line_of(text: str, section: str, name: str) -> int | None:
    """1-based line of ``name = ...`` inside ``[section]`` of a TOML text, for error messages."""
    current = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("["):
            current = stripped.strip("[]").strip()
        elif current == section and stripped.split("=", 1)[0].strip() == name:
            return number
    return None


def set_value(cfg: Config, key: str, value, where: str) -> None:
    parts = key.split(".")
    if len(parts) != 2:
        raise UsageError(f"{where}: keys look like section.name (e.g. train.lr), got {key!r}")
    section, name = parts
    if section not in SECTIONS:
        raise UsageError(f"{where}: unknown section [{section}]{_suggest(section, SECTIONS)}")
    types = _field_types(section)
    if name not in types:
        raise UsageError(f"{where}: unknown key {key!r}{_suggest(name, types)}")
    setattr(getattr(cfg, section), name, _coerce(key, value, types[name], where))


def parse_value(text: str):
    """``--set`` values are TOML values; bare words are taken as strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the TOML file at ``path`` (if any), then ``section.key=value`` overrides."""
    cfg = Config()
    sources: dict[str, str] = {}
    if path is not None:
        path = Path(path)
        content, _ = read_bytes(path, CONFIG_MAX_BYTES, "config file", None)
        try:
            text = content.decode("utf-8-sig")  # a byte-order mark is accepted, as for CSV files
        except UnicodeDecodeError as exc:
            line = content[: exc.start].count(b"\n") + 1
            raise UsageError(f"{path}, line {line}: byte {content[exc.start]:#04x} is not UTF-8 text; save the file "
                             "as UTF-8") from None
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"{path}: not valid TOML: {exc}") from None
        for section, body in raw.items():
            if section not in SECTIONS:
                raise UsageError(f"{path}: unknown section [{section}]{_suggest(section, SECTIONS)}")
            if not isinstance(body, dict):
                raise UsageError(f"{path}: [{section}] must be a table, got {body!r}")
            for name, value in body.items():
                line = _line_of(text, section, name)
                where = f"{path}, line {line}" if line else str(path)
                set_value(cfg, f"{section}.{name}", value, where)
                sources[f"{section}.{name}"] = where
    sources.update(_set_items(cfg, overrides))
    validate(cfg, sources)
    return cfg


def _set_items(cfg: Config, items, allowed: tuple[str, ...] | None = None) -> dict[str, str]:
    """Apply ``--set key=value`` items to ``cfg``; returns key -> where it was set."""
    where = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"--set expects key=value (e.g. train.lr=0.05), got {item!r}")
        key, _, text = item.partition("=")
        key = key.strip()
        if allowed is not None and key not in allowed:
            raise UsageError(f"--set {item}: {key} cannot change in a run that has started; "
                             f"these can: {', '.join(allowed)}")
        set_value(cfg, key, parse_value(text.strip()), f"--set {item}")
        where[key] = f"--set {item}"
    return where


def apply_overrides(cfg: Config, items, allowed: tuple[str, ...] | None = None) -> list[str]:
    """``--set`` items applied to an existing ``cfg`` (only keys in ``allowed``, when given) and
    validated; returns the keys whose value changed."""
    before = cfg.to_dict()
    where = _set_items(cfg, items, allowed)
    validate(cfg, where)
    after = cfg.to_dict()
    return [f"{s}.{k}" for s, body in after.items() for k, v in body.items() if before[s][k] != v]


def config_from_dict(d: dict) -> Config:
    """Rebuild a Config from :meth:`Config.to_dict` output (as saved in checkpoints)."""
    cfg = Config()
    for section, body in d.items():
        for name, value in body.items():
            set_value(cfg, f"{section}.{name}", value, "saved config")
    validate(cfg, {})
    return cfg


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):  # an inline table, its keys quoted (a feature name may hold "=" or "*")
        return "{" + ", ".join(f"{_toml_value(str(k))} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {v!r} as TOML")


def dumps_toml(d: dict) -> str:
    """Write a two-level dict of plain values as TOML (tomllib reads but does not write)."""
    out = []
    for section, body in d.items():
        out.append(f"[{section}]")
        out.extend(f"{k} = {_toml_value(v)}" for k, v in body.items())
        out.append("")
    return "\n".join(out)
