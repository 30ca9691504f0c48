"""Overlapped execution: frames load in background threads, the device runs one batch while the previous
batch's windows are reconstructed in CPU worker processes. Bounded queues keep memory flat on any input length.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import threading
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Callable

import cv2
import torch
from tqdm import tqdm

from .finish import FinishSettings, finish_window
from .jobs import WindowFailure, WindowJob, WindowOutcome
from .options import PipelineOptions
from .forward import ForwardStats, auto_batch_size, forward_windows
from .load import FrameStore, WindowInputs

log = logging.getLogger(__name__)

LOADED_BATCHES_AHEAD = 2
LOADER_THREADS = 4


def run_overlapped(
    model: torch.nn.Module,
    jobs: list[WindowJob],
    options: PipelineOptions,
    settings: FinishSettings,
    on_outcome: Callable[[WindowOutcome], None],
    *,
    stats: ForwardStats | None = None,
    progress: bool = True,
) -> ForwardStats:
    """Run ``jobs`` through load -> forward -> finish with the three stages overlapped.

    ``on_outcome`` is called in the calling thread, once per job, as windows finish.
    """
    stats = stats if stats is not None else ForwardStats()
    batch_size = options.window_batch_size or auto_batch_size(model, jobs, options)
    batches = [jobs[i : i + batch_size] for i in range(0, len(jobs), batch_size)]
    log.info("%d windows in %d forward batches of up to %d", len(jobs), len(batches), batch_size)
    store = FrameStore(jobs, options.resize_mode, settings.output_dir)
    loaded: queue.Queue[list[WindowInputs | WindowOutcome] | None] = queue.Queue(maxsize=LOADED_BATCHES_AHEAD)
    pin = next(model.parameters()).device.type == "cuda"
    stop = threading.Event()
    loader = threading.Thread(
        target=_load_batches, args=(batches, store, options, pin, loaded, stop), name="frame-loader", daemon=True
    )
    bar = tqdm(total=len(jobs), unit="window", disable=not progress, dynamic_ncols=True)

    def report(outcome: WindowOutcome) -> None:
        on_outcome(outcome)
        bar.update(1)

    pool = _worker_pool(options.num_workers)
    in_flight: list[tuple[WindowJob, Future]] = []
    max_in_flight = 2 * max(options.num_workers, 1)
    loader.start()
    try:
        while (batch := loaded.get()) is not None:
            inputs = [item for item in batch if isinstance(item, WindowInputs)]
            for item in batch:
                if isinstance(item, WindowOutcome):
                    report(item)
            predictions = forward_windows(model, inputs, options.reconstruction, stats)
            for window, prediction in zip(inputs, predictions):
                if isinstance(prediction, WindowFailure):
                    report(WindowOutcome.for_job(window.job, settings.output_dir, "failed", reason=str(prediction)))
                elif pool is None:
                    report(finish_window(window.job, prediction, settings))
                else:
                    in_flight.append((window.job, pool.submit(finish_window, window.job, prediction, settings)))
            in_flight = _collect(in_flight, max_in_flight, settings, report)
        _collect(in_flight, 0, settings, report)
    finally:
        stop.set()
        _drain(loaded)
        loader.join()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return stats


def _worker_pool(num_workers: int) -> ProcessPoolExecutor | None:
    if num_workers == 0:
        return None
    # Spawned, not forked: the parent holds CUDA state and threads that a fork would copy half-way.
    return ProcessPoolExecutor(
        max_workers=num_workers, mp_context=multiprocessing.get_context("spawn"), initializer=_single_threaded
    )


def _single_threaded() -> None:
    """Workers are as many as the cores: each keeps to one thread (bundle adjustment already does), or OpenCV's
    and torch's thread pools in every worker would oversubscribe the machine many times over."""
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def _collect(
    in_flight: list[tuple[WindowJob, Future]],
    keep: int,
    settings: FinishSettings,
    report: Callable[[WindowOutcome], None],
) -> list[tuple[WindowJob, Future]]:
    """Report finished windows; block on the oldest until at most ``keep`` remain in flight."""
    remaining = []
    for i, (job, future) in enumerate(in_flight):
        if future.done() or len(in_flight) - i > keep:
            try:
                report(future.result())
            except Exception as exc:  # the worker process itself died
                report(WindowOutcome.for_job(job, settings.output_dir, "failed", reason=f"worker crashed: {exc}"))
        else:
            remaining.append((job, future))
    return remaining


def _load_batches(
    batches: list[list[WindowJob]],
    store: FrameStore,
    options: PipelineOptions,
    pin: bool,
    loaded: "queue.Queue[list[WindowInputs | WindowOutcome] | None]",
    stop: threading.Event,
) -> None:
    """Loader thread: decode and prepare each batch (windows in parallel), hand it over; ``None`` marks the end,
    whatever happens, so the consumer never waits for a batch that will not come."""
    try:
        with ThreadPoolExecutor(LOADER_THREADS, thread_name_prefix="decode") as decoders:
            for batch in batches:
                items = list(decoders.map(lambda job: _load_one(store, job, options, pin), batch))
                if not _put(loaded, items, stop):
                    return
    finally:
        _put(loaded, None, stop)


def _put(loaded: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put ``item`` once there is room; False when the consumer has stopped."""
    while not stop.is_set():
        try:
            loaded.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _load_one(store: FrameStore, job: WindowJob, options: PipelineOptions, pin: bool) -> WindowInputs | WindowOutcome:
    try:
        inputs = store.load_window(job)
    except Exception as exc:
        return WindowOutcome.for_job(job, options.output_dir, "failed", reason=str(exc))
    if pin:
        inputs.pixels = inputs.pixels.pin_memory()
    return inputs


def _drain(loaded: queue.Queue) -> None:
    while True:
        try:
            loaded.get_nowait()
        except queue.Empty:
            return
