"""A full-batch step and the loop's update captured as one CUDA graph, replayed each epoch."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .base import Step


class GraphedStep(Step):
    """Wraps a bound full-batch step: ``step(X, T, l2)`` replays the captured step *and* the
    update (:attr:`includes_update`), returning the graph's static loss and gradient tensors.

    The graph is (re)captured when ``l2`` or ``key()`` changes (the update's hyper-parameters:
    the solver, learning rate, momentum). During capture nothing runs, so the parameters are
    untouched; a warm-up of the step alone on a side stream (the update is not run) readies the
    libraries first, as capture needs. Streams and capture are on the run's GPU.
    """

    name = "cuda_graph"
    includes_update = True

    def __init__(self, inner, update: Callable[[dict[str, Tensor]], None], key: Callable[[], tuple],
                 device: torch.device) -> None:
        self.inner, self.update, self.key, self.device = inner, update, key, device
        self.name = f"cuda_graph({inner.name})"
        self.flat_grad, self.grads = inner.flat_grad, inner.grads
        self._graph: torch.cuda.CUDAGraph | None = None
        self._graph_key: tuple | None = None
        #: how the inner step was chosen (set by the selector)
        self.selection = inner.selection
        self._out: tuple[Tensor, dict[str, Tensor]] | None = None

    def step(self, X: Tensor, T: Tensor, l2: float = 0.0) -> tuple[Tensor, dict[str, Tensor]]:
        key = (*self.key(), l2)
        with torch.cuda.device(self.device):
            if self._graph is None or key != self._graph_key:
                side = torch.cuda.Stream(self.device)
                side.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(side):
                    for _ in range(2):
                        self.inner.step(X, T, l2)
                torch.cuda.current_stream(self.device).wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=torch.cuda.Stream(self.device)):
                    loss, grads = self.inner.step(X, T, l2)
                    self.update(grads)
                self._graph, self._graph_key, self._out = graph, key, (loss, grads)
            self._graph.replay()
        assert self._out is not None  # set with the graph
        return self._out
