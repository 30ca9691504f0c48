"""Accuracy of predicted cameras against ground truth: pure NumPy on arrays in memory, no file access.

Conventions: poses are camera-from-world matrices ``[N, 4, 4]`` (``[N, 3, 4]`` works too) with OpenCV axes; row
``i`` of a prediction and row ``i`` of its ground truth are the same image. Angles are in degrees. Frame pairs
are every ``i < j``, in the order of ``pair_indices``.
"""

from __future__ import annotations

import numpy as np

from ..reconstruct.geometry import rotation_magnitude_deg as rotation_angle_deg


def pair_indices(num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """``(i [P], j [P])`` of every pair ``i < j`` of ``num_frames`` frames, P = N (N - 1) / 2, ordered
    (0, 1), (0, 2), ..., (1, 2), ..."""
    return np.triu_indices(num_frames, k=1)


def relative_poses(cam_from_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``T_i T_j^-1`` (camera i from camera j) for every pair i < j of ``cam_from_world`` [N, 4, 4].

    Returns rotations [P, 3, 3] and translations [P, 3]. Unlike ``T_i^-1 T_j`` this does not depend on the world
    frame: a similarity transform of the world leaves the rotations unchanged and scales the translations.
    """
    rotation, translation = _split(cam_from_world)
    i, j = pair_indices(len(rotation))
    relative_rotation = rotation[i] @ rotation[j].transpose(0, 2, 1)
    relative_translation = translation[i] - np.einsum("pab,pb->pa", relative_rotation, translation[j])
    return relative_rotation, relative_translation


def direction_angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle between the lines along vectors ``a`` [P, 3] and ``b`` [P, 3]: min(theta, 180 - theta), in [0, 90].

    A zero vector has no direction: its angle is 90, the worst value.
    """
    cross = np.linalg.norm(np.cross(a, b), axis=-1)
    dot = np.abs(np.einsum("pa,pa->p", a, b))
    angle = np.degrees(np.arctan2(cross, dot))
    undefined = (np.linalg.norm(a, axis=-1) == 0) | (np.linalg.norm(b, axis=-1) == 0)
    return np.where(undefined, 90.0, angle)


def relative_pose_errors(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relative rotation and translation errors of every frame pair i < j.

    ``pred`` and ``gt``: camera-from-world [N, 4, 4] of the same N images. For each pair the relative pose
    ``T_i T_j^-1`` of the prediction is compared with the ground truth's: RRA is the angle of the rotation that
    takes one relative rotation to the other; RTA the angle between the two relative translation directions,
    min(theta, 180 - theta) (a translation direction is known up to sign). Returns (rra_deg [P], rta_deg [P]),
    P = N (N - 1) / 2, in the order of ``pair_indices``; empty for N < 2.
    """
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} must have the same shape")
    pred_rotation, pred_translation = relative_poses(pred)
    gt_rotation, gt_translation = relative_poses(gt)
    rra = rotation_angle_deg(gt_rotation.transpose(0, 2, 1) @ pred_rotation)
    rta = direction_angle_deg(pred_translation, gt_translation)
    return rra, rta


def auc(errors_deg: np.ndarray, max_threshold_deg: int) -> float:
    """Area under the accuracy curve up to ``max_threshold_deg``, as VGGT's evaluation computes it.

    ``errors_deg`` [P] is one error per pair (VGGT uses max(RRA, RTA)). The errors are counted in T bins of
    1 degree on [0, T] (T = ``max_threshold_deg``; an error of exactly T falls in the last bin, anything larger
    in none); the cumulative sum of the counts divided by P is the fraction of pairs under 1, 2, ..., T degrees,
    and the AUC is the mean of those T fractions. Between 0 and 1; 1 when every error is under 1 degree.
    """
    errors = np.asarray(errors_deg, dtype=np.float64).reshape(-1)
    if errors.size == 0:
        raise ValueError("AUC of no errors is undefined")
    if int(max_threshold_deg) != max_threshold_deg or max_threshold_deg < 1:
        raise ValueError(f"max_threshold_deg must be a whole number of degrees >= 1, got {max_threshold_deg}")
    counts, _ = np.histogram(errors, bins=np.arange(int(max_threshold_deg) + 1))
    return float(np.mean(np.cumsum(counts) / errors.size))


def similarity_alignment(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity (Umeyama 1991) that maps ``source`` [N, 3] onto ``target`` [N, 3].

    Returns (scale, rotation [3, 3], translation [3]) minimising sum ||target - (scale R source + t)||^2.
    Written here rather than taken from pycolmap because ``pycolmap.estimate_sim3d`` refuses fewer than three
    points and collinear points (a camera moving in a straight line), whose best alignment is still well defined
    (the rotation about the line is then arbitrary, the residuals are not). When all source points coincide the
    scale is 0 and every point lands on the target's centroid.
    """
    source, target = np.asarray(source, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 3 or len(source) == 0:
        raise ValueError(f"expected two [N, 3] arrays of the same shape, got {source.shape} and {target.shape}")
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    source_centred, target_centred = source - source_mean, target - target_mean
    source_variance = np.mean(np.sum(source_centred**2, axis=1))
    if source_variance == 0:
        return 0.0, np.eye(3), target_mean
    covariance = target_centred.T @ source_centred / len(source)
    u, singular_values, vt = np.linalg.svd(covariance)
    reflection = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        reflection[2] = -1.0
    rotation = (u * reflection) @ vt
    scale = float(np.sum(singular_values * reflection) / source_variance)
    translation = target_mean - scale * rotation @ source_mean
    return scale, rotation, translation


def camera_centres(cam_from_world: np.ndarray) -> np.ndarray:
    """World positions [N, 3] of the cameras ``cam_from_world`` [N, 4, 4]: -R^T t."""
    rotation, translation = _split(cam_from_world)
    return -np.einsum("nba,nb->na", rotation, translation)


def window_extent(gt_centres: np.ndarray) -> float:
    """Largest distance between two of the camera centres [N, 3]; 0 for fewer than two."""
    centres = np.asarray(gt_centres, dtype=np.float64)
    if len(centres) < 2:
        return 0.0
    return float(np.max(np.linalg.norm(centres[:, None, :] - centres[None, :, :], axis=-1)))


def centre_errors(pred_centres: np.ndarray, gt_centres: np.ndarray) -> np.ndarray:
    """Per-frame camera-centre error [N] after aligning ``pred_centres`` [N, 3] to ``gt_centres`` [N, 3] with a
    similarity (``similarity_alignment``), divided by the ground truth's extent (``window_extent``).

    Scale-free, so windows of any size compare. All NaN when the ground-truth centres coincide (extent 0). The
    RMSE of these errors is the ATE.
    """
    pred_centres, gt_centres = np.asarray(pred_centres, dtype=np.float64), np.asarray(gt_centres, dtype=np.float64)
    extent = window_extent(gt_centres)
    if extent == 0:
        return np.full(len(gt_centres), np.nan)
    scale, rotation, translation = similarity_alignment(pred_centres, gt_centres)
    aligned = scale * pred_centres @ rotation.T + translation
    return np.linalg.norm(aligned - gt_centres, axis=1) / extent


def absolute_trajectory_error(frame_errors: np.ndarray) -> float:
    """ATE: the root mean square of the per-frame errors [N] that ``centre_errors`` returns."""
    return float(np.sqrt(np.mean(np.square(frame_errors))))


def focal_errors(pred_focal: np.ndarray, gt_focal: np.ndarray) -> np.ndarray:
    """Relative focal-length error per frame [N]: |f_pred - f_gt| / f_gt, from focal lengths [N] in pixels of the
    same image size (for cameras with fx and fy, pass their mean)."""
    pred_focal, gt_focal = np.asarray(pred_focal, dtype=np.float64), np.asarray(gt_focal, dtype=np.float64)
    if pred_focal.shape != gt_focal.shape:
        raise ValueError(f"prediction {pred_focal.shape} and ground truth {gt_focal.shape} must have the same shape")
    return np.abs(pred_focal - gt_focal) / gt_focal


def _split(cam_from_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    poses = np.asarray(cam_from_world, dtype=np.float64)
    if poses.ndim != 3 or poses.shape[1:] not in ((4, 4), (3, 4)):
        raise ValueError(f"expected camera-from-world poses [N, 4, 4] or [N, 3, 4], got {poses.shape}")
    return poses[:, :3, :3], poses[:, :3, 3]
