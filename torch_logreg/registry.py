"""Solver names, in one place. A new solver is a line here plus its own file.

``LOOP_SOLVERS`` are the update rules of the hand-written loop (``train.py``, written out in
``optimizers/``);
``EXACT_SOLVERS`` reach the optimum from analytic derivatives (``solvers/``); ``L1_SOLVERS``
can minimise an L1 term.
"""

#: the loop's update rules: name -> "module.Class" in torch_logreg/optimizers/
OPTIMIZERS = {
    "gd": "sgd.GD",
    "momentum": "sgd.Momentum",
    "nesterov": "sgd.Momentum",
    "adagrad": "adagrad.Adagrad",
    "rmsprop": "rmsprop.RMSprop",
    "adam": "adam.Adam",
    "adamw": "adam.AdamW",
}
LOOP_SOLVERS = tuple(OPTIMIZERS)
EXACT_SOLVERS = ("newton", "lbfgs", "proximal", "cd")
L1_SOLVERS = ("newton", "proximal", "cd")
#: the loop's update rules that take an L1 penalty: plain gradient descent with a proximal step
#: after each update (ISTA on a full batch; a momentum buffer would carry the thresholded
#: coordinates' gradient past the threshold, so the accelerated version is the exact "proximal")
L1_LOOP_SOLVERS = ("gd",)
SOLVERS = LOOP_SOLVERS + EXACT_SOLVERS

#: the steps a run can ask for (``train.step``, ``Trainer(step=...)``; see ``steps/select.py``):
#: "rule" takes the fixed rule table's step, and the others force that step (each a file in steps/;
#: "blocked", a step no longer kept, and "auto", which measured the steps that apply, are read as
#: "rule" with a warning, so that configs naming them still run)
STEPS = ("auto", "rule", "reference", "feature_major", "row_major", "blocked", "fused")
