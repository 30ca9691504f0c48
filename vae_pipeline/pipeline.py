"""A whole run: discover frames, plan windows, load the model, run the stages, write manifest and summary.

The stages, as plain functions over plain data:
1. ``load.FrameStore.load_window``: decode (each frame once) and prepare a window's frames for the model;
2. ``forward.forward_windows``: one forward pass per batch of same-shape windows, split into per-window
   predictions;
3. ``finish.finish_window``: reconstruct one window and write its folder (in CPU worker processes).
``process_window_batch`` runs them one after another; ``executor.run_overlapped`` overlaps them.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from . import __version__
from .errors import OutputError
from .export.window_folder import remove_stale_staging
from .finish import FinishSettings, finish_window
from .forward import ForwardStats, forward_windows
from .frames import Sequence, discover_sequences
from .jobs import WindowJob, WindowOutcome
from .load import FrameStore, WindowInputs
from .model import load_vggt
from .model.inference import prepare_for_inference
from .model.loading import ResolvedCheckpoint, checkpoint_fingerprint, describe_source, resolve_checkpoint
from .options import OptionsError, PipelineOptions
from .windows import create_windows

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """Counts and rates of one run; ``summary.json`` holds it."""

    windows: int
    written: int
    skipped: int
    failed: int
    elapsed_s: float
    device: str
    device_busy_s: float
    forward_passes: int
    oom_splits: int

    @property
    def windows_per_s(self) -> float:
        return self.written / self.elapsed_s if self.elapsed_s > 0 else 0.0

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


def prepare_output_dir(path: Path) -> Path:
    """Create the output folder and prove it is writable, before any work is spent."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"cannot write to output folder {path}: {exc.strerror or exc}") from None
    return path


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


def provenance(options: PipelineOptions, checkpoint: ResolvedCheckpoint | None = None) -> dict[str, Any]:
    """Where a result came from: package, model (with a fingerprint of its weights when known) and every flag."""
    return {
        "package": "vae_pipeline",
        "package_version": __version__,
        "model_source": options.model_source,
        "model_fingerprint": checkpoint_fingerprint(checkpoint) if checkpoint is not None else None,
        "torch_version": torch.__version__,
        "flags": options.as_record(),
    }


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
    stops the others. ``executor.run_overlapped`` does the same work with the stages running concurrently.
    """
    log.debug("batch %d: %d windows", batch_idx, len(window_batch))
    store = FrameStore(window_batch, config.resize_mode, config.output_dir)
    settings = settings or FinishSettings(config.output_dir, config.reconstruction, provenance(config))
    outcomes: dict[int, WindowOutcome] = {}
    loaded: list[tuple[int, WindowInputs]] = []
    for i, job in enumerate(window_batch):
        try:
            loaded.append((i, store.load_window(job)))
        except Exception as exc:
            outcomes[i] = WindowOutcome.for_job(job, config.output_dir, "failed", reason=str(exc))
    predictions = forward_windows(model, [inputs for _, inputs in loaded], config.reconstruction, stats)
    for (i, inputs), prediction in zip(loaded, predictions):
        if isinstance(prediction, Exception):
            outcomes[i] = WindowOutcome.for_job(inputs.job, config.output_dir, "failed", reason=str(prediction))
        else:
            outcomes[i] = finish_window(inputs.job, prediction, settings)
    return [outcomes[i] for i in range(len(window_batch))]


class Manifest:
    """``manifest.jsonl``: a line per window as it finishes (so a crash keeps the record), sorted at the end."""

    def __init__(self, output_dir: Path):
        self.path = output_dir / "manifest.jsonl"
        self._lines: list[dict[str, Any]] = []
        self._file = open(self.path, "w")

    def add(self, outcome: WindowOutcome) -> None:
        line = asdict(outcome)
        self._lines.append(line)
        self._file.write(json.dumps(line) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
        ordered = sorted(self._lines, key=lambda line: (line["sequence"], line["window"]))
        _write_atomic(self.path, "".join(json.dumps(line) + "\n" for line in ordered))


def _write_atomic(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)


def run_serial(
    model: torch.nn.Module,
    jobs: list[WindowJob],
    options: PipelineOptions,
    settings: FinishSettings,
    on_outcome: Callable[[WindowOutcome], None],
    stats: ForwardStats,
) -> None:
    """The straightforward loop: each batch loads its frames, runs its forward pass and finishes its windows,
    one stage after another, before the next batch starts."""
    batch_size = options.folder_batch_size
    for batch_idx, start in enumerate(range(0, len(jobs), batch_size)):
        batch = jobs[start : start + batch_size]
        for outcome in process_window_batch(model, batch, batch_idx, options, settings=settings, stats=stats):
            on_outcome(outcome)


def run_pipeline(
    options: PipelineOptions,
    progress: bool = True,
    *,
    model: torch.nn.Module | None = None,
    overlapped: bool = True,
) -> RunSummary:
    """Run every window under ``options.input_dir``; finished windows of earlier runs are skipped.

    ``model`` replaces loading ``options.model_source`` (benchmarks pass random-weight models);
    ``overlapped=False`` runs the stages one after another (``run_serial``) instead of concurrently.
    """
    from .executor import run_overlapped

    start = time.perf_counter()
    sequences = discover_sequences(options.input_dir, options.frame_step)
    output_dir = prepare_output_dir(options.output_dir)
    for stale in remove_stale_staging(output_dir):
        log.info("removed %s, left half-written by an interrupted run", stale)
    device = resolve_device(options.device)
    jobs = plan_jobs(sequences, options)
    pending = [job for job in jobs if options.overwrite or not job.folder(output_dir).exists()]
    log.info(
        "%d sequence(s), %d frames, %d windows (%d finished earlier, %d to do)",
        len(sequences), sum(len(s.frames) for s in sequences), len(jobs), len(jobs) - len(pending), len(pending),
    )
    stats = ForwardStats()
    outcomes: list[WindowOutcome] = []
    checkpoint = None
    if model is None and pending:
        checkpoint = resolve_checkpoint(options.model_source)
        log.info("loading model %s on %s", describe_source(checkpoint), device)
        model = prepare_for_inference(load_vggt(checkpoint, device=device), compile=options.compile)
    elif model is not None:
        device = next(model.parameters()).device
    run_provenance = provenance(options, checkpoint)
    manifest = Manifest(output_dir)
    pending_ids = {id(job) for job in pending}
    for job in jobs:
        if id(job) not in pending_ids:
            manifest.add(WindowOutcome.for_job(job, output_dir, "skipped", reason="finished in an earlier run"))
    settings = FinishSettings(
        output_dir, options.reconstruction, run_provenance,
        colmap_text=options.colmap_text, save_depth=options.save_depth, overwrite=options.overwrite,
    )

    def record(outcome: WindowOutcome) -> None:
        outcomes.append(outcome)
        manifest.add(outcome)
        if outcome.status == "failed":
            log.warning("window %s failed: %s", outcome.window_id, outcome.reason)

    try:
        if pending and overlapped:
            run_overlapped(model, pending, options, settings, record, stats=stats, progress=progress)
        elif pending:
            run_serial(model, pending, options, settings, record, stats)
    finally:
        manifest.close()
    summary = RunSummary(
        windows=len(jobs),
        written=sum(o.status == "ok" for o in outcomes),
        skipped=len(jobs) - len(pending),
        failed=sum(o.status == "failed" for o in outcomes),
        elapsed_s=time.perf_counter() - start,
        device=str(device),
        device_busy_s=stats.device_seconds,
        forward_passes=stats.forward_passes,
        oom_splits=stats.oom_splits,
    )
    _write_atomic(
        output_dir / "summary.json",
        json.dumps({**summary.record(), "provenance": run_provenance}, indent=2) + "\n",
    )
    log.info("%d windows written, %d skipped, %d failed in %.1f s", summary.written, summary.skipped,
             summary.failed, summary.elapsed_s)
    return summary
