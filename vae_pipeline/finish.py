"""Stage 3: reconstruct one window and write its folder. Runs in CPU worker processes, so no torch here.

The stage runs single-threaded wherever it runs (bundle adjustment is; OpenCV is set to one thread while it
runs; the processes that run it start their BLAS and OpenMP pools with one thread: ``workers.worker_pool``, and
Ray's tasks): one window per core is how every executor uses the CPUs, and a window's folder must not depend on how
many threads the process that finished it had.

What a window's folder holds depends only on the window's fingerprint (its frames, the model and the
output-affecting settings): no run id, timing, device or executor goes into it, so the same input gives the same
bytes however and wherever it was computed. Those go to the run's own records (``WindowOutcome``: the manifest
and the run's log; ``summary.json``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import cv2

from .export.window_folder import write_window_folder
from .jobs import DROPPED, OK, WindowJob, WindowOutcome, describe_error, frame_copies_dir
from .options import keeps
from .reconstruct import ReconstructionOptions, ReconstructionResult, WindowPrediction, reconstruct_window
from .storage import OutputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinishSettings:
    """What a worker needs besides the window itself (picklable, the same for every window of a run).

    provenance: what ``window.json`` records of where the window came from (package, model and its fingerprint,
    the output-affecting settings); keep: the lowest verdict that gets a folder (``--keep``).
    """

    output_dir: Path
    reconstruction: ReconstructionOptions
    provenance: dict[str, Any]
    colmap_text: bool = False
    save_depth: bool = False
    keep: str = "poor"


def finish_window(job: WindowJob, prediction: WindowPrediction, settings: FinishSettings) -> WindowOutcome:
    """Stage 3: reconstruct ``job`` from its prediction and write its folder, replacing one an earlier run left.

    A window whose verdict is below ``settings.keep`` gets no folder and the status "dropped"; any error becomes a
    failed outcome with its reason, except ``OutputError`` (the output's storage fails): that stops the run.
    """
    start = time.perf_counter()
    try:
        options = dataclasses.replace(settings.reconstruction, window_id=job.window_id)
        with single_threaded_opencv():
            result = reconstruct_window(prediction, options)
        report = result.report
        described = dict(
            ba=report.ba, ba_reason=report.ba_reason, verdict=report.verdict, verdict_reason=report.verdict_reason,
            metrics=dataclasses.asdict(report.metrics),
        )
        if not keeps(settings.keep, report.verdict):
            reason = f"verdict {report.verdict} is below --keep {settings.keep}"
            timings = {**report.timings, "finish_s": time.perf_counter() - start}
            return WindowOutcome.for_job(job, DROPPED, reason=reason, timings=timings, **described)
        write_start = time.perf_counter()
        write_window_folder(
            job.folder(settings.output_dir),
            result.reconstruction,
            frame_files(job, settings.output_dir),
            window_record(job, prediction, result, settings),
            colmap_text=settings.colmap_text,
            depth=prediction.depth if settings.save_depth else None,
            depth_conf=prediction.depth_conf if settings.save_depth else None,
        )
        timings = {**report.timings, "write_s": time.perf_counter() - write_start}
        return WindowOutcome.for_job(job, OK, timings={**timings, "finish_s": time.perf_counter() - start},
                                   **described)
    except OutputError:
        raise
    except Exception as exc:
        log.debug("window %s failed:\n%s", job.window_id, traceback.format_exc())
        return WindowOutcome.failed(job, describe_error(exc))


@contextlib.contextmanager
def single_threaded_opencv() -> Iterator[None]:
    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)


def frame_files(job: WindowJob, output_dir: Path) -> list[tuple[str, Path]]:
    """(name, file) of each frame for ``images/``: the decoded copy the load stage wrote, where it wrote one
    (video frames, EXIF-rotated or transparent images), else the input file itself."""
    copies = frame_copies_dir(output_dir, job.sequence.name)
    files = []
    for i in job.frame_indices:
        frame = job.sequence.frames[i]
        copy = copies / frame.name
        files.append((frame.name, copy if copy.exists() else frame.path))
    return files


def window_record(
    job: WindowJob, prediction: WindowPrediction, result: ReconstructionResult, settings: FinishSettings
) -> dict[str, Any]:
    """What ``window.json`` holds: the window's identity and fingerprint, its outcome and metrics, frames,
    cameras and provenance; nothing that depends on the run that computed it (see the module docstring)."""
    reconstruction = result.reconstruction
    images = {image.name: image for image in reconstruction.images.values()}
    cameras = []
    for name in prediction.names:
        image = images.get(name)
        if image is None:
            continue
        camera = reconstruction.cameras[image.camera_id]
        cameras.append(
            {
                "image": name,
                "image_id": image.image_id,
                "camera_id": image.camera_id,
                "model": camera.model.name,
                "width": camera.width,
                "height": camera.height,
                "params": camera.params.tolist(),
                "cam_from_world": image.cam_from_world().matrix().tolist(),
            }
        )
    frames = [
        {
            "name": name,
            "source": str(job.sequence.frames[i].path),
            "video_index": job.sequence.frames[i].video_index,
            "width": int(size[0]),
            "height": int(size[1]),
        }
        for name, i, size in zip(prediction.names, job.frame_indices, prediction.original_sizes)
    ]
    h, w = prediction.model_hw
    return {
        "window_id": job.window_id,
        "sequence": job.sequence.name,
        "window": job.window_index,
        "batch": job.batch_index,
        "fingerprint": job.fingerprint or None,
        **_without_timings(result.info),
        "model_input": {"width": w, "height": h},
        "frames": frames,
        "cameras": cameras,
        "provenance": settings.provenance,
    }


def _without_timings(info: dict[str, Any]) -> dict[str, Any]:
    """How long the steps took belongs to the run (the manifest has it), not to the window's folder."""
    return {key: value for key, value in info.items() if key != "timings"}
