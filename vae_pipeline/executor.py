"""Overlapped execution: frames load in background threads, the device runs one batch while the previous
batch's windows are reconstructed in CPU worker processes (``workers.FinishPool``). Bounded queues keep memory
flat on any input length.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import torch
from tqdm import tqdm

from .finish import FinishSettings
from .forward import ForwardStats, auto_batch_size, forward_windows
from .jobs import WindowFailure, WindowJob, WindowOutcome
from .load import FrameStore, WindowInputs
from .options import PipelineOptions
from .workers import FinishPool

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

    finisher = FinishPool(options.num_workers, settings, report)
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
                else:
                    finisher.submit(window.job, prediction)
        finisher.drain()
    finally:
        stop.set()
        _drain(loaded)
        loader.join()
        finisher.close()
        bar.close()
    return stats


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
