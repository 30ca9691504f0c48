"""Bundle adjustment of one window in original-frame COLMAP pixels, with outlier filtering between solves.

The pycolmap model is built once from the initial cameras, points and observations; every solve refines it in
place and pycolmap's own filter removes what does not fit between solves:

1. coarse solve: every observation, Cauchy loss of scale ``max_reproj_error``. The predicted cameras can be
   degrees off, which puts most observations beyond ``max_reproj_error``; this solve pulls the cameras in before
   any observation is judged by its error.
2. filter: observations farther than ``max_reproj_error`` from their projection or behind their camera, and
   points whose rays meet at less than ``MIN_TRIANGULATION_ANGLE_DEG`` (their depth is noise: a point 1e7 camera
   spreads away is one of those).
3. fine solve (loss scale ``FINE_LOSS_SCALE``), filter, and when that filter removed more than
   ``REFINE_AGAIN_SHARE`` of the observations, the fine solve and the filter once more: every exported
   observation fits.

Gauge: the first camera's pose stays as predicted (the window keeps the predicted world frame) and nothing else
is held: the scale is left free during the solves and afterwards set to the one that best matches the predicted
camera centres (least squares over every camera). Holding one coordinate of a second camera instead, pycolmap's
two-camera rule, rests the whole scale on one baseline; between consecutive video frames that baseline is about
the size of the prediction's error, and the solution then inflates or flips its scale.

``BundleAdjustmentError`` is raised when a stage leaves a frame with fewer than ``MIN_OBSERVATIONS_PER_FRAME``
observations, when the solver fails, and when the result is not a refinement of the prediction any more (focal
length, rotation or camera position changed beyond the MAX_* limits). Subtler doubts are the verdict's business
(``quality.py``).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pycolmap

from .colmap_model import CameraSet, Model, Observations, read_poses
from .geometry import camera_centres, max_triangulation_angle, rotation_angle_deg
from .quality import describe_split, incidence, weakest_link

FINE_LOSS_SCALE = 1.0
# The fine solve runs again only when the filter after it removed more than this share of the observations;
# otherwise the model is already the optimum of what remains, within the solver's tolerance.
REFINE_AGAIN_SHARE = 0.01
MAX_SOLVER_ITERATIONS = 100
# Ceres' default (1e-6 relative) keeps iterating long after the poses stop moving: on real windows 1e-4 costs a
# third less time and moves the median rotation error by under 0.01 degrees.
FUNCTION_TOLERANCE = 1e-4
# Dense Schur complement is the fastest direct solver while the reduced camera system is small.
MAX_FRAMES_FOR_DENSE_SCHUR = 50
MIN_OBSERVATIONS_PER_FRAME = 16
# Frames linked by fewer shared points than this do not pin down each other's poses at all.
MIN_SHARED_POINTS = 8
MIN_POINTS_WITH_PARALLAX = 32
# COLMAP's own filter angle: below it a point's depth is mostly noise.
MIN_TRIANGULATION_ANGLE_DEG = 1.5
# Beyond these the solution is not a refinement of the prediction but something else.
MAX_FOCAL_CHANGE = 2.0
MAX_ROTATION_CHANGE_DEG = 30.0
MAX_CENTRE_SHIFT_IN_SCENE_DEPTHS = 1.0


class BundleAdjustmentError(RuntimeError):
    """Bundle adjustment could not produce a trustworthy model; the message says why."""


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


def _solve(reconstruction: pycolmap.Reconstruction, loss_scale: float) -> None:
    """One pycolmap bundle adjustment of every image and point, in place; the first frame's pose is held."""
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
    dense = reconstruction.num_images() <= MAX_FRAMES_FOR_DENSE_SCHUR
    solver.linear_solver_type = solver_types.DENSE_SCHUR if dense else solver_types.SPARSE_SCHUR
    config = pycolmap.BundleAdjustmentConfig()
    for image_id in reconstruction.reg_image_ids():
        config.add_image(image_id)
    config.set_constant_rig_from_world_pose(min(reconstruction.reg_frame_ids()))
    summary = pycolmap.create_default_bundle_adjuster(options, config, reconstruction).solve()
    if not summary.is_solution_usable():
        raise BundleAdjustmentError(f"the solver stopped with {summary.termination_type.name}")


def _filter(reconstruction: pycolmap.Reconstruction, max_reproj_error: float, stage: str) -> None:
    """pycolmap's filters, one at a time so that a frame left without observations can be told why: first
    observations behind their camera or farther than ``max_reproj_error`` from their projection, then points
    whose rays meet at less than ``MIN_TRIANGULATION_ANGLE_DEG``."""
    manager = pycolmap.ObservationManager(reconstruction)
    manager.filter_observations_with_negative_depth()
    manager.filter_points3D_with_large_reprojection_error(max_reproj_error, set(reconstruction.point3D_ids()))
    _require_observations(reconstruction, f"{stage}: after removing observations off by more than "
                          f"{max_reproj_error} px,", "too few tracks fit the cameras")
    manager.filter_points3D_with_small_triangulation_angle(MIN_TRIANGULATION_ANGLE_DEG,
                                                           set(reconstruction.point3D_ids()))
    _require_observations(reconstruction, f"{stage}: after removing points seen under less than "
                          f"{MIN_TRIANGULATION_ANGLE_DEG} degrees,", "no parallax: the camera barely moves")


def _require_observations(reconstruction: pycolmap.Reconstruction, context: str, meaning: str) -> None:
    counts = {image.image_id: image.num_points3D for image in reconstruction.images.values()}
    worst = min(counts, key=counts.get)
    if counts[worst] < MIN_OBSERVATIONS_PER_FRAME:
        name = reconstruction.image(worst).name
        raise BundleAdjustmentError(
            f"{meaning} ({context} frame {name} keeps {counts[worst]} observations, at least "
            f"{MIN_OBSERVATIONS_PER_FRAME} needed)"
        )


def _restore_scale(reconstruction: pycolmap.Reconstruction, predicted: np.ndarray) -> None:
    """Scale the model about the first camera's centre so its camera centres best match the predicted ones."""
    refined = camera_centres(read_poses(reconstruction, len(predicted)))
    expected = camera_centres(predicted)
    offsets, target = refined - refined[0], expected - expected[0]
    denominator = float((offsets**2).sum())
    if denominator <= 0 or not np.isfinite(denominator):
        raise BundleAdjustmentError("the cameras collapsed onto one point")
    scale = float((offsets * target).sum()) / denominator
    if scale <= 0:
        raise BundleAdjustmentError("the camera path came out mirrored against the prediction")
    translation = refined[0] - scale * refined[0]
    reconstruction.transform(pycolmap.Sim3d(scale, pycolmap.Rotation3d(), translation))


def _check_plausible(initial: Model, reconstruction: pycolmap.Reconstruction) -> None:
    """Raise when the cameras moved further than a refinement of the prediction can."""
    initial_focal = initial.cameras.params[:, 0]
    final_focal = np.array([reconstruction.camera(i + 1).params[0] for i in range(len(initial_focal))])
    ratio = final_focal / initial_focal
    if np.any(ratio > MAX_FOCAL_CHANGE) or np.any(ratio < 1.0 / MAX_FOCAL_CHANGE):
        raise BundleAdjustmentError(f"focal length changed by a factor {ratio.max():.2f} / {ratio.min():.2f}")
    poses = read_poses(reconstruction, len(initial.poses))
    rotation_change = rotation_angle_deg(poses[:, :, :3], initial.poses[:, :, :3]).max()
    if rotation_change > MAX_ROTATION_CHANGE_DEG:
        raise BundleAdjustmentError(f"a camera rotated by {rotation_change:.1f} degrees")
    depths = np.einsum("sj,pj->sp", initial.poses[:, 2, :3], initial.points) + initial.poses[:, 2, 3, None]
    scene_depth = float(np.median(np.abs(depths)))
    shift = np.linalg.norm(camera_centres(poses) - camera_centres(initial.poses), axis=1).max()
    if shift > MAX_CENTRE_SHIFT_IN_SCENE_DEPTHS * scene_depth:
        raise BundleAdjustmentError(f"a camera moved by {shift:.3g} (median scene depth {scene_depth:.3g})")


def _require_tracks(names: list[str], initial: Model) -> None:
    """Every frame observed, every frame linked to the others, and enough parallax to triangulate."""
    per_frame = np.bincount(initial.observations.frame, minlength=len(names))
    if per_frame.min() < MIN_OBSERVATIONS_PER_FRAME:
        raise BundleAdjustmentError(
            f"tracking: frame {names[int(np.argmin(per_frame))]} has {per_frame.min()} observations "
            f"(at least {MIN_OBSERVATIONS_PER_FRAME} needed): no tracks reach it"
        )
    seen = incidence(initial.observations, len(initial.points), len(names))
    shared, split = weakest_link(seen)
    if shared < MIN_SHARED_POINTS:
        raise BundleAdjustmentError(f"tracking: {describe_split(split, names)} share {shared} points "
                                    f"(at least {MIN_SHARED_POINTS} needed): the window falls apart")
    angles = np.rad2deg(max_triangulation_angle(initial.points, seen.T, initial.poses))
    with_parallax = int((angles >= MIN_TRIANGULATION_ANGLE_DEG).sum())
    if with_parallax < MIN_POINTS_WITH_PARALLAX:
        raise BundleAdjustmentError(
            f"no parallax: {with_parallax} of {len(angles)} tracks are seen under {MIN_TRIANGULATION_ANGLE_DEG} "
            f"degrees or more (at least {MIN_POINTS_WITH_PARALLAX} needed): the camera barely moves in this window"
        )


def bundle_adjust(names: list[str], initial: Model, max_reproj_error: float) -> pycolmap.Reconstruction:
    """Run the stages of the module docstring on ``initial``; returns the refined pycolmap model."""
    _require_tracks(names, initial)
    reconstruction = initial.to_reconstruction(names)
    _solve(reconstruction, max_reproj_error)
    _filter(reconstruction, max_reproj_error, "initial inlier selection")
    _solve(reconstruction, FINE_LOSS_SCALE)
    before = reconstruction.compute_num_observations()
    _filter(reconstruction, max_reproj_error, "filtering after the fine solve")
    if reconstruction.compute_num_observations() < (1.0 - REFINE_AGAIN_SHARE) * before:
        _solve(reconstruction, FINE_LOSS_SCALE)
        _filter(reconstruction, max_reproj_error, "final filtering")
    _restore_scale(reconstruction, initial.poses)
    _check_plausible(initial, reconstruction)
    return reconstruction
