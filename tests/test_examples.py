"""The scripts in examples/ run as a user runs them (`python examples/NAME.py` from the repository
root) and print results the exact optimum supports."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

#: the command line end to end: left out of `make test-fast`
pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]


def run_example(name: str) -> str:
    result = subprocess.run([sys.executable, f"examples/{name}.py"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def number(pattern: str, out: str) -> float:
    match = re.search(pattern, out)
    assert match, f"{pattern!r} not in the output:\n{out}"
    return float(match.group(1))


def pair(label: str, out: str) -> tuple[float, float]:
    """The loop's value and the exact optimum's from a line ``label: A (exact optimum: B)``."""
    return number(rf"{label}: ([\d.]+)", out), number(rf"{label}: [\d.]+ \(exact optimum: ([\d.]+)\)", out)


def test_binary_example_reaches_the_exact_optimum():
    out = run_example("binary")
    assert "gradient check: PASS" in out
    assert "(converged)" in out
    # the loop stops at a gradient of 1e-6 on an objective at least l2 = 1/426-strongly convex, so its
    # objective is within ~1e-8 of Newton's: equal at the 6 printed decimals, up to the rounding of each
    loop, exact = pair("train objective", out)
    assert abs(loop - exact) <= 2e-6
    assert number(r"max \|theta - theta_exact\|: ([\d.e+-]+)", out) < 1e-2
    # the exact optimum classifies 137 of the 143 held-out tumours (0.958); 0.95 leaves room for one
    # sample on the boundary to flip where the loop stopped short of it, and no more
    assert number(r"test accuracy of the exact optimum: ([\d.]+)", out) >= 0.95
    assert number(r"test accuracy: ([\d.]+)", out) >= 0.95
    assert number(r"test loss: ([\d.]+)", out) < 0.15  # the exact optimum's mean held-out NLL is 0.086


def test_softmax_example_reaches_the_exact_optimum():
    out = run_example("softmax")
    assert "gradient check: PASS" in out
    assert "(converged)" in out
    # stopping at a gradient of 1e-4 leaves the objective ~1e-5 above L-BFGS's minimum (0.0697): a gap
    # of 1e-4 would mean the loop stopped early; below the minimum (less rounding) would be impossible
    loop, exact = pair("train objective", out)
    assert exact - 2e-6 <= loop <= exact + 1e-4
    # the exact optimum classifies 437 of the 450 held-out digits (0.971); 0.96 leaves five samples
    # near a boundary to fall either way where the loop stopped
    assert number(r"test accuracy of the exact optimum: ([\d.]+)", out) >= 0.96
    assert number(r"test accuracy: ([\d.]+)", out) >= 0.96
    loop_loss, exact_loss = pair("test loss", out)
    assert abs(loop_loss - exact_loss) <= 0.01


def test_mlp_example_separates_xor_where_a_line_cannot():
    out = run_example("mlp")
    # no straight line classifies more than about 0.70 of this distribution (uniform on the square,
    # pushed 0.1 off the axes; scanning every direction and threshold on 20,000 samples gives 0.7006),
    # and 400 test points move that by a few hundredths at most: 0.75 bounds any linear model, and the
    # fitted logistic regression, whose optimum is near w = 0, sits near chance below it
    assert number(r"logistic regression: test accuracy ([\d.]+)", out) <= 0.75
    assert number(r"MLP: test accuracy ([\d.]+)", out) >= 0.95
    assert number(r"MLP: test accuracy .*, test loss ([\d.]+)", out) < 0.1  # chance is log 2 = 0.69
    assert number(r"MLP: .*, (\d+) gradient checks", out) == 4  # every 500 steps of 2000, none failed
