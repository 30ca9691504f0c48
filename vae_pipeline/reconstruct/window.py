"""``reconstruct_window``: one window's predictions -> a COLMAP model in original-frame pixels, judged.

Steps: pixel mapping -> (BA) tracks -> initial model from depth or triangulation -> bundle adjustment ->
metrics and verdict; the feed-forward model when BA is off, and as the fallback when BA fails (report.ba =
"failed" with the reason).
"""

from __future__ import annotations

import time
import zlib

import cv2
import numpy as np
import pycolmap

from .bundle_adjust import BundleAdjustmentError, bundle_adjust, initial_cameras, keep_observations
from .colmap_model import Model, Observations, model_from_reconstruction
from .feedforward import feedforward_model
from .geometry import bilinear_sample, triangulate_dlt, unproject_pixels
from .pixels import content_boxes, intrinsics_to_original, model_pixels_to_original, resolve_model_to_original
from .quality import judge, measure
from .tracking import TRACKERS, Tracks, select_query_frames
from .types import ReconstructionOptions, ReconstructionReport, ReconstructionResult, WindowPrediction

GIVEN_TRACKER = "vggt"
# What the numerical libraries raise when the data defeats them (a degenerate pair of frames, a singular system,
# a solver giving up, BundleAdjustmentError among the RuntimeErrors): the window falls back to the feed-forward
# model with the reason. pycolmap reports a failed internal check as a ValueError whose message says so.
# Anything else is a programming error and surfaces.
NUMERICAL_FAILURES = (cv2.error, np.linalg.LinAlgError, FloatingPointError, RuntimeError)
PYCOLMAP_CHECK = "Check failed"


def is_library_failure(error: BaseException) -> bool:
    return isinstance(error, NUMERICAL_FAILURES) or (isinstance(error, ValueError) and PYCOLMAP_CHECK in str(error))


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


def _feedforward(prediction: WindowPrediction, mapping: np.ndarray, options: ReconstructionOptions) -> Model:
    rng = window_rng(options, "feedforward_points")
    return Model(*feedforward_model(prediction, mapping, options.conf_thres_value, options.max_points, rng))


def _bundle_adjusted(
    prediction: WindowPrediction, mapping: np.ndarray, options: ReconstructionOptions, report: ReconstructionReport
) -> tuple[Model, pycolmap.Reconstruction]:
    """Tracks -> initial model -> bundle adjustment, recording timings in ``report`` on the way."""
    tracking_start = time.perf_counter()
    try:
        tracks = window_tracks(prediction, mapping, options)
    finally:
        report.timings["tracking_s"] = time.perf_counter() - tracking_start
    report.metrics.tracks = tracks.num_tracks
    ba_start = time.perf_counter()
    try:
        initial = initial_model(prediction, tracks, mapping, options)
        reconstruction = bundle_adjust(prediction.names, initial, options.max_reproj_error)
        return model_from_reconstruction(reconstruction, initial), reconstruction
    finally:
        report.timings["ba_s"] = time.perf_counter() - ba_start


def _assess(
    report: ReconstructionReport, model: Model, reconstruction: pycolmap.Reconstruction,
    prediction: WindowPrediction, mapping: np.ndarray, options: ReconstructionOptions,
) -> None:
    """Metrics of the model as written, then the verdict."""
    start = time.perf_counter()
    # points3D.bin stores each point's mean reprojection error; pycolmap computes it and the per-point mean.
    reconstruction.update_point_3d_errors()
    metrics = report.metrics
    metrics.registered_frames = reconstruction.num_reg_images()
    metrics.points = reconstruction.num_points3D()
    metrics.observations = len(model.observations)
    errors = model.errors()
    finite = np.isfinite(errors)
    if finite.any():
        metrics.reproj_error_per_observation_px = float(errors[finite].mean())
        metrics.reproj_error_per_point_px = float(reconstruction.compute_mean_reprojection_error())
    # Tracks are measured at model resolution: judge their fit there, whatever the size of the frames.
    model_pixel = mapping[model.observations.frame, :2].mean(axis=1)
    mean_error_model_px = float((errors[finite] / model_pixel[finite]).mean()) if finite.any() else 0.0
    measure(metrics, model.poses, np.asarray(prediction.extrinsic, dtype=np.float64), model.points,
            model.observations, errors, prediction.depth_conf, options.conf_thres_value)
    report.verdict, report.verdict_reason = judge(
        metrics, report.ba, report.ba_reason, prediction.num_frames, model.observations,
        prediction.original_sizes, mean_error_model_px, names=prediction.names,
    )
    report.timings["assess_s"] = time.perf_counter() - start


def reconstruct_window(
    prediction: WindowPrediction, options: ReconstructionOptions | None = None
) -> ReconstructionResult:
    """A COLMAP model of one window in ORIGINAL-frame pixels, with its metrics and verdict.

    With ``use_ba`` the model is bundle-adjusted from tracks; when that fails (too few tracks, no parallax, a
    solver or OpenCV failure, implausible cameras) the feed-forward model is returned with report.ba =
    "failed" and report.ba_reason. Same inputs, seed and window_id give the same output.
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
    report = ReconstructionReport()
    if options.use_ba:
        report.tracker = "given" if prediction.tracks is not None else options.tracker
        try:
            model, reconstruction = _bundle_adjusted(prediction, mapping, options, report)
            report.ba = "ok"
        except (*NUMERICAL_FAILURES, ValueError) as error:
            if not is_library_failure(error):
                raise
            report.ba = "failed"
            report.ba_reason = _describe(error)
    if report.ba != "ok":
        model = _feedforward(prediction, mapping, options)
        reconstruction = model.to_reconstruction(prediction.names)
    _assess(report, model, reconstruction, prediction, mapping, options)
    report.timings["total_s"] = time.perf_counter() - start
    return ReconstructionResult(reconstruction, report)


def _describe(error: BaseException) -> str:
    """The reason recorded for a failed bundle adjustment: our own message, or the library's last line."""
    if isinstance(error, BundleAdjustmentError):
        return str(error)
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}: {message[-1] if message else ''}".rstrip(": ")
