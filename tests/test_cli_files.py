"""The command line and the user's files: only regular files within data.max_bytes are read, a
run knows its data again (evaluate, resume and predict refuse a changed file or config.toml
unless --allow-changed-data), resume --set extends a run, and a failed write is one sentence."""

import errno
import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import expect_error, run_cli

#: the command line end to end: left out of `make test-fast`
pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent


def snapshot(directory: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


def write_csv(path: Path, n: int = 60, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 2))
    y = (X[:, 0] + 0.5 * X[:, 1] + 0.5 * rng.standard_normal(n) > 0).astype(int)
    path.write_text("a,b,y\n" + "".join(f"{a:.6f},{b:.6f},{t}\n" for (a, b), t in zip(X, y)))
    return path


def train_args(data: Path, run_dir: Path, *sets):
    args = ["train", "--quiet", "--run-dir", run_dir, "--set", f"data.path={data}", "--set", "data.target=y",
            "--set", "train.device=cpu", "--set", "train.epochs=20", "--set", "log.checkpoint_every=5"]
    for s in sets:
        args += ["--set", s]
    return args


@pytest.fixture
def run(capsys, tmp_path):
    data = write_csv(tmp_path / "d.csv")
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, *train_args(data, run_dir))
    assert code == 0, err
    return data, run_dir


# --- reading only what can be read -----------------------------------------------------------


def test_device_file_is_refused_before_reading(capsys, tmp_path):
    expect_error(capsys, "is not a regular file", *train_args(Path("/dev/zero"), tmp_path / "r"))
    assert not (tmp_path / "r").exists()


def test_fifo_is_refused_without_blocking(capsys, tmp_path):
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    expect_error(capsys, "is not a regular file", *train_args(fifo, tmp_path / "r"))
    expect_error(capsys, "is not a regular file", "train", "--config", fifo)


def test_file_over_the_size_limit_is_refused_before_parsing(capsys, tmp_path):
    data = write_csv(tmp_path / "d.csv")
    size = data.stat().st_size
    expect_error(capsys, "more than the limit", *train_args(data, tmp_path / "r", f"data.max_bytes={size - 1}"))
    code, _, err = run_cli(capsys, *train_args(data, tmp_path / "r2", f"data.max_bytes={size}"))
    assert code == 0, err


def test_npz_that_unpacks_past_the_limit_is_refused(capsys, tmp_path):
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, X=np.zeros((20000, 50)), y=np.zeros(20000))  # 8 MB of zeros in a few kB
    assert path.stat().st_size < 100_000
    expect_error(capsys, "unpacks to", *train_args(path, tmp_path / "r", "data.max_bytes=1000000"))


def test_generated_set_larger_than_memory_is_refused(capsys, tmp_path):
    expect_error(capsys, "lower data.n_samples", "train", "--quiet", "--run-dir", tmp_path / "r", "--set",
                 "data.name=synthetic", "--set", "data.n_samples=10000000000000", "--set", "train.device=cpu")
    assert not (tmp_path / "r").exists()


def test_config_file_too_large_or_not_utf8(capsys, tmp_path):
    big = tmp_path / "big.toml"
    big.write_text("# " + "x" * (2 << 20) + "\n")
    expect_error(capsys, "more than the limit", "train", "--config", big)
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"[train]\nlr = 0.1\n# caf\xe9\n")
    expect_error(capsys, f"{bad}, line 3: byte 0xe9 is not UTF-8", "train", "--config", bad)


# --- messages that name the line --------------------------------------------------------------


def test_non_utf8_byte_names_its_line(capsys, tmp_path):
    data = write_csv(tmp_path / "d.csv")
    lines = data.read_bytes().split(b"\n")
    lines[7] = lines[7].replace(b",", b"\xff,", 1)
    data.write_bytes(b"\n".join(lines))
    expect_error(capsys, f"{data}, line 8: byte 0xff is not UTF-8", *train_args(data, tmp_path / "r"))


@pytest.mark.parametrize("where", [5, 30])
def test_unterminated_quote_names_the_line_where_it_opens(capsys, tmp_path, where):
    data = write_csv(tmp_path / "d.csv")
    lines = data.read_text().split("\n")
    lines[where - 1] = '"' + lines[where - 1]
    data.write_text("\n".join(lines))
    expect_error(capsys, f"{data}, line {where}: a quoted cell opened on this line is never closed",
                 *train_args(data, tmp_path / "r"))


def test_quoted_cell_spanning_lines_is_named_by_its_lines(capsys, tmp_path):
    data = tmp_path / "d.csv"
    data.write_text('a,b,y\n1,2,0\n"3\n4",5\n6,7,1\n')
    expect_error(capsys, "lines 3-4 (a quoted cell spans them): expected 3 columns", *train_args(data, tmp_path / "r"))


# --- a run knows its data again ---------------------------------------------------------------


def test_run_saves_the_fingerprint_of_its_data(run):
    data, run_dir = run
    saved = torch.load(run_dir / "checkpoint.pt", weights_only=True)["data_fingerprint"]
    assert saved["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert saved["size"] == data.stat().st_size and saved["mtime_ns"] == data.stat().st_mtime_ns


def test_touching_the_data_is_not_a_change(capsys, run):
    data, run_dir = run
    os.utime(data, (1e9, 1e9))
    code, out, err = run_cli(capsys, "evaluate", "--run", run_dir)
    assert code == 0 and err == "", err


@pytest.mark.parametrize("edit", ["shuffle", "truncate"])
def test_evaluate_refuses_changed_data_unless_allowed(capsys, run, edit):
    data, run_dir = run
    before = snapshot(run_dir)
    lines = data.read_text().splitlines()
    body = lines[1:][::-1] if edit == "shuffle" else lines[1:-10]
    data.write_text("\n".join([lines[0], *body]) + "\n")
    message = expect_error(capsys, "has changed since run", "evaluate", "--run", run_dir)
    assert "--allow-changed-data" in message and ("same size" in message) == (edit == "shuffle")
    code, out, err = run_cli(capsys, "evaluate", "--run", run_dir, "--allow-changed-data")
    assert code == 0 and "warning: data file" in err and "test" in out
    assert snapshot(run_dir) == before


def test_resume_refuses_changed_data_unless_allowed(capsys, tmp_path):
    data = write_csv(tmp_path / "d.csv")
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, *train_args(data, run_dir, "train.epochs=10"))
    assert code == 0, err
    write_csv(data, seed=1)
    expect_error(capsys, "resume would continue on other data", "resume", "--run", run_dir, "--quiet",
                 "--set", "train.epochs=15")
    code, _, err = run_cli(capsys, "resume", "--run", run_dir, "--quiet", "--set", "train.epochs=15",
                           "--allow-changed-data")
    assert code == 0 and "warning" in err


def test_edited_config_is_refused_by_evaluate_and_predict_unless_allowed(capsys, run, tmp_path):
    data, run_dir = run
    config = run_dir / "config.toml"
    config.write_text(config.read_text().replace("epochs = 20", "epochs = 30"))
    expect_error(capsys, "train.epochs", "evaluate", "--run", run_dir)
    expect_error(capsys, "was edited", "predict", "--run", run_dir, "--input", data, "--output", tmp_path / "p.csv")
    code, _, err = run_cli(capsys, "predict", "--run", run_dir, "--input", data, "--output", tmp_path / "p.csv",
                           "--allow-changed-data")
    assert code == 0 and "configuration saved in the checkpoint" in err


# --- resume --set ----------------------------------------------------------------------------


def test_resume_set_extends_a_finished_run_as_one_longer_run(capsys, tmp_path):
    data = write_csv(tmp_path / "d.csv")
    short, long = tmp_path / "short", tmp_path / "long"
    assert run_cli(capsys, *train_args(data, short, "train.epochs=10", "train.tol=0", "train.patience=0"))[0] == 0
    assert run_cli(capsys, *train_args(data, long, "train.epochs=25", "train.tol=0", "train.patience=0"))[0] == 0
    expect_error(capsys, "resume --set train.epochs=N", "resume", "--run", short)
    code, out, err = run_cli(capsys, "resume", "--run", short, "--quiet", "--set", "train.epochs=25")
    assert code == 0, err
    a = torch.load(short / "checkpoint.pt", weights_only=True)
    b = torch.load(long / "checkpoint.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 25
    for k in b["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-6, atol=1e-7)
    assert "epochs = 25" in (short / "config.toml").read_text()  # config.toml still describes the run


def test_resume_set_refuses_what_defines_the_run(capsys, run):
    _, run_dir = run
    before = snapshot(run_dir)
    expect_error(capsys, "train.lr cannot change in a run that has started", "resume", "--run", run_dir,
                 "--set", "train.lr=0.5")
    expect_error(capsys, "data.path cannot change", "resume", "--run", run_dir, "--set", "data.path=x.csv")
    assert snapshot(run_dir) == before


# --- writes that fail ------------------------------------------------------------------------


def test_full_disk_is_one_sentence_and_keeps_the_checkpoint(capsys, tmp_path, monkeypatch):
    data = write_csv(tmp_path / "d.csv")
    run_dir = tmp_path / "run"
    calls = {"n": 0}
    real_fsync = os.fsync

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] > 3:  # config.toml, the first checkpoint.pt and best.pt are written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    message = expect_error(capsys, "No space left on device", *train_args(data, run_dir, "log.checkpoint_every=2"))
    assert "the previous file is kept unchanged" in message
    monkeypatch.undo()
    saved = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == 2 and not list(run_dir.glob(".*.tmp"))


def test_unwritable_output_directory_is_one_sentence(capsys, run, tmp_path, monkeypatch):
    import tempfile

    data, run_dir = run

    def mkstemp(*args, **kwargs):  # what a directory without write permission gives a user who is not root
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    message = expect_error(capsys, "Permission denied", "predict", "--run", run_dir, "--input", data,
                           "--output", tmp_path / "p.csv")
    assert "nothing was written" in message and not (tmp_path / "p.csv").exists()


def test_truncated_npz_input_to_predict(capsys, run, tmp_path):
    _, run_dir = run
    path = tmp_path / "x.npz"
    np.savez(path, X=np.zeros((5, 2)))
    path.write_bytes(path.read_bytes()[:-30])
    assert not zipfile.is_zipfile(path)
    expect_error(capsys, "truncated or damaged", "predict", "--run", run_dir, "--input", path,
                 "--output", tmp_path / "p.csv")


def test_rare_class_is_named_by_its_label(capsys, tmp_path):
    data = tmp_path / "d.csv"
    rows = [f"{i},{i % 7},{'cat' if i % 2 else 'dog'}" for i in range(40)] + ["99,1,bird", "98,2,bird"]
    data.write_text("a,b,y\n" + "\n".join(rows) + "\n")
    expect_error(capsys, "class 'bird' has only 2 row(s)", *train_args(data, tmp_path / "r", "model.kind=softmax"))


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.mark.parametrize("command", ["evaluate", "resume"])
def test_checkpoint_with_code_is_refused_without_running_it(capsys, tmp_path, command):
    run_dir, marker = tmp_path / "run", tmp_path / "ran"
    run_dir.mkdir()
    torch.save({"format": "torch_logreg.checkpoint/1", "model": _Payload(marker)}, run_dir / "checkpoint.pt")
    message = expect_error(capsys, "holds Python objects", command, "--run", run_dir)
    assert "it was not loaded, because unpickling it could run code" in message
    assert "weights_only=False" not in message and not marker.exists()


@pytest.mark.parametrize("when", ["preparing", "run directory made"])
def test_sigterm_before_training_leaves_nothing(capsys, tmp_path, monkeypatch, when):
    """SIGTERM in the first seconds (reading data, before the loop takes the signal over) exits
    with 143 and leaves no run directory without a checkpoint."""
    import signal

    from torch_logreg.app import commands

    target = "prepare" if when == "preparing" else "_run"
    real = getattr(commands, target)

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)  # not reached: the handler raises on delivery

    monkeypatch.setattr(commands, target, terminated)
    data = write_csv(tmp_path / "d.csv")
    code, out, err = run_cli(capsys, *train_args(data, tmp_path / "r"))
    assert code == 143 and "terminated (SIGTERM)" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()
    from torch_logreg.app import cli

    assert signal.getsignal(signal.SIGTERM) is not cli._terminate  # the handler is the caller's again


def test_full_disk_met_by_the_events_writer_is_one_sentence(capsys, tmp_path, monkeypatch):
    """TensorBoard writes its events from a thread; a full disk there is reported like one met by a
    checkpoint: one sentence, exit 2, the last checkpoint kept, no thread traceback."""
    from tensorboard.summary.writer import record_writer

    real = record_writer.RecordWriter.write
    calls = {"n": 0}

    def write(self, data):
        calls["n"] += 1
        if calls["n"] > 300:  # after the first checkpoints
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(record_writer.RecordWriter, "write", write)
    data = write_csv(tmp_path / "d.csv")
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, *train_args(data, run_dir, "train.epochs=400", "log.every=1"))
    assert code == 2 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot write the TensorBoard events" in lines[0] and "No space left" in lines[0]
    assert "is whole; resume from it" in lines[0] and (run_dir / "checkpoint.pt").exists()


def test_a_config_with_step_auto_runs_the_rule_with_a_warning(capsys, tmp_path):
    """train.step = "auto" (which measured the candidate steps) still runs, as "rule", with a
    FutureWarning; its weights are the rule's, bit for bit."""
    data = write_csv(tmp_path / "d.csv")
    weights = {}
    for step in ("rule", "auto"):
        run_dir = tmp_path / step
        args = train_args(data, run_dir, "train.epochs=10", "train.tol=0", f"train.step={step}")
        if step == "auto":
            with pytest.warns(FutureWarning, match="no longer measures"):
                code, _, err = run_cli(capsys, *args)
        else:
            code, _, err = run_cli(capsys, *args)
        assert code == 0, err
        weights[step] = torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]
    assert weights["rule"].keys() == weights["auto"].keys()
    assert all(torch.equal(weights["rule"][k], weights["auto"][k]) for k in weights["rule"])


def test_resume_keeps_the_step_an_earlier_version_measured(capsys, tmp_path, monkeypatch):
    """A run saved by an earlier version with train.step = "auto" recorded the step it had
    measured (``step_choice``); resumed, it continues with that step, so it ends as an
    uninterrupted run would."""
    from torch_logreg.app import commands

    data = write_csv(tmp_path / "d.csv")
    run_dir = tmp_path / "run"
    with pytest.warns(FutureWarning, match="no longer measures"):
        code = run_cli(capsys, *train_args(data, run_dir, "train.epochs=10", "train.tol=0", "train.step=auto"))[0]
    assert code == 0
    saved = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert "step_choice" not in saved  # this version records none: the rule takes the same step again
    saved["step_choice"], saved["finished"] = "reference", False
    torch.save(saved, run_dir / "checkpoint.pt")
    seen = []
    real = commands.make_trainer

    def spy(*args, **kwargs):
        trainer = real(*args, **kwargs)
        seen.append((kwargs.get("step"), trainer.stepper.selection.step))
        return trainer

    monkeypatch.setattr(commands, "make_trainer", spy)
    code, _, err = run_cli(capsys, "resume", "--run", run_dir, "--quiet", "--set", "train.epochs=12")
    assert code == 0, err
    assert seen == [("reference", "reference")]
