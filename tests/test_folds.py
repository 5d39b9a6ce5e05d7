"""The one k-fold partition (torch_logreg.folds.kfold): its shape and stratification, and the same folds for the same
rows and seed in every cross-validation the package has (the ``cv`` command, the regularization path, the
cross-validated classifier and cross_validate_grid)."""

import numpy as np
import pytest
from sklearn.model_selection import KFold

import torch_logreg as tl
from torch_logreg import folds as folds_lib
from torch_logreg.errors import UsageError
from torch_logreg.estimators.cv_estimator import LogisticRegressionCVClassifier
from torch_logreg.estimators.model_selection import cross_validate_grid
from torch_logreg.folds import kfold, stratified_folds

from helpers import run_cli


def labels_of(n: int = 61, seed: int = 0) -> np.ndarray:
    """Three unbalanced classes in a random order."""
    return np.random.default_rng(seed).choice(3, size=n, p=[0.5, 0.3, 0.2])


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("shuffle", [True, False])
def test_each_row_is_held_out_once_and_every_fold_holds_its_share_of_each_class(k, shuffle):
    y = labels_of()
    folds = kfold(y, k, seed=3, shuffle=shuffle)
    assert len(folds) == k
    held_out = np.concatenate([test for _, test in folds])
    np.testing.assert_array_equal(np.sort(held_out), np.arange(len(y)))
    sizes = [len(test) for _, test in folds]
    assert max(sizes) - min(sizes) <= 1
    for train, test in folds:
        assert train.dtype == test.dtype == np.int64
        np.testing.assert_array_equal(train, np.setdiff1d(np.arange(len(y)), test))
        for c in range(3):
            share = np.sum(y == c) / k
            assert np.floor(share) <= np.sum(y[test] == c) <= np.ceil(share)


def test_the_seed_decides_the_folds_and_relabelling_keeps_them():
    y = labels_of()
    same = kfold(y, 4, seed=11)
    for (a, b), (c, d) in zip(same, kfold(y, 4, seed=11)):
        assert np.array_equal(a, c) and np.array_equal(b, d)
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(same, kfold(y, 4, seed=12)))
    # class names in the same order as their indices: the same partition
    names = np.array(["ant", "bee", "cat"])[y]
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(same, kfold(names, 4, seed=11)))
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(same, stratified_folds(y, 4, seed=11)))


def test_unstratified_folds_ignore_the_labels_and_unshuffled_ones_are_kfold_blocks():
    y = labels_of()
    plain = kfold(y, 4, seed=5, stratify=False)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(plain, kfold(np.zeros(len(y)), 4, seed=5)))
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(plain, kfold(np.random.randn(len(y)), 4, seed=5,
                                                                        stratify=False)))
    blocks = kfold(y, 4, stratify=False, shuffle=False)
    for (train, test), (sk_train, sk_test) in zip(blocks, KFold(4).split(y)):
        assert np.array_equal(train, sk_train) and np.array_equal(test, sk_test)


def test_too_few_rows_is_one_clear_error():
    y = np.array([0] * 10 + [1] * 2)
    with pytest.raises(UsageError, match=r"class 1 has 2 rows, fewer than cv=3 folds: .* lower cv"):
        kfold(y, 3)
    with pytest.raises(UsageError, match=r"class 'b' has 2 rows, fewer than n_splits=3"):
        kfold(np.array(["a", "b"])[y], 3, name="n_splits")
    with pytest.raises(UsageError, match=r"class 'yes' has 2 rows, fewer than --folds=3"):
        kfold(y, 3, name="--folds", class_names=["no", "yes"])
    assert len(kfold(y, 3, stratify=False)) == 3  # unstratified, a rare label is only a value
    with pytest.raises(UsageError, match=r"cv=13 folds need at least 13 rows, got 12"):
        kfold(y, 13, stratify=False)
    with pytest.raises(UsageError, match=r"cv must be an integer >= 2, got 1"):
        kfold(y, 1)


@pytest.mark.e2e
def test_the_same_seed_gives_the_same_folds_everywhere(capsys, tmp_path, monkeypatch):
    """cv, path, the cross-validated classifier and cross_validate_grid, on the same rows with the same seed,
    hold out the same rows. The path and the classifier show their folds (``folds``, ``path_.folds``); the two
    grid searches are watched through the one function they deal their folds with."""
    rng = np.random.default_rng(0)
    n, k, seed = 90, 3, 4
    X = rng.normal(size=(n, 2))
    y = (X @ np.array([[1.0, -1.0, 0.0], [0.5, 0.5, -1.0]]) + rng.gumbel(size=(n, 3))).argmax(1)
    expected = kfold(y, k, seed=seed)

    dealt = []
    real_kfold = folds_lib.kfold

    def watched(*args, **kwargs):
        dealt.append(real_kfold(*args, **kwargs))
        return dealt[-1]

    monkeypatch.setattr(folds_lib, "kfold", watched)

    path = tl.regularization_path(X, y, kind="softmax", n_penalties=2, cv=k, seed=seed)
    names = np.array(["ant", "bee", "cat"])[y]  # the classifier's labels as names: the same folds
    classifier = LogisticRegressionCVClassifier(Cs=2, cv=k, random_state=seed).fit(X, names)
    dealt.clear()
    cross_validate_grid(X, names, {"C": [1.0]}, n_splits=k, seed=seed)
    (grid,) = dealt
    dealt.clear()
    csv = tmp_path / "d.csv"  # no validation or test split: cv's pool is every row, in the file's order
    csv.write_text("a,b,y\n" + "".join(f"{a!r},{b!r},{t}\n" for (a, b), t in zip(X.tolist(), y.tolist())))
    code, _, err = run_cli(capsys, "cv", "--quiet", "--folds", str(k), "--run-dir", tmp_path / "cv", "--grid",
                           "train.l2=0.1", *[s for kv in (f"data.path={csv}", "data.target=y", "model.kind=softmax",
                                                           "data.val_fraction=0", "data.test_fraction=0",
                                                           f"train.seed={seed}", "train.solver=newton",
                                                           "train.device=cpu") for s in ("--set", kv)])
    assert code == 0, err
    (command,) = dealt

    for used in (path.folds, classifier.path_.folds, grid, command):
        assert len(used) == k
        for (train, test), (want_train, want_test) in zip(used, expected):
            np.testing.assert_array_equal(test, want_test)
            np.testing.assert_array_equal(train, want_train)
