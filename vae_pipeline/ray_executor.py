"""``--executor ray``: the same three stages on Ray Data, across the CPUs and GPUs of a Ray cluster.

One streaming Ray Data pipeline per pass of claims:

    one row per sequence (the batches this run claimed of it)
      -> load: a CPU task per sequence, ``load.load_window`` through one ``FrameStore`` (each frame decoded once,
         however many windows share it), one row per batch, streamed as it is loaded
      -> forward: one actor per GPU (or one CPU actor on a cluster without GPUs) that loads the model once;
         ``executor.run_batch`` runs ``forward.forward_batch`` on each batch as it was claimed, one row per window
      -> finish: ``finish.finish_window`` as a single-threaded CPU task per window
      -> the driver records each outcome as it arrives.

Ray Data's streaming executor bounds what is in flight (a load task pauses when its batches are not taken), so
memory stays flat on any input length. Ray only runs stage functions; the run state stays in the driver, which
claims windows (``run_state.ClaimedJobs``, the same batches the local executor takes) and records every outcome,
so reruns, shards and concurrent runs on one output folder behave as with the local executor. The driver claims
a pass of windows before starting the pipeline (the local executor claims a batch just before loading it): a
run started beside it meanwhile finds those windows claimed and leaves them to it.

A task whose worker dies is run again by Ray (an actor is restarted and its batch rerun); a window that keeps
killing its worker is recorded as failed once Ray gives up on it. A window can then be written twice (an attempt
that Ray lost finishes after all), which is harmless: both write the same bytes, and the driver records each
window once.

Ray is an optional extra (``pip install -e .[ray]``); this module imports it only when a run asks for it.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import signal
import socket
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from itertools import groupby
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from .errors import USAGE_ERRORS
from .executor import JobSource, run_batch
from .finish import FinishSettings, finish_window
from .forward import ForwardStats, PredictedWindow, auto_batch_size
from .jobs import WindowJob, WindowOutcome
from .load import FrameStore, load_window
from .model import load_vggt
from .model.inference import prepare_for_inference
from .model.loading import CheckpointError, checkpoint_fingerprint, resolve_checkpoint
from .options import FOLDER_BATCH_SIZE_FOR_AUTO, OptionsError, PipelineOptions
from .reconstruct import ReconstructionOptions

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install -e .[ray]"
COLUMN = "payload"
TASK_ATTEMPTS = 3
CONNECT_TIMEOUT_S = 5.0
LOST_REASON = (
    f"lost on the Ray cluster: the task computing this window failed {TASK_ATTEMPTS} times (a worker that died: "
    "a crash in native code, or out of memory; Ray's logs on the node say more)"
)

Report = Callable[[WindowOutcome], None]


class RayUnavailable(OptionsError):
    """``--executor ray`` where Ray is not installed or its cluster cannot be reached."""


def require_ray(address: str | None) -> None:
    """Fail early, in one line, where Ray is not installed or ``address`` does not answer."""
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        raise RayUnavailable(f"--executor ray needs Ray, which is not installed here: {INSTALL_HINT}") from None
    _check_reachable(address)


@dataclass
class _Carried:
    """What flows from the forward stage to the driver: a window's prediction (then its outcome), and with the
    first window of each batch, the batch's forward-pass figures."""

    item: PredictedWindow | WindowOutcome
    stats: ForwardStats | None = None


def _rows(items: list[Any]) -> dict[str, list[bytes]]:
    return {COLUMN: [pickle.dumps(item) for item in items]}


def load_sequence(rows: dict[str, np.ndarray], resize_mode: str, output_dir: Path) -> Iterator[dict[str, list[bytes]]]:
    """Stage 1 as a Ray task: one sequence's claimed batches, each frame decoded once; a row per loaded batch."""
    for payload in rows[COLUMN]:
        batches: list[list[WindowJob]] = pickle.loads(payload)
        store = FrameStore([job for batch in batches for job in batch], resize_mode, output_dir)
        for batch in batches:
            yield _rows([[load_window(store, job) for job in batch]])


class ForwardActor:
    """Stage 2 as a Ray actor: the model loaded once, then one forward pass per claimed batch (split by shape);
    a row per window."""

    def __init__(self, model_source: str, model_fingerprint: str, device: str, compile: bool,
                 options: ReconstructionOptions):
        checkpoint = resolve_checkpoint(model_source)
        found = checkpoint_fingerprint(checkpoint)
        if found != model_fingerprint:
            raise CheckpointError(
                f"the model {model_source} on this node has fingerprint {found}, the driver's has "
                f"{model_fingerprint}: every node must see the same weights (a shared path, or the same hub revision)"
            )
        self._model = prepare_for_inference(load_vggt(checkpoint, device=torch.device(device)), compile=compile)
        self._options = options

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, list[bytes]]:
        carried: list[_Carried] = []
        for payload in rows[COLUMN]:
            stats = ForwardStats()
            items: list[PredictedWindow | WindowOutcome] = []
            run_batch(self._model, pickle.loads(payload), self._options, stats, items.append,
                      lambda job, prediction: items.append(PredictedWindow(job, prediction)))
            carried += [_Carried(item, stats if i == 0 else None) for i, item in enumerate(items)]
        return _rows(carried)


def finish_windows(rows: dict[str, np.ndarray], settings: FinishSettings) -> dict[str, list[bytes]]:
    """Stage 3 as a Ray task: reconstruct and write each predicted window; outcomes pass through."""
    finished = []
    for payload in rows[COLUMN]:
        carried: _Carried = pickle.loads(payload)
        if isinstance(carried.item, PredictedWindow):
            carried = replace(carried, item=finish_window(carried.item.job, carried.item.prediction, settings))
        finished.append(carried)
    return _rows(finished)


def measure_batch_size(model_source: str, options: PipelineOptions, job: WindowJob) -> int:
    """``--window-batch-size auto`` on a GPU of the cluster (the driver may have none)."""
    model = prepare_for_inference(load_vggt(resolve_checkpoint(model_source), device=torch.device("cuda")))
    return auto_batch_size(model, [job], options)


@dataclass
class RayStages:
    """The stages on a Ray cluster this process started or joined: ``device`` of the forward actors (``cuda``:
    one per GPU of the cluster; ``cpu``: one)."""

    options: PipelineOptions
    model_fingerprint: str
    device: str
    actors: int

    @classmethod
    @contextlib.contextmanager
    def start(cls, options: PipelineOptions, model_fingerprint: str) -> Iterator["RayStages"]:
        """Join the cluster at ``--ray-address`` (by default a running local Ray, else one started here) and
        leave it afterwards; a Ray this process started stops with it, a cluster it joined keeps running. A Ray
        the caller connected this process to beforehand is used as it is."""
        import ray

        verbose = logging.getLogger("vae_pipeline").isEnabledFor(logging.DEBUG)
        connect_here = not ray.is_initialized()
        if connect_here:
            _connect(options.ray_address, verbose)
        _quiet_ray_data(verbose)
        try:
            device, actors = _forward_actors(options.device, ray.cluster_resources())
            log.info("Ray cluster: %s; forward pass in %d actor(s) on %s",
                     ", ".join(f"{v:g} {k}" for k, v in sorted(ray.cluster_resources().items())
                               if k in ("CPU", "GPU")), actors, device)
            yield cls(options, model_fingerprint, device, actors)
        finally:
            if connect_here:
                ray.shutdown()

    @property
    def device_name(self) -> str:
        return f"ray: {self.actors} x {self.device}"

    def run(self, source: JobSource, settings: FinishSettings, on_outcome: Report, *,
            stats: ForwardStats | None = None, progress: bool = True) -> ForwardStats:
        """Run ``source``'s windows; ``on_outcome`` is called in this thread once per window as outcomes arrive."""
        stats = stats if stats is not None else ForwardStats()
        batch_size = self.options.window_batch_size or self._auto_batch_size(source.jobs)
        log.info("%d windows in forward batches of up to %d", len(source.jobs), batch_size)
        bar = tqdm(total=len(source.jobs), unit="window", disable=not progress, dynamic_ncols=True)
        recorded: set[str] = set()

        def report(outcome: WindowOutcome) -> None:
            if outcome.window_id in recorded:
                log.debug("%s arrived again (a retried task); recorded once", outcome.window_id)
                return
            recorded.add(outcome.window_id)
            on_outcome(outcome)
            bar.update(1)

        try:
            while (batches := _claim_pass(source, batch_size, report)) is not None:
                if batches:
                    self._run_pass(batches, settings, report, stats)
        finally:
            bar.close()
        return stats

    def _run_pass(self, batches: list[list[WindowJob]], settings: FinishSettings, report: Report,
                  stats: ForwardStats) -> None:
        import ray.data
        from ray.data import ActorPoolStrategy
        from ray.util.annotations import RayDeprecationWarning

        # A batch never spans two sequences, and one pass claims a sequence's windows in order: one load task per
        # sequence decodes each of its frames once.
        parts = [list(group) for _, group in groupby(batches, key=lambda batch: batch[0].sequence.name)]
        with _data_context(), warnings.catch_warnings():
            # Ray Data retries a task (or an actor's task) whose worker died forever unless told otherwise, and
            # Ray 2.60 takes the bound only through the remote arguments it has deprecated (with no other way
            # yet): a window that kills its worker every time must end as a failure, not loop.
            warnings.simplefilter("ignore", RayDeprecationWarning)
            retries = TASK_ATTEMPTS - 1
            # One row per block after the load and forward stages (repartition fuses into them): a block that
            # keeps failing takes down its own batch or window, not others that would share a block with it.
            loaded = ray.data.from_items([{COLUMN: pickle.dumps(part)} for part in parts],
                                         override_num_blocks=len(parts))
            loaded = loaded.map_batches(
                load_sequence, batch_size=1, batch_format="numpy", num_cpus=1, max_retries=retries,
                fn_kwargs=dict(resize_mode=self.options.resize_mode, output_dir=settings.output_dir),
            ).repartition(target_num_rows_per_block=1)
            predicted = loaded.map_batches(
                ForwardActor, batch_size=1, batch_format="numpy", compute=ActorPoolStrategy(size=self.actors),
                num_cpus=1, num_gpus=1 if self.device == "cuda" else 0, max_task_retries=retries,
                fn_constructor_kwargs=dict(
                    model_source=self.options.model_source, model_fingerprint=self.model_fingerprint,
                    device=self.device, compile=self.options.compile, options=self.options.reconstruction),
            ).repartition(target_num_rows_per_block=1)
            finished = predicted.map_batches(
                finish_windows, batch_size=1, batch_format="numpy", num_cpus=1, max_retries=retries,
                fn_kwargs=dict(settings=settings),
            )
            try:
                for row in finished.iter_rows():
                    carried: _Carried = pickle.loads(row[COLUMN])
                    report(carried.item)
                    if carried.stats is not None:
                        stats.device_seconds += carried.stats.device_seconds
                        stats.forward_passes += carried.stats.forward_passes
                        stats.oom_splits += carried.stats.oom_splits
            except Exception as exc:
                raise _usage_error_behind(exc) or exc
        for job in (job for batch in batches for job in batch):
            report(WindowOutcome.failed(job, LOST_REASON))  # recorded only if no outcome arrived

    def _auto_batch_size(self, jobs: list[WindowJob]) -> int:
        if self.device != "cuda" or not jobs:
            return FOLDER_BATCH_SIZE_FOR_AUTO
        import ray

        # max_calls=1: the worker exits afterwards, so the memory torch cached on that GPU is free for its actor.
        measure = ray.remote(num_gpus=1, max_calls=1, max_retries=TASK_ATTEMPTS - 1)(measure_batch_size)
        return ray.get(measure.remote(self.options.model_source, self.options, jobs[0]))


def _claim_pass(source: JobSource, batch_size: int, report: Report) -> list[list[WindowJob]] | None:
    """Claim the batches of one pass over the source (windows passed over are reported as they are found);
    None once the source has nothing left."""
    batches: list[list[WindowJob]] = []
    while True:
        taken = source.take(batch_size)
        if not (taken.claimed or taken.passed or taken.outcomes):
            return batches or None
        for outcome in taken.outcomes:
            report(outcome)
        if taken.claimed:
            batches.append(taken.claimed)
        if source.pass_ended:
            return batches


def _forward_actors(device: str, resources: dict[str, float]) -> tuple[str, int]:
    """Where the forward pass runs: one actor per GPU of the cluster, or one CPU actor."""
    gpus = int(resources.get("GPU", 0))
    if device == "cpu" or (device == "auto" and gpus == 0):
        return "cpu", 1
    if device not in ("auto", "cuda"):
        raise OptionsError(f"--device {device} is not a device for --executor ray: use auto, cuda or cpu")
    if gpus == 0:
        raise RayUnavailable("--device cuda: the Ray cluster has no GPU; use --device cpu, or join a cluster with GPUs")
    return "cuda", gpus


def _connect(address: str | None, verbose: bool) -> None:
    """``ray.init``, with what Ray prints kept to errors unless ``verbose``: workers' output (native libraries'
    chatter) and Ray's own notes stay in Ray's log files (``/tmp/ray/session_latest/logs`` on each node)."""
    import ray

    try:
        with _signals_kept():
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=verbose,
                logging_level=logging.INFO if verbose else logging.ERROR,
            )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if address == "auto":
            raise RayUnavailable(
                f"--ray-address auto: no Ray cluster runs on this machine ({first_line}); start one with `ray start "
                "--head`, or leave --ray-address out to start one for this run") from None
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise RayUnavailable(f"cannot start or join {where}: {first_line}") from None


def _check_reachable(address: str | None) -> None:
    """Fail at once where ``host:port`` does not answer: ``ray.init`` would retry it for minutes."""
    if address in (None, "auto", "local"):
        return
    host, _, port = address.split("://")[-1].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except ValueError:
        raise RayUnavailable(f"--ray-address {address}: expected auto or host:port, such as 10.0.0.1:6379") from None
    except OSError as exc:
        raise RayUnavailable(
            f"--ray-address {address}: nothing answers there ({exc.strerror or exc}); start the cluster with "
            f"`ray start --head` on that machine") from None


@contextlib.contextmanager
def _signals_kept() -> Iterator[None]:
    """Keep this process's SIGINT and SIGTERM handling through ``ray.init``, which replaces the SIGTERM handler
    (the run stops Ray itself when it ends, however it ends), and have the processes it starts ignore SIGINT: a
    terminal's Ctrl-C goes to the whole process group, and Ray's agents that get it hang on instead of ending
    with the run. Workers started later inherit the same from the raylet."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _quiet_ray_data(verbose: bool) -> None:
    """Ray Data's own logging (plans, timings, hints, the traceback of a task it gave up on) goes to its log file
    only, unless ``verbose``: what it means for the run's windows is in the manifest, with a reason."""
    import ray.data  # noqa: F401  (sets up its loggers)

    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler):  # the console; the log file keeps everything
            handler.setLevel(logging.INFO if verbose else logging.CRITICAL)


@contextlib.contextmanager
def _data_context() -> Iterator[None]:
    """Ray Data settings of this run: no progress bars or plans printed (the run has its own progress bar), and
    a block that keeps failing does not stop the run (its windows are recorded as lost)."""
    from ray.data import DataContext

    context = DataContext.get_current()
    wanted = dict(enable_progress_bars=False, print_on_execution_start=False, max_errored_blocks=-1)
    previous = {name: getattr(context, name) for name in wanted}
    for name, value in wanted.items():
        setattr(context, name, value)
    try:
        yield
    finally:
        for name, value in previous.items():
            setattr(context, name, value)


class ForwardActorFailed(RayUnavailable):
    """The forward actors could not start (the model does not load on a node, a GPU is out of memory, ...)."""


def _usage_error_behind(exc: BaseException) -> Exception | None:
    """What stopped the pipeline, as a one-line error, when it is a problem of the setup rather than of a window:
    an option or checkpoint error a stage raised, or a forward actor that died while it started (Ray keeps only
    the text of that error: its last line names the exception)."""
    import ray.exceptions

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, USAGE_ERRORS):
            return exc
        if isinstance(exc, ray.exceptions.RayActorError) and exc.actor_init_failed:
            lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
            return ForwardActorFailed(f"the forward actors could not start on the Ray cluster: {lines[-1]}")
        cause = getattr(exc, "cause", None)
        exc = cause if isinstance(cause, BaseException) else (exc.__cause__ or exc.__context__)
    return None
