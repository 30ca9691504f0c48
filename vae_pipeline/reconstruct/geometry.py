"""Small NumPy geometry shared by the reconstruction steps (OpenCV camera-from-world, pinhole K)."""

from __future__ import annotations

import numpy as np


def unproject_pixels(
    uv: np.ndarray, depth: np.ndarray, intrinsic: np.ndarray, extrinsic: np.ndarray
) -> np.ndarray:
    """World points [N, 3] of pixels ``uv`` [N, 2] at ``depth`` [N] seen by one camera (K [3, 3], [R | t] [3, 4]).

    X_cam = ((u - cx) d / fx, (v - cy) d / fy, d), X_world = R^T (X_cam - t): the unprojection VGGT's depth
    is trained with, so ``uv`` uses the same pixel convention as ``intrinsic``.
    """
    fx, fy, cx, cy = intrinsic[0, 0], intrinsic[1, 1], intrinsic[0, 2], intrinsic[1, 2]
    cam = np.stack([(uv[:, 0] - cx) * depth / fx, (uv[:, 1] - cy) * depth / fy, depth], axis=1)
    rotation, translation = extrinsic[:, :3], extrinsic[:, 3]
    return (cam - translation) @ rotation


def project_points(points: np.ndarray, intrinsic: np.ndarray, extrinsic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pinhole projection of ``points`` [N, 3] into S cameras (K [S, 3, 3], [R | t] [S, 3, 4]).

    Returns pixels [S, N, 2] and camera-frame depths [S, N].
    """
    cam = np.einsum("sij,nj->sni", extrinsic[:, :, :3], points) + extrinsic[:, None, :, 3]
    z = cam[..., 2]
    safe_z = np.where(np.abs(z) > 1e-12, z, 1e-12)
    xy = cam[..., :2] / safe_z[..., None]
    pixels = np.einsum("sij,snj->sni", intrinsic[:, :2, :2], xy) + intrinsic[:, None, :2, 2]
    return pixels, z


def bilinear_sample(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Sample ``image`` [h, w] at OpenCV pixels ``uv`` [N, 2] (clamped to the border)."""
    h, w = image.shape
    u = np.clip(uv[:, 0], 0.0, w - 1.0)
    v = np.clip(uv[:, 1], 0.0, h - 1.0)
    u0 = np.floor(u).astype(np.int64)
    v0 = np.floor(v).astype(np.int64)
    du, dv = u - u0, v - v0
    u1, v1 = np.minimum(u0 + 1, w - 1), np.minimum(v0 + 1, h - 1)
    top = image[v0, u0] * (1 - du) + image[v0, u1] * du
    bottom = image[v1, u0] * (1 - du) + image[v1, u1] * du
    return top * (1 - dv) + bottom * dv


def triangulate_dlt(
    pixels: np.ndarray, mask: np.ndarray, intrinsic: np.ndarray, extrinsic: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Linear multi-view triangulation of N tracks.

    pixels [S, N, 2] and intrinsic [S, 3, 3] share one pixel convention; mask [S, N] selects the observations.
    Returns points [N, 3] and ok [N]: at least two observations, in front of every observing camera and a
    triangulation angle of at least 1 degree (below that the depth is noise).
    """
    num_frames, num_tracks = mask.shape
    rays = np.concatenate([pixels, np.ones((num_frames, num_tracks, 1))], axis=2)
    # In normalised coordinates each observation gives two rows x * P[2] - P[0] and y * P[2] - P[1].
    rays = np.einsum("sij,snj->sni", np.linalg.inv(intrinsic), rays)
    rows_x = rays[..., 0:1] * extrinsic[:, None, 2, :] - extrinsic[:, None, 0, :]
    rows_y = rays[..., 1:2] * extrinsic[:, None, 2, :] - extrinsic[:, None, 1, :]
    rows = np.concatenate([rows_x, rows_y], axis=0) * np.concatenate([mask, mask], axis=0)[..., None]
    design = np.transpose(rows, (1, 0, 2))
    _, _, vt = np.linalg.svd(design)
    homogeneous = vt[:, -1, :]
    w = homogeneous[:, 3]
    ok = (mask.sum(axis=0) >= 2) & (np.abs(w) > 1e-12)
    points = homogeneous[:, :3] / np.where(ok, w, 1.0)[:, None]
    _, z = project_points(points, intrinsic, extrinsic)
    ok &= np.all((z > 0) | ~mask, axis=0)
    ok &= max_triangulation_angle(points, mask, extrinsic) >= np.deg2rad(1.0)
    return points, ok


def camera_centres(extrinsic: np.ndarray) -> np.ndarray:
    """[S, 3] centres -R^T t of camera-from-world [S, 3, 4]."""
    return -np.einsum("sji,sj->si", extrinsic[:, :, :3], extrinsic[:, :, 3])


def max_triangulation_angle(points: np.ndarray, mask: np.ndarray, extrinsic: np.ndarray) -> np.ndarray:
    """[N] largest angle (radians) between the rays of two observing cameras to each point (``mask`` [S, N]).

    One pair of frames at a time, so memory stays O(N) however long the window.
    """
    centres = camera_centres(extrinsic)
    smallest_cosine = np.ones(points.shape[0])
    rays = []
    for centre in centres:
        ray = points - centre
        rays.append(ray / np.maximum(np.linalg.norm(ray, axis=1, keepdims=True), 1e-12))
    for first in range(len(centres)):
        for second in range(first + 1, len(centres)):
            both = mask[first] & mask[second]
            if both.any():
                cosine = np.einsum("nk,nk->n", rays[first][both], rays[second][both])
                smallest_cosine[both] = np.minimum(smallest_cosine[both], cosine)
    return np.arccos(np.clip(smallest_cosine, -1.0, 1.0))


def rotation_angle_deg(r_a: np.ndarray, r_b: np.ndarray) -> np.ndarray:
    """Angle (degrees) of R_a R_b^T for stacks of rotations [..., 3, 3]."""
    return rotation_magnitude_deg(r_a @ np.swapaxes(r_b, -1, -2))


def rotation_magnitude_deg(rotation: np.ndarray) -> np.ndarray:
    """Angle (degrees, in [0, 180]) of rotation matrices [..., 3, 3].

    From atan2(sin, cos) rather than the arccos of the trace, which loses half the digits near 0 degrees (two
    equal float32 rotations would differ by 0.03 degrees).
    """
    cos = (np.trace(rotation, axis1=-2, axis2=-1) - 1.0) / 2.0
    axis_times_sin = np.stack(
        [
            rotation[..., 2, 1] - rotation[..., 1, 2],
            rotation[..., 0, 2] - rotation[..., 2, 0],
            rotation[..., 1, 0] - rotation[..., 0, 1],
        ],
        axis=-1,
    )
    sin = np.linalg.norm(axis_times_sin, axis=-1) / 2.0
    return np.degrees(np.arctan2(sin, cos))
