"""Bundle adjustment of one window in original-frame COLMAP pixels, with outlier filtering and a re-run.

Stages (every solve: Cauchy loss, poses + focal (+ distortion) + points refined, principal point fixed at the
frame centre, gauge fixed by pycolmap's two-camera rule: first pose constant, one translation coordinate of the
second constant, so the window keeps the predicted world frame and scale):

1. coarse: all observations with visibility > vis_thresh, loss scale = max_reproj_error. The predicted cameras
   can be degrees off, which puts most observations beyond max_reproj_error in original pixels; this solve
   pulls the cameras in before any observation is judged by its reprojection error.
2. inlier selection: observations with reprojection error < max_reproj_error; points with fewer than
   min_track_length of them are dropped.
3. fine: loss scale FINE_LOSS_SCALE, then the same filter, then the fine solve again, then the filter once more
   so every exported observation is within max_reproj_error.

``BundleAdjustmentError`` is raised when any stage leaves a frame with fewer than MIN_OBSERVATIONS_PER_FRAME
observations or splits the window into groups of frames that share fewer than MIN_SHARED_POINTS points, when
the solver fails, and when the result is not a refinement of the prediction any more (focal length, rotation
or camera position changed beyond the MAX_* limits).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pycolmap

from .colmap_model import (
    CameraSet,
    Observations,
    build_reconstruction,
    read_camera_params,
    read_points,
    read_poses,
    reprojection_errors,
)
from .geometry import camera_centres, rotation_angle_deg

FINE_LOSS_SCALE = 1.0
MAX_SOLVER_ITERATIONS = 100
# Ceres' default (0) keeps iterating long after the cost stops moving; 1e-6 relative is far below pixel noise.
FUNCTION_TOLERANCE = 1e-6
# Dense Schur complement is the fastest direct solver while the reduced camera system is small.
MAX_FRAMES_FOR_DENSE_SCHUR = 50
MIN_OBSERVATIONS_PER_FRAME = 32
# Frames linked by fewer shared points than this do not pin down each other's pose; the frames of a window must
# form one group through such links, or BA can turn one part of the window against the other.
MIN_SHARED_POINTS = 16
# Beyond these the solution is not a refinement of the prediction but something else.
MAX_FOCAL_CHANGE = 2.0
MAX_ROTATION_CHANGE_DEG = 30.0
MAX_CENTRE_SHIFT_IN_SCENE_DEPTHS = 1.0


class BundleAdjustmentError(RuntimeError):
    """Bundle adjustment could not produce a trustworthy model; the message says why."""


@dataclass
class Model:
    """A window's cameras, poses [S, 3, 4], points [P, 3] with colours [P, 3] uint8, and their observations."""

    cameras: CameraSet
    poses: np.ndarray
    points: np.ndarray
    colours: np.ndarray
    observations: Observations

    def errors(self) -> np.ndarray:
        return reprojection_errors(self.cameras, self.poses, self.points, self.observations)


def initial_cameras(
    k_original: np.ndarray, original_sizes: np.ndarray, camera_type: str, shared_camera: bool
) -> CameraSet:
    """COLMAP cameras of type ``camera_type`` from intrinsics K [S, 3, 3] in original COLMAP pixels.

    The principal point is the centre of the original frame (it stays fixed in BA); focal lengths are the
    predicted ones (mean of fx and fy for single-focal models), averaged over the frames that share a camera.
    Shared cameras are shared by frames of the same size (all of them, in a window of one video).
    """
    sizes = np.asarray(original_sizes, dtype=np.int64)
    if shared_camera:
        unique_sizes, image_camera = np.unique(sizes, axis=0, return_inverse=True)
        first_use = np.array([np.flatnonzero(image_camera == c)[0] for c in range(len(unique_sizes))])
        order = np.argsort(first_use)
        rank = np.argsort(order)
        unique_sizes, image_camera = unique_sizes[order], rank[image_camera.reshape(-1)]
    else:
        unique_sizes, image_camera = sizes, np.arange(len(sizes))
    params = []
    for index, (width, height) in enumerate(unique_sizes):
        members = image_camera == index
        fx, fy = k_original[members, 0, 0].mean(), k_original[members, 1, 1].mean()
        camera = pycolmap.Camera.create_from_model_name(
            index + 1, camera_type, 0.5 * (fx + fy), int(width), int(height)
        )
        values = np.asarray(camera.params, dtype=np.float64)
        focal_idxs = list(camera.focal_length_idxs())
        if len(focal_idxs) == 2:
            values[focal_idxs] = (fx, fy)
        values[list(camera.principal_point_idxs())] = (width / 2.0, height / 2.0)
        params.append(values)
    return CameraSet(camera_type, np.stack(params), unique_sizes, image_camera.astype(np.int64))


def _solve(names: list[str], model: Model, loss_scale: float) -> Model:
    """One pycolmap bundle adjustment of ``model``; returns the refined copy."""
    reconstruction = build_reconstruction(
        names, model.cameras, model.poses, model.points, model.colours, model.observations
    )
    options = pycolmap.BundleAdjustmentOptions()
    options.refine_focal_length = True
    options.refine_principal_point = False
    options.refine_extra_params = True
    options.print_summary = False
    options.ceres.loss_function_type = pycolmap.LossFunctionType.CAUCHY
    options.ceres.loss_function_scale = loss_scale
    solver = options.ceres.solver_options
    # One thread: windows already run in parallel, and the result must not depend on thread scheduling.
    solver.num_threads = 1
    solver.max_num_iterations = MAX_SOLVER_ITERATIONS
    solver.function_tolerance = FUNCTION_TOLERANCE
    options.ceres.auto_select_solver_type = False
    solver_types = type(solver.linear_solver_type)
    dense = len(names) <= MAX_FRAMES_FOR_DENSE_SCHUR
    solver.linear_solver_type = solver_types.DENSE_SCHUR if dense else solver_types.SPARSE_SCHUR
    config = pycolmap.BundleAdjustmentConfig()
    for image_id in range(1, len(names) + 1):
        config.add_image(image_id)
    config.fix_gauge(pycolmap.BundleAdjustmentGauge.TWO_CAMS_FROM_WORLD)
    summary = pycolmap.create_default_bundle_adjuster(options, config, reconstruction).solve()
    if not summary.is_solution_usable():
        raise BundleAdjustmentError(f"the solver stopped with {summary.termination_type.name}")
    refined = replace(
        model,
        cameras=replace(model.cameras, params=read_camera_params(reconstruction, len(model.cameras.params))),
        poses=read_poses(reconstruction, len(names)),
        points=read_points(reconstruction, len(model.points)),
    )
    if not (np.all(np.isfinite(refined.cameras.params)) and np.all(np.isfinite(refined.poses))
            and np.all(np.isfinite(refined.points))):
        raise BundleAdjustmentError("the solution is not finite")
    return refined


def keep_observations(model: Model, keep: np.ndarray, min_track_length: int) -> Model:
    """Keep the observations selected by ``keep`` [M], then the points with >= min_track_length of them."""
    observations = Observations(
        model.observations.point[keep], model.observations.frame[keep], model.observations.xy[keep]
    )
    counts = np.bincount(observations.point, minlength=len(model.points))
    kept_points = np.flatnonzero(counts >= min_track_length)
    new_index = np.full(len(model.points), -1, dtype=np.int64)
    new_index[kept_points] = np.arange(len(kept_points))
    survives = new_index[observations.point] >= 0
    observations = Observations(
        new_index[observations.point[survives]], observations.frame[survives], observations.xy[survives]
    )
    return replace(model, points=model.points[kept_points], colours=model.colours[kept_points],
                   observations=observations)


def _filter(model: Model, max_reproj_error: float, min_track_length: int, stage: str) -> Model:
    filtered = keep_observations(model, model.errors() < max_reproj_error, min_track_length)
    _require_coverage(filtered, stage)
    return filtered


def _require_coverage(model: Model, stage: str) -> None:
    num_frames = len(model.poses)
    per_frame = np.bincount(model.observations.frame, minlength=num_frames)
    worst = int(np.argmin(per_frame))
    if per_frame[worst] < MIN_OBSERVATIONS_PER_FRAME:
        raise BundleAdjustmentError(
            f"{stage}: frame {worst} keeps {per_frame[worst]} observations "
            f"(at least {MIN_OBSERVATIONS_PER_FRAME} needed)"
        )
    incidence = np.zeros((len(model.points), num_frames), dtype=np.int64)
    incidence[model.observations.point, model.observations.frame] = 1
    linked = incidence.T @ incidence >= MIN_SHARED_POINTS
    reached = np.zeros(num_frames, dtype=bool)
    reached[0] = True
    while True:
        grown = reached | linked[reached].any(axis=0)
        if np.array_equal(grown, reached):
            break
        reached = grown
    if not reached.all():
        raise BundleAdjustmentError(
            f"{stage}: frames {np.flatnonzero(~reached).tolist()} share fewer than {MIN_SHARED_POINTS} points "
            f"with frames {np.flatnonzero(reached).tolist()}"
        )


def _check_plausible(initial: Model, final: Model) -> None:
    """Raise when the cameras moved further than a refinement of the prediction can."""
    initial_focal = initial.cameras.params[:, 0]
    ratio = final.cameras.params[:, 0] / initial_focal
    if np.any(ratio > MAX_FOCAL_CHANGE) or np.any(ratio < 1.0 / MAX_FOCAL_CHANGE):
        raise BundleAdjustmentError(f"focal length changed by a factor {ratio.max():.2f} / {ratio.min():.2f}")
    rotation_change = rotation_angle_deg(final.poses[:, :, :3], initial.poses[:, :, :3]).max()
    if rotation_change > MAX_ROTATION_CHANGE_DEG:
        raise BundleAdjustmentError(f"a camera rotated by {rotation_change:.1f} degrees")
    depths = np.einsum("sj,pj->sp", initial.poses[:, 2, :3], initial.points) + initial.poses[:, 2, 3, None]
    scene_depth = float(np.median(np.abs(depths)))
    shift = np.linalg.norm(camera_centres(final.poses) - camera_centres(initial.poses), axis=1).max()
    if shift > MAX_CENTRE_SHIFT_IN_SCENE_DEPTHS * scene_depth:
        raise BundleAdjustmentError(f"a camera moved by {shift:.3g} (median scene depth {scene_depth:.3g})")


def bundle_adjust(names: list[str], initial: Model, max_reproj_error: float, min_track_length: int) -> Model:
    """Run the stages of the module docstring on ``initial`` (all observations with enough visibility)."""
    _require_coverage(initial, "tracking")
    coarse = _solve(names, initial, max_reproj_error)
    model = _filter(coarse, max_reproj_error, min_track_length, "initial inlier selection")
    model = _solve(names, model, FINE_LOSS_SCALE)
    model = _filter(model, max_reproj_error, min_track_length, "filtering after the first fine solve")
    model = _solve(names, model, FINE_LOSS_SCALE)
    model = _filter(model, max_reproj_error, min_track_length, "final filtering")
    _check_plausible(initial, model)
    return model
