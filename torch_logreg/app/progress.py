"""Progress over epochs: a tqdm bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys

from ..train import Callback, TrainState


class Progress(Callback):
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
            self.bar.close()
        elif state.train_loss is not None and self._last_printed != state.epoch:
            self._line(state)  # the epoch the run stopped at
