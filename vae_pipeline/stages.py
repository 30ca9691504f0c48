"""The pipeline's three stages, as plain functions over plain data.

1. ``FrameStore.load_window``: decode (each frame once) and prepare a window's frames for the model.
2. ``forward_windows``: one forward pass per batch of same-shape windows, split into per-window predictions.
3. ``finish_window``: reconstruct one window and write its folder (runs in CPU worker processes).

``process_window_batch`` in ``pipeline.py`` runs them one after another; ``executor.py`` overlaps them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .finish import video_frames_dir
from .frames import Frame, FrameSource, PreparedFrame, Sequence, prepare_frame, stack_frames
from .jobs import WindowFailure, WindowJob, describe_error
from .model.inference import predict
from .reconstruct import ReconstructionOptions, WindowPrediction
from .reconstruct.pixels import content_boxes
from .reconstruct.tracking import detect_corners, select_query_frames, to_gray

log = logging.getLogger(__name__)


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

    Video frames are also written once under ``output_dir`` (when given), for window folders to link to.
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

    def load_window(self, job: WindowJob) -> WindowInputs:
        """Prepared frames of ``job``; raises ``WindowFailure`` naming the frame that could not be read."""
        source = self._source(job.sequence)
        try:
            frames = []
            for i in job.frame_indices:
                try:
                    frames.append(source.get(i))
                except Exception as exc:
                    path = job.sequence.frames[i].path
                    raise WindowFailure(f"cannot read frame {path}: {describe_error(exc)}") from exc
        finally:
            self._release(job, source)
        try:
            pixels = stack_frames(frames)
        except ValueError as exc:
            raise WindowFailure(str(exc)) from None
        return WindowInputs(job=job, frames=frames, pixels=pixels)

    def _source(self, sequence: Sequence) -> FrameSource[PreparedFrame]:
        with self._lock:
            source = self._sources.get(sequence.name)
            if source is None:
                source = self._sources[sequence.name] = FrameSource(sequence, partial(self._prepare, sequence))
            return source

    def _prepare(self, sequence: Sequence, frame: Frame, image: np.ndarray) -> PreparedFrame:
        if sequence.is_video and self._output_dir is not None:
            save_video_frame(video_frames_dir(self._output_dir, sequence.name), frame.name, image)
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


def save_video_frame(folder: Path, name: str, image: np.ndarray) -> None:
    """Write a decoded video frame once (atomically), for the window folders' ``images/`` to link to."""
    target = folder / name
    if target.exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f".partial-{threading.get_ident()}-{name}"
    Image.fromarray(image).save(staging, format=Image.registered_extensions()[target.suffix.lower()])
    os.replace(staging, target)


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


@dataclass
class ForwardStats:
    """Device time and the out-of-memory splits of one run."""

    device_seconds: float = 0.0
    forward_passes: int = 0
    oom_splits: int = 0


def forward_windows(
    model: torch.nn.Module,
    batch: list[WindowInputs],
    options: ReconstructionOptions,
    stats: ForwardStats | None = None,
) -> list[WindowPrediction | WindowFailure]:
    """Run the model on ``batch``: one forward pass per group of same-shape windows, in window order.

    A CUDA out-of-memory error halves the group and retries, down to one window; a window that still fails
    becomes a ``WindowFailure``.
    """
    stats = stats if stats is not None else ForwardStats()
    results: dict[int, WindowPrediction | WindowFailure] = {}
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, inputs in enumerate(batch):
        groups[inputs.shape].append(i)
    for indices in groups.values():
        for i, result in zip(indices, _forward_split([batch[i] for i in indices], model, options, stats)):
            results[i] = result
    return [results[i] for i in range(len(batch))]


def _forward_split(
    group: list[WindowInputs], model: torch.nn.Module, options: ReconstructionOptions, stats: ForwardStats
) -> list[WindowPrediction | WindowFailure]:
    try:
        return _forward_group(group, model, options, stats)
    except Exception as exc:
        if len(group) == 1:
            log.debug("forward pass failed for %s:\n%s", group[0].job.window_id, traceback.format_exc())
            return [WindowFailure(f"forward pass failed: {describe_error(exc)}")]
        if is_out_of_memory(exc):
            stats.oom_splits += 1
            log.warning("out of memory with %d windows in one pass; splitting the batch and retrying", len(group))
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        else:
            log.warning("forward pass failed for %d windows (%s); retrying them one by one", len(group), exc)
        half = (len(group) + 1) // 2
        return _forward_split(group[:half], model, options, stats) + _forward_split(group[half:], model, options, stats)


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


PREDICTION_KEYS = ("extrinsic", "intrinsic", "depth", "depth_conf", "track", "vis")


def _forward_group(
    group: list[WindowInputs], model: torch.nn.Module, options: ReconstructionOptions, stats: ForwardStats
) -> list[WindowPrediction]:
    """One forward pass for windows of one shape; with the VGGT tracker, reordered copies for extra query frames."""
    device = _device_of(model)
    # Each window's pixels are pinned by the loader: copy them as they are and stack on the device, so the main
    # thread spends no time on host-side stacking.
    images = torch.stack([w.pixels.to(device, non_blocking=True) for w in group])
    query_points = None
    query_plans = [plan_vggt_queries(w, options) for w in group] if _wants_vggt_tracks(options) else None
    if query_plans is not None:
        images, query_points = _with_query_orderings(images, query_plans)
        query_points = query_points.to(device)
    start = time.perf_counter()
    with torch.inference_mode():
        out = predict(model, images, camera=True, depth=True, query_points=query_points)
        out = {k: out[k].float().cpu() for k in PREDICTION_KEYS if k in out}
    stats.device_seconds += time.perf_counter() - start  # .cpu() waits for the device
    stats.forward_passes += 1
    predictions = []
    for b, inputs in enumerate(group):
        tracks = _collect_tracks(out, query_plans, b, len(group)) if query_plans is not None else None
        predictions.append(_window_prediction(inputs, out, b, tracks))
    return predictions


def _wants_vggt_tracks(options: ReconstructionOptions) -> bool:
    return options.use_ba and options.tracker == "vggt"


@dataclass(frozen=True)
class QueryPlan:
    """Query frames of one window and, per query frame, the query pixels [N, 2] in that frame."""

    frames: tuple[int, ...]
    points: tuple[np.ndarray, ...]


def plan_vggt_queries(inputs: WindowInputs, options: ReconstructionOptions) -> QueryPlan:
    """The weight-free tracker's query frames and corners (inside the frame's content, not on square-mode
    padding), for VGGT's track head to follow instead."""
    frames = tuple(select_query_frames(len(inputs.frames), options.query_frame_num))
    boxes = content_boxes(
        np.array([f.model_to_original for f in inputs.frames]),
        np.array([f.original_size for f in inputs.frames]),
        inputs.frames[0].image_u8.shape[:2],
    )
    grays = to_gray(np.stack([inputs.frames[f].image_u8 for f in frames]))
    none_taken = np.zeros((0, 2))
    corners = [detect_corners(g, boxes[f], options.max_query_pts, none_taken) for g, f in zip(grays, frames)]
    kept = [(f, c) for f, c in zip(frames, corners) if len(c)]  # a blank frame has nothing to track
    return QueryPlan(frames=tuple(f for f, _ in kept), points=tuple(c for _, c in kept))


def _with_query_orderings(images: torch.Tensor, plans: list[QueryPlan]) -> tuple[torch.Tensor, torch.Tensor]:
    """Append, for every query frame q > 0, the window reordered to start at q (the track head tracks frame 0).

    Returns images [B', S, 3, h, w] (the B original windows first) and query points [B', N, 2], padded by
    repeating each element's last point to a common N (extra tracks are dropped afterwards).
    """
    windows, queries = list(images), []
    extra = []
    for b, plan in enumerate(plans):
        for q, points in zip(plan.frames, plan.points):
            if q == 0:
                queries.append((b, points))
            else:
                extra.append(images[b][_order_starting_at(q, images.shape[1])])
                queries.append((len(windows) + len(extra) - 1, points))
    windows.extend(extra)
    n = max([len(p) for _, p in queries], default=1)
    padded = torch.zeros(len(windows), n, 2)
    for element, points in queries:
        pts = torch.from_numpy(np.asarray(points, dtype=np.float32))
        padded[element, : len(pts)] = pts
        padded[element, len(pts):] = pts[-1]
    return torch.stack(windows), padded


def _order_starting_at(q: int, seq_len: int) -> list[int]:
    return [q] + [i for i in range(seq_len) if i != q]


def _collect_tracks(
    out: dict[str, Any], plans: list[QueryPlan], b: int, num_windows: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tracks [S, N_total, 2], visibility [S, N_total] and query frame [N_total] of window ``b``, back in the
    window's frame order."""
    element = num_windows + sum(sum(1 for q in p.frames if q != 0) for p in plans[:b])
    seq_len = out["track"].shape[1]
    tracks, vis = [np.zeros((seq_len, 0, 2), np.float32)], [np.zeros((seq_len, 0), np.float32)]
    for q, points in zip(plans[b].frames, plans[b].points):
        n = len(points)
        if q == 0:
            t, v = out["track"][b, :, :n], out["vis"][b, :, :n]
        else:
            order = _order_starting_at(q, out["track"].shape[1])
            inverse = np.argsort(order)
            t, v = out["track"][element, inverse, :n], out["vis"][element, inverse, :n]
            element += 1
        tracks.append(t.numpy())
        vis.append(v.numpy())
    query_frame = np.concatenate([np.full(len(p), q) for q, p in zip(plans[b].frames, plans[b].points)] + [[]])
    return np.concatenate(tracks, axis=1), np.concatenate(vis, axis=1), query_frame.astype(np.int64)


def _window_prediction(
    inputs: WindowInputs, out: dict[str, Any], b: int, tracks: tuple[np.ndarray, ...] | None
) -> WindowPrediction:
    frames = inputs.frames
    xy, vis, query_frame = tracks if tracks is not None else (None, None, None)
    return WindowPrediction(
        names=inputs.job.frame_names,
        images=np.stack([f.image_u8 for f in frames]),
        extrinsic=out["extrinsic"][b].numpy().astype(np.float64),
        intrinsic=out["intrinsic"][b].numpy().astype(np.float64),
        depth=out["depth"][b, ..., 0].numpy(),
        depth_conf=out["depth_conf"][b].numpy(),
        original_sizes=np.array([f.original_size for f in frames], dtype=np.int64),
        model_to_original=np.array([f.model_to_original for f in frames], dtype=np.float64),
        tracks=xy,
        track_vis=vis,
        track_query_frame=query_frame,
    )
