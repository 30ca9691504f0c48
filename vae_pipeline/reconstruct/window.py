"""``reconstruct_window``: one window's predictions -> a COLMAP model in original-frame pixels.

Steps: pixel mapping -> (BA) tracks -> initial model from depth or triangulation -> bundle adjustment ->
export; the feed-forward model when BA is off, and as the fallback when BA fails (info["ba"] = "failed").
"""

from __future__ import annotations

import time
import zlib
import numpy as np

from .bundle_adjust import BundleAdjustmentError, Model, bundle_adjust, initial_cameras, keep_observations
from .colmap_model import Observations, build_reconstruction
from .feedforward import feedforward_model
from .geometry import bilinear_sample, triangulate_dlt, unproject_pixels
from .pixels import content_boxes, intrinsics_to_original, model_pixels_to_original, resolve_model_to_original
from .tracking import TRACKERS, Tracks, select_query_frames
from .types import ReconstructionOptions, ReconstructionReport, ReconstructionResult, WindowMetrics, WindowPrediction

GIVEN_TRACKER = "vggt"


def window_rng(options: ReconstructionOptions, purpose: str) -> np.random.Generator:
    """A generator seeded by (seed, window_id, purpose) through a stable hash, never Python's ``hash()``."""
    return np.random.default_rng(zlib.crc32(f"{options.seed}:{options.window_id}:{purpose}".encode()))


def window_tracks(prediction: WindowPrediction, mapping: np.ndarray, options: ReconstructionOptions) -> Tracks:
    """The prediction's tracks when it has them (VGGT's track head), else the weight-free tracker's.

    A given track starts on the frame where it is most visible (its query frame for VGGT).
    """
    if prediction.tracks is not None:
        vis = (np.ones(prediction.tracks.shape[:2]) if prediction.track_vis is None
               else np.asarray(prediction.track_vis, dtype=np.float64))
        query_frame = (np.argmax(vis, axis=0) if prediction.track_query_frame is None
                       else np.asarray(prediction.track_query_frame, dtype=np.int64))
        return Tracks(np.asarray(prediction.tracks, dtype=np.float64), vis, query_frame)
    boxes = content_boxes(mapping, prediction.original_sizes, prediction.model_hw)
    query_frames = select_query_frames(prediction.num_frames, options.query_frame_num)
    return TRACKERS[options.tracker](
        prediction.images, boxes, query_frames, options.max_query_pts, options.fine_tracking
    )


def initial_model(
    prediction: WindowPrediction, tracks: Tracks, mapping: np.ndarray, options: ReconstructionOptions
) -> Model:
    """Cameras from the prediction and one point per usable track, observed where visibility > vis_thresh.

    Points come from the predicted depth at the track's query pixel (bilinear) unprojected with the query
    frame's camera, or, without depth, from linear triangulation of the visible observations.
    """
    k_original = intrinsics_to_original(prediction.intrinsic, mapping)
    cameras = initial_cameras(k_original, prediction.original_sizes, options.camera_type, options.shared_camera)
    poses = np.asarray(prediction.extrinsic, dtype=np.float64)
    xy = model_pixels_to_original(tracks.xy, mapping)
    visible = tracks.vis > options.vis_thresh
    query_uv = tracks.xy[tracks.query_frame, np.arange(tracks.num_tracks)]

    if prediction.depth is not None:
        points = np.zeros((tracks.num_tracks, 3))
        usable = np.zeros(tracks.num_tracks, dtype=bool)
        for frame in np.unique(tracks.query_frame):
            selected = np.flatnonzero(tracks.query_frame == frame)
            depth = bilinear_sample(prediction.depth[frame].astype(np.float64), query_uv[selected])
            intrinsic = np.asarray(prediction.intrinsic[frame], dtype=np.float64)
            points[selected] = unproject_pixels(query_uv[selected], depth, intrinsic, poses[frame])
            usable[selected] = np.isfinite(depth) & (depth > 0)
    else:
        # The initial cameras have no distortion yet, so their pinhole matrices project exactly.
        points, usable = triangulate_dlt(xy, visible, cameras.calibration_matrices(), poses)

    height, width = prediction.model_hw
    rounded = np.round(query_uv).astype(np.int64)
    colours = prediction.images[
        tracks.query_frame, np.clip(rounded[:, 1], 0, height - 1), np.clip(rounded[:, 0], 0, width - 1)
    ]
    frame, track = np.nonzero(visible & usable[None])
    observations = Observations(point=track, frame=frame, xy=xy[frame, track])
    model = Model(cameras, poses, points, colours.astype(np.uint8), observations)
    return keep_observations(model, np.ones(len(observations), dtype=bool), options.min_track_length)


def _mean_finite(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else 0.0


def _result(names: list[str], model: Model, report: ReconstructionReport) -> ReconstructionResult:
    reconstruction = build_reconstruction(
        names, model.cameras, model.poses, model.points, model.colours, model.observations
    )
    # points3D.bin stores each point's mean reprojection error; compute it rather than leave it unset.
    reconstruction.update_point_3d_errors()
    errors = model.errors()
    metrics = report.metrics
    metrics.registered_frames = reconstruction.num_reg_images()
    metrics.points = len(model.points)
    metrics.observations = len(model.observations)
    if metrics.points:
        metrics.track_length_median = float(np.median(np.bincount(model.observations.point)))
    metrics.reproj_error_per_observation_px = _mean_finite(errors)
    if report.ba == "ok" and metrics.points > 0:
        report.verdict = "good"
    elif metrics.points > 0:
        report.verdict = "poor"
        report.verdict_reason = report.ba_reason or "bundle adjustment was off: nothing checked the geometry"
    else:
        report.verdict, report.verdict_reason = "failed", "the model has no points"
    return ReconstructionResult(reconstruction, model.points, model.colours, report)


def _feedforward(prediction: WindowPrediction, mapping: np.ndarray, options: ReconstructionOptions) -> Model:
    rng = window_rng(options, "feedforward_points")
    return Model(*feedforward_model(prediction, mapping, options.conf_thres_value, options.max_points, rng))


def _bundle_adjusted(
    prediction: WindowPrediction, mapping: np.ndarray, options: ReconstructionOptions, report: ReconstructionReport
) -> Model:
    """Tracks -> initial model -> bundle adjustment, recording metrics and timings in ``report`` on the way."""
    tracking_start = time.perf_counter()
    tracks = window_tracks(prediction, mapping, options)
    report.timings["tracking_s"] = time.perf_counter() - tracking_start
    report.metrics.tracks = tracks.num_tracks
    ba_start = time.perf_counter()
    try:
        initial = initial_model(prediction, tracks, mapping, options)
        return bundle_adjust(prediction.names, initial, options.max_reproj_error, options.min_track_length)
    finally:
        report.timings["ba_s"] = time.perf_counter() - ba_start


def reconstruct_window(
    prediction: WindowPrediction, options: ReconstructionOptions | None = None
) -> ReconstructionResult:
    """A COLMAP model of one window in ORIGINAL-frame pixels (see DESIGN.md for the contract).

    With ``use_ba`` the model is bundle-adjusted from tracks; when that fails (too few observations, solver
    failure, implausible cameras) the feed-forward model is returned with info["ba"] = "failed" and
    info["ba_reason"]. Same inputs, seed and window_id give the same output.
    """
    options = options or ReconstructionOptions()
    options.validate()
    if options.tracker != GIVEN_TRACKER and options.tracker not in TRACKERS:
        raise ValueError(f"tracker {options.tracker!r} is not one of {', '.join([*TRACKERS, GIVEN_TRACKER])}")
    if options.use_ba and options.tracker == GIVEN_TRACKER and prediction.tracks is None:
        raise ValueError("tracker 'vggt' needs the prediction's tracks (VGGT's track head); none were given")
    prediction.validate()
    start = time.perf_counter()
    mapping = resolve_model_to_original(prediction.model_to_original, prediction.model_hw, prediction.original_sizes)
    report = ReconstructionReport(metrics=WindowMetrics())
    if options.use_ba:
        report.tracker = "given" if prediction.tracks is not None else options.tracker
        try:
            model = _bundle_adjusted(prediction, mapping, options, report)
            report.ba = "ok"
        except (RuntimeError, np.linalg.LinAlgError) as error:
            # BundleAdjustmentError is a RuntimeError; anything else is pycolmap or NumPy giving up.
            report.ba = "failed"
            report.ba_reason = (
                str(error) if isinstance(error, BundleAdjustmentError) else f"{type(error).__name__}: {error}"
            )
            model = _feedforward(prediction, mapping, options)
    else:
        model = _feedforward(prediction, mapping, options)
    result = _result(prediction.names, model, report)
    report.timings["total_s"] = time.perf_counter() - start
    return result
