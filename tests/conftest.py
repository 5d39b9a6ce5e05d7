import os

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


@pytest.fixture(scope="session", autouse=True)
def step_cache(tmp_path_factory):
    """The selector's disk cache in a fresh folder for the session (subprocesses included): the
    tests write nothing into the user's cache, and no choice measured by an earlier run is used."""
    old = os.environ.get("TORCH_LOGREG_CACHE")
    os.environ["TORCH_LOGREG_CACHE"] = str(tmp_path_factory.mktemp("step_cache"))
    # numba loaded up front: a short run in a process without it keeps to the torch path, so the
    # steps tests see would otherwise depend on which test ran first (tests/test_cold_start.py
    # covers the process without it)
    from torch_logreg.steps import measure

    measure.load_jit()
    yield
    if old is None:
        os.environ.pop("TORCH_LOGREG_CACHE", None)
    else:
        os.environ["TORCH_LOGREG_CACHE"] = old
