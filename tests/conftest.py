
import pytest
import torch
from hypothesis import settings

CUDA = torch.cuda.is_available()

# `pytest --hypothesis-profile=thorough`: the property tests try ten times their examples
settings.register_profile("thorough", max_examples=10 * settings.get_profile("default").max_examples)

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
def kernels_for_any_run():
    """The kernels for runs of any length: the suite's problems are small, and its tests of the
    kernels' paths would otherwise run the torch path (tests/test_cold_start.py restores the
    short-run rule and covers it; subprocesses keep the library's default)."""
    from torch_logreg.steps import select

    min_run = select.MIN_RUN_SECONDS
    select.MIN_RUN_SECONDS = 0.0
    yield
    select.MIN_RUN_SECONDS = min_run


# --- the fast tier's reach -----------------------------------------------------------------------


def pytest_addoption(parser):
    parser.addoption("--first-case", action="store_true",
                     help="run the first case of each test function only (make test-fast)")
    parser.addoption("--all-modules", action="store_true",
                     help="fail unless the run imported every module of torch_logreg (make test-fast)")


#: modules only a CUDA device reaches (a CPU run refuses them before importing them)
GPU_ONLY_MODULES = ("torch_logreg.steps.cuda_graph",)


def _package_modules() -> list[str]:
    """The dotted names of torch_logreg's modules, from its files (importing none of them)."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "torch_logreg"
    names = []
    for path in root.rglob("*.py"):
        parts = ("torch_logreg", *path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts[-1] != "__main__":  # the command line's entry point runs main() when imported
            names.append(".".join(parts))
    return sorted(names)


#: the markers of the longest tests, which run first (see pytest_collection_modifyitems)
LONG = ("slow", "e2e")


def pytest_collection_modifyitems(config, items):
    """The tests marked slow or e2e first, each group in its collection order: on several processes
    (``make test``) the last tests to finish are then short ones, not a minute-long subprocess
    that leaves the other process idle. With ``--first-case``: one case of each test function (its
    first parametrization), so a quick run still reaches every test's code path, once."""
    items.sort(key=lambda item: not any(item.get_closest_marker(m) for m in LONG))  # stable
    if not config.getoption("--first-case"):
        return
    seen, keep, drop = set(), [], []
    for item in items:
        key = (item.nodeid.split("[")[0])  # the test function, without its parameters
        (drop if key in seen else keep).append(item)
        seen.add(key)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    """With ``--all-modules``: the modules of the package the run never imported fail it."""
    if not session.config.getoption("--all-modules"):
        return
    import sys

    names = [name for name in _package_modules() if CUDA or name not in GPU_ONLY_MODULES]
    missing = [name for name in names if name not in sys.modules]
    session.config._modules_report = (len(names) - len(missing), len(names), missing)
    if missing and session.exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    report = getattr(config, "_modules_report", None)
    if report is not None:
        touched, total, missing = report
        terminalreporter.write_line(f"torch_logreg modules imported by the run: {touched} of {total}"
                                    + (f"; never imported: {', '.join(missing)}" if missing else ""))
