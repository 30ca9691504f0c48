"""Tests of the synthetic scene renderer, its ground-truth files and the committed testdata/."""

from __future__ import annotations

import importlib.util
import tempfile
import unittest
from pathlib import Path

import numpy as np
from PIL import Image

from vae_pipeline import synthetic
from vae_pipeline.synthetic import SyntheticScene, read_ground_truth, render_scene, write_scene

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"


def load_make_testdata():
    """The testdata script as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("make_testdata", REPO / "scripts" / "make_testdata.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample image [H, W] or [H, W, C] at points inside [0, W - 1) x [0, H - 1)."""
    x0 = np.floor(x).astype(np.int64)
    y0 = np.floor(y).astype(np.int64)
    fx, fy = x - x0, y - y0
    if image.ndim == 3:
        fx, fy = fx[:, None], fy[:, None]
    top = image[y0, x0] * (1 - fx) + image[y0, x0 + 1] * fx
    bottom = image[y0 + 1, x0] * (1 - fx) + image[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def rotation_angle_deg(rotation_a: np.ndarray, rotation_b: np.ndarray) -> float:
    cosine = (np.trace(rotation_a @ rotation_b.T) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def subpixel_shift(image_a: np.ndarray, image_b: np.ndarray) -> np.ndarray:
    """Least-squares (dx, dy) translation between two nearly aligned images (first-order Taylor model)."""
    gray_a = image_a.astype(np.float64).mean(axis=-1)
    gray_b = image_b.astype(np.float64).mean(axis=-1)
    grad_y, grad_x = np.gradient((gray_a + gray_b) / 2)
    inner = np.s_[2:-2, 2:-2]
    design = np.stack([grad_x[inner].ravel(), grad_y[inner].ravel()], axis=1)
    return np.linalg.lstsq(design, (gray_b - gray_a)[inner].ravel(), rcond=None)[0]


class RenderTest(unittest.TestCase):
    def test_types_shapes_and_positive_depth(self):
        scene = render_scene(num_frames=3, width=64, height=48, seed=0)
        self.assertEqual(scene.images.shape, (3, 48, 64, 3))
        self.assertEqual(scene.images.dtype, np.uint8)
        self.assertEqual(scene.depth.shape, (3, 48, 64))
        self.assertEqual(scene.depth.dtype, np.float32)
        self.assertEqual(scene.extrinsic.shape, (3, 3, 4))
        self.assertEqual(scene.intrinsic.shape, (3, 3, 3))
        self.assertEqual(scene.extrinsic.dtype, np.float64)
        self.assertTrue(np.all(np.isfinite(scene.depth)) and scene.depth.min() > 0)
        rotations = scene.extrinsic[:, :, :3]
        np.testing.assert_allclose(rotations @ rotations.transpose(0, 2, 1), np.broadcast_to(np.eye(3), (3, 3, 3)),
                                   atol=1e-12)
        np.testing.assert_allclose(np.linalg.det(rotations), 1.0, atol=1e-12)
        self.assertGreater(scene.images.std(), 30, "frames should be richly textured")

    def test_deterministic_for_a_seed(self):
        first = render_scene(num_frames=2, width=48, height=32, seed=0, trajectory="forward")
        second = render_scene(num_frames=2, width=48, height=32, seed=0, trajectory="forward")
        other = render_scene(num_frames=2, width=48, height=32, seed=1, trajectory="forward")
        for name in ("images", "depth", "extrinsic", "intrinsic"):
            np.testing.assert_array_equal(getattr(first, name), getattr(second, name), err_msg=name)
        self.assertFalse(np.array_equal(first.images, other.images))

    def test_rejects_unknown_trajectory(self):
        with self.assertRaises(ValueError):
            render_scene(num_frames=1, width=8, height=8, trajectory="spiral")

    def test_trajectories_are_smooth_with_parallax(self):
        for trajectory in synthetic.TRAJECTORIES:
            with self.subTest(trajectory=trajectory):
                scene = render_scene(num_frames=40, width=24, height=16, trajectory=trajectory, supersample=1)
                rotations = scene.extrinsic[:, :, :3]
                centres = -np.einsum("sji,sj->si", rotations, scene.extrinsic[:, :, 3])
                angles = [rotation_angle_deg(rotations[k], rotations[k + 1]) for k in range(39)]
                self.assertGreater(min(angles), 1.0)
                self.assertLess(max(angles), 5.5)
                self.assertGreater(np.linalg.norm(np.diff(centres, axis=0), axis=1).min(), 0.05)
                self.assertGreater(scene.depth.min(), 0.5, "the camera comes too close to a surface")

    def test_world_points_project_back_to_pixel_centres(self):
        scene = render_scene(num_frames=2, width=40, height=30, seed=1)
        points = scene.world_points()
        self.assertEqual(points.shape, (2, 30, 40, 3))
        for frame in range(2):
            camera_points = points[frame] @ scene.extrinsic[frame, :, :3].T + scene.extrinsic[frame, :, 3]
            np.testing.assert_allclose(camera_points[..., 2], scene.depth[frame], rtol=1e-12)
            pixels = camera_points @ scene.intrinsic[frame].T
            pixels = pixels[..., :2] / pixels[..., 2:]
            grid_y, grid_x = np.mgrid[0:30, 0:40]
            np.testing.assert_allclose(pixels, np.stack([grid_x, grid_y], axis=-1), atol=1e-9)


class ReprojectionTest(unittest.TestCase):
    """Frame i's depth, unprojected and seen from frame j, must agree with frame j's depth and colours."""

    @classmethod
    def setUpClass(cls):
        cls.scenes = {t: render_scene(num_frames=4, width=160, height=120, trajectory=t) for t in ("arc", "forward")}

    def check_pair(self, scene: SyntheticScene, source: int, target: int) -> None:
        _, height, width = scene.depth.shape
        points = scene.world_points()[source].reshape(-1, 3)
        camera_points = points @ scene.extrinsic[target, :, :3].T + scene.extrinsic[target, :, 3]
        z = camera_points[:, 2]
        projected = camera_points @ scene.intrinsic[target].T
        x, y = projected[:, 0] / z, projected[:, 1] / z
        inside = (z > 0) & (x >= 0) & (x < width - 1) & (y >= 0) & (y < height - 1)
        self.assertGreater(inside.mean(), 0.5)
        # Inverse depth is affine in pixel coordinates on a plane, so bilinear interpolation of it is exact
        # wherever the four neighbouring pixels see the same plane as the point.
        inverse_depth = bilinear(1.0 / scene.depth[target].astype(np.float64), x[inside], y[inside])
        relative_error = np.abs(inverse_depth * z[inside] - 1.0)
        visible = relative_error < 1e-2
        self.assertGreater(visible.mean(), 0.8, "too few points pass the z-test")
        self.assertGreater(np.mean(relative_error < 1e-4), 0.75, "projected depth should match almost exactly")
        self.assertLess(np.median(relative_error[visible]), 1e-6)

        source_colour = scene.images[source].reshape(-1, 3)[inside][visible].astype(np.float64)
        target_colour = bilinear(scene.images[target].astype(np.float64), x[inside][visible], y[inside][visible])
        difference = np.abs(source_colour - target_colour).mean(axis=1)
        # Resampling sharp texture edges leaves some difference; a half-pixel misalignment doubles these numbers.
        self.assertLess(np.median(difference), 4.5)
        self.assertLess(difference.mean(), 7.5)

    def test_arc(self):
        for source, target in ((0, 1), (0, 3), (3, 0)):
            with self.subTest(pair=(source, target)):
                self.check_pair(self.scenes["arc"], source, target)

    def test_forward(self):
        for source, target in ((0, 1), (0, 3), (3, 0)):
            with self.subTest(pair=(source, target)):
                self.check_pair(self.scenes["forward"], source, target)


class ConventionTest(unittest.TestCase):
    def test_principal_point_is_opencv_image_centre(self):
        scene = render_scene(num_frames=1, width=30, height=20, focal=25.0)
        np.testing.assert_array_equal(scene.intrinsic[0], [[25.0, 0.0, 14.5], [0.0, 25.0, 9.5], [0.0, 0.0, 1.0]])
        default_focal = render_scene(num_frames=1, width=30, height=20).intrinsic[0, 0, 0]
        self.assertEqual(default_focal, 0.8 * 30)

    def test_colour_samples_are_centred_on_the_depth_rays(self):
        # supersample=1 shades exactly the pixel-centre ray that gives the depth; the supersampled colour must
        # not be shifted against it (a misplaced sub-sample grid shows as a shift of a quarter pixel or more).
        reference = render_scene(num_frames=1, width=120, height=90, supersample=1).images[0]
        for supersample in (2, 3, 4):
            image = render_scene(num_frames=1, width=120, height=90, supersample=supersample).images[0]
            shift = subpixel_shift(reference, image)
            self.assertLess(np.abs(shift).max(), 0.05, f"supersample={supersample}: shift {shift}")


class GroundTruthFilesTest(unittest.TestCase):
    def test_write_and_read_round_trip(self):
        scene = render_scene(num_frames=3, width=40, height=30, seed=1, trajectory="forward")
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "sequence"
            paths = write_scene(scene, folder)
            self.assertEqual([path.name for path in paths], ["0000.png", "0001.png", "0002.png"])
            for path, image in zip(paths, scene.images):
                np.testing.assert_array_equal(np.asarray(Image.open(path).convert("RGB")), image)

            names, extrinsic, intrinsic = read_ground_truth(folder)
            self.assertEqual(names, ["0000.png", "0001.png", "0002.png"])
            np.testing.assert_allclose(extrinsic, scene.extrinsic, atol=1e-10)
            np.testing.assert_allclose(intrinsic, scene.intrinsic, atol=1e-6)

            # COLMAP pixel-centre convention in the file: cx = W / 2, cy = H / 2 for a centred camera.
            line = [row for row in (folder / "gt" / "intrinsics.txt").read_text().splitlines() if row[0] != "#"]
            self.assertEqual(line, ["40 30 32.000000 32.000000 20.000000 15.000000"])

            stored = np.load(folder / "gt" / "depth.npz")
            self.assertEqual(stored["depth"].dtype, np.float16)
            self.assertEqual(list(stored["names"]), names)
            np.testing.assert_allclose(stored["depth"], scene.depth, rtol=1e-3)

    def test_custom_names(self):
        scene = render_scene(num_frames=2, width=16, height=12)
        with tempfile.TemporaryDirectory() as tmp:
            write_scene(scene, Path(tmp), names=["a.png", "b.png"])
            self.assertEqual(read_ground_truth(Path(tmp))[0], ["a.png", "b.png"])
            with self.assertRaises(ValueError):
                write_scene(scene, Path(tmp), names=["only_one.png"])

    @unittest.skipUnless((SHARED / "data").is_dir(), f"shared data not found at {SHARED / 'data'}")
    def test_reads_shared_data_ground_truth(self):
        names, extrinsic, intrinsic = read_ground_truth(SHARED / "data" / "tum_fr3_office_1hz")
        self.assertEqual(len(names), 16)
        self.assertEqual(extrinsic.shape, (16, 3, 4))
        # File values 535.4 539.2 320.1 247.6 are in COLMAP convention; the reader returns OpenCV's.
        np.testing.assert_allclose(intrinsic[0], [[535.4, 0, 319.6], [0, 539.2, 247.1], [0, 0, 1]])
        rotations = extrinsic[:, :, :3]
        np.testing.assert_allclose(rotations @ rotations.transpose(0, 2, 1), np.broadcast_to(np.eye(3), (16, 3, 3)),
                                   atol=1e-9)


class TestdataTest(unittest.TestCase):
    """testdata/ must be exactly what scripts/make_testdata.py renders, so nobody edits it by hand."""

    def test_testdata_matches_the_script(self):
        sequences = load_make_testdata().SEQUENCES
        self.assertTrue((REPO / "testdata" / "README.md").is_file())
        for folder_name, settings in sequences.items():
            with self.subTest(sequence=folder_name):
                folder = REPO / "testdata" / folder_name
                scene = render_scene(**settings)
                names, extrinsic, intrinsic = read_ground_truth(folder)
                self.assertEqual(names, [f"{index:04d}.png" for index in range(settings["num_frames"])])
                self.assertEqual(sorted(path.name for path in (folder / "images").iterdir()), names)
                np.testing.assert_allclose(extrinsic, scene.extrinsic, atol=1e-10)
                np.testing.assert_allclose(intrinsic, scene.intrinsic, atol=1e-6)
                stored_depth = np.load(folder / "gt" / "depth.npz")["depth"]
                np.testing.assert_allclose(stored_depth, scene.depth, rtol=1e-3)
                stored_images = np.stack([np.asarray(Image.open(folder / "images" / name)) for name in names])
                # Allow rounding flips from platform-dependent float math, nothing more.
                difference = np.abs(stored_images.astype(np.int16) - scene.images)
                self.assertLessEqual(difference.max(), 1)
                self.assertLess(np.mean(difference > 0), 1e-3)


if __name__ == "__main__":
    unittest.main()
