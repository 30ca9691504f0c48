"""Posed cameras keyed by frame file name: what a window's model and its ground truth both reduce to."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pycolmap

from ..jobs import describe_error
from .metrics import camera_centres


@dataclass(frozen=True)
class CameraPoses:
    """N cameras, one per image.

    names: the images' file names (unique); cam_from_world: [N, 4, 4] float64, OpenCV axes; calibration:
    [N, 3, 3] pinhole part (fx, fy, principal point in COLMAP's pixel-centre convention) or None when unknown;
    sizes: [N, 2] (width, height) in pixels, or None when unknown.
    """

    names: tuple[str, ...]
    cam_from_world: np.ndarray
    calibration: np.ndarray | None = None
    sizes: np.ndarray | None = None

    def __post_init__(self) -> None:
        duplicates = sorted(name for name, count in Counter(self.names).items() if count > 1)
        if duplicates:
            raise ValueError(f"image names must be unique; repeated: {', '.join(duplicates[:5])}")

    def __len__(self) -> int:
        return len(self.names)

    def select(self, names: Iterable[str]) -> CameraPoses:
        """The cameras of ``names`` (each present here), in that order."""
        index = {name: i for i, name in enumerate(self.names)}
        rows = [index[name] for name in names]
        return CameraPoses(
            names=tuple(self.names[i] for i in rows),
            cam_from_world=self.cam_from_world[rows],
            calibration=None if self.calibration is None else self.calibration[rows],
            sizes=None if self.sizes is None else self.sizes[rows],
        )

    @property
    def centres(self) -> np.ndarray:
        """[N, 3] camera centres in world coordinates."""
        return camera_centres(self.cam_from_world)

    @property
    def focal(self) -> np.ndarray | None:
        """[N] mean of fx and fy in pixels, or None when the intrinsics are unknown."""
        if self.calibration is None:
            return None
        return (self.calibration[:, 0, 0] + self.calibration[:, 1, 1]) / 2.0


def read_colmap_cameras(folder: Path) -> CameraPoses:
    """The registered images of the COLMAP model in ``folder`` (binary or text), keyed by file name (an image
    stored as ``sub/0001.png`` is ``0001.png``). Raises ValueError naming the folder when it cannot be read."""
    try:
        reconstruction = pycolmap.Reconstruction(str(folder))
    except (ValueError, RuntimeError) as exc:  # pycolmap's failed checks, with the C++ message
        raise ValueError(f"cannot read the COLMAP model in {folder}: {describe_error(exc)}") from None
    images = sorted((image for image in reconstruction.images.values() if image.has_pose), key=lambda i: i.image_id)
    if not images:
        return CameraPoses(names=(), cam_from_world=np.zeros((0, 4, 4)), calibration=np.zeros((0, 3, 3)),
                           sizes=np.zeros((0, 2)))
    cam_from_world = np.tile(np.eye(4), (len(images), 1, 1))
    cam_from_world[:, :3, :] = [image.cam_from_world().matrix() for image in images]
    cameras = [reconstruction.cameras[image.camera_id] for image in images]
    return CameraPoses(
        names=tuple(PurePosixPath(image.name).name for image in images),
        cam_from_world=cam_from_world,
        calibration=np.stack([camera.calibration_matrix() for camera in cameras]),
        sizes=np.array([[camera.width, camera.height] for camera in cameras], dtype=np.float64),
    )
