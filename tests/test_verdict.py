"""Geometry you can trust: bundle adjustment on real and synthetic windows and the verdict that says whether the
result can be trusted. Cameras reach ``reconstruct_window`` as VGGT would hand them: the truth disturbed by about
1.5 degrees, 5 % of the extent and 8 % in focal length, no depth (points triangulated from the tracks).

"good" must never hide a wrong model: a window judged good has every relative rotation within 2 degrees of the
truth and every camera centre within 3 % of the window's extent after a similarity alignment.
"""

from __future__ import annotations

import sys
import unittest
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.gt_windows import disturb, gt_windows  # noqa: E402
from vae_pipeline.evaluation.metrics import camera_centres, centre_errors, relative_pose_errors  # noqa: E402
from vae_pipeline.reconstruct import ReconstructionOptions, WindowPrediction, reconstruct_window  # noqa: E402
from vae_pipeline.reconstruct import tracking  # noqa: E402
from vae_pipeline.reconstruct.geometry import project_points  # noqa: E402
from vae_pipeline.synthetic import arc_cameras, render_views  # noqa: E402

SHARED_DATA = REPO.parent / "shared" / "data"
MAX_ROTATION_ERROR_DEG = 2.0
MAX_CENTRE_ERROR = 0.03
SIZE = (224, 168)


def poses_of(result, names: list[str]) -> np.ndarray:
    images = {image.name: image for image in result.reconstruction.images.values()}
    return np.stack([images[name].cam_from_world().matrix() for name in names])


def errors_against(result, names: list[str], truth: np.ndarray) -> tuple[float, float]:
    """Largest relative rotation error (degrees) and largest centre error (share of the extent)."""
    poses = poses_of(result, names)
    rotation, _ = relative_pose_errors(poses, truth)
    centre = centre_errors(camera_centres(poses), camera_centres(truth))
    return float(rotation.max()), float(centre.max())


def in_first_camera_frame(extrinsic: np.ndarray) -> np.ndarray:
    first = np.vstack([extrinsic[0], [0.0, 0.0, 0.0, 1.0]])
    return np.einsum("sij,jk->sik", extrinsic, np.linalg.inv(first))


def synthetic_window(degrees: list[float], seed: int = 3) -> tuple[WindowPrediction, np.ndarray]:
    """Frames rendered from cameras on an arc at the given azimuths, with their disturbed prediction."""
    truth = in_first_camera_frame(arc_cameras(degrees))
    scene = render_views(arc_cameras(degrees), *SIZE, seed=0)
    rng = np.random.default_rng(seed)
    intrinsic = scene.intrinsic.copy()
    intrinsic[:, [0, 1], [0, 1]] *= 1.08
    prediction = WindowPrediction(
        names=[f"{i:04d}.png" for i in range(len(degrees))], images=scene.images,
        extrinsic=disturb(truth, rng, rotation_deg=1.5, centre_fraction=0.05), intrinsic=intrinsic,
        original_sizes=np.tile(SIZE, (len(degrees), 1)),
    )
    return prediction, truth


class TrustworthyTest(unittest.TestCase):
    def assert_good_and_right(self, result, names, truth):
        report = result.report
        self.assertEqual((report.ba, report.verdict), ("ok", "good"), report.verdict_reason or report.ba_reason)
        rotation, centre = errors_against(result, names, truth)
        self.assertLess(rotation, MAX_ROTATION_ERROR_DEG)
        self.assertLess(centre, MAX_CENTRE_ERROR)


class SyntheticWindowsTest(TrustworthyTest):
    def test_close_first_pair_keeps_the_scale(self):
        # The first two cameras 2 mm apart, far less than the prediction's error: a gauge that held a coordinate
        # of the second camera would inflate or flip the scale.
        prediction, truth = synthetic_window([0.0, 0.02, 4, 8, 12, 16, 20, 24])
        result = reconstruct_window(prediction, ReconstructionOptions(window_id="close"))
        self.assert_good_and_right(result, prediction.names, truth)
        spread = np.linalg.norm(camera_centres(poses_of(result, prediction.names)) - camera_centres(prediction.extrinsic), axis=1)
        self.assertLess(spread.max(), 0.2 * np.ptp(camera_centres(truth), axis=0).max())

    def test_wide_baseline(self):
        prediction, truth = synthetic_window([0, 12, 24, 36, 48, 60, 72, 84])
        result = reconstruct_window(prediction, ReconstructionOptions(window_id="wide"))
        self.assert_good_and_right(result, prediction.names, truth)

    def test_static_window_says_no_parallax(self):
        prediction, _ = synthetic_window([10.0] * 8)
        result = reconstruct_window(prediction, ReconstructionOptions(window_id="static"))
        self.assertEqual(result.report.ba, "failed")
        self.assertEqual(result.report.verdict, "failed")
        self.assertEqual(result.reconstruction.num_points3D(), 0)
        self.assertIn("no parallax", result.report.verdict_reason)


class WeaklyLinkedGroupsTest(unittest.TestCase):
    """Two groups of frames with many tracks each, joined by a few tracks only, given as exact (VGGT-style)
    tracks so the number of links is exact."""

    def window(self, links: int, wrong: bool) -> tuple[WindowPrediction, np.ndarray]:
        rng = np.random.default_rng(1)
        truth = in_first_camera_frame(arc_cameras([0, 3, 6, 9, 30, 33, 36, 39]))
        width, height = 320, 240
        intrinsic = np.repeat(np.array([[[260.0, 0, 159.5], [0, 260.0, 119.5], [0, 0, 1]]]), 8, axis=0)
        centre = camera_centres(truth).mean(axis=0) + np.array([0.0, 0.0, 0.0])
        points = centre + rng.normal(scale=1.5, size=(900, 3)) + 5.0 * _viewing_direction(truth)
        pixels, depth = project_points(points, intrinsic, truth)
        inside = (pixels[..., 0] > 0) & (pixels[..., 0] < width - 1) & (pixels[..., 1] > 0) & (pixels[..., 1] < height - 1)
        visible = inside & (depth > 0)
        group = np.arange(8) < 4
        own = np.zeros((8, 900), dtype=bool)
        own[:, :400] = group[:, None]
        own[:, 400:800] = ~group[:, None]
        own[:, 800:800 + links] = True
        visible &= own
        tracks = pixels.copy()
        if wrong:
            # In the second group the linking tracks follow the points as cameras turned by 1.5 degrees about the
            # scene would see them: a second group turned that way fits every track exactly, so only the weakness
            # of the link can give it away (what wrong matches across a wide step do to real windows).
            turn = np.eye(4)
            turn[:3, :3] = cv2.Rodrigues(np.array([0.0, np.deg2rad(1.5), 0.0]))[0]
            turn[:3, 3] = centre - turn[:3, :3] @ centre
            turned = np.einsum("sij,jk->sik", truth, turn)
            tracks[~group] = project_points(points, intrinsic[~group], turned[~group])[0]
        visible[:, 800 + links:] = False
        tracks += rng.normal(scale=0.3, size=tracks.shape)
        prediction = WindowPrediction(
            names=[f"{i}.jpg" for i in range(8)], images=np.zeros((8, height, width, 3), dtype=np.uint8),
            extrinsic=disturb(truth, rng, 1.5, 0.05), intrinsic=intrinsic,
            original_sizes=np.tile([width, height], (8, 1)), tracks=tracks, track_vis=visible.astype(float),
        )
        return prediction, truth

    def test_few_wrong_links_are_not_good(self):
        prediction, truth = self.window(links=14, wrong=True)
        result = reconstruct_window(prediction, ReconstructionOptions(tracker="vggt", window_id="groups"))
        self.assertEqual(result.report.ba, "ok", result.report.ba_reason)
        rotation, _ = errors_against(result, prediction.names, truth)
        self.assertGreater(rotation, 1.0, "the wrong links should have turned the groups apart")
        self.assertEqual(result.report.verdict, "poor")
        self.assertRegex(result.report.verdict_reason, r"frames 0.jpg, .* and frames 4.jpg, .* share only")

    def test_few_right_links_are_not_good_either(self):
        prediction, _ = self.window(links=14, wrong=False)
        result = reconstruct_window(prediction, ReconstructionOptions(tracker="vggt", window_id="groups"))
        self.assertEqual(result.report.ba, "ok", result.report.ba_reason)
        self.assertEqual(result.report.verdict, "poor")
        self.assertIn("share only", result.report.verdict_reason)

    def test_well_linked_groups_are_good(self):
        prediction, truth = self.window(links=100, wrong=False)
        result = reconstruct_window(prediction, ReconstructionOptions(tracker="vggt", window_id="groups"))
        self.assertEqual(result.report.verdict, "good", result.report.verdict_reason)
        rotation, centre = errors_against(result, prediction.names, truth)
        self.assertLess(rotation, MAX_ROTATION_ERROR_DEG)
        self.assertLess(centre, MAX_CENTRE_ERROR)


def _viewing_direction(extrinsic: np.ndarray) -> np.ndarray:
    """Mean optical axis (world) of the cameras."""
    axis = extrinsic[:, 2, :3].mean(axis=0)
    return axis / np.linalg.norm(axis)


def _failing_tracker(images, boxes, query_frames, max_query_pts, fine):
    """Asks OpenCV for a fundamental matrix from five matches: OpenCV raises cv2.error."""
    points = np.random.default_rng(0).uniform(0, 100, size=(5, 2))
    cv2.findFundamentalMat(points, points + 1.0, cv2.UsacParams())
    raise AssertionError("OpenCV accepted five points")


def _pycolmap_check_tracker(images, boxes, query_frames, max_query_pts, fine):
    """Makes pycolmap fail one of its internal checks: an image whose camera does not exist."""
    import pycolmap

    image = pycolmap.Image(name="x.png", keypoints=np.zeros((0, 2)), camera_id=5, image_id=1)
    pycolmap.Reconstruction().add_image_with_trivial_frame(image, pycolmap.Rigid3d())
    raise AssertionError("pycolmap accepted an image without its camera")


def _broken_tracker(images, boxes, query_frames, max_query_pts, fine):
    return None.xy  # a programming error


class LibraryErrorsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.prediction, _ = synthetic_window([0, 4, 8, 12])
        cls.prediction.depth = np.full((4, SIZE[1], SIZE[0]), 3.0, dtype=np.float32)
        cls.prediction.depth_conf = np.full_like(cls.prediction.depth, 10.0)

    def setUp(self):
        extra = dict(opencv_failure=_failing_tracker, pycolmap_check=_pycolmap_check_tracker, broken=_broken_tracker)
        tracking.TRACKERS.update(extra)
        for name in extra:
            self.addCleanup(tracking.TRACKERS.pop, name)

    def test_an_opencv_error_falls_back_with_its_reason(self):
        result = reconstruct_window(self.prediction, ReconstructionOptions(tracker="opencv_failure"))
        self.assertEqual(result.report.ba, "failed")
        self.assertIn("error", result.report.ba_reason)
        self.assertEqual(result.report.verdict, "poor")
        self.assertGreater(result.reconstruction.num_points3D(), 0)

    def test_a_failed_pycolmap_check_falls_back_with_its_reason(self):
        result = reconstruct_window(self.prediction, ReconstructionOptions(tracker="pycolmap_check"))
        self.assertEqual(result.report.ba, "failed")
        self.assertIn("Check failed", result.report.ba_reason)
        self.assertEqual(result.report.verdict, "poor")

    def test_a_programming_error_surfaces(self):
        with self.assertRaises(AttributeError):
            reconstruct_window(self.prediction, ReconstructionOptions(tracker="broken"))


@unittest.skipUnless(SHARED_DATA.is_dir(), f"real-frame checks need {SHARED_DATA} (the shared data beside the repository)")
class RealFramesTest(TrustworthyTest):
    """One window of each shared sequence with ground truth, and one with twice the steps between frames."""

    def check(self, sequence: str, window: int, frame_step: int = 1):
        case = gt_windows(SHARED_DATA / sequence, frame_step=frame_step)[window]
        result = reconstruct_window(case.prediction, ReconstructionOptions(window_id=case.name))
        self.assert_good_and_right(result, case.prediction.names, case.gt_cam_from_world)
        self.assertGreater(result.report.metrics.points, 300)
        return result

    def test_tum_office(self):
        self.check("tum_fr3_office_1hz", 1)

    def test_middlebury_temple(self):
        self.check("middlebury_templering", 2)

    def test_strecha_fountain(self):
        self.check("strecha_fountain_p11", 0)

    def test_wide_baseline_stills(self):
        # The temple ring at every second view: 15 degrees between frames, 108 across the window.
        self.check("middlebury_templering", 0, frame_step=2)


if __name__ == "__main__":
    unittest.main()
