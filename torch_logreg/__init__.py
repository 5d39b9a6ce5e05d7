"""torch_logreg: logistic regression in PyTorch, trained by a hand-written update loop.

The layering runs one way: :mod:`functional` (maths) -> :mod:`layers` (manual backward) ->
:mod:`models` -> :mod:`train` (the loop) and :mod:`solvers` (Newton, L-BFGS);
:mod:`gradients` holds the references the manual gradient is checked against;
:mod:`inference` and :mod:`estimator` explain fits and plug them into scikit-learn;
:mod:`app` and :mod:`cli` are the training application.
"""

from .devices import resolve_device, resolve_dtype
from .distributed import DistributedTrainer, fit_distributed, init_distributed, is_rank0
from .estimator import InferenceUnavailable, LogisticRegressionClassifier
from .gradients import GradientReport, ManualFunction, check_gradients, compare_gradients
from .inference import InferenceResult, PerfectSeparationError, Separation, SeparationWarning, find_separation, infer
from .layers import Linear, ReLU, Sigmoid, Tanh
from .model_selection import best_row, cross_validate_grid, format_table
from .models import MLP, LinearRegression, LogisticRegression, SoftmaxRegression, StackedModel
from .solvers import ConvergenceWarning, SolverResult, fit_exact
from .streaming import StreamingTrainer, fit_streaming
from .train import Callback, GradientCheckFailed, History, Trainer, TrainingDiverged, TrainState, fit

__version__ = "0.1.0"

__all__ = [
    "Callback",
    "ConvergenceWarning",
    "DistributedTrainer",
    "GradientCheckFailed",
    "GradientReport",
    "History",
    "InferenceResult",
    "InferenceUnavailable",
    "Linear",
    "LinearRegression",
    "LogisticRegression",
    "LogisticRegressionClassifier",
    "MLP",
    "ManualFunction",
    "PerfectSeparationError",
    "ReLU",
    "Separation",
    "SeparationWarning",
    "Sigmoid",
    "SoftmaxRegression",
    "SolverResult",
    "StackedModel",
    "StreamingTrainer",
    "Tanh",
    "TrainState",
    "Trainer",
    "TrainingDiverged",
    "best_row",
    "check_gradients",
    "compare_gradients",
    "cross_validate_grid",
    "find_separation",
    "fit",
    "fit_distributed",
    "fit_exact",
    "fit_streaming",
    "format_table",
    "infer",
    "init_distributed",
    "is_rank0",
    "resolve_device",
    "resolve_dtype",
]
