"""Every user mistake gets a ValueError/TypeError that names the problem and where it is."""

import numpy as np
import pytest
import torch

import torch_logreg as tl


def test_wrong_feature_count():
    with pytest.raises(ValueError, match="X has 4 features but the model expects 3"):
        tl.LogisticRegression(3).loss_and_grad(torch.zeros(5, 4), torch.zeros(5))


def test_features_not_2d():
    with pytest.raises(ValueError, match=r"2-D .* got shape \(5,\)"):
        tl.LogisticRegression(3).loss_and_grad(torch.zeros(5), torch.zeros(5))


def test_empty_data():
    with pytest.raises(ValueError, match="empty"):
        tl.fit(tl.LogisticRegression(3), np.zeros((0, 3)), np.zeros(0), device="cpu")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_features_name_row_and_column(bad):
    X = torch.zeros(6, 3)
    X[4, 2] = bad
    with pytest.raises(ValueError, match="non-finite value .* row 4, column 2"):
        tl.LogisticRegression(3).loss_and_grad(X, torch.zeros(6))


def test_binary_target_outside_0_1():
    y = torch.tensor([0, 1, 2, 1])
    with pytest.raises(ValueError, match="0 or 1, got 2.* sample 2"):
        tl.LogisticRegression(2).loss_and_grad(torch.zeros(4, 2), y)


def test_multilabel_target_outside_0_1_names_output():
    y = torch.zeros(4, 3)
    y[1, 2] = 0.5
    with pytest.raises(ValueError, match="sample 1, output 2"):
        tl.LogisticRegression(2, n_outputs=3).loss_and_grad(torch.zeros(4, 2), y)


@pytest.mark.parametrize("index", [-1, 3])
def test_class_index_out_of_range(index):
    y = torch.tensor([0, 1, index, 2])
    with pytest.raises(ValueError, match=rf"class index {index} at sample 2 is outside \[0, 3\)"):
        tl.SoftmaxRegression(2, 3).loss_and_grad(torch.zeros(4, 2), y)


def test_fractional_class_index():
    with pytest.raises(ValueError, match="integers, got 1.5 at sample 1"):
        tl.SoftmaxRegression(2, 3).loss_and_grad(torch.zeros(2, 2), torch.tensor([0.0, 1.5]))


def test_one_hot_rows_must_sum_to_one():
    y = torch.tensor([[1.0, 0, 0], [1.0, 1.0, 0]])
    with pytest.raises(ValueError, match="row 1 sums to 2"):
        tl.SoftmaxRegression(2, 3).loss_and_grad(torch.zeros(2, 2), y)


def test_target_shape_and_length():
    with pytest.raises(ValueError, match=r"y has shape \(4, 2\) but the model expects"):
        tl.LogisticRegression(2).loss_and_grad(torch.zeros(4, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="y has 3 samples but X has 4"):
        tl.LogisticRegression(2).loss_and_grad(torch.zeros(4, 2), torch.zeros(3))


def test_non_finite_regression_target():
    with pytest.raises(ValueError, match="non-finite value at sample 1"):
        tl.LinearRegression(2).loss_and_grad(torch.zeros(3, 2), torch.tensor([0.0, float("nan"), 1.0]))


def test_mixed_dtypes():
    with pytest.raises(TypeError, match="X has dtype torch.float64 but the model's parameters are torch.float32"):
        tl.LogisticRegression(2).loss_and_grad(torch.zeros(3, 2, dtype=torch.float64), torch.zeros(3))


def test_integer_features_rejected_when_tensor():
    with pytest.raises(TypeError, match="floating-point"):
        tl.LogisticRegression(2).loss_and_grad(torch.zeros(3, 2, dtype=torch.int64), torch.zeros(3))


def test_different_devices():
    X = torch.zeros(3, 2, device="meta")
    with pytest.raises(ValueError, match="X is on device meta but the model is on cpu"):
        tl.LogisticRegression(2).loss_and_grad(X, torch.zeros(3))
    with pytest.raises(ValueError, match="y is on device meta"):
        tl.LogisticRegression(2).loss_and_grad(torch.zeros(3, 2), torch.zeros(3, device="meta"))


def test_string_data_rejected():
    with pytest.raises(TypeError, match="numeric"):
        tl.fit(tl.LogisticRegression(2), [["a", "b"]], [0], device="cpu")


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"solver": "sgd"}, ValueError, "solver must be one of"),
        ({"lr": 0}, ValueError, "lr must be a finite number > 0, got 0"),
        ({"lr": float("nan")}, ValueError, "lr must be a finite number > 0, got nan"),
        ({"lr": 1e39, "dtype": "float32"}, ValueError, r"lr=1e\+39 is larger than the largest float32 \(3.4e\+38\)"),
        ({"epochs": 0}, ValueError, "epochs must be an integer >= 1, got 0"),
        ({"epochs": 2.5}, ValueError, "epochs must be an integer >= 1, got 2.5"),
        ({"batch_size": -1}, ValueError, "batch_size must be an integer >= 0, got -1"),
        ({"l2": -0.1}, ValueError, "l2 must be a finite number >= 0, got -0.1"),
        ({"solver": "momentum", "momentum": 1.0}, ValueError, r"momentum must be a finite number >= 0 and < 1, got 1.0"),
        ({"momentum": 0.5}, ValueError, r"solver='gd' takes no momentum"),
        ({"solver": "adam", "betas": (0.9, 1.0)}, ValueError, r"betas\[1\] must be a finite number >= 0 and < 1"),
        ({"patience": -1}, ValueError, "patience must be an integer >= 0, got -1"),
        ({"device": "tpu"}, ValueError, "device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
        ({"dtype": "float8"}, TypeError, "unsupported dtype 'float8'"),
        ({"dtype": "float16"}, ValueError, "runs on a CUDA device only"),
        ({"X_val": np.zeros((2, 2))}, ValueError, "X_val and y_val must be given together"),
        ({"cuda_graph": True}, ValueError, "cuda_graph needs a CUDA device"),
    ],
)
def test_bad_fit_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        tl.fit(tl.LogisticRegression(2), np.zeros((4, 2)), np.array([0, 1, 0, 1]), **{"device": "cpu", **kwargs})


def test_bad_validation_targets_are_named():
    with pytest.raises(ValueError, match="y_val: binary targets must be 0 or 1"):
        tl.fit(tl.LogisticRegression(2), np.zeros((4, 2)), np.array([0, 1, 0, 1]),
               X_val=np.zeros((2, 2)), y_val=np.array([0, 5]), device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_missing_cuda_is_reported():
    with pytest.raises(ValueError, match="no CUDA GPU is available"):
        tl.resolve_device("cuda:0")


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="n_classes >= 2"):
        tl.SoftmaxRegression(3, 1)
    with pytest.raises(ValueError, match="in_features must be a positive integer"):
        tl.LogisticRegression(0)
    with pytest.raises(ValueError, match="activation must be one of"):
        tl.MLP(3, [4], activation="gelu")


@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("elsewhere", [None, float("inf"), float("nan")])
def test_square_range_names_the_column_whatever_its_sign_and_the_other_entries(sign, elsewhere):
    """The check looks at all of X at once first and at its columns only past the limit: a column
    too large by its negative values is found as one by its positive ones, and an infinite or NaN
    entry in another column (left to the non-finite check) neither hides it nor is named instead."""
    from torch_logreg import validation

    X = torch.linspace(-1, 1, 40, dtype=torch.float64).reshape(10, 4)
    validation.check_square_range(X, torch.float32)  # small values pass
    X[3, 2] = sign * 1e20
    if elsewhere is not None:
        X[5, 0] = elsewhere
    with pytest.raises(tl.UsageError, match=r"^X column 2 has values of magnitude up to 1e\+20, whose squares overflow float32"):
        validation.check_square_range(X, torch.float32)
    X[3, 2] = 0.5
    validation.check_square_range(X, torch.float32)  # the non-finite entry alone is not this check's
