"""torch_logreg: logistic regression in PyTorch, trained by a hand-written update loop.

The layers, each importing only those above it in this list:

    functional, layers, models, penalty, gradients,   the core: maths, manual backward, models,
      validation, devices, errors, registry             the references the gradients are checked by
    steps/       one batch's objective and gradient: reference, feature-major, batch, fused
                 (numba, Triton), CUDA graph; select.py chooses
    train.py     the hand-written loop, Trainer(model, TrainingData, LoopConfig); its stopping
                 rules in stopping.py (streaming.py, distributed.py: the same loop on files, on
                 several processes)
    solvers/     exact optima: Newton, proximal Newton, L-BFGS, proximal gradient (FISTA); theta
                 helpers; separation; dispatch.py, which solver runs for a name and a penalty
    inference/   standard errors and tests of unpenalised fits: covariances, results, margins,
                 constraints
    path.py      regularization paths: warm-started penalties, k-fold scores, the refit
    estimators/  the scikit-learn wing: the estimator and the cross-validation engine
    app/         the training application: configs, data files, runs, TensorBoard, the CLI

The core imports neither scikit-learn nor the app. ``import torch_logreg`` itself imports
nothing heavy: each public name below loads its module on first use.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: public name -> the module that defines it
_PUBLIC = {
    "resolve_device": "devices", "resolve_dtype": "devices",
    "DistributedTrainer": "distributed", "fit_distributed": "distributed", "init_distributed": "distributed",
    "is_rank0": "distributed",
    "InferenceUnavailable": "estimators.estimator", "LogisticRegressionClassifier": "estimators.estimator",
    "LogisticRegressionCVClassifier": "estimators.cv_estimator",
    "best_row": "estimators.model_selection", "cross_validate_grid": "estimators.model_selection",
    "format_table": "estimators.model_selection",
    "GradientReport": "gradients", "ManualFunction": "gradients", "check_gradients": "gradients",
    "compare_gradients": "gradients",
    "CollinearityWarning": "inference", "InferenceResult": "inference", "infer": "inference",
    "UsageError": "errors",
    "PerfectSeparationError": "solvers.separation", "Separation": "solvers.separation",
    "SeparationWarning": "solvers.separation", "find_separation": "solvers.separation",
    "BatchNorm1d": "layers", "Dropout": "layers", "Linear": "layers", "ReLU": "layers", "Sigmoid": "layers",
    "Tanh": "layers",
    "RegularizationPath": "path", "regularization_path": "path",
    "MLP": "models", "LinearRegression": "models", "LogisticRegression": "models", "SoftmaxRegression": "models",
    "StackedModel": "models",
    "ConvergenceWarning": "solvers", "SolverResult": "solvers", "fit_exact": "solvers",
    "StreamingTrainer": "streaming", "fit_streaming": "streaming",
    "Callback": "train", "GradientCheckFailed": "train", "History": "train", "LoopConfig": "train", "Trainer": "train",
    "TrainingData": "train", "TrainingDiverged": "train", "TrainState": "train", "fit": "train",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'torch_logreg' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
