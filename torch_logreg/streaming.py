"""Out-of-core training: mini-batches streamed from a memory-mapped ``.npy`` file.

The features live in a ``.npy`` file opened with ``numpy.load(mmap_mode="r")``; the targets in
a second ``.npy`` file or an array. Only a bounded set of host buffers ever holds rows:
``memory_budget_bytes`` caps the bytes of every buffer the streamer allocates (the batch slots
plus the staging arrays a gather or a dtype cast needs). The operating system's page cache,
which backs the memory map, is outside that budget: the kernel reclaims it as needed.

A background thread gathers the rows of upcoming batches into free slots while the loop works
on the current one. On CUDA the slots are pinned and copied to the device with
``non_blocking=True``; a slot is refilled only after its copy has finished.

Batch order is deterministic. ``order="permutation"`` (the default) draws the same permutation
from the same generator as :class:`~torch_logreg.train.Trainer`, so a streamed run gives the same
weights as the in-memory run with the same seed: bit for bit when both loops run with the same
number of torch threads (on CPU the streamed loop leaves one to the reader by default, see
``compute_threads``, which moves only the last bits of the sums). ``order="blocks"`` shuffles
contiguous runs of ``batch_size`` rows instead, which reads the file sequentially within each
batch (much faster from disk; a different, equally deterministic order).

    trainer = StreamingTrainer(model, "X.npy", "y.npy", memory_budget_bytes=256 << 20,
                               batch_size=1024, lr=0.1, epochs=5)
    history = trainer.run()
"""

from __future__ import annotations

import math
import os
import queue
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from . import arguments, validation
from .errors import UsageError
from .train import History, LoopConfig, Trainer

ORDERS = ("permutation", "blocks")


def open_array(source, name: str) -> np.ndarray:
    """A path to a ``.npy`` file -> its read-only memory map; an array is returned as is."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"{name}: no such file {str(path)!r}")
        return np.load(path, mmap_mode="r")
    if isinstance(source, Tensor):
        return source.detach().cpu().numpy()
    if isinstance(source, np.ndarray):
        return source
    raise TypeError(f"{name} must be a path to a .npy file or an array, got {type(source).__name__}")


def target_rows(model, y: np.ndarray, out: Tensor) -> None:
    """Write the ``(n, K)`` target rows of already-checked labels ``y`` into ``out``."""
    yt = torch.from_numpy(np.ascontiguousarray(y))
    if getattr(model, "link", None) == "softmax" and yt.dim() == 1:
        out.zero_().scatter_(1, yt.to(torch.int64)[:, None], 1.0)
    else:
        out.copy_(yt.reshape(out.shape))


def host_targets(model, y: np.ndarray, dtype: torch.dtype) -> Tensor:
    """The ``(n, K)`` target rows of labels ``y`` on the host, checked as ``model.targets`` does."""
    if not (y.flags.writeable and y.flags.c_contiguous):
        y = np.array(y)  # a writable copy of the (small) label rows
    yt = torch.from_numpy(y)
    n = yt.shape[0]
    link = getattr(model, "link", None)
    if link == "softmax":
        return validation.class_targets(yt, n, model.n_outputs, dtype)
    if link == "sigmoid":
        return validation.binary_targets(yt, n, model.n_outputs, dtype)
    if link == "identity":
        return validation.real_targets(yt, n, model.n_outputs, dtype)
    return model.targets(yt, n).to(device="cpu", dtype=dtype)


class BatchStreamer:
    """Gathers batches of rows from a memory-mapped array into a fixed ring of host buffers.

    ``n_slots`` slots of ``batch_size`` rows each hold features (in the run's dtype) and targets;
    one background thread fills free slots in plan order while the consumer uses ready ones.
    ``allocated_bytes`` is what the slots and staging arrays take; ``peak_bytes_in_use`` the most
    ever held by slots that were filled or in use at the same time, plus the staging arrays.
    """

    def __init__(self, X: np.ndarray, y: np.ndarray, model, *, batch_size: int, n_slots: int,
                 dtype: torch.dtype, device: torch.device, check_targets: bool = True, transform=None) -> None:
        self.X, self.y, self.model = X, y, model
        self.transform = transform  # float64 rows -> the rows the model sees (e.g. standardized), or None
        self.check_targets = check_targets  # False when the labels were checked up front
        self.batch_size, self.n_slots, self.dtype, self.device = batch_size, n_slots, dtype, device
        self.n_outputs = int(model.n_outputs)
        self.pin = device.type == "cuda"
        self._np_dtype = torch.empty((), dtype=dtype).numpy().dtype
        self.slot_bytes, self.staging_bytes = self.sizes(X, y, batch_size, self.n_outputs, dtype, transform is not None)
        self.allocated_bytes = 0
        self.bytes_in_use = 0
        self.peak_bytes_in_use = 0
        self._lock = threading.Lock()
        self._slots: list[tuple[Tensor, Tensor]] | None = None
        self._staging: Tensor | None = None
        self._events: list = [None] * n_slots
        # A torch view of the same memory map: torch's gather runs on several threads and
        # without the GIL, so the reader thread and the training loop overlap. Nothing writes
        # through it (torch warns about read-only arrays; the warning does not apply).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self._X_t = torch.from_numpy(X)

    @staticmethod
    def sizes(X: np.ndarray, y: np.ndarray, batch_size: int, n_outputs: int, dtype: torch.dtype,
              transform: bool = False) -> tuple[int, int]:
        """``(bytes per slot, bytes of the staging arrays)`` for this data and batch size (and a
        ``transform``, whose float64 input and output are staging too)."""
        item = torch.empty((), dtype=dtype).element_size()
        d = X.shape[1]
        slot = batch_size * (d + n_outputs) * item
        staging = 0
        if transform:
            staging += batch_size * d * (X.dtype.itemsize + 16)  # gathered rows, as float64, transformed
        elif X.dtype != torch.empty((), dtype=dtype).numpy().dtype:
            staging += batch_size * d * X.dtype.itemsize  # rows in the file's dtype before the cast
        y_width = int(np.prod(y.shape[1:], dtype=np.int64)) if y.ndim > 1 else 1
        staging += batch_size * y_width * y.dtype.itemsize  # gathered labels
        staging += batch_size * n_outputs * item  # target rows built from them
        return slot, staging

    def _allocate(self) -> None:
        if self._slots is not None:
            return
        d = self.X.shape[1]
        b = self.batch_size
        self._slots = [
            (torch.empty(b, d, dtype=self.dtype, pin_memory=self.pin),
             torch.empty(b, self.n_outputs, dtype=self.dtype, pin_memory=self.pin))
            for _ in range(self.n_slots)
        ]
        if self.X.dtype != self._np_dtype:
            self._staging = torch.empty(b, d, dtype=self._X_t.dtype)
        self.allocated_bytes = self.n_slots * self.slot_bytes + self.staging_bytes

    def _account(self, delta: int) -> None:
        with self._lock:
            self.bytes_in_use += delta
            self.peak_bytes_in_use = max(self.peak_bytes_in_use, self.bytes_in_use + self.staging_bytes)

    def _fill(self, slot: int, rows) -> int:
        """Gather ``rows`` (an index array or a slice) into ``slot``; returns the row count.

        Targets already checked up front are only converted here; otherwise they are checked.
        """
        assert self._slots is not None  # allocated before the first fill
        xs, ts = self._slots[slot]
        if self.transform is not None:
            gathered = self._X_t[rows] if isinstance(rows, slice) else self._X_t.index_select(0, torch.from_numpy(rows))
            nb = gathered.shape[0]
            xs[:nb].copy_(self.transform(gathered.to(torch.float64)))
            src_y = self.y[rows] if isinstance(rows, slice) else np.take(self.y, rows, axis=0)
        elif isinstance(rows, slice):
            nb = rows.stop - rows.start
            xs[:nb].copy_(self._X_t[rows])  # a contiguous read, cast on the way if needed
            src_y = self.y[rows]
        else:
            nb = len(rows)
            idx = torch.from_numpy(rows)
            if self._staging is None:
                torch.index_select(self._X_t, 0, idx, out=xs[:nb])
            else:
                torch.index_select(self._X_t, 0, idx, out=self._staging[:nb])
                xs[:nb].copy_(self._staging[:nb])
            src_y = np.take(self.y, rows, axis=0)
        if self.check_targets:
            ts[:nb].copy_(host_targets(self.model, src_y, self.dtype))
        else:
            target_rows(self.model, src_y, ts[:nb])
        return nb

    def stream(self, plan):
        """Yield ``(Xb, Tb)`` on the device for each entry of ``plan`` (index arrays or slices)."""
        self._allocate()
        free: queue.Queue = queue.Queue()
        ready: queue.Queue = queue.Queue()
        for s in range(self.n_slots):
            free.put(s)
        stop = threading.Event()

        def reader() -> None:
            try:
                for rows in plan:
                    while True:
                        if stop.is_set():
                            return
                        try:
                            slot = free.get(timeout=0.05)
                            break
                        except queue.Empty:
                            continue
                    event = self._events[slot]
                    if event is not None:  # the slot's last copy to the device must be done
                        event.synchronize()
                        self._events[slot] = None
                    self._account(self.slot_bytes)
                    try:
                        nb = self._fill(slot, rows)
                    except BaseException:
                        self._account(-self.slot_bytes)
                        raise
                    ready.put((slot, nb))
                ready.put(None)
            except BaseException as exc:  # handed to the consumer, which re-raises it
                ready.put(exc)

        thread = threading.Thread(target=reader, name="torch_logreg-prefetch", daemon=True)
        thread.start()
        held: int | None = None
        try:
            while True:
                item = ready.get()
                if held is not None:  # the loop has finished with the previous batch
                    self._account(-self.slot_bytes)
                    free.put(held)
                    held = None
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                slot, nb = item
                xs, ts = self._slots[slot]
                if self.device.type == "cpu":
                    held = slot
                    yield xs[:nb], ts[:nb]
                else:
                    xb = xs[:nb].to(self.device, non_blocking=True)
                    tb = ts[:nb].to(self.device, non_blocking=True)
                    if self.device.type == "cuda":
                        event = torch.cuda.Event()
                        event.record()
                        self._events[slot] = event
                    self._account(-self.slot_bytes)
                    free.put(slot)
                    yield xb, tb
        finally:
            stop.set()
            thread.join()
            if held is not None:
                self._account(-self.slot_bytes)
            while True:  # slots the reader filled but nobody consumed
                try:
                    item = ready.get_nowait()
                except queue.Empty:
                    break
                if isinstance(item, tuple):
                    self._account(-self.slot_bytes)


class StreamingTrainer(Trainer):
    """:class:`~torch_logreg.train.Trainer` whose training rows come from a memory-mapped file.

    ``X``: a path to a ``(N, D)`` ``.npy`` file (or an array, e.g. an ``np.memmap``); ``y``: a
    path to a ``.npy`` file or an array of N labels / target rows. ``memory_budget_bytes`` caps
    the host buffers (see :class:`BatchStreamer`); ``prefetch`` is how many batches the reader
    may prepare ahead of the one in use (lowered to fit the budget, at least 1). ``order`` is
    ``"permutation"`` (same batches as the in-memory Trainer) or ``"blocks"``. ``validate``
    reads the file once up front, in budget-sized chunks, to check shapes, finiteness and
    targets. ``compute_threads`` (CPU only): torch threads for the loop while it runs, leaving
    the rest to the reader; default one fewer than ``torch.get_num_threads()``, at least one.
    ``rows``: the row numbers of the file to train on (a training split; default all), ``y`` and
    ``sample_weight`` being those of every row and of these rows respectively; batches draw the
    same permutation over them as the in-memory Trainer over ``X[rows]``. ``transform``: applied
    to each batch's rows (float64) as they are read, e.g. a standardizer's.
    Validation data (``X_val``, ``y_val``) is held in memory as usual. ``data``, ``config`` and
    ``callbacks`` (or the keyword form ``StreamingTrainer(model, X, y, lr=..., ...)``) are the
    Trainer's; ``batch_size`` must be positive unless the whole file fits.
    """

    streams_data = True
    X: np.ndarray  # type: ignore[assignment]  # the rows stay in their memory-mapped file

    def __init__(self, model, data, config: LoopConfig | None = None, callbacks=(), *, memory_budget_bytes: int,
                 prefetch: int = 2, order: str = "permutation", validate: bool = True,
                 compute_threads: int | None = None, rows=None, transform=None, **settings) -> None:
        arguments.number("memory_budget_bytes", memory_budget_bytes, low=1, integer=True)
        arguments.number("prefetch", prefetch, low=1, integer=True)
        arguments.choice("order", order, ORDERS)
        if compute_threads is not None:
            arguments.number("compute_threads", compute_threads, low=1, integer=True)
        self.compute_threads = compute_threads
        self.memory_budget_bytes = memory_budget_bytes
        self.order = order
        self._validate = validate
        self._requested_prefetch = prefetch
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.transform = transform
        super().__init__(model, data, config, callbacks, **settings)
        n = self.n_samples
        slot, staging = BatchStreamer.sizes(self.X, self.y, self.batch_size, int(self.model.n_outputs), self.dtype,
                                            transform is not None)
        n_slots = min(prefetch + 1, (memory_budget_bytes - staging) // slot if memory_budget_bytes > staging else 0)
        if n_slots < 2:
            need = 2 * slot + staging
            raise UsageError(
                f"memory_budget_bytes={memory_budget_bytes:,} is too small for batches of {self.batch_size} rows "
                f"of {self.X.shape[1]} features: two batch buffers need {need:,} bytes; "
                "lower batch_size or raise the budget"
                + ("" if self.batch_size < n else " (batch_size=0 means the whole file as one batch)")
            )
        self.prefetch = int(n_slots) - 1
        self.streamer = BatchStreamer(self.X, self.y, self.model, batch_size=self.batch_size, n_slots=int(n_slots),
                                      dtype=self.dtype, device=self.device, check_targets=not validate,
                                      transform=transform)

    @property
    def n_samples(self) -> int:
        """The rows trained on."""
        return int(self.X.shape[0]) if self.rows is None else len(self.rows)

    n_rows = n_samples

    @property
    def file_bytes(self) -> int:
        """Bytes of the features array (what in-memory training would have to hold)."""
        return int(self.X.size) * self.X.dtype.itemsize

    def _prepare(self, X, y, xname: str, yname: str):
        if xname != "X":  # validation data: in memory, as in the base class
            return super()._prepare(X, y, xname, yname)
        X = open_array(X, xname)
        y = open_array(y, yname)
        if X.ndim != 2:
            raise UsageError(f"{xname} must be 2-D (n_samples, n_features), got shape {X.shape}")
        if X.shape[0] == 0:
            raise UsageError(f"{xname} is empty: it has 0 samples (shape {X.shape})")
        if X.shape[1] != self.model.n_features:
            raise UsageError(f"{xname} has {X.shape[1]} features but the model expects {self.model.n_features} "
                             f"(shape {X.shape})")
        if X.dtype.kind != "f":
            raise TypeError(f"{xname} must be a floating-point array, got dtype {X.dtype}")
        if y.shape[0] != X.shape[0]:
            raise UsageError(f"{yname} has {y.shape[0]} samples but {xname} has {X.shape[0]}")
        if self.rows is not None and (self.rows.ndim != 1 or len(self.rows) == 0 or self.rows.min() < 0
                                      or self.rows.max() >= X.shape[0]):
            raise UsageError(f"rows must be a non-empty list of row numbers of {xname} (0 to {X.shape[0] - 1})")
        if self._validate:
            self._validate_chunks(X, y, xname, yname)
        self.y = y
        return X, None  # self.X is the memory map; targets are built per batch

    def _validate_chunks(self, X: np.ndarray, y: np.ndarray, xname: str, yname: str) -> None:
        row_bytes = X.shape[1] * (X.dtype.itemsize + 1) + 8 * int(getattr(self.model, "n_outputs", 1))
        rows = max(1, self.memory_budget_bytes // (2 * row_bytes))
        for start in range(0, X.shape[0], rows):
            xs = torch.from_numpy(np.array(X[start : start + rows]))
            where = validation.first_nonfinite(xs)
            if where is not None:
                raise UsageError(f"{xname} contains a non-finite value {xs[where].item()} at row {start + where[0]}, "
                                 f"column {where[1]}")
            try:
                host_targets(self.model, y[start : start + rows], self.dtype)
            except ValueError as exc:
                raise UsageError(f"{yname} (rows from {start}): {exc}") from exc

    def _plan(self) -> list:
        n, b = self.n_samples, self.batch_size
        if b >= n:
            return [slice(0, n)]
        if self.order == "permutation":  # the draw the in-memory Trainer makes
            perm = torch.randperm(n, generator=self.generator, device=self.device).cpu().numpy()
            return [perm[s : s + b] for s in range(0, n, b)]
        blocks = torch.randperm(math.ceil(n / b), generator=self.generator, device=self.device).cpu().tolist()
        return [slice(k * b, min(n, (k + 1) * b)) for k in blocks]

    def _batches(self):
        plan = self._plan()  # positions among the rows trained on
        read = plan if self.rows is None else [self.rows[p] for p in plan]  # the file's rows
        if self.sample_weight is None:
            yield from self.streamer.stream(read)
            return
        # the streamer yields the batches in the plan's order; each is weighted by its rows' weights
        for rows, batch in zip(plan, self.streamer.stream(read), strict=True):
            index = rows if isinstance(rows, slice) else torch.from_numpy(rows).to(self.device)
            self.stepper.sample_weight = self.sample_weight[index]
            yield batch

    def run(self) -> History:
        """:meth:`Trainer.run`, with the loop's torch threads lowered on CPU while it runs.

        On CPU the reader thread needs a core of its own: when the loop's operations also ask
        for every core, each parallel operation waits for the thread the reader displaced, and
        the streamed epoch ran at 0.6-0.75 of the in-memory one on two cores. The loop therefore
        runs with ``compute_threads`` torch threads (default: one fewer than torch's setting, at
        least one), set for this thread only and restored afterwards.
        """
        if self.device.type != "cpu":
            return super().run()
        before = torch.get_num_threads()
        threads = self.compute_threads if self.compute_threads is not None else max(1, before - 1)
        torch.set_num_threads(threads)
        try:
            return super().run()
        finally:
            torch.set_num_threads(before)


def fit_streaming(model, X, y, *, memory_budget_bytes: int, **kwargs) -> History:
    """Train ``model`` from a memory-mapped ``.npy`` file; see :class:`StreamingTrainer`."""
    return StreamingTrainer(model, X, y, memory_budget_bytes=memory_budget_bytes, **kwargs).run()
