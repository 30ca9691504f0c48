"""A window folder opened by the programs README names, installed from the package registries: COLMAP (the
system's packages) and plyfile (PyPI). Each test skips with its reason where its program is absent.

The window is made from ``testdata/scene_arc`` as a run makes it, without weights: the ground-truth cameras
disturbed by about VGGT's own errors (``benchmarks/gt_windows.py``), then the finish stage (SIFT tracks, bundle
adjustment, export).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

import numpy as np
import pycolmap

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from benchmarks.gt_windows import gt_windows  # noqa: E402
from test_readme import readme_blocks  # noqa: E402
from tiny_model import write_checkpoint  # noqa: E402
from vae_pipeline.cli import main as pipeline_main  # noqa: E402
from vae_pipeline.reconstruct import ReconstructionOptions  # noqa: E402

try:
    import plyfile
except ImportError:  # the [test] extra is not installed
    plyfile = None

COLMAP = shutil.which("colmap")
NO_COLMAP = "COLMAP is not installed (apt-get install colmap)"
GUI_ALIVE_S = 5.0


def colmap(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([COLMAP, *args], capture_output=True, text=True, timeout=120)


def read_text_images(path: Path) -> dict[str, np.ndarray]:
    """cam_from_world [3, 4] by image name from a COLMAP ``images.txt``, read as its format documents it: per
    image a line ``IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME`` and a line of 2D points."""
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    poses = {}
    for header in lines[0::2]:
        fields = header.split()
        qw, qx, qy, qz, tx, ty, tz = (float(v) for v in fields[1:8])
        rotation = pycolmap.Rotation3d(np.array([qx, qy, qz, qw])).matrix()
        poses[fields[9]] = np.concatenate([rotation, [[tx], [ty], [tz]]], axis=1)
    return poses


def read_text_cameras(path: Path) -> dict[int, tuple[str, int, int, np.ndarray]]:
    """(model, width, height, params) by camera id from a COLMAP ``cameras.txt``."""
    cameras = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            camera_id, model, width, height, *params = line.split()
            cameras[int(camera_id)] = (model, int(width), int(height), np.array(params, dtype=float))
    return cameras


class WindowFolderClientsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = Path(tempfile.mkdtemp(prefix="clients_"))
        window = gt_windows(REPO / "testdata" / "scene_arc")[0]
        outcome = window.finish(cls.tmp, ReconstructionOptions())
        assert outcome.status == "ok" and outcome.verdict == "good", outcome
        cls.window = cls.tmp / outcome.folder
        cls.model = pycolmap.Reconstruction(str(cls.window / "sparse"))

    @classmethod
    def tearDownClass(cls) -> None:
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @unittest.skipIf(COLMAP is None, NO_COLMAP)
    def test_colmap_model_analyzer_counts_what_pycolmap_reads(self) -> None:
        result = colmap("model_analyzer", "--path", str(self.window / "sparse"))
        self.assertEqual(result.returncode, 0, result.stderr)
        printed = result.stdout + result.stderr
        # COLMAP 3.8 prints "Points: 1562"; later releases log the same lines behind a glog prefix ("I... ] ").
        lines = re.findall(r"^(?:.*\] )?(\w[\w ]*): (\d+)\s*$", printed, re.M)
        counts = {name: int(value) for name, value in lines}
        self.assertEqual(counts, {
            "Cameras": self.model.num_cameras(),
            "Images": self.model.num_images(),
            "Registered images": self.model.num_reg_images(),
            "Points": self.model.num_points3D(),
            "Observations": self.model.compute_num_observations(),
        }, printed)
        self.assertGreater(counts["Points"], 100)

    @unittest.skipIf(COLMAP is None, NO_COLMAP)
    def test_colmap_text_conversion_keeps_names_poses_and_cameras(self) -> None:
        text = self.tmp / "text_model"
        text.mkdir()
        result = colmap("model_converter", "--input_path", str(self.window / "sparse"), "--output_path", str(text),
                        "--output_type", "TXT")
        self.assertEqual(result.returncode, 0, result.stderr)
        poses = read_text_images(text / "images.txt")
        expected = {image.name: image.cam_from_world().matrix() for image in self.model.images.values()}
        self.assertEqual(sorted(poses), sorted(expected))
        for name, pose in expected.items():
            np.testing.assert_allclose(poses[name], pose, atol=1e-9, err_msg=name)
        cameras = read_text_cameras(text / "cameras.txt")
        self.assertEqual(sorted(cameras), sorted(self.model.cameras))
        for camera_id, camera in self.model.cameras.items():
            model, width, height, params = cameras[camera_id]
            self.assertEqual((model, width, height), (camera.model.name, camera.width, camera.height))
            np.testing.assert_allclose(params, camera.params, rtol=1e-12)

    @unittest.skipIf(COLMAP is None, NO_COLMAP)
    def test_readme_colmap_gui_command_starts(self) -> None:
        """README's command, with W the window folder, keeps COLMAP's GUI running (headless) until stopped."""
        blocks = readme_blocks((REPO / "README.md").read_text())
        (command,) = [c for block in blocks for c in block.commands if c.startswith("colmap gui ")]
        args = [str(self.window) if w == "W" else str(self.window) + w[1:] if w.startswith("W/") else w
                for w in command.split()]
        env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
        process = subprocess.Popen([COLMAP, *args[1:]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + GUI_ALIVE_S
            while process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            exited = process.poll() is not None
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate(timeout=30)
        if exited:
            self.assertNotIn("Failed to parse options", output, command)
            self.skipTest(f"COLMAP's GUI cannot start headless here (exit {process.returncode}): "
                          f"{output.strip().splitlines()[-1] if output.strip() else 'no output'}")

    @unittest.skipIf(plyfile is None, "plyfile is not installed (pip install -e '.[test]')")
    def test_plyfile_reads_the_models_points(self) -> None:
        vertices = plyfile.PlyData.read(str(self.window / "sparse" / "points.ply"))["vertex"]
        xyz = np.stack([vertices[axis] for axis in "xyz"], axis=1)
        rgb = np.stack([vertices[channel] for channel in ("red", "green", "blue")], axis=1)
        points = [self.model.points3D[point_id] for point_id in sorted(self.model.points3D)]
        self.assertEqual(len(xyz), len(points))
        order = np.lexsort(xyz.T)
        expected_xyz = np.array([p.xyz for p in points])
        expected_order = np.lexsort(expected_xyz.T)
        np.testing.assert_allclose(xyz[order], expected_xyz[expected_order], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(rgb[order], np.array([p.color for p in points])[expected_order])


class ColmapTextNamesTest(unittest.TestCase):
    """``--colmap-text`` with frame names COLMAP's text format cannot hold: its readers split ``images.txt``
    lines at whitespace, so ``frame 01.png`` reads back as ``frame``. The run must either keep the names or refuse
    the flag, saying why (exit code 2)."""

    def test_names_with_spaces_survive_the_text_model_or_the_run_refuses(self) -> None:
        with tempfile.TemporaryDirectory(prefix="text_names_") as tmp:
            frames = Path(tmp) / "frames"
            frames.mkdir()
            for path in sorted((REPO / "testdata" / "scene_arc" / "images").iterdir())[:4]:
                shutil.copyfile(path, frames / f"frame {path.name}")
            out = Path(tmp) / "out"
            stderr = io.StringIO()
            with contextlib.redirect_stderr(stderr):
                code = pipeline_main([
                    "--input-dir", str(frames), "--output-dir", str(out),
                    "--checkpoint", str(write_checkpoint(Path(tmp) / "checkpoint")), "--colmap-text",
                    "--no-use-ba", "--keep", "all", "--num-workers", "0", "--window-size", "4", "-q",
                ])
            if code == 2:
                self.assertIn("--colmap-text", stderr.getvalue())
                return
            self.assertEqual(code, 0, stderr.getvalue())
            sparse = out / "batch_000" / "window_000" / "sparse"
            binary_names = sorted(image.name for image in pycolmap.Reconstruction(str(sparse)).images.values())
            self.assertEqual(binary_names, sorted(path.name for path in frames.iterdir()))
            text_only = Path(tmp) / "text_only"
            text_only.mkdir()
            for text_file in sparse.glob("*.txt"):
                shutil.copyfile(text_file, text_only / text_file.name)
            text_names = sorted(image.name for image in pycolmap.Reconstruction(str(text_only)).images.values())
            self.assertEqual(text_names, binary_names)


if __name__ == "__main__":
    unittest.main()
