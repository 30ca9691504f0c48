"""A window's model as arrays for drawing: camera centres and frusta, a seeded sample of the points, and a
viewing frame (right, forward, up) taken from the cameras themselves, so top and side views mean the same thing
whatever world frame and scale the model was written in."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pycolmap

MAX_POINTS = 2000  # drawn per window: enough to show the scene's shape, few enough to plot fast


@dataclass(frozen=True)
class WindowScene:
    """Cameras (in window frame order) and points of one model, in world coordinates.

    centres [S, 3]; frusta [S, 5, 3]: the centre then the four image corners at unit depth along the optical axis
    (scaled when drawn); points [P, 3] with colours [P, 3] uint8, a sample of at most ``MAX_POINTS`` of
    ``total_points``.
    """

    names: tuple[str, ...]
    centres: np.ndarray
    frusta: np.ndarray
    points: np.ndarray
    colours: np.ndarray
    total_points: int

    def viewing_frame(self) -> np.ndarray:
        """[3, 3] rows right, forward, up: up is the cameras' mean up direction (OpenCV: -y), forward their mean
        viewing direction made orthogonal to it. A top view plots (right, forward), a side view (forward, up)."""
        axes = self.frusta[:, 1:].mean(axis=1) - self.frusta[:, 0]  # [S, 3] optical axes at unit depth
        down = (self.frusta[:, 3] + self.frusta[:, 4] - self.frusta[:, 1] - self.frusta[:, 2]) / 2  # [S, 3]
        up = _unit(-down.mean(axis=0), fallback=np.array([0.0, -1.0, 0.0]))
        forward = axes.mean(axis=0)
        forward = _unit(forward - forward @ up * up, fallback=_any_orthogonal(up))
        return np.stack([np.cross(forward, up), forward, up])


def _unit(vector: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(vector)
    return vector / norm if norm > 1e-9 else fallback


def _any_orthogonal(vector: np.ndarray) -> np.ndarray:
    other = np.eye(3)[np.argmin(np.abs(vector))]
    return _unit(np.cross(vector, other), fallback=np.array([1.0, 0.0, 0.0]))


def read_scene(sparse: Path, order: tuple[str, ...] = (), seed: int = 0) -> WindowScene:
    """The registered cameras of the model in ``sparse`` (in ``order`` where given, then by name) and a seeded
    sample of its points."""
    reconstruction = pycolmap.Reconstruction(str(sparse))
    images = {image.name: image for image in reconstruction.images.values() if image.has_pose}
    rank = {name: i for i, name in enumerate(order)}
    names = sorted(images, key=lambda name: (rank.get(name, len(rank)), name))
    centres, frusta = np.zeros((len(names), 3)), np.zeros((len(names), 5, 3))
    for i, name in enumerate(names):
        image = images[name]
        camera = reconstruction.cameras[image.camera_id]
        world_from_cam = image.cam_from_world().inverse().matrix()  # [3, 4]
        w, h = camera.width, camera.height
        corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], dtype=np.float64)
        rays = np.linalg.solve(camera.calibration_matrix(), np.c_[corners, np.ones(4)].T).T  # [4, 3], z = 1
        centres[i] = world_from_cam[:, 3]
        frusta[i, 0] = centres[i]
        frusta[i, 1:] = rays @ world_from_cam[:, :3].T + centres[i]
    ids = np.array(sorted(reconstruction.point3D_ids()), dtype=np.int64)
    if len(ids) > MAX_POINTS:
        ids = np.sort(np.random.default_rng(seed).choice(ids, MAX_POINTS, replace=False))
    points = [reconstruction.point3D(int(point_id)) for point_id in ids]
    return WindowScene(
        names=tuple(names),
        centres=centres,
        frusta=frusta,
        points=np.array([p.xyz for p in points], dtype=np.float64).reshape(-1, 3),
        colours=np.array([p.color for p in points], dtype=np.uint8).reshape(-1, 3),
        total_points=reconstruction.num_points3D(),
    )
