"""Stage 3 in CPU worker processes: bounded, and safe against a worker that dies.

A worker that crashes (a fault in native code, the kernel's out-of-memory killer) breaks the whole process pool
and every window in flight with it. The pool is then restarted, and the windows that were in flight run again
one at a time in a pool of their own, so the window that crashes is found and recorded as failed while the
others are written.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable

import cv2
import torch

from .finish import FinishSettings, finish_window
from .jobs import WindowJob, WindowOutcome
from .reconstruct import WindowPrediction

log = logging.getLogger(__name__)

CRASH_REASON = "the worker process died while reconstructing this window (a crash in native code, or out of memory)"


class FinishPool:
    """Runs ``finish_window`` for submitted windows and hands every outcome to ``report``, in the caller's thread.

    At most ``2 * num_workers`` windows are in flight: ``submit`` blocks on the oldest beyond that, so memory stays
    flat however fast windows arrive. ``num_workers == 0`` finishes each window in the calling process.
    """

    def __init__(self, num_workers: int, settings: FinishSettings, report: Callable[[WindowOutcome], None]):
        self._num_workers = num_workers
        self._settings = settings
        self._report = report
        self._pool = _process_pool(num_workers) if num_workers else None
        self._in_flight: list[tuple[WindowJob, WindowPrediction, Future, ProcessPoolExecutor]] = []

    def submit(self, job: WindowJob, prediction: WindowPrediction) -> None:
        if self._pool is None:
            self._report(finish_window(job, prediction, self._settings))
            return
        try:
            future = self._pool.submit(finish_window, job, prediction, self._settings)
        except BrokenProcessPool:
            self._restart()
            future = self._pool.submit(finish_window, job, prediction, self._settings)
        self._in_flight.append((job, prediction, future, self._pool))
        self._collect(keep=2 * self._num_workers)

    def drain(self) -> None:
        """Wait for every window in flight."""
        self._collect(keep=0)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _collect(self, keep: int) -> None:
        """Report finished windows, blocking on the oldest until at most ``keep`` remain in flight."""
        remaining, suspects, broken = [], [], False
        for i, (job, prediction, future, pool) in enumerate(self._in_flight):
            if not future.done() and len(self._in_flight) - i <= keep:
                remaining.append((job, prediction, future, pool))
                continue
            try:
                self._report(future.result())
            except BrokenProcessPool:
                suspects.append((job, prediction))
                broken |= pool is self._pool
        self._in_flight = remaining
        if broken:
            self._restart()
        if suspects:
            log.warning("a worker process died; rerunning the %d windows it took down one at a time", len(suspects))
            self._isolate(suspects)

    def _isolate(self, suspects: list[tuple[WindowJob, WindowPrediction]]) -> None:
        """Run each suspect alone in a single-worker pool: the one that kills its worker is the culprit."""
        solo = _process_pool(1)
        try:
            for job, prediction in suspects:
                try:
                    self._report(solo.submit(finish_window, job, prediction, self._settings).result())
                except BrokenProcessPool:
                    self._report(WindowOutcome.for_job(job, self._settings.output_dir, "failed", reason=CRASH_REASON))
                    solo.shutdown(wait=False)
                    solo = _process_pool(1)
        finally:
            solo.shutdown(wait=True)

    def _restart(self) -> None:
        """Replace a broken pool (its windows in flight fail with BrokenProcessPool and are isolated)."""
        self._pool.shutdown(wait=False)
        self._pool = _process_pool(self._num_workers)


def _process_pool(num_workers: int) -> ProcessPoolExecutor:
    # Spawned, not forked: the parent holds CUDA state and threads that a fork would copy half-way.
    return ProcessPoolExecutor(
        max_workers=num_workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker
    )


def _init_worker() -> None:
    """Workers are as many as the cores: each keeps to one thread (bundle adjustment already does), or OpenCV's
    and torch's thread pools in every worker would oversubscribe the machine many times over.

    pycolmap's import installs glog's failure handler for SIGTERM, which dumps a stack trace and can deadlock when
    the signal lands inside the garbage collector; a worker told to stop (the pool replacing itself after a
    crash, or the run ending) must simply stop.
    """
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
