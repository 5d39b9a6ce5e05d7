"""torch_logreg: logistic regression in PyTorch, trained by a hand-written update loop.

The layering runs one way: :mod:`functional` (maths) -> :mod:`layers` (manual backward) ->
:mod:`models` -> :mod:`train` (the loop); :mod:`gradients` holds the references the manual
gradient is checked against.
"""

from .devices import resolve_device, resolve_dtype
from .gradients import GradientReport, ManualFunction, check_gradients, compare_gradients
from .layers import Linear, ReLU, Sigmoid, Tanh
from .models import MLP, LinearRegression, LogisticRegression, SoftmaxRegression, StackedModel
from .train import Callback, GradientCheckFailed, History, Trainer, TrainingDiverged, TrainState, fit

__version__ = "0.1.0"

__all__ = [
    "Callback",
    "GradientCheckFailed",
    "GradientReport",
    "History",
    "Linear",
    "LinearRegression",
    "LogisticRegression",
    "MLP",
    "ManualFunction",
    "ReLU",
    "Sigmoid",
    "SoftmaxRegression",
    "StackedModel",
    "Tanh",
    "TrainState",
    "Trainer",
    "TrainingDiverged",
    "check_gradients",
    "compare_gradients",
    "fit",
    "resolve_device",
    "resolve_dtype",
]
