"""Stage 2: one forward pass per batch of same-shape windows on the device, split into per-window predictions.

``forward_batch(model, windows, options, stats)`` is the stage: each window's prediction, or its failure as an
outcome.

Also what sizes and protects those passes: ``auto_batch_size`` (``--window-batch-size auto``) and the split and
retry of a batch that runs out of device memory.

On the CPU the pass always runs with ``CPU_FORWARD_THREADS`` intra-op threads, set here: torch's CPU kernels
split their reductions by thread count, so the last bits of a prediction depend on it, and each executor would
otherwise bring its own (all cores in a local run, one per CPU a Ray worker is given).
"""

from __future__ import annotations

import contextlib
import logging
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .jobs import WindowFailure, WindowJob, WindowOutcome, describe_error
from .load import FrameStore, WindowInputs
from .model.inference import predict
from .options import FOLDER_BATCH_SIZE_FOR_AUTO, PipelineOptions
from .reconstruct import ReconstructionOptions, WindowPrediction
from .reconstruct.pixels import content_boxes
from .reconstruct.tracking import detect_corners, select_query_frames, to_gray

log = logging.getLogger(__name__)

MEMORY_HEADROOM = 0.85
MAX_AUTO_BATCH = 64
CPU_FORWARD_THREADS = 4


def auto_batch_size(model: torch.nn.Module, jobs: list[WindowJob], options: PipelineOptions) -> int:
    """Measure one window's peak memory on the device and fit as many as the free memory allows.

    On the CPU there is nothing to measure: the folder batch size is used.
    """
    device = next(model.parameters()).device
    if device.type != "cuda" or not jobs:
        return FOLDER_BATCH_SIZE_FOR_AUTO
    sample = FrameStore(jobs[:1], options.resize_mode).prepare_window(jobs[0]).pixels[None].to(device)
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    baseline = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode():
        predict(model, sample, camera=True, depth=True)
    per_window = max(torch.cuda.max_memory_allocated(device) - baseline, 1)
    free, _ = torch.cuda.mem_get_info(device)
    size = int(max(1, min(MAX_AUTO_BATCH, MEMORY_HEADROOM * free // per_window)))
    log.info("auto batch size: %d windows (%.2f GiB per window, %.1f GiB free)", size, per_window / 2**30, free / 2**30)
    return size


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


@dataclass
class ForwardStats:
    """Device time and the out-of-memory splits of one run."""

    device_seconds: float = 0.0
    forward_passes: int = 0
    oom_splits: int = 0


@dataclass
class PredictedWindow:
    """A window and the model's prediction for it: what the finish stage takes."""

    job: WindowJob
    prediction: WindowPrediction


def forward_batch(
    model: torch.nn.Module,
    windows: list[WindowInputs],
    options: ReconstructionOptions,
    stats: ForwardStats | None = None,
) -> list[PredictedWindow | WindowOutcome]:
    """Stage 2: ``forward_windows`` with each failure turned into the window's failed outcome, in window order."""
    return [
        WindowOutcome.failed(inputs.job, str(result)) if isinstance(result, WindowFailure)
        else PredictedWindow(inputs.job, result)
        for inputs, result in zip(windows, forward_windows(model, windows, options, stats))
    ]


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
    with pinned_cpu_threads(_device_of(model)):
        for indices in groups.values():
            for i, result in zip(indices, _forward_split([batch[i] for i in indices], model, options, stats)):
                results[i] = result
    return [results[i] for i in range(len(batch))]


@contextlib.contextmanager
def pinned_cpu_threads(device: torch.device):
    """On the CPU, torch's intra-op threads are ``CPU_FORWARD_THREADS`` inside (see the module docstring)."""
    if device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(CPU_FORWARD_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


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
        out = predict(model, images, camera=True, depth=True, query_points=query_points, dense_batch=len(group))
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
