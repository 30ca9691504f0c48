"""A whole run: discover frames, plan windows, check the output folder's run state, load the model, run the
stages, and rebuild the manifest and summary.

The stages are plain functions over typed data, which every way of running them calls (``executor``):
1. ``load.load_window``: decode (each frame once) and prepare a window's frames for the model;
2. ``forward.forward_batch``: one forward pass per batch of same-shape windows, split into per-window
   predictions;
3. ``finish.finish_window``: reconstruct one window and write its folder (in CPU worker processes).
``process_window_batch`` runs them for one batch, one after another; ``executor.run_windows`` runs a whole
plan, overlapped or not, in this process and its workers; ``ray_executor.RayStages`` runs it on a Ray cluster
(``--executor ray``). ``run_state`` makes the output folder safe to share between processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from . import __version__, ray_executor
from .executor import run_batch, run_windows
from .export.text_model import text_model_problem
from .export.window_folder import remove_stale_staging
from .finish import FinishSettings, finish_window
from .fingerprint import Fingerprints, run_settings
from .forward import ForwardStats
from .frames import Sequence, discover_inputs
from .jobs import CLAIMED_ELSEWHERE, DROPPED, FAILED, OK, SKIPPED, WindowJob, WindowOutcome
from .load import FrameStore, load_window
from .model import load_vggt
from .model.inference import prepare_for_inference
from .model.loading import check_checkpoint, checkpoint_fingerprint, describe_source, resolve_checkpoint
from .options import OptionsError, PipelineOptions
from .run_state import ClaimedJobs, FolderCounts, RunState
from .storage import OutputError, prepare_output_dir
from .windows import create_windows

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """``summary.json``: the output folder's windows by latest outcome (every run's, whichever ran them), then
    what this run did.

    Folder: ``windows`` (planned or recorded), ``written`` (with a folder), ``failed``, ``dropped`` (below
    ``--keep``), ``pending`` (not done yet, or claimed by a run still working), ``sequences_failed`` (inputs that
    could not be read). This run: ``run_written``, ``run_dropped``, ``run_failed`` (windows and sequences; the
    exit code follows it), ``skipped`` (finished earlier), ``claimed_elsewhere``, timings and device use.
    """

    run_id: str
    windows: int
    written: int
    failed: int
    dropped: int
    pending: int
    sequences_failed: int
    run_written: int
    run_dropped: int
    run_failed: int
    skipped: int
    claimed_elsewhere: int
    elapsed_s: float
    device: str
    device_busy_s: float
    forward_passes: int
    oom_splits: int

    @property
    def windows_per_s(self) -> float:
        """Windows this run finished (written or dropped) per second of its wall time."""
        return (self.run_written + self.run_dropped) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def device_busy_share(self) -> float:
        """Share of the run's wall time the device spent in forward passes."""
        return self.device_busy_s / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def record(self) -> dict[str, Any]:
        return {**asdict(self), "windows_per_s": self.windows_per_s, "device_busy_share": self.device_busy_share}


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when present; a CUDA device that is not there is a flag error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise OptionsError(f"--device {name!r} is not a torch device (try cpu, cuda or cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OptionsError(f"--device {name}: no CUDA device is available here; use --device cpu")
    return device


def plan_jobs(sequences: list[Sequence], options: PipelineOptions) -> list[WindowJob]:
    """Every window of every sequence, numbered globally per sequence (folder names never depend on batching)."""
    jobs = []
    for sequence in sequences:
        if len(sequence.frames) < options.window_size:
            log.warning(
                "sequence %s has %d frames, fewer than --window-size %d: one window of all of them",
                sequence.source, len(sequence.frames), options.window_size,
            )
        windows = create_windows(list(range(len(sequence.frames))), options.window_size, options.window_stride)
        for i, frame_indices in enumerate(windows):
            jobs.append(WindowJob(sequence, i, i // options.folder_batch_size, tuple(frame_indices)))
    return jobs


def provenance(options: PipelineOptions, model_fingerprint: str | None = None, **extra: Any) -> dict[str, Any]:
    """Where a run's results came from (``summary.json``): package, torch, model (with a fingerprint of its
    weights when known), ``extra`` (device, executor, run id) and every flag."""
    return {
        "package": "vae_pipeline",
        "package_version": __version__,
        "model_source": options.model_source,
        "model_fingerprint": model_fingerprint,
        "torch_version": str(torch.__version__),
        **extra,
        "flags": options.as_record(),
    }


def window_provenance(options: PipelineOptions, model_fingerprint: str | None = None) -> dict[str, Any]:
    """Where a window came from (``window.json``): package, model and the output-affecting settings, as the
    window's fingerprint covers them; nothing of the run that happened to compute it."""
    return {
        "package": "vae_pipeline",
        "package_version": __version__,
        "model_source": options.model_source,
        "model_fingerprint": model_fingerprint,
        "flags": run_settings(options, model_fingerprint),
    }


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A cheap identity of a model in memory (one given to ``run_pipeline`` instead of a checkpoint): its
    parameters' names, shapes and an even sample of their values."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 1024)].float().cpu().numpy()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(sample.tobytes())
    return f"sha256-sample:{digest.hexdigest()}"


def finish_settings(options: PipelineOptions, window_record_provenance: dict[str, Any]) -> FinishSettings:
    return FinishSettings(
        options.output_dir, options.reconstruction, window_record_provenance, colmap_text=options.colmap_text,
        save_depth=options.save_depth, keep=options.keep,
    )


def process_window_batch(
    model: torch.nn.Module,
    window_batch: list[WindowJob],
    batch_idx: int,
    config: PipelineOptions,
    *,
    settings: FinishSettings | None = None,
    stats: ForwardStats | None = None,
) -> list[WindowOutcome]:
    """One forward pass for a batch of windows, then per-window reconstruction and export, one after another.

    Returns one outcome per window, in window order; a window that fails is recorded with its reason and never
    stops the others. ``executor.run_windows`` runs whole plans through the same stages.
    """
    log.debug("batch %d: %d windows", batch_idx, len(window_batch))
    settings = settings or finish_settings(config, window_provenance(config))
    store = FrameStore(window_batch, config.resize_mode, config.output_dir)
    loaded = [load_window(store, job) for job in window_batch]
    outcomes: dict[str, WindowOutcome] = {}

    def collect(outcome: WindowOutcome) -> None:
        outcomes[outcome.window_id] = outcome

    run_batch(model, loaded, config.reconstruction, stats, collect,
              lambda job, prediction: collect(finish_window(job, prediction, settings)))
    return [outcomes[job.window_id] for job in window_batch]


def run_pipeline(
    options: PipelineOptions,
    progress: bool = True,
    *,
    model: torch.nn.Module | None = None,
    overlapped: bool = True,
) -> RunSummary:
    """Run this process's share of the windows under ``options.input_dir`` into ``options.output_dir``.

    Windows finished earlier with the same fingerprint are skipped; windows other processes are computing are
    left to them. ``model`` replaces loading ``options.model_source`` (benchmarks pass random-weight models; not
    with ``--executor ray``, whose actors load the model themselves); ``overlapped=False`` runs the stages one
    after another instead of concurrently.

    Errors of input, flags and checkpoint are found before the output folder is created. A failure of the output's
    storage (``OutputError``: a full disk, ...) stops the run; the windows finished before it are kept.
    """
    start = time.perf_counter()
    # Absolute paths: a window's record names its frames the same way whichever process (or machine) wrote it.
    options = replace(options, input_dir=Path(options.input_dir).absolute(),
                      output_dir=Path(options.output_dir).absolute())
    on_ray = options.executor == "ray"
    if on_ray:
        ray_executor.require_ray(options.ray_address)
        if model is not None:
            raise OptionsError("--executor ray: each actor loads the model from --model or --checkpoint; a model "
                               "object cannot be sent to them")
    inputs = discover_inputs(options.input_dir, options.frame_step)
    for notice in inputs.notices:
        log.warning("%s", notice.message)
    if options.colmap_text and (problem := text_model_problem(inputs.sequences)):
        raise OptionsError(problem)
    device = None if on_ray else resolve_device(options.device)
    checkpoint = None
    if model is None:
        checkpoint = check_checkpoint(resolve_checkpoint(options.model_source))
        model_fingerprint = checkpoint_fingerprint(checkpoint)
    else:
        model_fingerprint = weights_fingerprint(model)
        device = next(model.parameters()).device
    output_dir = prepare_output_dir(options.output_dir)
    for stale in remove_stale_staging(output_dir):
        log.info("removed %s, left half-written by an interrupted run", stale)
    settings = run_settings(options, model_fingerprint)
    fingerprints = Fingerprints(settings, options.input_dir)
    plan = [replace(job, fingerprint=fingerprints.of(job)) for job in plan_jobs(inputs.sequences, options)]

    def mine(item_id: str) -> bool:
        return options.shard is None or options.shard.takes(item_id)

    tally = {OK: 0, DROPPED: 0, FAILED: 0, SKIPPED: 0, CLAIMED_ELSEWHERE: 0}
    stats = ForwardStats()
    device_name = str(device) if device is not None else "ray"
    with RunState(output_dir) as state, contextlib.ExitStack() as cluster:
        state.adopt_settings(settings, options.model_source, options.overwrite, PipelineOptions.describe)

        def record(outcome: WindowOutcome) -> None:
            state.record(outcome)
            tally[outcome.status] += 1
            if outcome.status == FAILED:
                log.warning("%s failed: %s", outcome.window_id, outcome.reason)

        if options.overwrite:
            for folder in state.remove_unplanned(plan):
                log.info("removed %s: the new settings do not plan it", folder)
        state.forget_sequence_failures({failure.name for failure in inputs.failures})
        for failure in inputs.failures:
            if mine(failure.name):
                record(WindowOutcome.unreadable_sequence(failure.name, failure.source, failure.reason))
        redo_before = state.started if options.overwrite else None
        pending = []
        for job in filter(lambda job: mine(job.window_id), plan):
            if state.finished(job, redo_before) is not None:
                record(WindowOutcome.for_job(job, SKIPPED, reason="finished earlier"))
            else:
                pending.append(job)
        log.info(
            "%d sequence(s), %d frames, %d windows%s (%d finished earlier, %d to do)%s",
            len(inputs.sequences), sum(len(s.frames) for s in inputs.sequences), len(plan),
            f", shard {options.shard}: {len(pending) + tally[SKIPPED]}" if options.shard else "",
            tally[SKIPPED], len(pending),
            f"; {len(inputs.failures)} input(s) cannot be read" if inputs.failures else "",
        )
        ray_stages = None
        if pending and on_ray:
            ray_stages = cluster.enter_context(ray_executor.RayStages.start(options, model_fingerprint))
            device_name = ray_stages.device_name
        elif pending and model is None:
            log.info("loading model %s on %s", describe_source(checkpoint), device)
            model = prepare_for_inference(load_vggt(checkpoint, device=device), compile=options.compile)
        run_provenance = provenance(options, model_fingerprint, device=device_name, executor=options.executor,
                                    run_id=state.run_id)
        settings_of_windows = finish_settings(options, window_provenance(options, model_fingerprint))
        stopped_by: OutputError | None = None
        try:
            if pending:
                source = ClaimedJobs(state, pending, redo_before)
                if ray_stages is not None:
                    ray_stages.run(source, settings_of_windows, record, stats=stats, progress=progress)
                else:
                    run_windows(model, source, options, settings_of_windows, record, stats=stats,
                                overlapped=overlapped, progress=progress)
        except OutputError as exc:
            stopped_by = exc
            raise OutputError(f"{exc}. The run stopped; the windows it finished are kept, and the same command "
                              "continues it") from exc
        finally:
            elapsed = time.perf_counter() - start
            this_run = dict(
                run_id=state.run_id, run_written=tally[OK], run_dropped=tally[DROPPED], run_failed=tally[FAILED],
                skipped=tally[SKIPPED], claimed_elsewhere=tally[CLAIMED_ELSEWHERE], elapsed_s=elapsed,
                device=device_name, device_busy_s=stats.device_seconds, forward_passes=stats.forward_passes,
                oom_splits=stats.oom_splits,
            )

            def summarize(counts: FolderCounts) -> dict[str, Any]:
                left_out = [{"path": str(notice.path), "message": notice.message} for notice in inputs.notices]
                return {**RunSummary(**asdict(counts), **this_run).record(), "input_notices": left_out,
                        "provenance": run_provenance}

            try:
                counts = state.write_manifest(plan, summarize)
            except OutputError:
                if stopped_by is None:
                    raise
                # The storage that stopped the run refuses these too: the error that stopped it is the one to tell.
    summary = RunSummary(**asdict(counts), **this_run)
    log.info("%d windows written, %d dropped, %d failed in %.1f s by this run; %d skipped, %d claimed elsewhere; "
             "output folder: %d written, %d failed, %d pending", summary.run_written, summary.run_dropped,
             summary.run_failed, summary.elapsed_s, summary.skipped, summary.claimed_elsewhere, summary.written,
             summary.failed, summary.pending)
    return summary
