"""Reconstruction building blocks and the feed-forward branch, on small hand-made predictions (no renderer)."""

import tempfile
import unittest

import cv2
import numpy as np
import pycolmap

from vae_pipeline.reconstruct import ReconstructionOptions, WindowPrediction, reconstruct_window
from vae_pipeline.reconstruct.geometry import project_points, rotation_angle_deg, triangulate_dlt
from vae_pipeline.reconstruct.pixels import (
    content_boxes,
    intrinsics_to_original,
    model_pixels_to_original,
    original_pixels_to_model,
    resolve_model_to_original,
)
from vae_pipeline.reconstruct.tracking import select_query_frames, track_klt


def _rotation(axis_angle: np.ndarray) -> np.ndarray:
    return cv2.Rodrigues(np.asarray(axis_angle, dtype=np.float64))[0]


def _cameras(num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Camera-from-world [S, 3, 4] looking roughly down +z at points around z = 4, frame 0 at the origin."""
    extrinsic = np.zeros((num_frames, 3, 4))
    for frame in range(num_frames):
        rotation = _rotation(rng.normal(scale=0.05, size=3)) if frame else np.eye(3)
        centre = np.array([0.3 * frame, 0.05 * rng.normal(), 0.05 * rng.normal()]) if frame else np.zeros(3)
        extrinsic[frame] = np.concatenate([rotation, -(rotation @ centre)[:, None]], axis=1)
    return extrinsic


def _prediction(model_to_original=None, original_size=(64, 45), num_frames=3, height=14, width=20, seed=0):
    rng = np.random.default_rng(seed)
    intrinsic = np.array([[18.0, 0.0, width / 2], [0.0, 17.5, height / 2], [0.0, 0.0, 1.0]])
    return WindowPrediction(
        names=[f"frame_{i}.png" for i in range(num_frames)],
        images=rng.integers(0, 256, size=(num_frames, height, width, 3), dtype=np.uint8),
        extrinsic=_cameras(num_frames, rng),
        intrinsic=np.repeat(intrinsic[None], num_frames, axis=0),
        original_sizes=np.tile(original_size, (num_frames, 1)),
        depth=rng.uniform(1.0, 3.0, size=(num_frames, height, width)).astype(np.float32),
        depth_conf=rng.uniform(0.0, 10.0, size=(num_frames, height, width)).astype(np.float32),
        model_to_original=model_to_original,
    )


def points_of(result) -> np.ndarray:
    """[P, 3] positions of a result's points in id order."""
    model = result.reconstruction
    return np.array([model.point3D(i).xyz for i in sorted(model.point3D_ids())]).reshape(-1, 3)


class PixelMappingTest(unittest.TestCase):
    def test_plain_resize_maps_frame_edges_to_frame_edges(self):
        mapping = resolve_model_to_original(None, (14, 20), np.array([[64, 45]]))
        edges = np.array([[[-0.5, -0.5], [19.5, 13.5]]])  # OpenCV model pixels of the image corners
        np.testing.assert_allclose(model_pixels_to_original(edges, mapping), [[[0.0, 0.0], [64.0, 45.0]]])

    def test_square_padding_offset(self):
        # A 224 x 168 frame centred on a 224 x 224 square (28 rows of padding on top), shown at 112 x 112.
        mapping = np.array([[2.0, 2.0, 0.0, -28.0]])
        # The frame's top edge is the square's y = 28 (COLMAP), the model's y = 14 (COLMAP) = 13.5 (OpenCV).
        top_left_edge = np.array([[[-0.5, 13.5]]])
        np.testing.assert_allclose(model_pixels_to_original(top_left_edge, mapping), [[[0.0, 0.0]]])
        box = content_boxes(mapping, np.array([[224, 168]]), (112, 112))
        np.testing.assert_allclose(box, [[-0.5, 13.5, 111.5, 97.5]])

    def test_round_trip_and_intrinsics_agree_with_points(self):
        rng = np.random.default_rng(1)
        mapping = np.array([[3.2, 3.3, 0.0, 0.0], [2.0, 2.0, -4.0, 7.0]])
        xy = rng.uniform(0, 20, size=(2, 50, 2))
        np.testing.assert_allclose(original_pixels_to_model(model_pixels_to_original(xy, mapping), mapping), xy)
        intrinsic = np.repeat(np.array([[[18.0, 0.0, 10.0], [0.0, 17.5, 7.0], [0.0, 0.0, 1.0]]]), 2, axis=0)
        extrinsic = np.repeat(np.eye(3, 4)[None], 2, axis=0)
        points = rng.uniform([-1, -1, 2], [1, 1, 4], size=(30, 3))
        model_px, _ = project_points(points, intrinsic, extrinsic)
        original_px, _ = project_points(points, intrinsics_to_original(intrinsic, mapping), extrinsic)
        np.testing.assert_allclose(original_px, model_pixels_to_original(model_px, mapping), atol=1e-9)


class GeometryTest(unittest.TestCase):
    def test_triangulation_recovers_points(self):
        rng = np.random.default_rng(2)
        extrinsic = _cameras(4, rng)
        intrinsic = np.repeat(np.array([[[300.0, 0.0, 160.0], [0.0, 300.0, 120.0], [0.0, 0.0, 1.0]]]), 4, 0)
        points = rng.uniform([-1, -1, 3], [1, 1, 5], size=(40, 3))
        pixels, _ = project_points(points, intrinsic, extrinsic)
        mask = rng.random((4, 40)) < 0.8
        mask[:2] = True
        estimate, ok = triangulate_dlt(pixels, mask, intrinsic, extrinsic)
        self.assertTrue(ok.all())
        np.testing.assert_allclose(estimate, points, atol=1e-8)
        _, ok = triangulate_dlt(pixels, np.eye(4, 40, dtype=bool), intrinsic, extrinsic)
        self.assertFalse(ok.any(), "a single observation does not triangulate")


class TrackingTest(unittest.TestCase):
    def _texture(self, shape=(96, 128)):
        rng = np.random.default_rng(3)
        noise = cv2.GaussianBlur(rng.uniform(0, 255, size=shape), (0, 0), 2.0)
        noise = (noise - noise.min()) / np.ptp(noise) * 255
        return np.repeat(noise.astype(np.uint8)[..., None], 3, axis=2)

    def test_query_frames_are_spread_and_start_at_zero(self):
        self.assertEqual(select_query_frames(8, 8), list(range(8)))
        self.assertEqual(select_query_frames(8, 3), [0, 4, 7])
        self.assertEqual(select_query_frames(20, 4), [0, 6, 13, 19])
        self.assertEqual(select_query_frames(5, 1), [0])

    def test_klt_follows_a_subpixel_shift(self):
        texture = self._texture((120, 160))
        shift = np.array([1.3, -0.7])
        frames = [cv2.warpAffine(texture, np.float32([[1, 0, s * shift[0]], [0, 1, s * shift[1]]]), (160, 120),
                                 flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT) for s in range(4)]
        images = np.stack(frames)[:, 12:108, 16:144]
        boxes = np.tile([-0.5, -0.5, 127.5, 95.5], (4, 1))
        for fine in (False, True):
            tracks = track_klt(images, boxes, [0, 2], 200, fine)
            self.assertGreater(tracks.num_tracks, 20)
            visible = tracks.vis > 0.5
            self.assertGreater(visible.mean(), 0.8)
            expected = tracks.xy[tracks.query_frame, np.arange(tracks.num_tracks)][None] + (
                (np.arange(4)[:, None] - tracks.query_frame[None])[..., None] * shift
            )
            error = np.linalg.norm(tracks.xy - expected, axis=2)[visible]
            self.assertLess(np.median(error), 0.05, f"fine={fine}")
            self.assertLess(np.percentile(error, 95), 0.2, f"fine={fine}")

    def test_klt_ignores_padding(self):
        image = self._texture()
        image[:20] = 0
        images = np.stack([image, image])
        boxes = np.tile([-0.5, 19.5, 127.5, 95.5], (2, 1))
        tracks = track_klt(images, boxes, [0], 500, True)
        self.assertGreater(tracks.num_tracks, 20)
        self.assertGreater(tracks.xy[0, :, 1].min(), 19.5 + 10 - 1e-9, "corners keep half a window off the box")


class FeedForwardTest(unittest.TestCase):
    def _check_model(self, prediction, result, options):
        reconstruction = result.reconstruction
        num_frames = prediction.num_frames
        self.assertEqual(sorted(reconstruction.images), list(range(1, num_frames + 1)))
        self.assertEqual([reconstruction.image(i + 1).name for i in range(num_frames)], prediction.names)
        self.assertEqual(reconstruction.num_reg_images(), num_frames)
        mapping = resolve_model_to_original(prediction.model_to_original, prediction.model_hw,
                                            prediction.original_sizes)
        k_original = intrinsics_to_original(prediction.intrinsic, mapping)
        for frame in range(num_frames):
            image = reconstruction.image(frame + 1)
            camera = reconstruction.camera(image.camera_id)
            self.assertEqual(camera.model_name, "PINHOLE")
            self.assertEqual((camera.width, camera.height), tuple(prediction.original_sizes[frame]))
            k = k_original[frame]
            np.testing.assert_allclose(camera.params, [k[0, 0], k[1, 1], k[0, 2], k[1, 2]], atol=1e-9)
            np.testing.assert_allclose(image.cam_from_world().matrix(), prediction.extrinsic[frame], atol=1e-9)
        # Every point reprojects onto its single observation, which lies inside its original frame.
        for point_id, point in reconstruction.points3D.items():
            self.assertEqual(point.track.length(), 1)
            element = point.track.elements[0]
            image = reconstruction.image(element.image_id)
            observed = image.points2D[element.point2D_idx].xy
            np.testing.assert_allclose(image.project_point(point.xyz), observed, atol=1e-3)
            width, height = prediction.original_sizes[element.image_id - 1]
            self.assertTrue(0 <= observed[0] <= width and 0 <= observed[1] <= height)
        self.assertEqual(result.info["status"], "ok")
        self.assertEqual(result.info["ba"], "off")
        self.assertLess(result.info["metrics"]["reproj_error_per_observation_px"], 1e-6)

    def test_aspect_resize_writes_and_reads_back(self):
        prediction = _prediction()
        options = ReconstructionOptions(use_ba=False, window_id="seq/window_000")
        result = reconstruct_window(prediction, options)
        expected = int((prediction.depth_conf >= options.conf_thres_value).sum())
        self.assertEqual(result.reconstruction.num_points3D(), expected)
        self._check_model(prediction, result, options)
        # Colours are the model image's pixels, which a point's observation maps back to.
        mapping = resolve_model_to_original(None, prediction.model_hw, prediction.original_sizes)
        for point_id in list(result.reconstruction.points3D)[:50]:
            point = result.reconstruction.point3D(point_id)
            element = point.track.elements[0]
            frame = element.image_id - 1
            xy = result.reconstruction.image(element.image_id).points2D[element.point2D_idx].xy
            column, row = np.round(original_pixels_to_model(xy[None, None], mapping[frame:frame + 1])[0, 0])
            np.testing.assert_array_equal(point.color, prediction.images[frame, int(row), int(column)])
        with tempfile.TemporaryDirectory() as folder:
            result.reconstruction.write(folder)
            loaded = pycolmap.Reconstruction(folder)
        self.assertEqual(loaded.num_points3D(), result.reconstruction.num_points3D())
        self.assertEqual(loaded.num_reg_images(), prediction.num_frames)
        for image_id, image in result.reconstruction.images.items():
            read = loaded.image(image_id)
            self.assertEqual(read.name, image.name)
            np.testing.assert_allclose(read.cam_from_world().matrix(), image.cam_from_world().matrix(), atol=1e-12)
            np.testing.assert_allclose(loaded.camera(read.camera_id).params,
                                       result.reconstruction.camera(image.camera_id).params)
        for point_id, point in loaded.points3D.items():
            element = point.track.elements[0]
            read = loaded.image(element.image_id)
            np.testing.assert_allclose(read.project_point(point.xyz), read.points2D[element.point2D_idx].xy,
                                       atol=1e-3)

    def test_square_padding_keeps_points_inside_the_frame(self):
        # 64 x 45 frames padded to 64 x 64 (9 rows on top), shown at 20 x 20.
        mapping = np.tile([64 / 20, 64 / 20, 0.0, -9.0], (3, 1))
        prediction = _prediction(model_to_original=mapping, height=20, width=20)
        options = ReconstructionOptions(use_ba=False, conf_thres_value=0.0)
        result = reconstruct_window(prediction, options)
        self._check_model(prediction, result, options)
        boxes = content_boxes(mapping, prediction.original_sizes, (20, 20))
        inside_rows = int(((np.arange(20) > boxes[0, 1]) & (np.arange(20) < boxes[0, 3])).sum())
        self.assertEqual(result.reconstruction.num_points3D(), 3 * 20 * inside_rows)

    def test_point_cap_is_seeded_by_window(self):
        prediction = _prediction()
        options = ReconstructionOptions(use_ba=False, conf_thres_value=0.0, max_points=100, window_id="a")
        first = reconstruct_window(prediction, options)
        again = reconstruct_window(prediction, options)
        other = reconstruct_window(prediction, ReconstructionOptions(
            use_ba=False, conf_thres_value=0.0, max_points=100, window_id="b"))
        self.assertEqual(first.reconstruction.num_points3D(), 100)
        np.testing.assert_array_equal(points_of(first), points_of(again))
        self.assertFalse(np.array_equal(points_of(first), points_of(other)))

    def test_points_far_from_everything_are_not_exported(self):
        prediction = _prediction()
        prediction.depth[1, 5, 7] = 1e9  # a sky pixel's depth: far beyond the rest of the window
        result = reconstruct_window(prediction, ReconstructionOptions(use_ba=False, conf_thres_value=0.0))
        distances = np.linalg.norm(points_of(result), axis=1)
        self.assertEqual(result.reconstruction.num_points3D(), 3 * 14 * 20 - 1)
        self.assertLess(distances.max(), 10.0)

    def test_without_depth_only_cameras(self):
        prediction = _prediction()
        prediction.depth = prediction.depth_conf = None
        result = reconstruct_window(prediction, ReconstructionOptions(use_ba=False))
        self.assertEqual(result.reconstruction.num_points3D(), 0)
        self.assertEqual(result.reconstruction.num_reg_images(), 3)


class BundleAdjustmentOnExactTracksTest(unittest.TestCase):
    """Given (VGGT-style) tracks, no depth: triangulation, BA and the pixel mapping, without any image."""

    def _scene(self, mapping, original_size, model_hw):
        rng = np.random.default_rng(4)
        num_frames, num_points = 5, 400
        extrinsic = _cameras(num_frames, rng)
        height, width = model_hw
        intrinsic = np.repeat(np.array([[[0.9 * width, 0.0, width / 2 - 0.5],
                                         [0.0, 0.9 * width, height / 2 - 0.5], [0.0, 0.0, 1.0]]]), num_frames, 0)
        # The principal point must be the original frame's centre, which BA keeps fixed.
        centre_model = original_pixels_to_model(np.asarray(original_size, float)[None, None] / 2, mapping[:1])[0, 0]
        intrinsic[:, :2, 2] = centre_model
        points = rng.uniform([-1.5, -1.0, 3.5], [2.5, 1.0, 5.0], size=(num_points, 3))
        tracks, _ = project_points(points, intrinsic, extrinsic)
        return extrinsic, intrinsic, tracks

    def _run(self, mapping, original_size, model_hw, camera_type, visible=None):
        extrinsic, intrinsic, tracks = self._scene(mapping, original_size, model_hw)
        num_frames = len(extrinsic)
        rng = np.random.default_rng(5)
        perturbed = extrinsic.copy()
        for frame in range(1, num_frames):
            rotation = _rotation(np.deg2rad(1.0) * rng.normal(size=3) / np.sqrt(3)) @ extrinsic[frame, :, :3]
            translation = extrinsic[frame, :, 3] * (1 + 0.03 * rng.normal(size=3))
            perturbed[frame] = np.concatenate([rotation, translation[:, None]], axis=1)
        wrong_focal = intrinsic.copy()
        wrong_focal[:, 0, 0] *= 1.05
        wrong_focal[:, 1, 1] *= 1.05
        height, width = model_hw
        prediction = WindowPrediction(
            names=[f"{i}.jpg" for i in range(num_frames)],
            images=np.zeros((num_frames, height, width, 3), dtype=np.uint8),
            extrinsic=perturbed, intrinsic=wrong_focal, original_sizes=np.tile(original_size, (num_frames, 1)),
            model_to_original=mapping, tracks=tracks,
            track_vis=np.ones(tracks.shape[:2]) if visible is None else visible.astype(float),
        )
        options = ReconstructionOptions(tracker="vggt", camera_type=camera_type)
        result = reconstruct_window(prediction, options)
        if visible is not None:
            return result
        self.assertEqual(result.info["ba"], "ok", result.info.get("ba_reason"))
        self.assertEqual(result.info["tracker"], "given")
        poses = np.stack([result.reconstruction.image(i + 1).cam_from_world().matrix() for i in range(num_frames)])
        relative = [rotation_angle_deg(poses[i, :, :3] @ poses[0, :, :3].T,
                                       extrinsic[i, :, :3] @ extrinsic[0, :, :3].T) for i in range(num_frames)]
        self.assertLess(max(relative), 1e-4)
        camera = result.reconstruction.camera(1)
        k_true = intrinsics_to_original(intrinsic, mapping)[0]
        self.assertAlmostEqual(camera.focal_length_x, k_true[0, 0], delta=1e-3)
        self.assertAlmostEqual(camera.principal_point_x, original_size[0] / 2, delta=1e-9)
        self.assertAlmostEqual(camera.principal_point_y, original_size[1] / 2, delta=1e-9)
        self.assertLess(result.info["metrics"]["reproj_error_per_observation_px"], 1e-3)
        return result

    def test_plain_resize(self):
        self._run(np.tile([2.0, 2.0, 0.0, 0.0], (5, 1)), (320, 240), (120, 160), "SIMPLE_PINHOLE")

    def test_square_padding(self):
        self._run(np.tile([2.0, 2.0, 0.0, -40.0], (5, 1)), (320, 240), (160, 160), "PINHOLE")

    def test_window_in_two_unlinked_parts_falls_back(self):
        visible = np.zeros((5, 400), dtype=bool)
        visible[:3, :200] = True
        visible[3:, 200:] = True
        result = self._run(np.tile([2.0, 2.0, 0.0, 0.0], (5, 1)), (320, 240), (120, 160), "SIMPLE_PINHOLE", visible)
        self.assertEqual(result.info["ba"], "failed")
        self.assertIn("frames 3.jpg, 4.jpg and frames 0.jpg, 1.jpg, 2.jpg share 0 points", result.info["ba_reason"])
        self.assertEqual(result.reconstruction.num_reg_images(), 5)


class OptionsAndFallbackTest(unittest.TestCase):
    def test_defaults_match_the_cli(self):
        options = ReconstructionOptions()
        self.assertEqual(
            (options.use_ba, options.max_reproj_error, options.shared_camera, options.camera_type,
             options.vis_thresh, options.query_frame_num, options.max_query_pts, options.fine_tracking,
             options.conf_thres_value, options.max_points, options.tracker, options.seed),
            (True, 8.0, True, "SIMPLE_PINHOLE", 0.2, 8, 4096, True, 5.0, 100000, "sift", 42),
        )

    def test_bad_options_are_refused(self):
        prediction = _prediction()
        with self.assertRaisesRegex(ValueError, "camera_type"):
            reconstruct_window(prediction, ReconstructionOptions(camera_type="FISHEYE"))
        with self.assertRaisesRegex(ValueError, "tracker"):
            reconstruct_window(prediction, ReconstructionOptions(tracker="nope"))
        with self.assertRaisesRegex(ValueError, "vggt"):
            reconstruct_window(prediction, ReconstructionOptions(tracker="vggt"))
        prediction.depth = prediction.depth[:2]
        with self.assertRaisesRegex(ValueError, "depth"):
            reconstruct_window(prediction, ReconstructionOptions())

    def test_textureless_window_falls_back_to_feed_forward(self):
        prediction = _prediction()
        prediction.images[:] = 128
        result = reconstruct_window(prediction, ReconstructionOptions(window_id="flat"))
        self.assertEqual(result.info["status"], "ok")
        self.assertEqual(result.info["ba"], "failed")
        self.assertIn("observations", result.info["ba_reason"])
        feedforward = reconstruct_window(prediction, ReconstructionOptions(use_ba=False, window_id="flat"))
        np.testing.assert_array_equal(points_of(result), points_of(feedforward))
        self.assertEqual(result.info["metrics"]["tracks"], 0)
        self.assertIn("tracking_s", result.info["timings"])


if __name__ == "__main__":
    unittest.main()
