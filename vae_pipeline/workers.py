"""Stage 3 in CPU worker processes: bounded, safe against a worker that dies, and never outliving the run.

A worker that crashes (a fault in native code, the kernel's out-of-memory killer) breaks the whole process pool
and every window in flight with it. The pool is then restarted, and the windows that were in flight run again
one at a time in a pool of their own, so the window that crashes is found and recorded as failed while the
others are written.

Workers end with the main process however it ends (kill -9 included): on Linux the kernel kills them when it
dies (PR_SET_PDEATHSIG), elsewhere a thread in each worker notices that its parent is gone. They ignore Ctrl-C
(the terminal sends it to every process of the group); the main process stops them. A worker starts with SIGINT
and SIGTERM blocked (the spawning thread blocks them, and a signal mask survives exec) until its initializer has
set what they do: while it boots it imports pycolmap, whose glog handler would print a stack dump for SIGTERM,
and Python would print a KeyboardInterrupt traceback for SIGINT. They never import torch: everything they
unpickle is plain data, numpy arrays and pycolmap.

Each worker is one window on one core, so its BLAS and OpenMP pools (numpy, scipy) start with one thread: the
libraries size their pools when they load, from the environment, so the variables are set for the worker's
start. Left to size themselves, 14 workers on a 16-core machine ran about 200 threads, which halved the
throughput (measured on an H200 node, README "Performance").
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable

from .finish import FinishSettings, finish_window
from .jobs import WindowJob, WindowOutcome
from .native import quiet_native_libraries
from .reconstruct import WindowPrediction

log = logging.getLogger(__name__)

CRASH_REASON = "the worker process died while reconstructing this window (a crash in native code, or out of memory)"
PARENT_POLL_S = 1.0
_PR_SET_PDEATHSIG = 1
_HELD_UNTIL_READY = {signal.SIGINT, signal.SIGTERM}
ONE_THREAD_POOLS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class FinishPool:
    """Runs ``finish_window`` for submitted windows and hands every outcome to ``report``, in the caller's thread.

    At most ``2 * num_workers`` windows are in flight: ``submit`` blocks on the oldest beyond that, so memory stays
    flat however fast windows arrive. ``num_workers == 0`` finishes each window in the calling process.
    """

    def __init__(self, num_workers: int, settings: FinishSettings, report: Callable[[WindowOutcome], None]):
        self._num_workers = num_workers
        self._settings = settings
        self._report = report
        self._pool = worker_pool(num_workers) if num_workers else None
        self._in_flight: list[tuple[WindowJob, WindowPrediction, Future, ProcessPoolExecutor]] = []

    def submit(self, job: WindowJob, prediction: WindowPrediction) -> None:
        if self._pool is None:
            self._report(finish_window(job, prediction, self._settings))
            return
        try:
            future = submit(self._pool, finish_window, job, prediction, self._settings)
        except BrokenProcessPool:
            self._restart()
            future = submit(self._pool, finish_window, job, prediction, self._settings)
        self._in_flight.append((job, prediction, future, self._pool))
        self._collect(keep=2 * self._num_workers)

    def drain(self) -> None:
        """Wait for every window in flight."""
        self._collect(keep=0)

    def close(self, *, stop: bool = False) -> None:
        """Shut the workers down: after the windows in flight, or at once with ``stop`` (the run was interrupted)."""
        if self._pool is None:
            return
        if stop:
            stop_workers(self._pool)
        else:
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
        solo = worker_pool(1)
        try:
            for job, prediction in suspects:
                try:
                    self._report(submit(solo, finish_window, job, prediction, self._settings).result())
                except BrokenProcessPool:
                    self._report(WindowOutcome.failed(job, CRASH_REASON))
                    solo.shutdown(wait=False)
                    solo = worker_pool(1)
        except BaseException:
            stop_workers(solo)
            raise
        solo.shutdown(wait=True)

    def _restart(self) -> None:
        """Replace a broken pool (its windows in flight fail with BrokenProcessPool and are isolated)."""
        self._pool.shutdown(wait=False)
        self._pool = worker_pool(self._num_workers)


def worker_pool(num_workers: int) -> ProcessPoolExecutor:
    """Worker processes set up as described in the module docstring.

    Spawned, not forked: the parent holds CUDA state and threads that a fork would copy half-way.
    """
    verbose = logging.getLogger("vae_pipeline").isEnabledFor(logging.DEBUG)
    return ProcessPoolExecutor(
        max_workers=num_workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(os.getpid(), verbose),
    )


def submit(pool: ProcessPoolExecutor, fn: Callable, *args: object) -> Future:
    """``pool.submit`` for a pool from ``worker_pool``: the pool starts its workers on demand, within submit, and
    a worker it starts inherits what is set here: SIGINT and SIGTERM held, one-thread BLAS and OpenMP pools."""
    with _held_signals(), _one_thread_pools():
        return pool.submit(fn, *args)


@contextlib.contextmanager
def _one_thread_pools():
    saved = {name: os.environ.get(name) for name in ONE_THREAD_POOLS}
    os.environ.update(ONE_THREAD_POOLS)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _held_signals():
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_UNTIL_READY)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def stop_workers(pool: ProcessPoolExecutor) -> None:
    """End the pool's workers now, without waiting for the windows they hold."""
    # The standard library gains ProcessPoolExecutor.terminate_workers() in Python 3.14; before that, the
    # processes are only reachable through the executor's private table.
    terminate = getattr(pool, "terminate_workers", None)
    if terminate is not None:
        terminate()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        if process.is_alive():
            process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)


def _init_worker(parent_pid: int, verbose: bool) -> None:
    """Set up one worker process (see the module docstring). Workers are as many as the cores, and the finish
    stage keeps each to one thread."""
    _end_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    quiet_native_libraries(verbose)  # SIGTERM: the default again, a silent end
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _HELD_UNTIL_READY)


def _end_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the kernel was told to watch it
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="parent-watch", daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_S)
    os._exit(1)
