import pytest
import torch

CUDA = torch.cuda.is_available()

#: devices to parametrize over; the CUDA entry is skipped cleanly where there is no GPU
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not CUDA, reason="no CUDA GPU")]),
]
#: for tests that compare a CUDA result with the CPU one: nothing to compare on a CPU-only machine
CUDA_ONLY = DEVICES[1:]


@pytest.fixture(scope="session")
def cancer():
    """Standardized breast-cancer data (569 x 30), float64 numpy arrays."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.preprocessing import StandardScaler

    X, y = load_breast_cancer(return_X_y=True)
    return StandardScaler().fit_transform(X), y
