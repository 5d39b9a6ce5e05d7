"""Sparse data through the command line: svmlight / libsvm files and scipy sparse .npz matrices
train, evaluate, predict and resume without ever being densified; hashed CSV columns become a
sparse block; one-hot encoding can drop each column's first level. Fits are compared with
scikit-learn's exact solver on the same rows, scaled as scikit-learn's
``StandardScaler(with_mean=False)`` scales them."""

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.datasets import dump_svmlight_file, load_svmlight_file
from sklearn.feature_extraction import FeatureHasher
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from torch_logreg.app import data as data_lib
from torch_logreg.app import fitting, tables
from torch_logreg.app.config import load_config
from torch_logreg.app.runs import model_from_checkpoint

from helpers import expect_error, run_cli

#: the command line end to end: left out of `make test-fast`
pytestmark = pytest.mark.e2e

N, D = 240, 30


def sparse_problem(n: int = N, d: int = D, seed: int = 0, classes: int = 2):
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=0.15, random_state=seed, format="csr", data_rvs=lambda k: rng.uniform(0.5, 3.0, k))
    W = rng.normal(size=(d, classes))
    y = np.asarray((X @ W + rng.gumbel(size=(n, classes))).argmax(1)).ravel()
    return X, y


def train_args(data, run_dir, *sets):
    args = ["train", "--quiet", "--run-dir", run_dir, "--set", f"data.path={data}", "--set", "train.device=cpu",
            "--set", "train.solver=newton", "--set", "train.epochs=100", "--set", "train.tol=1e-12",
            "--set", "train.l2=0.01", "--set", "train.dtype=float64", "--set", "data.val_fraction=0",
            "--set", "data.test_fraction=0"]
    for s in sets:
        args += ["--set", s]
    return args


def trained(run_dir: Path):
    payload = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    return model_from_checkpoint(payload), payload


def sklearn_fit(X, y, l2: float, multinomial: bool):
    """scikit-learn's exact fit of the CLI's objective: C = 1 / (l2 N), on X scaled without centring."""
    Xs = StandardScaler(with_mean=False).fit_transform(X)
    ref = LogisticRegression(C=1.0 / (l2 * X.shape[0]), solver="newton-cholesky" if not multinomial else "lbfgs",
                             tol=1e-12, max_iter=10_000).fit(Xs, y)
    return ref


def coefficients(model) -> tuple[np.ndarray, np.ndarray]:
    layer = next(m for m in model.modules() if hasattr(m, "weight"))
    return layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy()


@pytest.mark.parametrize("zero_based", [False, True])
def test_svmlight_training_equals_scikit_learn_on_the_same_rows(capsys, tmp_path, zero_based):
    X, y = sparse_problem()
    path = tmp_path / "d.svm"
    dump_svmlight_file(X, y, str(path), zero_based=zero_based)
    code, _, err = run_cli(capsys, *train_args(path, tmp_path / "run"))
    assert code == 0, err
    model, payload = trained(tmp_path / "run")
    schema = data_lib.Schema.from_dict(payload["schema"])
    assert schema.sparse_width == D and schema.svmlight_base == (0 if zero_based else 1) and schema.columns == []
    ref = sklearn_fit(X, y, 0.01, multinomial=False)
    W, b = coefficients(model)
    assert np.abs(W - ref.coef_).max() <= 1e-7 * max(1.0, np.abs(ref.coef_).max())
    assert abs(b[0] - ref.intercept_[0]) <= 1e-7


def test_softmax_from_a_scipy_npz_with_the_target_column(capsys, tmp_path):
    X, y = sparse_problem(classes=3)
    path = tmp_path / "d.npz"
    sp.save_npz(path, sp.hstack([sp.csr_matrix(y[:, None].astype(float)), X]).tocsr())
    code, _, err = run_cli(capsys, *train_args(path, tmp_path / "run", "model.kind=softmax", "data.target=\"0\""))
    assert code == 0, err
    model, _ = trained(tmp_path / "run")
    ref = sklearn_fit(X, y, 0.01, multinomial=True)
    W, b = coefficients(model)
    # softmax rows are defined up to a shared shift; both fits centre them (the penalty does)
    assert np.abs(W - ref.coef_).max() <= 1e-5 * max(1.0, np.abs(ref.coef_).max())
    assert np.abs((b - b.mean()) - (ref.intercept_ - ref.intercept_.mean())).max() <= 1e-5


def test_the_split_stays_sparse_and_the_scale_is_scikit_learns(tmp_path):
    X, y = sparse_problem()
    path = tmp_path / "d.svmlight"
    dump_svmlight_file(X, y, str(path), zero_based=False)
    cfg = load_config(None, [f"data.path={path}", "data.test_fraction=0.25", "data.val_fraction=0"])
    prep = fitting.prepare(cfg, torch.device("cpu"), torch.float64)
    assert all(prep.X[s].layout == torch.sparse_csr for s in fitting.SPLITS)
    X_all, _ = load_svmlight_file(str(path), zero_based=False, n_features=D)
    train_rows = data_lib.split_indices(torch.from_numpy(y), N, 0.0, 0.25, cfg.train.seed, True)[0].numpy()
    expected = StandardScaler(with_mean=False).fit(X_all[train_rows]).scale_
    assert np.abs(prep.standardizer.scale.numpy() - expected).max() <= 1e-12 * expected.max()
    assert not prep.standardizer.mean.any()
    dense = X_all[train_rows].toarray() / expected
    assert np.abs(prep.X["train"].to_dense().numpy() - dense).max() <= 1e-12 * np.abs(dense).max()


def test_evaluate_predict_and_resume_read_the_same_formats(capsys, tmp_path):
    X, y = sparse_problem()
    path, new = tmp_path / "d.svm", tmp_path / "new.svm"
    dump_svmlight_file(X, y, str(path), zero_based=False)
    dump_svmlight_file(X[:25], y[:25], str(new), zero_based=False)
    run_dir = tmp_path / "run"
    assert run_cli(capsys, *train_args(path, run_dir, "train.solver=gd", "train.lr=0.5", "train.epochs=30",
                                       "train.tol=0", "log.checkpoint_every=10"))[0] == 0
    model, payload = trained(run_dir)
    std = data_lib.Standardizer.from_state_dict(payload["standardizer"])
    X_new = torch.from_numpy(X[:25].toarray())
    with torch.no_grad():
        expected = model(std.transform(X_new)).numpy().ravel()
    out = tmp_path / "p.csv"
    code, _, err = run_cli(capsys, "predict", "--run", run_dir, "--input", new, "--output", out)
    assert code == 0, err
    written = np.loadtxt(out, delimiter=",", skiprows=1)
    assert np.abs(written[:, 1] - expected).max() <= 1e-12
    code, stdout, err = run_cli(capsys, "evaluate", "--run", run_dir, "--data", new, "--json")
    assert code == 0, err
    import json

    metrics = json.loads(stdout)["data"]
    assert metrics["accuracy"] == pytest.approx(float(((expected > 0.5) == y[:25]).mean()), abs=1e-12)
    # a sparse .npz of the same rows, without and with the target column, predicts the same
    for matrix in (X[:25], sp.hstack([X[:25], sp.csr_matrix(y[:25, None].astype(float))])):
        npz = tmp_path / "new.npz"
        sp.save_npz(npz, sp.csr_matrix(matrix))
        code, _, err = run_cli(capsys, "predict", "--run", run_dir, "--input", npz, "--output", out, "--force")
        assert code == 0, err
        assert np.abs(np.loadtxt(out, delimiter=",", skiprows=1)[:, 1] - expected).max() <= 1e-12
    # resuming to 45 epochs ends where one 45-epoch run ends
    code, _, err = run_cli(capsys, "resume", "--run", run_dir, "--quiet", "--set", "train.epochs=45")
    assert code == 0, err
    one = tmp_path / "one"
    assert run_cli(capsys, *train_args(path, one, "train.solver=gd", "train.lr=0.5", "train.epochs=45",
                                       "train.tol=0"))[0] == 0
    a, b = coefficients(trained(run_dir)[0]), coefficients(trained(one)[0])
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_mini_batches_and_cv_on_sparse_data(capsys, tmp_path):
    X, y = sparse_problem()
    path = tmp_path / "d.svm"
    dump_svmlight_file(X, y, str(path))
    code, _, err = run_cli(capsys, *train_args(path, tmp_path / "run", "train.solver=adam", "train.lr=0.05",
                                               "train.batch_size=32", "train.epochs=3", "train.tol=0"))
    assert code == 0, err
    code, out, err = run_cli(capsys, "cv", "--quiet", "--folds", "3", "--run-dir", tmp_path / "cv", "--set",
                             f"data.path={path}", "--set", "train.solver=newton", "--set", "train.epochs=30",
                             "--grid", "train.l2=0.01,0.1")
    assert code == 0, err


def test_unseen_columns_and_bases_are_refused(capsys, tmp_path):
    X, y = sparse_problem()
    path = tmp_path / "d.svm"
    dump_svmlight_file(X, y, str(path), zero_based=False)
    run_dir = tmp_path / "run"
    assert run_cli(capsys, *train_args(path, run_dir))[0] == 0
    wide = tmp_path / "wide.svm"
    wide.write_text(f"1 3:1.5 {D + 4}:2\n")
    expect_error(capsys, f"feature index {D + 4} is beyond the {D} columns", "predict", "--run", run_dir, "--input",
                 wide, "--output", tmp_path / "p.csv")
    zero = tmp_path / "zero.svm"
    zero.write_text("1 0:1.5 3:2\n")
    expect_error(capsys, "line 1: the line has feature index 0, but training read its file as one-based", "predict", "--run",
                 run_dir, "--input", zero, "--output", tmp_path / "p.csv")
    csv = tmp_path / "d.csv"
    csv.write_text("a,b\n1,2\n")
    expect_error(capsys, "trained on a sparse file (30 columns)", "predict", "--run", run_dir, "--input", csv,
                 "--output", tmp_path / "p.csv")
    bad = tmp_path / "bad.npz"
    sp.save_npz(bad, sp.csr_matrix(np.ones((2, D + 3))))
    expect_error(capsys, f"expected {D} feature columns, or {D + 1} with the target", "predict", "--run", run_dir,
                 "--input", bad, "--output", tmp_path / "p.csv")


def test_a_dense_model_refuses_a_sparse_file(capsys, tmp_path):
    rng = np.random.default_rng(0)
    csv = tmp_path / "d.csv"
    rows = rng.normal(size=(60, 2))
    csv.write_text("a,b,y\n" + "".join(f"{a},{b},{int(a + b > 0)}\n" for a, b in rows))
    run_dir = tmp_path / "run"
    assert run_cli(capsys, *train_args(csv, run_dir, "data.target=y"))[0] == 0
    new = tmp_path / "new.svm"
    new.write_text("1 1:0.5 2:1\n")
    expect_error(capsys, "is a sparse file, but the model was trained on 2 named columns", "predict", "--run", run_dir,
                 "--input", new, "--output", tmp_path / "p.csv")


BAD_FILES = [
    ("1 1:2 3:x\n", "line 1: '3:x' is not index:value"),
    ("1 1:2\nspam 2:1\n", "line 2: the label 'spam' is not a number"),
    ("1 1:2\n0 4:1 2:1\n", "line 2: the feature indices must increase along a line"),
    ("1 1:2\n0 2:nan\n", "line 2, feature index 2: nan is not a finite number"),
    ("1 1:2\n# a comment\n\n0 2:nan\n", "line 4, feature index 2: nan is not a finite number"),
    ("1 1:1\n1 1:1 1099511627776:1\n", "line 2: feature index 1099511627776 is outside 0 to 2,147,483,646"),
    ("# only a comment\n", "no line has a feature"),
    ("", "is empty"),
]


@pytest.mark.parametrize("text,message", BAD_FILES)
def test_a_bad_svmlight_file_is_named_by_its_line(capsys, tmp_path, text, message):
    path = tmp_path / "bad.svm"
    path.write_text(text)
    expect_error(capsys, message, *train_args(path, tmp_path / "run"))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("setting,message", [
    ("data.categorical=[\"x1\"]", "data.categorical applies to CSV and Parquet files only"),
    ("data.hash=[\"x1\"]", "data.hash applies to CSV and Parquet files only"),
    ("data.add_radius=true", "data.add_radius needs two dense columns"),
    ("data.target=\"3\"", "has its label first on each line"),
])
def test_csv_options_are_refused_for_sparse_files(capsys, tmp_path, setting, message):
    X, y = sparse_problem()
    path = tmp_path / "d.svm"
    dump_svmlight_file(X, y, str(path))
    expect_error(capsys, message, *train_args(path, tmp_path / "run", setting))


# --- hashed columns ------------------------------------------------------------------------------


def text_csv(path: Path, n: int = 200, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    words = ["red", "green", "blue", "cyan", "black", "white"]
    lines = ["num,colour,tags,y"]
    for _ in range(n):
        num = rng.normal()
        colour = words[rng.integers(len(words))]
        tags = " ".join(rng.choice(words, size=rng.integers(1, 4)))
        y = int(num + (colour in ("red", "blue")) - ("black" in tags) + 0.3 * rng.normal() > 0.5)
        lines.append(f"{num:.6f},{colour},{tags},{y}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_hashed_columns_are_scikit_learns_signed_hashing(tmp_path):
    path = text_csv(tmp_path / "d.csv")
    cfg = load_config(None, [f"data.path={path}", "data.target=y", 'data.hash=["colour", "tags"]', "data.hash_bits=8"])
    ds = data_lib.load_dataset(cfg.data)
    assert ds.X.layout == torch.sparse_csr and ds.X.shape[1] == 1 + 256 and ds.schema.n_features == 257
    assert ds.schema.feature_names[:2] == ["num", "hash0"] and len(ds.schema.feature_names) == 257
    header, rows, _ = tables.read_csv_table(path, 1 << 20)
    tokens = [[f"colour={t}" for t in c[1].split()] + [f"tags={t}" for t in c[2].split()] for _, c in rows]
    block = FeatureHasher(n_features=256, input_type="string").transform(tokens).toarray()
    dense = ds.X.to_dense().numpy()
    assert np.array_equal(dense[:, 1:], block)
    assert np.array_equal(dense[:, 0], [float(c[0]) for _, c in rows])


def test_a_hashed_run_predicts_its_own_rows_as_it_scored_them(capsys, tmp_path):
    path = text_csv(tmp_path / "d.csv")
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, *train_args(path, run_dir, "data.target=y", 'data.hash=["colour", "tags"]',
                                               "data.hash_bits=6"))
    assert code == 0, err
    model, payload = trained(run_dir)
    assert model.n_features == 1 + 64
    out = tmp_path / "p.csv"
    code, _, err = run_cli(capsys, "predict", "--run", run_dir, "--input", path, "--output", out, "--keep", "y")
    assert code == 0, err
    written = np.loadtxt(out, delimiter=",", skiprows=1)
    cfg = load_config(None, [f"data.path={path}", "data.target=y", 'data.hash=["colour", "tags"]', "data.hash_bits=6"])
    ds = data_lib.load_dataset(cfg.data)
    std = data_lib.Standardizer.from_state_dict(payload["standardizer"])
    with torch.no_grad():
        expected = model(std.transform(ds.X)).numpy().ravel()
    assert np.abs(written[:, 2] - expected).max() <= 1e-12


def test_a_column_cannot_be_hashed_and_one_hot(capsys, tmp_path):
    path = text_csv(tmp_path / "d.csv")
    expect_error(capsys, "column 'colour' is in both data.categorical and data.hash",
                 *train_args(path, tmp_path / "run", "data.target=y", 'data.hash=["colour"]',
                             'data.categorical=["colour"]'))
    expect_error(capsys, "data.hash column 'shade' is not in the header",
                 *train_args(path, tmp_path / "run", "data.target=y", 'data.hash=["shade"]'))


# --- one-hot without the first level -------------------------------------------------------------


def test_drop_first_gives_a_full_rank_design(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "d.csv"
    colours = ["red", "green", "blue"]
    path.write_text("num,colour,y\n" + "".join(f"{rng.normal():.6f},{colours[i % 3]},{int(rng.random() > 0.5)}\n"
                                               for i in range(90)))
    sets = [f"data.path={path}", "data.target=y", 'data.categorical=["colour"]']
    full = data_lib.load_dataset(load_config(None, sets).data)
    dropped = data_lib.load_dataset(load_config(None, [*sets, "data.drop_first=true"]).data)
    levels = full.schema.categorical["colour"]
    assert levels == ["blue", "green", "red"]
    assert dropped.schema.feature_names == ["num", "colour=green", "colour=red"] == dropped.schema.feature_names
    assert dropped.schema.n_features == 3 and full.schema.n_features == 4
    assert torch.equal(dropped.X, full.X[:, [0, 2, 3]])
    ones = torch.ones(full.X.shape[0], 1, dtype=torch.float64)
    assert torch.linalg.matrix_rank(torch.cat([ones, full.X], 1)) == 4  # the one-hot columns sum to the intercept
    assert torch.linalg.matrix_rank(torch.cat([ones, dropped.X], 1)) == 4  # full rank
    # a new row of the first level is all zeros in its block
    header, rows, _ = tables.read_csv_table(path, 1 << 20)
    first = next(i for i, (_, cells) in enumerate(rows) if cells[1] == "blue")
    assert dropped.X[first, 1:].abs().sum() == 0
