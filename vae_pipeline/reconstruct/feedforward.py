"""The feed-forward model: confident depth pixels unprojected with the predicted cameras, no optimisation.

Cameras are PINHOLE, one per frame, from the predicted intrinsics moved to original pixels. fx and fy stay
separate because the aspect-preserving resize scales x and y slightly differently; one camera per frame (even
with ``shared_camera``) because VGGT predicts a focal length per frame and nothing here reconciles them. Each
point is observed once, in its own frame at its own pixel, so it reprojects there exactly.
"""

from __future__ import annotations

import numpy as np

from .colmap_model import CameraSet, Observations
from .geometry import unproject_pixels
from .pixels import content_boxes, intrinsics_to_original, model_pixels_to_original
from .types import WindowPrediction

# Points farther than this many median depths are far from everything the window shows; they would only stretch
# the point cloud's bounds (a trainer's scene scale is taken from them).
MAX_DEPTH_OVER_MEDIAN = 50.0


def confident_pixels(
    depth: np.ndarray, depth_conf: np.ndarray | None, boxes: np.ndarray, conf_thres_value: float,
    max_points: int, rng: np.random.Generator,
) -> np.ndarray:
    """[P, 3] (frame, row, column) of the kept pixels in frame-major order.

    Kept: pixels inside their frame's content box [S, 4] (not padding) with finite positive depth and
    confidence >= conf_thres_value (every such pixel without a confidence map), no deeper than
    ``MAX_DEPTH_OVER_MEDIAN`` times the median depth of those pixels (a sky pixel's depth can be anything), at
    most ``max_points`` of them drawn uniformly without replacement.
    """
    _, height, width = depth.shape
    columns, rows = np.arange(width)[None, None, :], np.arange(height)[None, :, None]
    left, top, right, bottom = (boxes[:, i, None, None] for i in range(4))
    keep = (columns > left) & (columns < right) & (rows > top) & (rows < bottom)
    keep &= np.isfinite(depth) & (depth > 0)
    if depth_conf is not None:
        keep &= depth_conf >= conf_thres_value
    if keep.any():
        keep &= depth <= MAX_DEPTH_OVER_MEDIAN * np.median(depth[keep])
    pixels = np.argwhere(keep)
    if len(pixels) > max_points:
        chosen = np.sort(rng.choice(len(pixels), size=max_points, replace=False))
        pixels = pixels[chosen]
    return pixels


def feedforward_model(
    prediction: WindowPrediction, mapping: np.ndarray, conf_thres_value: float, max_points: int,
    rng: np.random.Generator,
) -> tuple[CameraSet, np.ndarray, np.ndarray, np.ndarray, Observations]:
    """Cameras, poses [S, 3, 4], points [P, 3], colours [P, 3] uint8 and observations of the feed-forward model.

    Without depth there are no points, only the predicted cameras.
    """
    num_frames = prediction.num_frames
    k_original = intrinsics_to_original(prediction.intrinsic, mapping)
    cameras = CameraSet(
        model="PINHOLE",
        params=np.stack([k_original[:, 0, 0], k_original[:, 1, 1], k_original[:, 0, 2], k_original[:, 1, 2]], 1),
        sizes=np.asarray(prediction.original_sizes, dtype=np.int64),
        image_camera=np.arange(num_frames),
    )
    poses = np.asarray(prediction.extrinsic, dtype=np.float64)
    if prediction.depth is None:
        empty = Observations(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 2)))
        return cameras, poses, np.zeros((0, 3)), np.zeros((0, 3), np.uint8), empty

    boxes = content_boxes(mapping, prediction.original_sizes, prediction.model_hw)
    pixels = confident_pixels(prediction.depth, prediction.depth_conf, boxes, conf_thres_value, max_points, rng)
    frame, row, column = pixels[:, 0], pixels[:, 1], pixels[:, 2]
    uv = np.stack([column, row], axis=1).astype(np.float64)
    depth = prediction.depth[frame, row, column].astype(np.float64)
    points = np.zeros((len(pixels), 3))
    xy = np.zeros((len(pixels), 2))
    for index in range(num_frames):
        selected = frame == index
        intrinsic = np.asarray(prediction.intrinsic[index], dtype=np.float64)
        points[selected] = unproject_pixels(uv[selected], depth[selected], intrinsic, poses[index])
        xy[selected] = model_pixels_to_original(uv[selected][None], mapping[index:index + 1])[0]
    colours = prediction.images[frame, row, column].astype(np.uint8)
    observations = Observations(point=np.arange(len(pixels)), frame=frame.astype(np.int64), xy=xy)
    return cameras, poses, points, colours, observations
