"""Accuracy of the bundle-adjusted branch: synthetic scenes with exact ground truth, and real TUM frames.

The predictions are ground truth made wrong the way a network's are: every camera rotated by 2 degrees about a
random axis, its translation (in the first camera's frame, where VGGT puts the world) moved by 5 % of its
length, focal lengths 10 % too long, and depth scaled by a smooth random field of 5 % amplitude.
"""

import unittest
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from vae_pipeline.reconstruct import ReconstructionOptions, WindowPrediction, reconstruct_window
from vae_pipeline.reconstruct.geometry import camera_centres, rotation_angle_deg
from vae_pipeline.synthetic import read_ground_truth, render_scene

from test_reconstruct import points_of

SHARED = Path(__file__).resolve().parents[2] / "shared"
TUM = SHARED / "data" / "tum_fr3_office_1hz"


def in_first_camera_frame(extrinsic: np.ndarray) -> np.ndarray:
    """Camera-from-world [S, 3, 4] re-expressed with the first camera as the world, as VGGT predicts."""
    first = np.vstack([extrinsic[0], [0.0, 0.0, 0.0, 1.0]])
    return np.einsum("sij,jk->sik", extrinsic, np.linalg.inv(first))


def perturb_cameras(extrinsic: np.ndarray, rng: np.random.Generator, degrees=2.0, translation=0.05) -> np.ndarray:
    perturbed = in_first_camera_frame(extrinsic)
    for frame in range(len(perturbed)):
        axis = rng.normal(size=3)
        rotation = cv2.Rodrigues(axis / np.linalg.norm(axis) * np.deg2rad(degrees))[0] @ perturbed[frame, :, :3]
        direction = rng.normal(size=3)
        shift = direction / np.linalg.norm(direction) * translation * np.linalg.norm(perturbed[frame, :, 3])
        perturbed[frame] = np.concatenate([rotation, (perturbed[frame, :, 3] + shift)[:, None]], axis=1)
    return perturbed


def smooth_depth_noise(depth: np.ndarray, rng: np.random.Generator, amplitude=0.05) -> np.ndarray:
    num_frames, height, width = depth.shape
    fields = [cv2.resize(rng.normal(size=(3, 4)), (width, height), interpolation=cv2.INTER_CUBIC)
              for _ in range(num_frames)]
    return (depth * (1.0 + amplitude * np.stack(fields))).astype(np.float32)


def poses_of(result, num_frames: int) -> np.ndarray:
    return np.stack([result.reconstruction.image(i + 1).cam_from_world().matrix() for i in range(num_frames)])


def rotation_errors(poses: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """[S] degrees between estimated and true rotations after the best common rotation of the world."""
    u, _, vt = np.linalg.svd(np.einsum("sji,sjk->ik", poses[:, :, :3], truth[:, :, :3]))
    alignment = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
    return rotation_angle_deg(poses[:, :, :3] @ alignment, truth[:, :, :3])


def centre_errors(poses: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """[S] distances between true camera centres and estimated ones after a similarity (Umeyama) alignment."""
    source, target = camera_centres(poses), camera_centres(truth)
    source_centred, target_centred = source - source.mean(0), target - target.mean(0)
    u, singular, vt = np.linalg.svd(target_centred.T @ source_centred / len(source))
    sign = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = u @ sign @ vt
    scale = np.trace(np.diag(singular) @ sign) / (source_centred**2).sum(1).mean()
    aligned = scale * source_centred @ rotation.T + target.mean(0)
    return np.linalg.norm(aligned - target, axis=1)


class SyntheticBundleAdjustmentTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.scene = render_scene(num_frames=8, width=224, height=168, seed=0, trajectory="arc")
        rng = np.random.default_rng(7)
        cls.extrinsic = perturb_cameras(cls.scene.extrinsic, rng)
        cls.depth = smooth_depth_noise(cls.scene.depth, rng)
        cls.median_depth = float(np.median(cls.scene.depth))

    def _prediction(self, images, intrinsic, depth, mapping=None):
        num_frames, height, width = self.scene.depth.shape
        wrong_focal = intrinsic.copy()
        wrong_focal[:, 0, 0] *= 1.1
        wrong_focal[:, 1, 1] *= 1.1
        return WindowPrediction(
            names=[f"{i:04d}.png" for i in range(num_frames)], images=images, extrinsic=self.extrinsic,
            intrinsic=wrong_focal, original_sizes=np.tile([width, height], (num_frames, 1)), depth=depth,
            depth_conf=np.full_like(depth, 10.0), model_to_original=mapping,
        )

    def _check(self, result, max_rotation_deg, max_centre_fraction, max_reproj_px):
        num_frames, height, width = self.scene.depth.shape
        self.assertEqual(result.info["ba"], "ok", result.info.get("ba_reason"))
        poses = poses_of(result, num_frames)
        rotation = rotation_errors(poses, self.scene.extrinsic)
        centre = centre_errors(poses, self.scene.extrinsic) / self.median_depth
        reprojection = result.info["metrics"]["reproj_error_per_observation_px"]
        before = rotation_errors(self.extrinsic, self.scene.extrinsic).mean()
        message = (f"rotation {rotation.mean():.4f} deg (before {before:.2f}), centres {centre.max():.5f} of "
                   f"the median depth, reprojection {reprojection:.3f} px")
        self.assertLess(rotation.mean(), max_rotation_deg, message)
        self.assertLess(centre.max(), max_centre_fraction, message)
        self.assertLess(reprojection, max_reproj_px, message)
        for camera in result.reconstruction.cameras.values():
            self.assertEqual((camera.width, camera.height), (width, height))
            self.assertLess(abs(camera.principal_point_x - width / 2), 0.1)
            self.assertLess(abs(camera.principal_point_y - height / 2), 0.1)
        return poses

    def test_model_resolution_is_original_resolution(self):
        prediction = self._prediction(self.scene.images, self.scene.intrinsic, self.depth)
        options = ReconstructionOptions(window_id="synthetic/window_000")
        result = reconstruct_window(prediction, options)
        poses = self._check(result, max_rotation_deg=0.1, max_centre_fraction=0.01, max_reproj_px=0.5)
        camera = result.reconstruction.camera(1)
        self.assertEqual(result.reconstruction.num_cameras(), 1)
        self.assertEqual(camera.model_name, "SIMPLE_PINHOLE")
        self.assertLess(abs(camera.focal_length / self.scene.intrinsic[0, 0, 0] - 1), 0.02)
        metrics = result.info["metrics"]
        self.assertEqual(metrics["registered_frames"], 8)
        self.assertGreater(metrics["points"], 500)
        self.assertGreater(metrics["track_length_median"], 3)
        self.assertLessEqual(max(p.error for p in result.reconstruction.points3D.values()), options.max_reproj_error)

        again = reconstruct_window(prediction, options)
        np.testing.assert_array_equal(poses_of(again, 8), poses)
        np.testing.assert_array_equal(points_of(again), points_of(result))
        np.testing.assert_array_equal(again.reconstruction.camera(1).params, camera.params)

    def test_model_at_half_resolution(self):
        images = np.stack([cv2.resize(image, (112, 84), interpolation=cv2.INTER_AREA) for image in self.scene.images])
        depth = np.stack([cv2.resize(d, (112, 84), interpolation=cv2.INTER_NEAREST) for d in self.depth])
        intrinsic = self.scene.intrinsic.copy()
        # Halving the frame halves COLMAP-convention coordinates; OpenCV ones are shifted by half a pixel.
        intrinsic[:, :2, :2] /= 2
        intrinsic[:, :2, 2] = (intrinsic[:, :2, 2] + 0.5) / 2 - 0.5
        result = reconstruct_window(self._prediction(images, intrinsic, depth), ReconstructionOptions())
        self._check(result, max_rotation_deg=0.2, max_centre_fraction=0.02, max_reproj_px=1.0)

    def test_square_padded_model_input(self):
        # The frame centred on a 224 x 224 black square (28 rows above and below), then halved to 112 x 112.
        pad = (224 - 168) // 2
        squares = np.zeros((8, 224, 224, 3), dtype=np.uint8)
        squares[:, pad:pad + 168] = self.scene.images
        images = np.stack([cv2.resize(image, (112, 112), interpolation=cv2.INTER_AREA) for image in squares])
        square_depth = np.ones((8, 224, 224), dtype=np.float32)
        square_depth[:, pad:pad + 168] = self.depth
        depth = np.stack([cv2.resize(d, (112, 112), interpolation=cv2.INTER_NEAREST) for d in square_depth])
        intrinsic = self.scene.intrinsic.copy()
        intrinsic[:, 1, 2] += pad
        intrinsic[:, :2, :2] /= 2
        intrinsic[:, :2, 2] = (intrinsic[:, :2, 2] + 0.5) / 2 - 0.5
        mapping = np.tile([2.0, 2.0, 0.0, -pad], (8, 1))
        result = reconstruct_window(self._prediction(images, intrinsic, depth, mapping), ReconstructionOptions())
        self._check(result, max_rotation_deg=0.2, max_centre_fraction=0.02, max_reproj_px=1.0)
        for image in result.reconstruction.images.values():
            xy = np.array([p.xy for p in image.points2D])
            self.assertTrue(np.all((xy >= 0) & (xy <= [224, 168])), "observations stay inside the frame")

    def test_sift_tracker(self):
        prediction = self._prediction(self.scene.images, self.scene.intrinsic, self.depth)
        result = reconstruct_window(prediction, ReconstructionOptions(tracker="sift"))
        self.assertEqual(result.info["tracker"], "sift")
        self._check(result, max_rotation_deg=0.1, max_centre_fraction=0.01, max_reproj_px=0.5)

    def test_camera_models_and_per_frame_cameras(self):
        prediction = self._prediction(self.scene.images, self.scene.intrinsic, self.depth)
        for camera_type, shared, num_params in (("PINHOLE", True, 4), ("SIMPLE_RADIAL", True, 4),
                                                ("OPENCV", True, 8), ("SIMPLE_PINHOLE", False, 3)):
            with self.subTest(camera_type=camera_type, shared=shared):
                options = ReconstructionOptions(camera_type=camera_type, shared_camera=shared)
                result = reconstruct_window(prediction, options)
                self._check(result, max_rotation_deg=0.15, max_centre_fraction=0.01, max_reproj_px=0.5)
                cameras = result.reconstruction.cameras
                self.assertEqual(len(cameras), 1 if shared else 8)
                for camera in cameras.values():
                    self.assertEqual(camera.model_name, camera_type)
                    self.assertEqual(len(camera.params), num_params)


@unittest.skipUnless(TUM.is_dir(), f"real-data check needs {TUM} (the shared data beside the repository)")
class TumBundleAdjustmentTest(unittest.TestCase):
    def test_ba_from_triangulated_tracks_reduces_rotation_error(self):
        names, truth, intrinsic = read_ground_truth(TUM)
        names, truth, intrinsic = names[:8], truth[:8], intrinsic[:8]
        frames = [np.asarray(Image.open(TUM / "images" / name).convert("RGB")) for name in names]
        original_height, original_width = frames[0].shape[:2]
        width, height = original_width // 2, original_height // 2
        images = np.stack([cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA) for frame in frames])
        model_intrinsic = intrinsic.copy()
        model_intrinsic[:, :2, :2] /= 2
        model_intrinsic[:, :2, 2] = (intrinsic[:, :2, 2] + 0.5) / 2 - 0.5
        rng = np.random.default_rng(11)
        perturbed = perturb_cameras(truth, rng)
        prediction = WindowPrediction(
            names=names, images=images, extrinsic=perturbed, intrinsic=model_intrinsic,
            original_sizes=np.tile([original_width, original_height], (8, 1)),
        )
        result = reconstruct_window(prediction, ReconstructionOptions(window_id="tum/window_000"))
        self.assertEqual(result.info["ba"], "ok", result.info.get("ba_reason"))
        before = rotation_errors(perturbed, truth).mean()
        after = rotation_errors(poses_of(result, 8), truth).mean()
        self.assertLess(after, 0.5 * before, f"rotation error {before:.3f} -> {after:.3f} deg")
        self.assertLess(result.info["metrics"]["reproj_error_per_observation_px"], 1.5)
        camera = result.reconstruction.camera(1)
        self.assertEqual((camera.width, camera.height), (original_width, original_height))
        self.assertLess(abs(camera.focal_length / intrinsic[0, 1, 1] - 1), 0.03)


if __name__ == "__main__":
    unittest.main()
