"""Data loading, splits and standardization."""

import numpy as np
import pytest
import torch

from torch_logreg.app import data as D
from torch_logreg.app.config import DataConfig
from torch_logreg.errors import UsageError


def test_standardizer_constant_column_gives_zeros_not_nan():
    X = torch.tensor([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]], dtype=torch.float64)
    s = D.Standardizer.fit(X)
    Z = s.transform(X)
    assert torch.isfinite(Z).all()
    assert torch.equal(Z[:, 1], torch.zeros(3, dtype=torch.float64))
    assert Z[:, 0].mean().abs() < 1e-15 and abs(Z[:, 0].std(unbiased=False) - 1) < 1e-15


def test_split_is_stratified_seeded_and_disjoint():
    y = torch.tensor([0] * 60 + [1] * 40)
    a = D.split_indices(y, 100, 0.2, 0.2, seed=3, stratify=True)
    b = D.split_indices(y, 100, 0.2, 0.2, seed=3, stratify=True)
    c = D.split_indices(y, 100, 0.2, 0.2, seed=4, stratify=True)
    assert all(torch.equal(x, z) for x, z in zip(a, b))
    assert not torch.equal(a[2], c[2])
    assert sorted(torch.cat(a).tolist()) == list(range(100))
    assert [len(s) for s in a] == [60, 20, 20]
    for part in a:
        assert (y[part] == 1).double().mean().item() == pytest.approx(0.4)


def test_csv_with_categorical_and_keep_classes(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,color,label\n1.5,red,0\n2,blue,1\n3,red,2\n4,green,1\n")
    cfg = DataConfig(path=str(path), target="label", categorical=["color"], keep_classes=["0", "1"])
    ds = D.load_dataset(cfg)
    assert ds.schema.feature_names == ["a", "color=blue", "color=green", "color=red"]
    assert ds.X.tolist() == [[1.5, 0, 0, 1], [2, 1, 0, 0], [4, 0, 1, 0]]
    assert list(ds.y) == ["0", "1", "1"]


@pytest.mark.parametrize(
    "text,message",
    [
        ("", "is empty"),
        ("a,b,label\n", "no data rows"),
        ("a,b,label\n1,2,0\n3,4\n", "line 3: expected 3 columns as in the header, found 2"),
        ("a,b,label\n1,,0\n", "line 2, column 'b': empty cell"),
        ("a,b,label\n1,x7,0\n", "line 2, column 'b': 'x7' is not a number"),
        ("a,b,label\n1,nan,0\n", "line 2, column 'b': 'nan' is not a finite number"),
        ("a,b,y\n1,2,0\n", "target column 'label' is not in the header (a, b, y)"),
        ("a,a,label\n1,2,0\n", "line 1: column 'a' appears twice (columns 1 and 2)"),
    ],
)
def test_csv_errors(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(UsageError) as info:
        D.load_dataset(DataConfig(path=str(path), target="label"))
    assert message in str(info.value)


def test_npy_is_memory_mapped_and_npz_read(tmp_path):
    arr = np.hstack([np.random.default_rng(0).normal(size=(20, 3)), (np.arange(20) % 2)[:, None]])
    np.save(tmp_path / "d.npy", arr)
    ds = D.load_dataset(DataConfig(path=str(tmp_path / "d.npy")))
    assert ds.X.shape == (20, 3) and np.array_equal(ds.y, arr[:, 3])
    np.savez(tmp_path / "d.npz", X=arr[:, :3], y=arr[:, 3])
    ds2 = D.load_dataset(DataConfig(path=str(tmp_path / "d.npz")))
    assert torch.equal(ds.X, ds2.X)
    np.savez(tmp_path / "bad.npz", features=arr)
    with pytest.raises(UsageError, match="arrays named 'X' and 'y'"):
        D.load_dataset(DataConfig(path=str(tmp_path / "bad.npz")))


def test_generated_sets_shapes_and_radius():
    for name, d in (("donut", 2), ("xor", 2), ("blobs", 2)):
        ds = D.load_dataset(DataConfig(name=name, n_samples=100))
        assert ds.X.shape == (100, d)
    ds = D.load_dataset(DataConfig(name="donut", n_samples=100, add_radius=True))
    assert torch.allclose(ds.X[:, 2], ds.X[:, :2].norm(dim=1))
    syn = D.load_dataset(DataConfig(name="synthetic", n_samples=5000, n_features=4), seed=1)
    assert syn.X.shape == (5000, 4) and syn.true_weights.shape == (5,)
    assert set(syn.y.unique().tolist()) == {0, 1}


def test_labels_encoded_in_sorted_order():
    y, classes = D.encode_labels(np.array(["10", "2", "2", "1"]), "softmax")
    assert classes == ["1", "2", "10"] and y.tolist() == [2, 1, 1, 0]
    y, classes = D.encode_labels(np.array([1.0, 0.0]), "logistic")
    assert classes == ["0", "1"]


def test_roc_auc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    from torch_logreg.app.metrics import roc_auc

    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=500), 1)  # many ties
    labels = (rng.random(500) < 0.3).astype(int)
    assert roc_auc(torch.from_numpy(scores), torch.from_numpy(labels)) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert np.isnan(roc_auc(torch.ones(3), torch.ones(3)))


def test_standardizer_keeps_columns_near_the_largest_float():
    """A column of values near 1e308 used to overflow to an infinite scale and be zeroed (its
    weight silently 0). Its statistics equal those of the same column divided by 1e300."""
    gen = torch.Generator().manual_seed(0)
    small = torch.randn(50, 2, generator=gen, dtype=torch.float64)
    X = torch.cat([small[:, :1] * 1e307, small[:, 1:]], dim=1)
    X[0, 0] = 1.7e308
    X[1, 0] = -1.7e308
    std = D.Standardizer.fit(X)
    assert torch.isfinite(std.mean).all() and torch.isfinite(std.scale).all()
    Z = std.transform(X)
    scaled = X.clone()
    scaled[:, 0] /= 1e300
    ref = D.Standardizer.fit(scaled).transform(scaled)
    assert torch.allclose(Z, ref, rtol=1e-12, atol=1e-12)
    ordinary = small * 3 + 7  # ordinary data: the same bits as the plain formulas
    plain = (ordinary - ordinary.mean(0)) / ordinary.std(0, unbiased=False)
    assert torch.equal(D.Standardizer.fit(ordinary).mean, ordinary.mean(0))
    assert torch.allclose(D.Standardizer.fit(ordinary).transform(ordinary), plain, rtol=1e-14, atol=1e-14)


def test_damaged_numpy_files_are_one_sentence(tmp_path):
    """A truncated .npz used to end in zipfile's traceback; a file NumPy takes for a pickle in its
    advice to load it unsafely."""
    np.savez(tmp_path / "d.npz", X=np.zeros((10, 3)), y=np.arange(10) % 2)
    data = (tmp_path / "d.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(UsageError, match=r"cut.npz is not a readable NumPy file: it is truncated or damaged"):
        D.load_dataset(DataConfig(path=str(tmp_path / "cut.npz")))
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(UsageError) as info:
        D.load_dataset(DataConfig(path=str(tmp_path / "text.npz")))
    assert "not an array saved by numpy.save" in str(info.value) and "allow_pickle" not in str(info.value)


def test_text_labels_keep_their_spelling(tmp_path):
    """"01" and "02" used to be renamed "1" and "2", and "2" and "02" merged into one class."""
    path = tmp_path / "d.csv"
    path.write_text("a,label\n1,01\n2,02\n3,2\n4,01\n5,02\n6,2\n")
    ds = D.load_dataset(DataConfig(path=str(path), target="label"))
    y, classes = D.encode_labels(ds.y, "softmax")
    assert classes == ["01", "02", "2"] and y.tolist() == [0, 1, 2, 0, 1, 2]
    assert D.encode_labels(np.array([0.0, 1.0, 2.0]), "softmax")[1] == ["0", "1", "2"]  # numbers read as numbers
