"""Progress over epochs: a tqdm bar on a terminal, plain lines otherwise; the run's end as one
sentence that says why it stopped; and the progress of ``path`` over its penalties."""

from __future__ import annotations

import sys

from ..train import Callback, TrainState


def stop_sentence(reason: str | None, epoch: int, total: int, patience: int = 0, tol: float | None = None,
                  best_epoch: int | None = None) -> str:
    """Why a run of the loop ended at ``epoch`` of ``total``, e.g. "stopped early at 69/1000:
    validation loss no better for 20 epochs (best at epoch 49, its weights kept)"."""
    at = f"{epoch}/{total}"
    if reason == "early_stopping":
        best = f" (best at epoch {best_epoch}, its weights kept)" if best_epoch is not None else ""
        return f"stopped early at {at}: validation loss no better for {patience} epochs{best}"
    if reason == "plateau":
        return f"stopped at {at}: training objective no better for {patience} epochs (no validation split)"
    if reason == "converged":
        return f"converged at {at}: gradient norm below train.tol = {tol:g}" if tol is not None else f"converged at {at}"
    if reason == "max_epochs":
        return f"reached the epoch limit {at} (resume --set train.epochs=N goes on)"
    if reason == "interrupted":
        return f"interrupted at {at}; checkpoint saved"
    if reason == "diverged":
        return f"diverged at {at}; the last finite weights are kept"
    return f"stopped at {at}: {reason}"


class Progress(Callback):
    """Epochs done, with the objective, the training loss and the validation loss at each check;
    at the end, one line saying why the run stopped (:func:`stop_sentence`)."""

    def __init__(self, total_epochs: int, stream=None, lines: int = 10) -> None:
        self.total = total_epochs
        self.stream = stream or sys.stderr
        self.lines = lines
        self.bar = None
        self._last_printed: int | None = None

    def on_train_begin(self, state: TrainState) -> None:
        if self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=state.epoch, unit="epoch", file=self.stream, dynamic_ncols=True)

    def _postfix(self, state: TrainState) -> dict:
        post = {"objective": f"{state.train_objective:.4g}", "loss": f"{state.train_loss:.4g}"}
        if state.val_loss is not None:
            post["val_loss"] = f"{state.val_loss:.4g}"
        return post

    def on_epoch_end(self, state: TrainState) -> None:
        if self.bar is not None:
            self.bar.update(state.epoch - self.bar.n)
            if state.checked:
                self.bar.set_postfix(self._postfix(state), refresh=False)
            return
        every = max(1, self.total // self.lines)
        if state.checked and (state.epoch % every == 0 or state.epoch == 1):
            self._line(state)

    def _line(self, state: TrainState) -> None:
        self._last_printed = state.epoch
        text = "  ".join(f"{k} {v}" for k, v in self._postfix(state).items())
        print(f"epoch {state.epoch}/{self.total}  {text}", file=self.stream, flush=True)

    def on_train_end(self, state: TrainState) -> None:
        if self.bar is not None:
            self.bar.refresh()
            self.bar.close()
        elif state.train_loss is not None and self._last_printed != state.epoch:
            self._line(state)  # the epoch the run stopped at
        config = getattr(state.trainer, "config", None)  # an exact solver's run has no loop settings
        print(stop_sentence(state.stop_reason, state.epoch, self.total, getattr(config, "patience", 0),
                            getattr(config, "tol", None), state.history.best_epoch),
              file=self.stream, flush=True)


class PathProgress:
    """``path``'s fits as they finish, for :func:`torch_logreg.path.regularization_path`'s
    ``on_fit``: a bar over every (pass, penalty) fit on a terminal; otherwise a line per pass
    (the whole training split, then each fold) with the penalties done."""

    def __init__(self, n_passes: int, n_penalties: int, stream=None) -> None:
        self.n_passes, self.n_penalties = n_passes, n_penalties
        self.stream = stream or sys.stderr
        self.bar = None
        if self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=n_passes * n_penalties, unit="fit", file=self.stream, dynamic_ncols=True)

    def __call__(self, stage: str, j: int, penalty: float) -> None:
        """``stage``: "all" (the training split) or "fold f"; ``j``: the penalty's index."""
        what = "training split" if stage == "all" else stage
        if self.bar is not None:
            self.bar.set_description_str(f"{what}, penalty {penalty:.3g}", refresh=False)
            self.bar.update(1)
        elif j == self.n_penalties - 1:
            print(f"path: {what}: {self.n_penalties} penalties fitted, down to {penalty:.3g}", file=self.stream,
                  flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
