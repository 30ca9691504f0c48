"""Native libraries stay quiet unless asked: a bundle adjustment that pycolmap and Ceres cannot solve logs nothing
to the terminal after ``quiet_native_libraries()``, and logs its failure with ``verbose=True`` (``-v``)."""

from __future__ import annotations

import os
import subprocess
import sys
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Two frames observing one point whose position is not a number: the solver refuses the problem, and pycolmap
# logs why (an ERROR line, after an INFO report). The adjuster is built as reconstruct/bundle_adjust.py builds it.
UNSOLVABLE_WINDOW = """
import sys
import numpy as np
import pycolmap
from vae_pipeline.native import quiet_native_libraries

quiet_native_libraries(verbose=sys.argv[1] == "verbose")
reconstruction = pycolmap.Reconstruction()
reconstruction.add_camera_with_trivial_rig(pycolmap.Camera.create_from_model_name(1, "SIMPLE_PINHOLE", 100.0, 100, 100))
for image_id in (1, 2):
    image = pycolmap.Image(name=f"{image_id}.png", keypoints=np.full((1, 2), 50.0), camera_id=1, image_id=image_id)
    pose = pycolmap.Rigid3d(pycolmap.Rotation3d(), [image_id - 1.0, 0.0, 0.0])
    reconstruction.add_image_with_trivial_frame(image, pose)
track = pycolmap.Track()
track.add_element(1, 0)
track.add_element(2, 0)
reconstruction.add_point3D(np.array([np.nan, 0.0, 5.0]), track, np.zeros(3, np.uint8))
config = pycolmap.BundleAdjustmentConfig()
for image_id in reconstruction.reg_image_ids():
    config.add_image(image_id)
config.set_constant_rig_from_world_pose(min(reconstruction.reg_frame_ids()))
options = pycolmap.BundleAdjustmentOptions()
summary = pycolmap.create_default_bundle_adjuster(options, config, reconstruction).solve()
print("usable" if summary.is_solution_usable() else "not usable")
"""


def run_unsolvable(mode: str) -> subprocess.CompletedProcess:
    # Without the settings a quiet process leaves in its environment (this one's, if a test quieted it).
    env = {name: value for name, value in os.environ.items() if not name.startswith(("GLOG_", "OPENCV_FFMPEG_"))}
    return subprocess.run([sys.executable, "-c", UNSOLVABLE_WINDOW, mode], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=120)


class NativeLogsTest(unittest.TestCase):
    def test_solver_failures_stay_off_the_terminal_unless_verbose(self) -> None:
        quiet = run_unsolvable("quiet")
        self.assertEqual(quiet.returncode, 0, quiet.stderr)
        self.assertEqual(quiet.stdout.strip(), "not usable")
        self.assertEqual(quiet.stderr, "")

        verbose = run_unsolvable("verbose")
        self.assertEqual(verbose.returncode, 0, verbose.stderr)
        self.assertEqual(verbose.stdout.strip(), "not usable")
        self.assertIn("Bundle adjustment failed", verbose.stderr)


if __name__ == "__main__":
    unittest.main()
