"""Build a ``pycolmap.Reconstruction`` from NumPy arrays and read cameras, poses and points back out of one.

Layout of every model written here: image ids 1..S in window order, named after the frames; one frame per
image (frame id = image id) in a trivial rig per camera; camera ids 1..C. All pixels are original-frame COLMAP
pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pycolmap


@dataclass
class CameraSet:
    """C COLMAP cameras and which one each of the S images uses.

    model: COLMAP model name shared by all cameras; params: [C, P]; sizes: [C, 2] (width, height);
    image_camera: [S] index into the C cameras.
    """

    model: str
    params: np.ndarray
    sizes: np.ndarray
    image_camera: np.ndarray

    def to_pycolmap(self, index: int) -> pycolmap.Camera:
        width, height = (int(v) for v in self.sizes[index])
        camera = pycolmap.Camera.create_from_model_name(index + 1, self.model, 1.0, width, height)
        camera.params = self.params[index]
        return camera

    def calibration_matrices(self) -> np.ndarray:
        """[S, 3, 3] pinhole part (focal lengths, principal point) of each image's camera."""
        per_camera = [self.to_pycolmap(index).calibration_matrix() for index in range(len(self.params))]
        return np.stack([per_camera[index] for index in self.image_camera])


@dataclass
class Observations:
    """M 2D observations of P 3D points: point [M] index into the points, frame [M], xy [M, 2] COLMAP pixels."""

    point: np.ndarray
    frame: np.ndarray
    xy: np.ndarray

    def __len__(self) -> int:
        return len(self.point)


def build_reconstruction(
    names: list[str],
    cameras: CameraSet,
    cam_from_world: np.ndarray,
    points_xyz: np.ndarray,
    points_rgb: np.ndarray,
    observations: Observations,
) -> pycolmap.Reconstruction:
    """A model with S registered images (poses cam_from_world [S, 3, 4]) and P points (ids 1..P in order).

    Each image's 2D points are its observations in the order they appear in ``observations``.
    """
    reconstruction = pycolmap.Reconstruction()
    for index in range(len(cameras.params)):
        reconstruction.add_camera_with_trivial_rig(cameras.to_pycolmap(index))

    order = np.lexsort((np.arange(len(observations)), observations.frame))
    frame_sorted = observations.frame[order]
    point2d_index = np.empty(len(observations), dtype=np.int64)
    for frame, name in enumerate(names):
        in_frame = order[np.searchsorted(frame_sorted, frame, "left"):np.searchsorted(frame_sorted, frame, "right")]
        point2d_index[in_frame] = np.arange(len(in_frame))
        image = pycolmap.Image(
            name=name,
            keypoints=observations.xy[in_frame].astype(np.float64).reshape(-1, 2),
            camera_id=int(cameras.image_camera[frame]) + 1,
            image_id=frame + 1,
        )
        reconstruction.add_image_with_trivial_frame(image, pycolmap.Rigid3d(cam_from_world[frame].astype(np.float64)))

    # pycolmap adds points one at a time; the loop works on plain Python lists, since indexing numpy arrays
    # element by element would cost more than pycolmap itself (a feed-forward model has 100,000 points).
    by_point = np.lexsort((observations.frame, observations.point))
    starts = np.searchsorted(observations.point[by_point], np.arange(len(points_xyz) + 1)).tolist()
    image_ids = (observations.frame[by_point] + 1).tolist()
    point2d_ids = point2d_index[by_point].tolist()
    xyz = points_xyz.astype(np.float64)
    rgb = points_rgb.astype(np.uint8)
    for point, (xyz_row, rgb_row) in enumerate(zip(xyz, rgb)):
        track = pycolmap.Track()
        for k in range(starts[point], starts[point + 1]):
            track.add_element(image_ids[k], point2d_ids[k])
        reconstruction.add_point3D(xyz_row, track, rgb_row)
    return reconstruction


@dataclass
class Model:
    """A window's model as arrays: cameras, poses [S, 3, 4] camera-from-world, points [P, 3] with colours [P, 3]
    uint8, and their observations. What the steps before and after pycolmap work on."""

    cameras: CameraSet
    poses: np.ndarray
    points: np.ndarray
    colours: np.ndarray
    observations: Observations

    def errors(self) -> np.ndarray:
        """[M] reprojection error of every observation, pixels."""
        return reprojection_errors(self.cameras, self.poses, self.points, self.observations)

    def to_reconstruction(self, names: list[str]) -> pycolmap.Reconstruction:
        return build_reconstruction(names, self.cameras, self.poses, self.points, self.colours, self.observations)


def model_from_reconstruction(reconstruction: pycolmap.Reconstruction, like: Model) -> Model:
    """The arrays of a model built by ``build_reconstruction`` (and refined and filtered since): the cameras of
    ``like`` with the model's parameters, its poses, and its surviving points (renumbered 0..P-1 in id order)
    with their observations."""
    num_frames = len(like.poses)
    point_ids = sorted(reconstruction.point3D_ids())
    points = np.zeros((len(point_ids), 3))
    colours = np.zeros((len(point_ids), 3), dtype=np.uint8)
    point, frame, keypoint = [], [], []
    for index, point_id in enumerate(point_ids):
        point3d = reconstruction.point3D(point_id)
        points[index] = point3d.xyz
        colours[index] = point3d.color
        for element in point3d.track.elements:
            point.append(index)
            frame.append(element.image_id - 1)
            keypoint.append(element.point2D_idx)
    point, frame, keypoint = (np.asarray(v, dtype=np.int64) for v in (point, frame, keypoint))
    xy = np.zeros((len(point), 2))
    for image_id in range(1, num_frames + 1):
        selected = np.flatnonzero(frame == image_id - 1)
        if len(selected):
            keypoints = reconstruction.image(image_id).points2D
            xy[selected] = [keypoints[int(k)].xy for k in keypoint[selected]]
    cameras = replace(like.cameras, params=read_camera_params(reconstruction, len(like.cameras.params)))
    return Model(cameras, read_poses(reconstruction, num_frames), points, colours, Observations(point, frame, xy))


def read_poses(reconstruction: pycolmap.Reconstruction, num_frames: int) -> np.ndarray:
    """cam_from_world [S, 3, 4] of images 1..S."""
    return np.stack([reconstruction.image(i + 1).cam_from_world().matrix() for i in range(num_frames)])


def read_camera_params(reconstruction: pycolmap.Reconstruction, num_cameras: int) -> np.ndarray:
    """[C, P] parameters of cameras 1..C."""
    return np.stack([np.asarray(reconstruction.camera(i + 1).params, dtype=np.float64) for i in range(num_cameras)])


def reprojection_errors(
    cameras: CameraSet, cam_from_world: np.ndarray, points_xyz: np.ndarray, observations: Observations
) -> np.ndarray:
    """[M] pixel distance between each observation and its point projected by the COLMAP camera model.

    Points behind their camera get an infinite error.
    """
    errors = np.full(len(observations), np.inf)
    for frame in np.unique(observations.frame):
        selected = np.flatnonzero(observations.frame == frame)
        pose = cam_from_world[frame]
        cam_points = points_xyz[observations.point[selected]] @ pose[:, :3].T + pose[:, 3]
        in_front = cam_points[:, 2] > 1e-9
        camera = cameras.to_pycolmap(int(cameras.image_camera[frame]))
        projected = camera.img_from_cam(cam_points[in_front].astype(np.float64), check_cheirality=False)
        errors[selected[in_front]] = np.linalg.norm(projected - observations.xy[selected[in_front]], axis=1)
    return errors
