"""cross_validate_grid: stratified folds (the package's one k-fold, :func:`torch_logreg.folds.kfold`), scores
equal to a hand-rolled loop, ranking, errors."""

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.metrics import log_loss
from sklearn.preprocessing import StandardScaler

from torch_logreg.estimators.estimator import LogisticRegressionClassifier
from torch_logreg.estimators.model_selection import best_row, cross_validate_grid, expand_grid, format_table
from torch_logreg.folds import stratified_folds


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def test_expand_grid_order_and_union():
    assert expand_grid({"C": [1, 2], "penalty": ["l2", "l1"]}) == [
        {"C": 1, "penalty": "l2"}, {"C": 1, "penalty": "l1"}, {"C": 2, "penalty": "l2"}, {"C": 2, "penalty": "l1"}
    ]
    assert len(expand_grid([{"C": [1]}, {"solver": ["gd"], "learning_rate": [0.1, 1.0]}])) == 3
    with pytest.raises(ValueError, match=r"param_grid\['C'\] must be a non-empty list"):
        expand_grid({"C": []})


@pytest.mark.slow
def test_scores_equal_a_hand_rolled_stratified_loop(iris):
    X, y = iris
    rows = cross_validate_grid(X, y, {"C": [0.01, 1.0], "penalty": ["l2", "l1"]}, n_splits=3, seed=1, base_params={"tol": 1e-8})
    assert [(r["C"], r["penalty"]) for r in rows] == [(0.01, "l2"), (0.01, "l1"), (1.0, "l2"), (1.0, "l1")]
    row = rows[2]
    folds = stratified_folds(y, 3, seed=1)
    expected = []
    for train, test in folds:
        # every class is represented in every held-out split
        assert set(y[test]) == {0, 1, 2}
        est = LogisticRegressionClassifier(C=1.0, tol=1e-8).fit(X[train], y[train])
        expected.append(log_loss(y[test], est.predict_proba(X[test])))
    np.testing.assert_allclose([row[f"split{i}_log_loss"] for i in range(3)], expected, rtol=1e-12)
    assert row["mean_log_loss"] == pytest.approx(np.mean(expected))
    assert sorted(r["rank"] for r in rows) == [1, 2, 3, 4]
    best = best_row(rows)
    assert best["mean_log_loss"] == min(r["mean_log_loss"] for r in rows)
    # C = 0.01 with an L1 penalty removes almost everything and predicts badly
    assert rows[1]["mean_accuracy"] < rows[2]["mean_accuracy"]
    table = format_table(rows)
    assert "mean_log_loss" in table and "split0" not in table and len(table.splitlines()) == 6


def test_learning_rate_grid_for_first_order_solvers(iris):
    X, y = iris
    rows = cross_validate_grid(
        X, y, {"solver": ["gd"], "learning_rate": [0.01, 1.0]}, n_splits=3, base_params={"max_iter": 50, "C": 1.0}
    )
    small, large = rows
    # fifty epochs at lr = 0.01 leave the model far from the optimum; lr = 1 gets close
    assert small["mean_log_loss"] > large["mean_log_loss"]
    assert small["n_convergence_warnings"] == 3 and small["rank"] == 2


def test_invalid_combinations_fail_before_fitting(iris):
    X, y = iris
    match = (r"invalid combination \{'penalty': 'l1', 'solver': 'lbfgs'\}.*"
             r"solvers that can: \['auto', 'newton', 'proximal', 'cd'\]")
    with pytest.raises(ValueError, match=match):
        cross_validate_grid(X, y, {"penalty": ["l1"], "solver": ["lbfgs"]})
    with pytest.raises(ValueError, match=r"invalid combination \{'C': 0\}: C must be a finite number > 0"):
        cross_validate_grid(X, y, {"C": [1.0, 0]})
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['lr'\]"):
        cross_validate_grid(X, y, {"lr": [0.1]})
    with pytest.raises(ValueError, match="n_splits must be an integer >= 2"):
        cross_validate_grid(X, y, {"C": [1.0]}, n_splits=1)
    with pytest.raises(ValueError, match=r"fewer than n_splits=5"):
        cross_validate_grid(X[:52], y[:52], {"C": [1.0]})
