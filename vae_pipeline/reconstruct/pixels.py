"""The one place that moves pixels and intrinsics from the model's grid to the original frames.

Model-resolution values arrive in OpenCV convention (the centre of the first pixel is (0, 0), as VGGT predicts);
the exported COLMAP model uses the original frames' pixels in COLMAP convention (first pixel centre at
(0.5, 0.5)). ``model_to_original`` rows (sx, sy, ox, oy) map COLMAP-convention model pixels to COLMAP-convention
original pixels: x_original = sx * x_model + ox.
"""

from __future__ import annotations

import numpy as np

# COLMAP's pixel (0, 0) covers [0, 1) x [0, 1); OpenCV's is centred on 0.
OPENCV_TO_COLMAP = 0.5


def resolve_model_to_original(
    model_to_original: np.ndarray | None, model_hw: tuple[int, int], original_sizes: np.ndarray
) -> np.ndarray:
    """[S, 4] (sx, sy, ox, oy); without a mapping, the model frame is a plain resize of the whole original frame."""
    if model_to_original is not None:
        return np.asarray(model_to_original, dtype=np.float64)
    h, w = model_hw
    sizes = np.asarray(original_sizes, dtype=np.float64)
    return np.stack([sizes[:, 0] / w, sizes[:, 1] / h, np.zeros(len(sizes)), np.zeros(len(sizes))], axis=1)


def model_pixels_to_original(xy: np.ndarray, mapping: np.ndarray) -> np.ndarray:
    """OpenCV model pixels ``xy`` [S, ..., 2] -> COLMAP original pixels, with ``mapping`` [S, 4] per frame."""
    xy = np.asarray(xy, dtype=np.float64)
    extra = (1,) * (xy.ndim - 2)
    scale = mapping[:, :2].reshape(len(mapping), *extra, 2)
    offset = mapping[:, 2:].reshape(len(mapping), *extra, 2)
    return scale * (xy + OPENCV_TO_COLMAP) + offset


def original_pixels_to_model(xy: np.ndarray, mapping: np.ndarray) -> np.ndarray:
    """Inverse of ``model_pixels_to_original``: COLMAP original pixels [S, ..., 2] -> OpenCV model pixels."""
    xy = np.asarray(xy, dtype=np.float64)
    extra = (1,) * (xy.ndim - 2)
    scale = mapping[:, :2].reshape(len(mapping), *extra, 2)
    offset = mapping[:, 2:].reshape(len(mapping), *extra, 2)
    return (xy - offset) / scale - OPENCV_TO_COLMAP


def intrinsics_to_original(intrinsic: np.ndarray, mapping: np.ndarray) -> np.ndarray:
    """OpenCV model-resolution K [S, 3, 3] -> K [S, 3, 3] whose projections are COLMAP original pixels.

    Projecting with the result equals projecting with ``intrinsic`` and mapping the pixel with
    ``model_pixels_to_original``.
    """
    k = np.array(intrinsic, dtype=np.float64)
    sx, sy, ox, oy = (mapping[:, i] for i in range(4))
    k[:, 0, :] *= sx[:, None]
    k[:, 1, :] *= sy[:, None]
    k[:, 0, 2] += sx * OPENCV_TO_COLMAP + ox
    k[:, 1, 2] += sy * OPENCV_TO_COLMAP + oy
    return k


def content_boxes(mapping: np.ndarray, original_sizes: np.ndarray, model_hw: tuple[int, int]) -> np.ndarray:
    """[S, 4] (left, top, right, bottom) of the original frame's area in OpenCV model pixels, within the image.

    Outside it the model image shows padding (square mode), where nothing may be detected or tracked.
    """
    sizes = np.asarray(original_sizes, dtype=np.float64)
    corners = np.stack([np.zeros_like(sizes), sizes], axis=1)
    left_top, right_bottom = np.moveaxis(original_pixels_to_model(corners, mapping), 1, 0)
    h, w = model_hw
    lower = np.array([-OPENCV_TO_COLMAP, -OPENCV_TO_COLMAP])
    upper = np.array([w - OPENCV_TO_COLMAP, h - OPENCV_TO_COLMAP])
    return np.concatenate([np.maximum(left_top, lower), np.minimum(right_bottom, upper)], axis=1)
