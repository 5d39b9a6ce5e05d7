"""The ``torch-logreg`` command line: train, resume, evaluate, predict, sample, export, gradcheck,
cv and path.

Every user mistake prints one sentence and exits with status 2, without a traceback
(set TORCH_LOGREG_DEBUG=1 to see one). Ctrl-C during training saves a checkpoint and exits
with status 130 (SIGTERM likewise, with 143).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from ..errors import UsageError
from ..registry import EXACT_SOLVERS

DEFAULT_CONFIG = "breast_cancer.toml"
PER_CLASS_HELP = "print precision, recall and F1 of each class whatever their number (default: up to 10 classes)"
QUIET_HELP = "no progress output (default: a progress bar on a terminal, plain lines otherwise)"


def _configs_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "configs"


def _load(args):
    """The config and the run's name: the config file's name, or the data's (``data.name``: a
    built-in set, or a file's name without its suffix) when ``--set`` chose other data."""
    from .config import load_config

    path = args.config
    if path is None:
        shipped = _configs_dir() / DEFAULT_CONFIG
        path = shipped if shipped.exists() else None
    cfg = load_config(path, args.set or [])
    data_set = any(item.partition("=")[0].strip() in ("data.path", "data.name") for item in args.set or [])
    return cfg, (Path(path).stem if path and not data_set else cfg.data.name)


#: a per-class table is printed without --per-class up to this many classes
PER_CLASS_MAX = 10


def _print_metrics(metrics: dict, per_class: bool = False) -> None:
    """The splits' metrics as a table, then precision, recall and F1 per class (for up to
    :data:`PER_CLASS_MAX` classes, or any number with ``per_class``)."""
    from .metrics import per_class_table, summary_table

    table = summary_table(metrics)
    if table:
        print(table)
    n_classes = max((sum(k.startswith("f1[") for k in v) for v in metrics.values() if isinstance(v, dict)), default=0)
    if n_classes and (per_class or n_classes <= PER_CLASS_MAX):
        print(per_class_table(metrics))
    elif n_classes:
        print(f"({n_classes} classes: --per-class prints precision, recall and F1 of each; metrics.json holds them)")


def cmd_train(args) -> int:
    from . import commands

    cfg, name = _load(args)
    if args.device:
        cfg.train.device = args.device
    result = commands.train(cfg, run_dir=args.run_dir, quiet=args.quiet, name=name)
    return _finish(result, args.per_class)


def _finish(result, per_class: bool = False) -> int:
    if result.run_dir is None:  # not rank 0 of a multi-process run: rank 0 reports
        return 128 + int(result.signal) if result.interrupted else 0
    if result.interrupted:
        print(f"interrupted at epoch {result.metrics['epochs']}; checkpoint saved. "
              f"Continue with: torch-logreg resume --run {result.run_dir}", file=sys.stderr)
        return 128 + int(result.signal)  # 130 for Ctrl-C, 143 for SIGTERM
    m = result.metrics
    unit = "iterations" if m.get("solver") in EXACT_SOLVERS else "epochs"
    print(f"run {result.run_dir}: {m['epochs']} {unit}, stopped: {m['stop_reason']}, device {m['device']}")
    _print_metrics(m, per_class)
    return 0


def cmd_resume(args) -> int:
    from . import commands

    return _finish(commands.resume(args.run, quiet=args.quiet, device=args.device, overrides=args.set,
                                   allow_changed_data=args.allow_changed_data), args.per_class)


def cmd_evaluate(args) -> int:
    from . import commands

    metrics = commands.evaluate(args.run, args.data, allow_changed_data=args.allow_changed_data)
    if args.json:
        from .files import json_text

        print(json_text(metrics), end="")
    else:
        _print_metrics(metrics, args.per_class)
    return 0


def cmd_predict(args) -> int:
    from . import commands

    keep = [c.strip() for c in args.keep.split(",") if c.strip()] if args.keep else []
    n = commands.predict(args.run, args.input, args.output, force=args.force,
                         allow_changed_data=args.allow_changed_data, keep=keep, threshold=args.threshold,
                         interval=args.interval)
    print(f"wrote {n} predictions to {args.output}")
    return 0


def cmd_sample(args) -> int:
    from .sample import sample

    n = sample(args.run, args.output, rows=args.rows, split=args.split, force=args.force)
    print(f"wrote {n} rows of the {args.split} split to {args.output}")
    return 0


def cmd_export(args) -> int:
    from . import export

    meta = export.export(args.run, args.format, args.output, force=args.force)
    print(f"wrote {args.format} model to {args.output}")
    print(f"input  {meta['input']!r}: {meta['input_dtype']} (N, {len(meta['columns'])}), columns "
          + ", ".join(meta["columns"]))
    for column, categories in meta["categorical"].items():
        print(f"  {column}: category index " + ", ".join(f"{i} = {c}" for i, c in enumerate(categories)))
    if meta["offset"]:
        print(f"input  'offset': float64 (N,), the column {meta['offset']!r}, added to each logit")
    print(f"output {meta['output']!r}: {meta['dtype']} (N, {len(meta['outputs'])}), columns " + ", ".join(meta["outputs"]))
    return 0


EXPORT_DESCRIPTION = (
    "Write the run's model as one file that takes the raw feature columns and returns what predict's "
    "probability columns hold: binary P(class 1) as (N, 1), K classes (N, K), regression the predictions. "
    "The input is a float64 matrix (N, C) of the training feature columns in training order: a numeric column "
    "as its value, a categorical column as the 0-based index of its category in the run's saved category list "
    "(printed here). The model itself one-hot encodes categories, appends the radius feature (data.add_radius) "
    "and applies the saved standardizer; a run trained with data.offset takes that column as a second input, "
    "offset (N,). Formats: onnx (torch.onnx dynamo exporter, needs the onnx and onnxscript "
    "packages: pip install -e '.[onnx]'; dynamic batch dimension), torchscript (torch.jit.load), state_dict "
    "(a weights_only torch.save dict; torch_logreg.app.export.load_state_dict_export rebuilds it). "
    "The run directory is only read."
)


def cmd_gradcheck(args) -> int:
    from . import commands

    cfg, _ = _load(args)
    report = commands.gradcheck(cfg)
    print(report)
    return 0 if report.passed else 1


def cmd_cv(args) -> int:
    from . import cv

    cfg, name = _load(args)
    if args.device:
        cfg.train.device = args.device
    if args.random:
        if args.grid:
            raise UsageError("--random draws from --space ranges; leave --grid out (or run the grid without --random)")
        space = cv.parse_space(args.space, cfg)
        rows, path = cv.cross_validate(cfg, space, folds=args.folds, run_dir=args.run_dir, name=name, quiet=args.quiet,
                                       draws=cv.draw(space, args.random, cfg.train.seed, cfg))
    else:
        if args.space:
            raise UsageError("--space gives the ranges of --random N; add --random N, or give values with --grid")
        grid = cv.parse_grid(args.grid, cfg)
        rows, path = cv.cross_validate(cfg, grid, folds=args.folds, run_dir=args.run_dir, name=name,
                                       quiet=args.quiet)
    print(cv.table(rows))
    print(f"results in {path} (results.json, TensorBoard hparams)")
    return 0


def cmd_path(args) -> int:
    from . import regpath

    cfg, name = _load(args)
    if args.device:
        cfg.train.device = args.device
    result, path, refit = regpath.run_path(cfg, folds=args.folds, n_penalties=args.n_penalties, l1_ratio=args.l1_ratio,
                                    min_ratio=args.min_ratio, choice=args.choice, scoring=args.scoring,
                                    run_dir=args.run_dir, name=name, quiet=args.quiet)
    print(result.format())
    print(f"chosen penalty {result.penalty:.6g} ({args.choice}); table in {path / 'path.csv'}")
    return _finish(refit, args.per_class)


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: ...)" where there is a value to show; options whose default is decided
    at run time (None) or is a plain switch say so in their own help text."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default == []:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    fmt = _DefaultsFormatter
    parser = argparse.ArgumentParser(
        prog="torch-logreg",
        description="Logistic regression trained by a hand-written loop, logged to TensorBoard.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def config_args(p):
        p.add_argument("--config", metavar="PATH", default=None,
                       help=f"TOML config (default: configs/{DEFAULT_CONFIG}, binary logistic regression on breast cancer)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                       help="override a config value, e.g. --set train.lr=0.05 (repeatable; default: none)")

    p = sub.add_parser("train", help="train a model from a config", formatter_class=fmt,
                       description="Train from a config; prints the final metrics and writes a new run directory.")
    config_args(p)
    p.add_argument("--run-dir", metavar="DIR", default=None,
                   help="where to write the run (default: a new directory under log.dir named after the config and time)")
    p.add_argument("--device", default=None, help="override train.device: auto, cpu, cuda or cuda:N (default: the config's)")
    p.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    p.add_argument("--per-class", action="store_true", help=PER_CLASS_HELP)
    p.set_defaults(func=cmd_train)

    def allow_changed(p, what):
        p.add_argument("--allow-changed-data", action="store_true",
                       help=f"go on when {what} (default: refuse, naming what changed)")

    p = sub.add_parser("resume", help="continue an interrupted run exactly", formatter_class=fmt,
                       description="Continue a run from its checkpoint on the same data and config. --set may change what "
                                   "does not define the run: the epoch limit, the device, the stopping and logging "
                                   "settings (e.g. --set train.epochs=500 continues a run that stopped at its epoch "
                                   "limit; other keys are refused with the list); config.toml is updated to match.")
    p.add_argument("--run", metavar="DIR", required=True, help="the run directory")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="change a value the run may change (repeatable; default: none)")
    allow_changed(p, "the data file differs from the one the run was trained on")
    p.add_argument("--device", default=None, help="override the saved train.device (default: the saved one)")
    p.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    p.add_argument("--per-class", action="store_true", help=PER_CLASS_HELP)
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("evaluate", help="metrics of a trained run", formatter_class=fmt)
    p.add_argument("--run", metavar="DIR", required=True, help="the run directory")
    p.add_argument("--data", metavar="PATH", default=None,
                   help="a CSV/.npy/.npz file with the target (default: the run's own train/val/test splits)")
    p.add_argument("--json", action="store_true", help="print JSON (default: a text table)")
    p.add_argument("--per-class", action="store_true", help=PER_CLASS_HELP)
    allow_changed(p, "the run's data file or config.toml changed since training")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="write probabilities and labels for new rows", formatter_class=fmt)
    p.add_argument("--run", metavar="DIR", required=True, help="the run directory")
    p.add_argument("--input", metavar="PATH", required=True, help="CSV with the training feature columns (or .npy/.npz)")
    p.add_argument("--output", metavar="PATH", required=True,
                   help="file to write: .csv, or .parquet (needs pyarrow); columns: the --keep columns, p_<class> for "
                        "each class and label (regression: prediction)")
    p.add_argument("--keep", metavar="COL,...", default=None,
                   help="CSV input columns to copy to the output as written, e.g. an id (default: none)")
    p.add_argument("--threshold", type=float, default=None,
                   help="binary classifiers: the label is the second class when its probability is at least this "
                        "(default: 0.5)")
    p.add_argument("--interval", type=float, default=None, metavar="LEVEL",
                   help="also write p_<class>_lower and p_<class>_upper, the confidence interval at this level (e.g. "
                        "0.95) from the covariance of an unpenalised logistic or softmax run (default: none)")
    p.add_argument("--force", action="store_true", help="replace an existing file (never the input or a file of the run)")
    allow_changed(p, "the run's config.toml changed since training")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("sample", help="write rows of a run's data as a CSV that predict and evaluate --data take",
                       formatter_class=fmt,
                       description="Write the first rows of a split of the run's data as a CSV of raw columns: the "
                                   "training feature columns, then the target column (predict ignores it; evaluate "
                                   "--data scores it). For runs whose features are the raw numeric columns (not "
                                   "one-hot, radius, hashed or sparse ones). The run directory is only read.")
    p.add_argument("--run", metavar="DIR", required=True, help="the run directory")
    p.add_argument("--output", metavar="PATH", required=True, help="the .csv file to write (its directory must exist)")
    p.add_argument("--rows", type=int, default=10, help="how many rows (fewer if the split is smaller)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="the split the rows come from")
    p.add_argument("--force", action="store_true", help="replace an existing file (never a file of the run)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("export", help="write the model, with its input preparation, as ONNX, TorchScript or a state_dict",
                       formatter_class=fmt, description=EXPORT_DESCRIPTION)
    p.add_argument("--run", metavar="DIR", required=True, help="the run directory (its checkpoint.pt, as predict uses)")
    p.add_argument("--format", metavar="FORMAT", required=True, help="onnx, torchscript or state_dict")
    p.add_argument("--output", metavar="PATH", required=True,
                   help="file to write (its directory must exist)")
    p.add_argument("--force", action="store_true", help="replace an existing file (never a file of the run)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("cv", help="k-fold cross-validation over config values", formatter_class=fmt,
                       description="Stratified k-fold search over config values on the rows outside the test "
                                   "split, e.g. --grid train.l2=0,0.01,0.1 --grid train.lr=0.1,0.5.")
    config_args(p)
    p.add_argument("--grid", action="append", metavar="KEY=V1,V2", default=[],
                   help="values to try for a config key (repeatable; every combination is tried; required "
                        "unless --random)")
    p.add_argument("--random", type=int, default=0, metavar="N",
                   help="random search: N combinations drawn from the --space ranges, seeded by train.seed "
                        "(default 0: the grid)")
    p.add_argument("--space", action="append", metavar="KEY=SCALE:LO:HI", default=[],
                   help="a range to draw a config key from: log:1e-4:1e-1 (log-uniform), uniform:0:0.5, "
                        "int:8:128 (integers, ends included); repeatable, with --random")
    p.add_argument("--folds", type=int, default=5, help="number of folds")
    p.add_argument("--run-dir", metavar="DIR", default=None,
                   help="where to write results (default: a new cv-* directory under log.dir)")
    p.add_argument("--device", default=None, help="override train.device (default: the config's)")
    p.add_argument("--quiet", action="store_true", help="no progress lines (default: one line per combination)")
    p.set_defaults(func=cmd_cv)

    p = sub.add_parser("path", help="regularization path: k-fold scores per penalty, the best, the refit run",
                       formatter_class=fmt,
                       description="Fit a decreasing sequence of penalties with warm starts on the training split, "
                                   "score each by k-fold cross-validation, and train the refit run at the best (or "
                                   "the one-standard-error) penalty. The penalty lambda is train.l1 = lambda * "
                                   "l1_ratio and train.l2 = lambda * (1 - l1_ratio).")
    config_args(p)
    p.add_argument("--folds", type=int, default=5, help="number of folds")
    p.add_argument("--n-penalties", type=int, default=30, help="penalties on the path")
    p.add_argument("--l1-ratio", type=float, default=1.0, help="the L1 share of the penalty (0: ridge, 1: lasso)")
    p.add_argument("--min-ratio", type=float, default=1e-4,
                   help="the smallest penalty over the largest (the largest zeroes every weight)")
    p.add_argument("--choice", choices=("best", "1se"), default="best",
                   help="the refit's penalty: the best score, or the largest within one standard error of it")
    p.add_argument("--scoring", default=None,
                   help="log_loss or accuracy (classifiers), mse (linear) (default: log_loss, or mse)")
    p.add_argument("--run-dir", metavar="DIR", default=None,
                   help="where to write results (default: a new path-* directory under log.dir)")
    p.add_argument("--device", default=None, help="override train.device (default: the config's)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--per-class", action="store_true", help=PER_CLASS_HELP)
    p.set_defaults(func=cmd_path)

    p = sub.add_parser("gradcheck", help="three-way gradient check on the configured data and model", formatter_class=fmt)
    config_args(p)
    p.set_defaults(func=cmd_gradcheck)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM before training has taken the signal over (reading data, preparing): unwinds like
    Ctrl-C, so a run directory without a checkpoint is removed, and exits with 143."""


def _terminate(signum, frame):
    raise Terminated


def _thread_exception(args) -> None:
    """TensorBoard's writer thread re-raises a write error (a full disk) in the main thread, which
    reports it in one sentence; its own traceback on the way out is noise."""
    if issubclass(args.exc_type, OSError) and type(args.thread).__name__ == "_AsyncWriterThread":
        return
    _default_thread_hook(args)


_default_thread_hook = threading.excepthook


def _separate_jit_caches() -> None:
    """Under torchrun, give each rank its own numba cache folder (before numba is imported).

    The ranks of a run compile the same kernels at the same moment, and numba's on-disk cache is
    not safe for processes that write the same entries at once (a process can load another's
    half-written file and crash). Each rank's folder is reused by the next run with that rank.
    ``NUMBA_CACHE_DIR`` set by the user is left as it is."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1 or "NUMBA_CACHE_DIR" in os.environ or "numba" in sys.modules:
        return
    base = os.environ.get("TORCH_LOGREG_CACHE")
    if base is not None and not base.strip():  # no cache folder kept: a fresh folder for this process
        import tempfile

        folder = tempfile.mkdtemp(prefix="torch_logreg-numba-")
    else:
        root = Path(base).expanduser() if base else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") \
            / "torch_logreg"
        folder = str(root / f"numba-rank{os.environ.get('LOCAL_RANK', '0')}")
    os.environ["NUMBA_CACHE_DIR"] = folder


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _separate_jit_caches()
    threading.excepthook = _thread_exception
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread: leave the signal alone
        pass
    try:
        return args.func(args)
    except UsageError as exc:
        if os.environ.get("TORCH_LOGREG_DEBUG"):
            raise
        message = str(exc).replace("\r", "\\r").replace("\n", "\\n")  # one line, whatever a value held
        print(f"torch-logreg: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        term = isinstance(exc, Terminated)
        print(f"torch-logreg: {'terminated (SIGTERM)' if term else 'interrupted'}; what was written is whole (a run "
              "directory keeps its last checkpoint, one without a checkpoint is removed)", file=sys.stderr)
        return 143 if term else 130
    finally:
        threading.excepthook = _default_thread_hook
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
