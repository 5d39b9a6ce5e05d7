"""Solver names, in one place. A new solver is a line here plus its own file.

``LOOP_SOLVERS`` are the update rules of the hand-written loop (``train.py``);
``EXACT_SOLVERS`` reach the optimum from analytic derivatives (``solvers/``); ``L1_SOLVERS``
can minimise an L1 term.
"""

LOOP_SOLVERS = ("gd", "momentum", "nesterov")
EXACT_SOLVERS = ("newton", "lbfgs")
L1_SOLVERS = ("newton",)
SOLVERS = LOOP_SOLVERS + EXACT_SOLVERS
