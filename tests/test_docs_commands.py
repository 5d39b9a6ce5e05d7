"""Every shell command the README and docs/ show runs as written.

Each fenced ``sh`` block of ``README.md`` and ``docs/*.md`` is run, in the order of the file, as one
``bash -euo pipefail`` script in a scratch directory that holds a copy of ``configs/`` and
``examples/`` (so ``runs/``, ``new.csv`` and the like are written there), with this Python's
environment first on the PATH. Two visible rules keep it short and self-contained:

- a block whose first line is a comment starting :data:`SKIP` (setting up the environment,
  starting a server, several GPUs) is not run; the test names those it left out;
- a ``torch-logreg train`` or ``cv`` command that does not set ``train.epochs`` itself gets
  ``--set train.epochs=20`` appended (the shipped configs run up to 1,000 epochs).
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP = "# docs test skips this block:"
EPOCHS = 20
FENCE = re.compile(r"^```sh\n(.*?)^```", re.S | re.M)


def shell_blocks(path: Path) -> list[str]:
    """The fenced ``sh`` blocks of a Markdown file, in order."""
    return FENCE.findall(path.read_text(encoding="utf-8"))


def short(block: str) -> str:
    """The block with ``--set train.epochs=20`` after each ``train`` or ``cv`` command that does
    not set the epochs (backslash-continued lines are one command)."""
    lines = block.replace("\\\n", " ").splitlines()
    out = []
    for line in lines:
        command, _, comment = line.partition("  #")
        if re.match(r"\s*torch-logreg (train|cv)\b", command) and "train.epochs" not in command:
            line = f"{command.rstrip()} --set train.epochs={EPOCHS}" + (f"  #{comment}" if comment else "")
        out.append(line)
    return "\n".join(out) + "\n"


def test_the_rules_the_runner_applies():
    assert short("torch-logreg train --config c.toml  # a comment\n") == (
        "torch-logreg train --config c.toml --set train.epochs=20  # a comment\n")
    assert short("torch-logreg train \\\n    --set train.epochs=5\n").count("train.epochs") == 1
    assert short("torch-logreg evaluate --run r\n") == "torch-logreg evaluate --run r\n"
    blocks = [b for path in DOCS for b in shell_blocks(path)]
    assert len(blocks) >= 8 and any(b.startswith(SKIP) for b in blocks)


@pytest.mark.e2e
@pytest.mark.parametrize("doc", [p for p in DOCS if shell_blocks(p)], ids=lambda p: p.name)
def test_the_shell_blocks_run(doc: Path, tmp_path):
    for folder in ("configs", "examples"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    env = dict(os.environ, PYTHONPATH=str(ROOT), PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               TORCH_LOGREG_DEBUG="")
    env.pop("TORCH_LOGREG_DEBUG")
    skipped = []
    for i, block in enumerate(shell_blocks(doc)):
        if block.startswith(SKIP):
            skipped.append(block.splitlines()[0][len(SKIP):].strip())
            continue
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", short(block)], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, (f"{doc.name}, sh block {i + 1} failed ({result.returncode}):\n{block}\n"
                                        f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}")
    print(f"{doc.name}: skipped {len(skipped)} block(s): {'; '.join(skipped)}")
