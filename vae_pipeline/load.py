"""Stage 1: decode each frame once and prepare windows of frames for the model (runs in loader threads).

``load_window(store, job)`` is the stage: a window's model input, or its failure as an outcome.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .export.window_folder import owner
from .frames import (
    Frame,
    FrameSource,
    PreparedFrame,
    Sequence,
    conform_frames,
    needs_normalized_copy,
    prepare_frame,
    stack_frames,
)
from .jobs import WindowFailure, WindowJob, WindowOutcome, describe_error, frame_copies_dir
from .storage import OutputError, writing


@dataclass
class WindowInputs:
    """A window's frames as the model takes them: ``pixels`` [S, 3, h, w] float32 in [0, 1]."""

    job: WindowJob
    frames: list[PreparedFrame]
    pixels: torch.Tensor

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.pixels.shape)


class FrameStore:
    """Decodes and prepares every frame once, keeps it while some pending window needs it, then lets it go.

    Frames that cannot be linked as they are on disk (``needs_frame_copy``) are also written once under
    ``output_dir`` (when given), for window folders to link to.
    Safe to call from several loader threads.
    """

    def __init__(self, jobs: list[WindowJob], resize_mode: str, output_dir: Path | None = None):
        self._resize_mode = resize_mode
        self._output_dir = output_dir
        self._lock = threading.Lock()
        self._sources: dict[str, FrameSource[PreparedFrame]] = {}
        self._users: dict[tuple[str, int], int] = defaultdict(int)
        self._first_needed: dict[str, int] = {}
        for job in jobs:
            for i in job.frame_indices:
                self._users[(job.sequence.name, i)] += 1
            name = job.sequence.name
            self._first_needed[name] = min(self._first_needed.get(name, len(job.sequence)), *job.frame_indices)

    def prepare_window(self, job: WindowJob) -> WindowInputs:
        """Prepared frames of ``job``; raises ``WindowFailure`` naming the frame that could not be read or its
        copy that could not be written, and ``OutputError`` when the output's storage fails."""
        source = self._source(job.sequence)
        try:
            frames = []
            for i in job.frame_indices:
                try:
                    frames.append(source.get(i))
                except (OutputError, WindowFailure):
                    raise
                except Exception as exc:
                    path = job.sequence.frames[i].path
                    raise WindowFailure(f"cannot read frame {path}: {describe_error(exc)}") from exc
        finally:
            self._release(job, source)
        frames = conform_frames(frames)
        return WindowInputs(job=job, frames=frames, pixels=stack_frames(frames))

    def skip(self, job: WindowJob) -> None:
        """``job`` will not be loaded here (finished, or claimed by another process): its frames need not wait."""
        self._release(job, self._source(job.sequence))

    def _source(self, sequence: Sequence) -> FrameSource[PreparedFrame]:
        with self._lock:
            source = self._sources.get(sequence.name)
            if source is None:
                source = self._sources[sequence.name] = FrameSource(sequence, partial(self._prepare, sequence))
            return source

    def _prepare(self, sequence: Sequence, frame: Frame, image: np.ndarray) -> PreparedFrame:
        if self._output_dir is not None and needs_frame_copy(sequence, frame):
            save_frame_copy(frame_copies_dir(self._output_dir, sequence.name), frame.name, image)
        return prepare_frame(image, self._resize_mode)

    def _release(self, job: WindowJob, source: FrameSource[PreparedFrame]) -> None:
        name = job.sequence.name
        with self._lock:
            for i in job.frame_indices:
                self._users[(name, i)] -= 1
            first = self._first_needed[name]
            while first < len(job.sequence) and self._users.get((name, first), 0) <= 0:
                first += 1
            self._first_needed[name] = first
        source.release_before(first)
        if first >= len(job.sequence):
            source.close()


def load_window(store: FrameStore, job: WindowJob, *, pin_memory: bool = False) -> WindowInputs | WindowOutcome:
    """Stage 1 for one window: its model input (in pinned memory for a fast copy to a CUDA device), or a failed
    outcome naming the frame that could not be read. Raises ``OutputError`` (the run stops) when a frame's copy
    cannot be written because the output's storage fails."""
    try:
        inputs = store.prepare_window(job)
    except OutputError:
        raise
    except WindowFailure as exc:
        return WindowOutcome.failed(job, str(exc))
    except Exception as exc:
        return WindowOutcome.failed(job, f"cannot prepare the window's frames: {describe_error(exc)}")
    if pin_memory:
        inputs.pixels = inputs.pixels.pin_memory()
    return inputs


def needs_frame_copy(sequence: Sequence, frame: Frame) -> bool:
    """Video frames have no file of their own; some images show other pixels to readers that ignore EXIF
    orientation or transparency."""
    return sequence.is_video or needs_normalized_copy(frame.path)


def save_frame_copy(folder: Path, name: str, image: np.ndarray) -> None:
    """Write a decoded frame once (atomically), for the window folders' ``images/`` to link to.

    Raises ``OutputError`` when the output's storage fails, else ``WindowFailure`` naming the copy."""
    target = folder / name
    if target.exists():
        return
    # Named like the window folders' staging (owner last) so that a later run removes it if this process dies.
    staging = folder / f".{name}.{threading.get_ident()}.partial-{owner()}"
    try:
        with writing(target):
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(staging, format=Image.registered_extensions()[target.suffix.lower()])
            os.replace(staging, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            staging.unlink(missing_ok=True)
        if isinstance(exc, OutputError):
            raise
        raise WindowFailure(f"cannot write the decoded copy {target} of a frame: {exc.strerror or exc}") from exc
