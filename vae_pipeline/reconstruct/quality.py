"""How good is a window's model: its metrics and the verdict "good" / "poor" / "failed".

"good" means the geometry can be trusted without looking. It needs all of:
- bundle adjustment succeeded (a feed-forward model is never checked, so it is at best "poor");
- at least ``MIN_POINTS`` points, every frame registered;
- every frame holds at least ``MIN_FRAME_OBSERVATIONS`` observations spread over at least ``MIN_FRAME_COVERAGE``
  of a ``COVERAGE_GRID`` x ``COVERAGE_GRID`` grid of its image (a pose held by a few points in one corner is
  poorly conditioned);
- the frames are tied together: no split of the window into two groups of frames is crossed by fewer than
  ``MIN_LINK_POINTS`` points (see ``weakest_link``). Two groups joined by a handful of tracks can come out of
  bundle adjustment turned against each other while every reprojection error stays small;
- parallax: the median triangulation angle of the points is at least ``MIN_PARALLAX_DEG``;
- bundle adjustment stayed a refinement: no camera rotated by more than ``MAX_ROTATION_CHANGE_DEG`` away from the
  prediction and no camera centre moved by more than ``MAX_CENTRE_CHANGE`` of the window's extent (after a
  similarity alignment), several times the prediction's usual error;
- the mean reprojection error is at most ``MAX_MEAN_ERROR_MODEL_PX`` pixels at model resolution (where the
  tracks were measured).
"poor": a model with points that misses one of these (the reason names it). "failed": no points at all.
"""

from __future__ import annotations

import numpy as np

from .colmap_model import Observations
from .geometry import camera_centres, max_triangulation_angle, rotation_angle_deg
from .types import WindowMetrics

MIN_POINTS = 100
MIN_FRAME_OBSERVATIONS = 40
COVERAGE_GRID = 8
MIN_FRAME_COVERAGE = 0.1
MIN_LINK_POINTS = 40
MIN_PARALLAX_DEG = 1.5
MAX_ROTATION_CHANGE_DEG = 5.0
MAX_CENTRE_CHANGE = 0.15
MAX_MEAN_ERROR_MODEL_PX = 2.0


def incidence(observations: Observations, num_points: int, num_frames: int) -> np.ndarray:
    """[P, S] bool: which frames observe each point."""
    seen = np.zeros((num_points, num_frames), dtype=bool)
    seen[observations.point, observations.frame] = True
    return seen


def candidate_splits(seen: np.ndarray) -> list[np.ndarray]:
    """Splits of the S frames into two groups [S] bool that are likely to be the weakest: one frame against the
    rest, every cut of the frames in window order (video windows break where the motion jumps), and every cut
    along the co-visibility graph's Fiedler vector (the spectral sweep, which finds a weak cut whatever the frame
    order)."""
    num_frames = seen.shape[1]
    splits = [np.arange(num_frames) == frame for frame in range(num_frames)]
    splits += [np.arange(num_frames) <= cut for cut in range(num_frames - 1)]
    weights = seen.T.astype(np.float64) @ seen
    np.fill_diagonal(weights, 0.0)
    laplacian = np.diag(weights.sum(axis=1)) - weights
    _, vectors = np.linalg.eigh(laplacian)
    order = np.argsort(vectors[:, 1], kind="stable")
    for cut in range(1, num_frames):
        group = np.zeros(num_frames, dtype=bool)
        group[order[:cut]] = True
        splits.append(group)
    return splits


def weakest_link(seen: np.ndarray) -> tuple[int, np.ndarray]:
    """The fewest points seen on both sides of any candidate split, and that split's first group [S] bool."""
    if seen.shape[1] < 2:
        return 0, np.ones(seen.shape[1], dtype=bool)
    best, best_split = None, None
    for split in candidate_splits(seen):
        crossing = int((seen[:, split].any(axis=1) & seen[:, ~split].any(axis=1)).sum())
        if best is None or crossing < best:
            best, best_split = crossing, split
    return best, best_split


def frame_coverage(observations: Observations, original_sizes: np.ndarray) -> np.ndarray:
    """[S] share of the cells of a COVERAGE_GRID x COVERAGE_GRID grid over each frame holding an observation."""
    num_frames = len(original_sizes)
    sizes = np.asarray(original_sizes, dtype=np.float64)[observations.frame]
    cells = np.clip((observations.xy / sizes * COVERAGE_GRID).astype(np.int64), 0, COVERAGE_GRID - 1)
    occupied = np.zeros((num_frames, COVERAGE_GRID * COVERAGE_GRID), dtype=bool)
    occupied[observations.frame, cells[:, 1] * COVERAGE_GRID + cells[:, 0]] = True
    return occupied.mean(axis=1)


def similarity_residuals(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """[N] distances between ``target`` [N, 3] and ``source`` [N, 3] after the least-squares similarity that maps
    source onto target (Umeyama)."""
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    s, t = source - source_mean, target - target_mean
    variance = (s**2).sum() / len(s)
    if variance <= 0:
        return np.linalg.norm(t, axis=1)
    u, singular, vt = np.linalg.svd(t.T @ s / len(s))
    sign = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(singular) @ sign) / variance
    return np.linalg.norm(scale * s @ rotation.T - t, axis=1)


def extent(centres: np.ndarray) -> float:
    """Largest distance between two camera centres [S, 3]."""
    return float(np.linalg.norm(centres[:, None] - centres[None], axis=2).max())


def measure(
    metrics: WindowMetrics,
    poses: np.ndarray,
    predicted_poses: np.ndarray,
    points: np.ndarray,
    observations: Observations,
    errors: np.ndarray,
    depth_conf: np.ndarray | None,
    conf_threshold: float,
) -> None:
    """Fill ``metrics`` (besides the counts and the reprojection errors, which the caller sets) from the model:
    poses [S, 3, 4], points [P, 3] and their observations with reprojection errors [M]."""
    num_frames = len(poses)
    seen = incidence(observations, len(points), num_frames)
    if len(points):
        metrics.track_length_median = float(np.median(seen.sum(axis=1)))
        angles = np.rad2deg(max_triangulation_angle(points, seen.T, poses))
        metrics.triangulation_angle_median_deg = float(np.median(angles))
        metrics.weakest_link_points = weakest_link(seen)[0]
    centres = camera_centres(poses)
    rotations = poses[:, :, :3]
    metrics.rotation_span_deg = float(rotation_angle_deg(rotations[:, None], rotations[None]).max())
    path = float(np.linalg.norm(np.diff(centres, axis=0), axis=1).sum())
    depth = _median_depth(poses, points, observations)
    metrics.motion_path_over_depth = path / depth if depth > 0 else 0.0
    metrics.ba_rotation_change_deg = float(rotation_angle_deg(rotations, predicted_poses[:, :, :3]).max())
    predicted_centres = camera_centres(predicted_poses)
    span = extent(predicted_centres)
    if span > 0:
        metrics.ba_centre_change = float(similarity_residuals(centres, predicted_centres).max() / span)
    if depth_conf is not None:
        conf = np.asarray(depth_conf, dtype=np.float64)
        metrics.depth_conf_median = float(np.median(conf))
        metrics.depth_conf_mean = float(conf.mean())
        metrics.depth_conf_share_above_threshold = float((conf >= conf_threshold).mean())


def _median_depth(poses: np.ndarray, points: np.ndarray, observations: Observations) -> float:
    """Median depth of the observed points in the cameras that observe them."""
    if len(observations) == 0:
        return 0.0
    pose = poses[observations.frame]
    depth = np.einsum("mj,mj->m", pose[:, 2, :3], points[observations.point]) + pose[:, 2, 3]
    return float(np.median(depth))


def judge(
    metrics: WindowMetrics,
    ba: str,
    ba_reason: str | None,
    num_frames: int,
    observations: Observations,
    original_sizes: np.ndarray,
    mean_error_model_px: float,
    seen: np.ndarray | None = None,
    names: list[str] | None = None,
) -> tuple[str, str | None]:
    """The verdict and, for anything but "good", the reason (see the module docstring)."""
    if metrics.points == 0:
        why = "the model has no points"
        return "failed", f"{why}: {ba_reason}" if ba_reason else why
    if ba == "off":
        return "poor", "bundle adjustment was off: nothing checked the predicted geometry"
    if ba != "ok":
        return "poor", f"bundle adjustment failed, the model is the unchecked prediction: {ba_reason}"
    names = names or [str(i) for i in range(num_frames)]
    if metrics.registered_frames < num_frames:
        return "poor", f"{num_frames - metrics.registered_frames} of {num_frames} frames are not registered"
    if metrics.points < MIN_POINTS:
        return "poor", f"too few points: {metrics.points} (at least {MIN_POINTS})"
    per_frame = np.bincount(observations.frame, minlength=num_frames)
    weakest = int(np.argmin(per_frame))
    if per_frame[weakest] < MIN_FRAME_OBSERVATIONS:
        return "poor", (f"frame {names[weakest]} is held by {per_frame[weakest]} observations "
                        f"(at least {MIN_FRAME_OBSERVATIONS})")
    coverage = frame_coverage(observations, original_sizes)
    weakest = int(np.argmin(coverage))
    if coverage[weakest] < MIN_FRAME_COVERAGE:
        return "poor", (f"the observations of frame {names[weakest]} cover {coverage[weakest]:.0%} of the image "
                        f"(at least {MIN_FRAME_COVERAGE:.0%}): its pose is poorly conditioned")
    if metrics.weakest_link_points < MIN_LINK_POINTS:
        seen = seen if seen is not None else incidence(observations, metrics.points, num_frames)
        _, split = weakest_link(seen)
        return "poor", (f"{describe_split(split, names)} share only {metrics.weakest_link_points} points (at "
                        f"least {MIN_LINK_POINTS}): the two groups may be turned against each other")
    if metrics.triangulation_angle_median_deg < MIN_PARALLAX_DEG:
        return "poor", (f"little parallax: rays meet at a median {metrics.triangulation_angle_median_deg:.2f} "
                        f"degrees (at least {MIN_PARALLAX_DEG})")
    if metrics.ba_rotation_change_deg > MAX_ROTATION_CHANGE_DEG:
        return "poor", (f"bundle adjustment turned a camera by {metrics.ba_rotation_change_deg:.1f} degrees away "
                        f"from the prediction (at most {MAX_ROTATION_CHANGE_DEG})")
    if metrics.ba_centre_change > MAX_CENTRE_CHANGE:
        return "poor", (f"bundle adjustment moved a camera centre by {metrics.ba_centre_change:.0%} of the "
                        f"window's extent away from the prediction (at most {MAX_CENTRE_CHANGE:.0%})")
    if mean_error_model_px > MAX_MEAN_ERROR_MODEL_PX:
        return "poor", (f"mean reprojection error {mean_error_model_px:.2f} px at model resolution "
                        f"(at most {MAX_MEAN_ERROR_MODEL_PX})")
    return "good", None


def describe_split(split: np.ndarray, names: list[str]) -> str:
    """'frames a, b and frames c, d, e' for a split [S] bool (the smaller group first)."""
    first, second = np.flatnonzero(split), np.flatnonzero(~split)
    if len(first) > len(second):
        first, second = second, first
    return f"frames {_listing([names[i] for i in first])} and frames {_listing([names[i] for i in second])}"


def _listing(names: list[str]) -> str:
    return ", ".join(names) if len(names) <= 4 else f"{', '.join(names[:3])}, ... ({len(names)} frames)"
