"""The one driver: windows go through the same three stage functions however the stages are scheduled.

- ``load.load_window(store, job)``: a window's model input, or its failed outcome;
- ``forward.forward_batch(model, windows, options, stats)``: one forward pass per group of same-shape windows;
- ``finish.finish_window(job, prediction, settings)``: reconstruct and write one window.

``run_batch`` is stages 2 and 3 for one loaded batch; ``run_windows`` feeds it batches, either overlapped (frames
load in a background thread into pinned memory while the device runs the previous batch, and CPU worker
processes finish windows while the device runs the next: ``workers.FinishPool``) or inline (each batch loads,
runs and finishes before the next starts). Bounded queues keep memory flat on any input length.

``--executor ray`` (``ray_executor``) runs the same stage functions, ``run_batch`` included, on a Ray cluster,
on the same batches: both take them from the job source (``run_state.ClaimedJobs.take``), which decides them.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Callable, Iterator, Protocol

import torch
from tqdm import tqdm

from .finish import FinishSettings
from .forward import ForwardStats, PredictedWindow, auto_batch_size, forward_batch
from .jobs import Taken, WindowJob, WindowOutcome
from .load import FrameStore, WindowInputs, load_window
from .options import PipelineOptions
from .reconstruct import ReconstructionOptions, WindowPrediction
from .workers import FinishPool

log = logging.getLogger(__name__)

LOADED_BATCHES_AHEAD = 2
LOADER_THREADS = 4
STOPPED_LOADER_WAIT_S = 5.0

Report = Callable[[WindowOutcome], None]
Finish = Callable[[WindowJob, WindowPrediction], None]


class JobSource(Protocol):
    """The windows of a run, handed out a batch at a time (``run_state.ClaimedJobs`` claims them first)."""

    jobs: list[WindowJob]

    def take(self, count: int) -> Taken: ...

    @property
    def pass_ended(self) -> bool: ...


def run_batch(
    model: torch.nn.Module,
    loaded: list[WindowInputs | WindowOutcome],
    options: ReconstructionOptions,
    stats: ForwardStats | None,
    report: Report,
    finish: Finish,
) -> None:
    """Stages 2 and 3 for one loaded batch: outcomes already known are reported, the forward pass runs on the
    loaded windows, and each prediction goes to ``finish`` (at once, or to a worker process)."""
    windows = []
    for item in loaded:
        if isinstance(item, WindowOutcome):
            report(item)
        else:
            windows.append(item)
    for result in forward_batch(model, windows, options, stats):
        if isinstance(result, PredictedWindow):
            finish(result.job, result.prediction)
        else:
            report(result)


def run_windows(
    model: torch.nn.Module,
    source: JobSource,
    options: PipelineOptions,
    settings: FinishSettings,
    on_outcome: Report,
    *,
    stats: ForwardStats | None = None,
    overlapped: bool = True,
    progress: bool = True,
) -> ForwardStats:
    """Run ``source``'s windows through load -> forward -> finish; ``on_outcome`` is called in the calling
    thread, once per window, as windows finish (or are passed over)."""
    stats = stats if stats is not None else ForwardStats()
    jobs = source.jobs
    batch_size = options.window_batch_size or auto_batch_size(model, jobs, options)
    log.info("%d windows in forward batches of up to %d", len(jobs), batch_size)
    store = FrameStore(jobs, options.resize_mode, settings.output_dir)
    pin = next(model.parameters()).device.type == "cuda"
    bar = tqdm(total=len(jobs), unit="window", disable=not progress, dynamic_ncols=True)

    def report(outcome: WindowOutcome) -> None:
        on_outcome(outcome)
        bar.update(1)

    finisher = FinishPool(options.num_workers, settings, report)
    batches = _Prefetched(source, store, batch_size, pin) if overlapped else None
    stopped = False
    try:
        for loaded in batches if batches is not None else _load_batches(source, store, batch_size, pin):
            run_batch(model, loaded, options.reconstruction, stats, report, finisher.submit)
        finisher.drain()
    except BaseException:
        stopped = True
        raise
    finally:
        if batches is not None:
            batches.close(wait_s=STOPPED_LOADER_WAIT_S if stopped else None)
        finisher.close(stop=stopped)
        bar.close()
    return stats


def _load_batches(
    source: JobSource, store: FrameStore, batch_size: int, pin: bool, decoders: ThreadPoolExecutor | None = None,
    stop: threading.Event | None = None,
) -> Iterator[list[WindowInputs | WindowOutcome]]:
    """Batches of loaded windows (and the outcomes of windows passed over), until the source is exhausted."""
    load = partial(load_window, store, pin_memory=pin)
    while stop is None or not stop.is_set():
        taken = source.take(batch_size)
        if not (taken.claimed or taken.passed or taken.outcomes):
            return
        for job in taken.passed:
            store.skip(job)
        loaded = list(decoders.map(load, taken.claimed)) if decoders is not None else [load(j) for j in taken.claimed]
        yield [*taken.outcomes, *loaded]


class _Prefetched:
    """Batches loaded by a background thread (windows decoded in parallel), at most ``LOADED_BATCHES_AHEAD``
    ahead of the device. An error in the thread is raised in the consumer."""

    _END = object()

    def __init__(self, source: JobSource, store: FrameStore, batch_size: int, pin: bool):
        self._queue: queue.Queue = queue.Queue(maxsize=LOADED_BATCHES_AHEAD)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(source, store, batch_size, pin), name="frame-loader", daemon=True
        )
        self._thread.start()

    def __iter__(self) -> Iterator[list[WindowInputs | WindowOutcome]]:
        while (item := self._queue.get()) is not self._END:
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self, wait_s: float | None = None) -> None:
        """Stop the thread; ``wait_s`` bounds the wait for a batch being decoded (after an interruption)."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(wait_s)

    def _run(self, source: JobSource, store: FrameStore, batch_size: int, pin: bool) -> None:
        # Whatever happens, the consumer gets the end mark (or the error), so it never waits for a batch that
        # will not come.
        end: object = self._END
        try:
            with ThreadPoolExecutor(LOADER_THREADS, thread_name_prefix="decode") as decoders:
                for loaded in _load_batches(source, store, batch_size, pin, decoders, self._stop):
                    if not self._put(loaded):
                        return
        except BaseException as exc:
            end = exc
        finally:
            self._put(end)

    def _put(self, item: object) -> bool:
        """Put ``item`` once there is room; False when the consumer has stopped."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False
