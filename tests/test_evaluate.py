"""Evaluation against ground truth: the metric functions on values computed by hand, then
``python -m vae_pipeline.evaluate`` as a real process on window folders built from exact ground-truth cameras
(testdata/scene_arc and, where present, the shared real sequences) with known errors injected."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path, PurePosixPath

import numpy as np
import pycolmap

from vae_pipeline.evaluation import (
    CameraPoses,
    auc,
    centre_errors,
    focal_errors,
    read_evaluation,
    read_ground_truth,
    relative_pose_errors,
    similarity_alignment,
    window_extent,
)
from vae_pipeline.evaluation.metrics import absolute_trajectory_error, camera_centres
from vae_pipeline.evaluation.scoring import WindowErrors, summarize
from vae_pipeline.export.window_folder import write_window_folder
from vae_pipeline.reconstruct.colmap_model import CameraSet, Observations, build_reconstruction

REPO = Path(__file__).resolve().parents[1]
SCENE = REPO / "testdata" / "scene_arc"
SHARED_DATA = REPO.parent / "shared" / "data"
SHARED_SEQUENCES = ("tum_fr3_office_1hz", "middlebury_templering", "strecha_fountain_p11")


def rotation(axis: tuple[float, float, float], degrees: float) -> np.ndarray:
    """Rodrigues: rotation by ``degrees`` about ``axis``."""
    k = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    skew = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    angle = np.radians(degrees)
    return np.eye(3) + np.sin(angle) * skew + (1 - np.cos(angle)) * skew @ skew


def pose(rotation_: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """4x4 camera-from-world of a camera with world-to-camera rotation ``rotation_`` at ``centre``."""
    matrix = np.eye(4)
    matrix[:3, :3] = rotation_
    matrix[:3, 3] = -rotation_ @ np.asarray(centre, dtype=np.float64)
    return matrix


def move_world(cam_from_world: np.ndarray, scale: float, rotation_: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """The same cameras [N, 4, 4] in a world mapped by x' = scale R x + shift (camera units scale along)."""
    moved = np.tile(np.eye(4), (len(cam_from_world), 1, 1))
    moved[:, :3, :3] = cam_from_world[:, :3, :3] @ rotation_.T
    moved[:, :3, 3] = scale * cam_from_world[:, :3, 3] - moved[:, :3, :3] @ shift
    return moved


SIMILARITY = (0.37, rotation((1.0, -2.0, 0.5), 71.0), np.array([3.0, -1.5, 10.0]))


def write_window(
    output_dir: Path,
    sequence: str,
    index: int,
    cameras: CameraPoses,
    image_dir: Path,
    listed: tuple[str, ...] | None = None,
) -> Path:
    """A window folder as the pipeline writes one (its own model builder and folder writer), with the given
    cameras and no points; ``listed`` are the frames window.json names (default: the cameras')."""
    names = list(cameras.names)
    calibration = cameras.calibration
    params = np.stack([calibration[:, 0, 0], calibration[:, 1, 1], calibration[:, 0, 2], calibration[:, 1, 2]], 1)
    camera_set = CameraSet("PINHOLE", params, cameras.sizes, np.arange(len(names)))
    empty = Observations(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 2)))
    reconstruction = build_reconstruction(
        names, camera_set, cameras.cam_from_world[:, :3, :], np.zeros((0, 3)), np.zeros((0, 3), np.uint8), empty
    )
    listed = tuple(names) if listed is None else listed
    window_id = (PurePosixPath(sequence) / f"window_{index:03d}").as_posix()
    width, height = (int(v) for v in cameras.sizes[0])
    frames = [{"name": name, "source": str(image_dir / name), "width": width, "height": height} for name in listed]
    record = {"window_id": window_id, "sequence": sequence, "status": "ok", "frames": frames}
    folder = output_dir / sequence / f"batch_{index // 4:03d}" / f"window_{index:03d}"
    write_window_folder(folder, reconstruction, [(name, image_dir / name) for name in listed], record)
    return folder


def with_poses(cameras: CameraPoses, cam_from_world: np.ndarray, calibration: np.ndarray | None = None) -> CameraPoses:
    return CameraPoses(cameras.names, cam_from_world,
                       cameras.calibration if calibration is None else calibration, cameras.sizes)


def run_evaluate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vae_pipeline.evaluate", *args],
        check=False, capture_output=True, text=True, cwd=REPO, timeout=120,
    )


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The table's rows (the lines after the header, up to the first blank line) by their first cell: the window
    id, or 'overall'."""
    lines = stdout.split("\n\n", 1)[0].splitlines()
    rows = {}
    for line in lines[1:]:
        if line.startswith("overall ("):
            rows["overall"] = line.split(")", 1)[1].split()
        else:
            rows[line.split()[0]] = line.split()[1:]
    return rows


class MetricsByHandTest(unittest.TestCase):
    """Three cameras looking down +z (R = I) at (0,0,0), (1,0,0), (0,1,0): pairs (0,1), (0,2), (1,2)."""

    centres = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])

    def gt(self) -> np.ndarray:
        return np.stack([pose(np.eye(3), centre) for centre in self.centres])

    def test_identical_poses_have_no_error(self) -> None:
        rra, rta = relative_pose_errors(self.gt(), self.gt())
        np.testing.assert_allclose(rra, 0, atol=1e-12)
        np.testing.assert_allclose(rta, 0, atol=1e-12)
        self.assertEqual(auc(np.maximum(rra, rta), 30), 1.0)
        self.assertEqual(auc(np.maximum(rra, rta), 5), 1.0)

    def test_the_world_frame_does_not_matter(self) -> None:
        rra, rta = relative_pose_errors(move_world(self.gt(), *SIMILARITY), self.gt())
        np.testing.assert_allclose(rra, 0, atol=1e-9)
        np.testing.assert_allclose(rta, 0, atol=1e-9)

    def test_rotation_error_on_one_frame(self) -> None:
        pred = self.gt()
        pred[1] = pose(rotation((1, 0, 0), 3.0), self.centres[1])  # turned 3 degrees about x, same centre
        rra, rta = relative_pose_errors(pred, self.gt())
        np.testing.assert_allclose(rra, [3.0, 0.0, 3.0], atol=1e-12)
        # Pair (1, 2): T_1 T_2^-1 translates by R_1 (c_2 - c_1) = Rx(3) (-1, 1, 0) = (-1, cos 3, sin 3), against
        # (-1, 1, 0): cos(angle) = (1 + cos 3) / 2. Pairs (0, j): R_0 (c_j - c_0) is unchanged.
        expected = np.degrees(np.arccos((1 + np.cos(np.radians(3.0))) / 2))
        np.testing.assert_allclose(rta, [0.0, 0.0, expected], atol=1e-9)
        self.assertAlmostEqual(expected, 2.1213, places=3)

    def test_translation_direction_error(self) -> None:
        h = np.tan(np.radians(10.0))
        pred = self.gt()
        pred[2] = pose(np.eye(3), [0, 1, h])  # camera 2 lifted: seen from camera 0 its direction turns 10 degrees
        rra, rta = relative_pose_errors(pred, self.gt())
        np.testing.assert_allclose(rra, 0, atol=1e-12)
        # Pair (1, 2): (-1, 1, h) against (-1, 1, 0): |cross| = h sqrt(2), dot = 2.
        np.testing.assert_allclose(rta, [0.0, 10.0, np.degrees(np.arctan(h / np.sqrt(2)))], atol=1e-9)

    def test_translation_direction_is_known_up_to_sign(self) -> None:
        pred = self.gt()
        pred[1] = pose(np.eye(3), [-1, 0, 0])  # the direction 0 -> 1 reversed: no error
        _, rta = relative_pose_errors(pred, self.gt())
        # Pair (1, 2): (1, 1, 0) against (-1, 1, 0): perpendicular, the worst case.
        np.testing.assert_allclose(rta, [0.0, 0.0, 90.0], atol=1e-9)

    def test_auc_of_a_hand_made_error_list(self) -> None:
        # Bins of 1 degree: 0.5 -> bin 0, 2.5 -> bin 2, 10 -> bin 10, 40 -> none. An error in bin k counts for
        # (T - k) of the T thresholds: AUC@30 = (30 + 28 + 20 + 0) / 30 / 4, AUC@5 = (5 + 3 + 0 + 0) / 5 / 4.
        errors = np.array([0.5, 2.5, 10.0, 40.0])
        self.assertAlmostEqual(auc(errors, 30), 0.65, places=12)
        self.assertAlmostEqual(auc(errors, 5), 0.4, places=12)
        with self.assertRaises(ValueError):
            auc(np.array([]), 30)

    def test_similarity_alignment_recovers_a_known_transform(self) -> None:
        scale, rotation_, shift = SIMILARITY
        source = np.random.default_rng(0).normal(size=(10, 3))
        target = scale * source @ rotation_.T + shift
        found_scale, found_rotation, found_shift = similarity_alignment(source, target)
        self.assertAlmostEqual(found_scale, scale, places=12)
        np.testing.assert_allclose(found_rotation, rotation_, atol=1e-12)
        np.testing.assert_allclose(found_shift, shift, atol=1e-12)

    def test_similarity_alignment_of_collinear_and_two_points(self) -> None:
        scale, rotation_, shift = SIMILARITY
        for source in (np.outer(np.arange(6.0), [0.3, 1.0, -0.2]), np.array([[0.0, 0, 0], [1, 2, 3]])):
            target = scale * source @ rotation_.T + shift
            found_scale, found_rotation, found_shift = similarity_alignment(source, target)
            self.assertAlmostEqual(found_scale, scale, places=12)
            np.testing.assert_allclose(found_scale * source @ found_rotation.T + found_shift, target, atol=1e-12)
            self.assertAlmostEqual(np.linalg.det(found_rotation), 1.0, places=12)

    def test_centre_errors_of_a_known_displacement(self) -> None:
        # GT centres (+-1, 0, 0), (0, +-1, 0): extent 2. Lifting them by +h, +h, -h, -h leaves the best rotation
        # the identity and the best scale 1 / (1 + h^2); every aligned centre is then h / sqrt(1 + h^2) away.
        h = 0.1
        gt = np.array([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]])
        lifted = gt + np.outer([1, 1, -1, -1], [0, 0, h])
        pred = SIMILARITY[0] * lifted @ SIMILARITY[1].T + SIMILARITY[2]  # any similarity: the same errors
        expected = h / np.sqrt(1 + h * h) / 2
        errors = centre_errors(pred, gt)
        np.testing.assert_allclose(errors, expected, rtol=1e-12)
        self.assertAlmostEqual(absolute_trajectory_error(errors), expected, places=12)
        np.testing.assert_allclose(centre_errors(SIMILARITY[0] * gt @ SIMILARITY[1].T, gt), 0, atol=1e-12)
        self.assertTrue(np.isnan(centre_errors(pred, np.zeros((4, 3)))).all())  # no extent: undefined

    def test_extent_focal_error_and_centres(self) -> None:
        self.assertEqual(window_extent(np.array([[0.0, 0, 0], [3, 4, 0], [1, 1, 1]])), 5.0)
        np.testing.assert_allclose(focal_errors(np.array([110.0, 90.0]), np.array([100.0, 100.0])), [0.1, 0.1])
        np.testing.assert_allclose(camera_centres(self.gt()), self.centres, atol=1e-15)

    def test_pooled_figures(self) -> None:
        # Windows of 3 and 2 pairs: the pooled AUC counts pairs, not windows (0.8 against a mean of 0.833).
        small = WindowErrors(np.array([0.0, 0.0, 40.0]), np.zeros(3), np.array([0.1, 0.3]), np.array([0.1, 0.1]))
        large = WindowErrors(np.array([0.0, 0.0]), np.zeros(2), np.array([0.2, 0.2]), None)
        figures = summarize([small, large])
        self.assertEqual((figures.pairs, figures.frames_matched), (5, 4))
        self.assertAlmostEqual(figures.auc30, 0.8, places=12)
        self.assertAlmostEqual(figures.ate, (np.sqrt(0.05) + 0.2) / 2, places=12)  # mean of the windows' ATE
        self.assertAlmostEqual(figures.max_centre_error, 0.3, places=12)
        self.assertAlmostEqual(figures.focal_error, 0.1, places=12)
        self.assertEqual(figures.max_rra_deg, 40.0)


class EvaluateCommandTest(unittest.TestCase):
    """The command on window folders built from testdata/scene_arc's exact cameras (frames 0-7 and 4-11)."""

    def setUp(self) -> None:
        self.tmp = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.tmp)
        self.gt = read_ground_truth(SCENE / "gt")
        self.windows = [self.gt.names[0:8], self.gt.names[4:12]]

    def evaluate(self, output: Path, gt_dir: Path) -> tuple[dict, dict[str, list[str]], str]:
        result = run_evaluate("--output-dir", str(output), "--gt-dir", str(gt_dir), "--json", str(output / "e.json"))
        self.assertEqual(result.returncode, 0, result.stderr)
        return json.loads((output / "e.json").read_text()), table_rows(result.stdout), result.stdout

    def test_exact_cameras_in_another_world_frame_have_no_error(self) -> None:
        output = self.tmp / "out"
        for index, names in enumerate(self.windows):
            gt = self.gt.select(names)
            write_window(output, "scene_arc/images", index, with_poses(gt, move_world(gt.cam_from_world, *SIMILARITY)),
                         SCENE / "images")
        # GT/<parent of F>/gt: the frames were in scene_arc/images, the ground truth is in scene_arc/gt.
        report, rows, _ = self.evaluate(output, REPO / "testdata")

        self.assertEqual([w["window_id"] for w in report["windows"]],
                         ["scene_arc/images/window_000", "scene_arc/images/window_001"])
        self.assertEqual(report["unmatched_windows"], [])
        for figures in [*report["windows"], report["overall"]]:
            for key in ("rra_mean_deg", "rra_median_deg", "rta_mean_deg", "rta_median_deg", "max_rra_deg"):
                self.assertLess(figures[key], 1e-6, key)
            self.assertEqual((figures["auc30"], figures["auc5"]), (1.0, 1.0))
            self.assertLess(figures["ate"], 1e-9)
            self.assertLess(figures["max_centre_error"], 1e-9)
            self.assertLess(figures["focal_error"], 1e-12)
        self.assertEqual((report["windows"][0]["frames_matched"], report["windows"][0]["pairs"]), (8, 28))
        self.assertEqual((report["overall"]["windows"], report["overall"]["pairs"]), (2, 56))
        self.assertEqual(report["windows"][0]["ground_truth"], str(REPO / "testdata" / "scene_arc" / "gt"))
        self.assertEqual(set(rows), {"scene_arc/images/window_000", "scene_arc/images/window_001", "overall"})
        self.assertEqual(rows["overall"][:2], ["16", "56"])
        self.assertEqual(rows["scene_arc/images/window_001"][6:8], ["1.000", "1.000"])

    def test_known_errors(self) -> None:
        output = self.tmp / "out"
        # Window 0: its last frame turned 3.6 degrees about its own x axis (same centre) and every focal length
        # 10 % long. The 7 pairs (i, 7) get RRA 3.6 and, since T_i T_7^-1 translates by R_i (c_7 - c_i), RTA 0;
        # the other 21 pairs no error.
        gt0 = self.gt.select(self.windows[0])
        poses0 = gt0.cam_from_world.copy()
        poses0[7] = pose(rotation((1, 0, 0), 3.6) @ poses0[7, :3, :3], gt0.centres[7])
        calibration0 = gt0.calibration * np.array([[1.1], [1.1], [1.0]])
        write_window(output, ".", 0, with_poses(gt0, move_world(poses0, *SIMILARITY), calibration0), SCENE / "images")
        # Window 1: centres moved by d_i = delta a_i u with sum(a_i) = 0 and sum(a_i (c_i - mean)) = 0, so the best
        # alignment keeps the rotation, shrinks the scale to v / (v + delta^2) (v: mean squared distance of the
        # centres to their mean) and leaves an RMSE of sqrt(v delta^2 / (v + delta^2)). Rotations untouched.
        gt1 = self.gt.select(self.windows[1])
        centres = gt1.centres - gt1.centres.mean(axis=0)
        a = np.linalg.svd(np.vstack([np.ones(8), centres.T]))[2][-1] * np.sqrt(8)
        delta, v = 0.05, np.mean(np.sum(centres**2, axis=1))
        moved = gt1.centres + np.outer(a, delta * np.array([0.6, 0.0, 0.8]))
        poses1 = np.stack([pose(p[:3, :3], c) for p, c in zip(gt1.cam_from_world, moved)])
        write_window(output, ".", 1, with_poses(gt1, move_world(poses1, *SIMILARITY)), SCENE / "images")
        expected_ate = np.sqrt(v * delta**2 / (v + delta**2)) / window_extent(gt1.centres)

        # GT/F/gt with F = ".": GT/gt.
        report, rows, _ = self.evaluate(output, SCENE)
        first, second = report["windows"]
        overall = report["overall"]
        self.assertAlmostEqual(first["rra_mean_deg"], 3.6 * 7 / 28, places=6)
        self.assertAlmostEqual(first["rra_median_deg"], 0.0, places=6)
        self.assertAlmostEqual(first["max_rra_deg"], 3.6, places=6)
        self.assertLess(first["max_rta_deg"], 1e-6)
        self.assertAlmostEqual(first["auc30"], (21 + 7 * 27 / 30) / 28, places=12)  # 3.6 is in bin 3
        self.assertAlmostEqual(first["auc5"], (21 + 7 * 2 / 5) / 28, places=12)
        self.assertLess(first["ate"], 1e-9)
        self.assertAlmostEqual(first["focal_error"], 0.1, places=9)

        self.assertLess(second["max_rra_deg"], 1e-6)
        self.assertGreater(second["rta_mean_deg"], 0.01)
        self.assertAlmostEqual(second["ate"], expected_ate, places=9)
        self.assertGreater(second["max_centre_error"], second["ate"])
        self.assertLess(second["focal_error"], 1e-12)

        self.assertAlmostEqual(overall["rra_mean_deg"], 3.6 * 7 / 56, places=6)
        self.assertAlmostEqual(overall["ate"], expected_ate / 2, places=9)
        self.assertAlmostEqual(overall["focal_error"], 0.05, places=9)
        self.assertEqual((overall["frames_matched"], overall["pairs"]), (16, 56))
        self.assertEqual(rows["window_000"], ["8", "28", "0.90", "0.00", "0.00", "0.00", "0.975", "0.850", "0.0000",
                                              "0.1000"])
        self.assertEqual(rows["window_001"][8], f"{expected_ate:.4f}")
        self.assertEqual(rows["overall"][2], "0.45")

    def test_unmatched_frames_and_windows_are_reported(self) -> None:
        gt_dir = self.tmp / "gt_root"
        (gt_dir / "scene" / "gt").mkdir(parents=True)
        poses = (SCENE / "gt" / "poses.txt").read_text().splitlines(keepends=True)
        (gt_dir / "scene" / "gt" / "poses.txt").write_text("".join(l for l in poses if not l.startswith("0005.png")))
        shutil.copy(SCENE / "gt" / "intrinsics.txt", gt_dir / "scene" / "gt" / "intrinsics.txt")

        output = self.tmp / "out"
        names = self.windows[0]
        registered = tuple(name for name in names if name != "0006.png")  # listed in window.json, not registered
        write_window(output, "scene/images", 0, self.gt.select(registered), SCENE / "images", listed=names)
        write_window(output, "other/images", 0, self.gt.select(names), SCENE / "images")  # no GT for this one
        strangers = CameraPoses(("x.png", "y.png", "0000.png"), self.gt.cam_from_world[:3], self.gt.calibration[:3],
                                self.gt.sizes[:3])
        write_window(output, "scene/images", 1, strangers, SCENE / "images")  # 1 frame in common
        broken = output / "scene" / "images" / "batch_000" / "window_002"
        broken.mkdir(parents=True)
        (broken / "window.json").write_text("{not json")
        for skipped in (".state", "report", "scene/images/batch_000/.window_003.partial-host-1"):
            shutil.copytree(output / "other" / "images" / "batch_000" / "window_000", output / skipped / "w")

        report, rows, stdout = self.evaluate(output, gt_dir)
        (window,) = report["windows"]
        self.assertEqual(window["window_id"], "scene/images/window_000")
        self.assertEqual(window["frames_without_gt"], ["0005.png"])
        self.assertEqual(window["frames_not_in_model"], ["0006.png"])
        self.assertEqual((window["frames_matched"], window["pairs"]), (6, 15))
        self.assertLess(window["rra_mean_deg"], 1e-6)

        unmatched = {w["folder"]: w for w in report["unmatched_windows"]}
        self.assertEqual(set(unmatched), {"other/images/batch_000/window_000", "scene/images/batch_000/window_001",
                                          "scene/images/batch_000/window_002"})
        self.assertIn("no ground truth for sequence 'other/images'", unmatched["other/images/batch_000/window_000"]
                      ["reason"])
        self.assertIn(str(gt_dir / "other" / "gt"), unmatched["other/images/batch_000/window_000"]["reason"])
        self.assertIn("1 of its 3 registered frames has a ground-truth pose",
                      unmatched["scene/images/batch_000/window_001"]["reason"])
        self.assertIn("window.json", unmatched["scene/images/batch_000/window_002"]["reason"])
        self.assertIsNone(unmatched["scene/images/batch_000/window_002"]["window_id"])

        self.assertEqual(rows["scene/images/window_000"][:2], ["6", "15"])
        self.assertIn("frames without ground truth:\n  scene/images/window_000: 0005.png", stdout)
        self.assertIn("frames not registered in the model:\n  scene/images/window_000: 0006.png", stdout)
        self.assertIn("windows not evaluated (3):", stdout)
        self.assertIn("  other/images/window_000: no ground truth", stdout)
        # The typed form the report reads back holds the same.
        self.assertEqual(read_evaluation(output / "e.json").to_dict(), report)

    def test_colmap_model_ground_truth(self) -> None:
        gt_model = self.tmp / "gt_root" / "gt" / "sparse"
        gt_model.mkdir(parents=True)
        write_window(self.tmp / "gt_build", ".", 0, self.gt, SCENE / "images")
        for path in (self.tmp / "gt_build" / "batch_000" / "window_000" / "sparse").glob("*.bin"):
            shutil.copy(path, gt_model)
        pycolmap.Reconstruction(str(gt_model)).write_text(str(gt_model))  # text beside binary: either is read
        output = self.tmp / "out"
        gt = self.gt.select(self.windows[1])
        write_window(output, ".", 1, with_poses(gt, move_world(gt.cam_from_world, *SIMILARITY)), SCENE / "images")

        report, _, _ = self.evaluate(output, self.tmp / "gt_root")
        (window,) = report["windows"]
        self.assertEqual(window["ground_truth"], str(self.tmp / "gt_root" / "gt"))
        self.assertEqual(window["frames_matched"], 8)
        self.assertLess(window["max_rra_deg"], 1e-6)
        self.assertLess(window["ate"], 1e-9)
        self.assertLess(window["focal_error"], 1e-12)

    def test_bad_input_is_one_line_and_exit_code_2(self) -> None:
        output = self.tmp / "out"
        write_window(output, ".", 0, self.gt.select(self.windows[0]), SCENE / "images")
        empty = self.tmp / "empty"
        empty.mkdir()
        bad_gt = self.tmp / "bad_gt"
        (bad_gt / "gt").mkdir(parents=True)
        (bad_gt / "gt" / "poses.txt").write_text("# header\n0000.png 1 0 0 0 0 0 zero\n")
        cases = [
            ((self.tmp / "nowhere", SCENE), "nowhere: no such folder"),
            ((output, self.tmp / "no_gt"), "no_gt: no such folder"),
            ((empty, SCENE), "no window folders"),
            ((output, bad_gt), f"{bad_gt / 'gt' / 'poses.txt'}, line 2: expected numbers"),
        ]
        for (output_dir, gt_dir), message in cases:
            with self.subTest(message=message):
                result = run_evaluate("--output-dir", str(output_dir), "--gt-dir", str(gt_dir))
                self.assertEqual(result.returncode, 2)
                self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
                self.assertIn(message, result.stderr)
                self.assertNotIn("Traceback", result.stderr)
                self.assertEqual(result.stdout, "")

    def test_does_not_import_torch(self) -> None:
        code = "import sys, vae_pipeline.evaluate; sys.exit('torch' in sys.modules)"
        self.assertEqual(subprocess.run([sys.executable, "-c", code], check=False, cwd=REPO).returncode, 0)


class PipelineWindowTest(unittest.TestCase):
    """A window written by the pipeline's own stage 3 (feed-forward, the CPU worker's ``finish_window``) from
    scene_arc's exact cameras, its last frame turned 3.6 degrees and its focal lengths 5 % long."""

    def test_window_from_finish_window(self) -> None:
        from vae_pipeline.finish import FinishSettings, finish_window
        from vae_pipeline.frames import decode_image, discover_sequences
        from vae_pipeline.jobs import WindowJob
        from vae_pipeline.reconstruct import ReconstructionOptions, WindowPrediction

        output = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, output)
        sequence = discover_sequences(SCENE / "images")[0]
        frames = tuple(range(4, 12))
        gt = read_ground_truth(SCENE / "gt").select([sequence.frames[i].name for i in frames])
        extrinsic = gt.cam_from_world[:, :3, :].copy()
        extrinsic[7, :, :3] = rotation((0, 1, 0), 3.6) @ extrinsic[7, :, :3]
        extrinsic[7, :, 3] = rotation((0, 1, 0), 3.6) @ extrinsic[7, :, 3]  # the same centre
        intrinsic = gt.calibration * np.array([[1.05], [1.05], [1.0]])
        intrinsic[:, :2, 2] -= 0.5  # the model predicts in OpenCV pixel centres
        depth = np.load(SCENE / "gt" / "depth.npz")["depth"].astype(np.float32)[list(frames)]
        prediction = WindowPrediction(
            names=list(gt.names),
            images=np.stack([decode_image(sequence.frames[i].path) for i in frames]),
            extrinsic=extrinsic,
            intrinsic=intrinsic,
            original_sizes=gt.sizes.astype(np.int64),
            depth=depth,
            depth_conf=np.full(depth.shape, 10.0, np.float32),
        )
        job = WindowJob(sequence, window_index=1, batch_index=0, frame_indices=frames)
        settings = FinishSettings(output, ReconstructionOptions(use_ba=False), {"model_source": "gt"})
        self.assertEqual(finish_window(job, prediction, settings).status, "ok")

        result = run_evaluate("--output-dir", str(output), "--gt-dir", str(SCENE), "--json", str(output / "e.json"))
        self.assertEqual(result.returncode, 0, result.stderr)
        (window,) = json.loads((output / "e.json").read_text())["windows"]
        self.assertEqual((window["window_id"], window["folder"]), ("window_001", "batch_000/window_001"))
        self.assertAlmostEqual(window["rra_mean_deg"], 3.6 * 7 / 28, places=6)
        self.assertLess(window["max_rta_deg"], 1e-6)
        self.assertLess(window["ate"], 1e-9)
        self.assertAlmostEqual(window["focal_error"], 0.05, places=9)


@unittest.skipUnless(SHARED_DATA.is_dir(), f"shared data not found at {SHARED_DATA}")
class SharedSequencesTest(unittest.TestCase):
    """Windows built from the ground truth of the real sequences, evaluated against it: no error."""

    def test_ground_truth_windows_have_no_error(self) -> None:
        tmp = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, tmp)
        for name in SHARED_SEQUENCES:
            gt = read_ground_truth(SHARED_DATA / name / "gt")
            frames = sorted(path.name for path in (SHARED_DATA / name / "images").iterdir())
            window = gt.select([frame for frame in frames if frame in gt.names][:8])
            moved = with_poses(window, move_world(window.cam_from_world, *SIMILARITY))
            write_window(tmp, f"{name}/images", 0, moved, SHARED_DATA / name / "images")

        result = run_evaluate("--output-dir", str(tmp), "--gt-dir", str(SHARED_DATA), "--json", str(tmp / "e.json"))
        self.assertEqual(result.returncode, 0, result.stderr)
        report = json.loads((tmp / "e.json").read_text())
        self.assertEqual([w["sequence"] for w in report["windows"]], sorted(f"{n}/images" for n in SHARED_SEQUENCES))
        for window in report["windows"]:
            self.assertEqual(window["frames_matched"], 8)
            self.assertLess(window["max_rra_deg"], 1e-6)
            self.assertLess(window["max_rta_deg"], 1e-6)
            self.assertEqual((window["auc30"], window["auc5"]), (1.0, 1.0))
            self.assertLess(window["max_centre_error"], 1e-9)
            self.assertLess(window["focal_error"], 1e-12)
        expected_rows = {f"{name}/images/window_000" for name in SHARED_SEQUENCES} | {"overall"}
        self.assertEqual(set(table_rows(result.stdout)), expected_rows)


if __name__ == "__main__":
    unittest.main()
