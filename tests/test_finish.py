"""Stage 3 on ground truth: a bundle-adjusted window written from the synthetic scene's exact cameras (slightly
perturbed) and depth, through the same ``finish_window`` the worker processes run."""

from __future__ import annotations

import json
import shutil
import tempfile
import unittest
from pathlib import Path

import numpy as np
import pycolmap

from vae_pipeline.finish import FinishSettings, finish_window
from vae_pipeline.frames import decode_image, discover_sequences
from vae_pipeline.jobs import WindowJob
from vae_pipeline.reconstruct import ReconstructionOptions, WindowPrediction
from vae_pipeline.synthetic import read_ground_truth

SCENE = Path(__file__).resolve().parents[1] / "testdata" / "scene_arc"


def rotation_about_z(degrees: float) -> np.ndarray:
    angle = np.deg2rad(degrees)
    return np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])


class FinishWithBundleAdjustmentTest(unittest.TestCase):
    def setUp(self) -> None:
        self.output = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.output)

    def test_bundle_adjusted_window_folder(self) -> None:
        sequence = discover_sequences(SCENE / "images")[0]
        frames = tuple(range(8))
        names, extrinsic, intrinsic = read_ground_truth(SCENE)
        depth = np.load(SCENE / "gt" / "depth.npz")["depth"].astype(np.float32)
        images = np.stack([decode_image(sequence.frames[i].path) for i in frames])
        perturbed = extrinsic[list(frames)].copy()
        for i in range(1, len(frames)):  # frame 0 is the gauge: the others are turned by 1 degree
            perturbed[i, :, :3] = rotation_about_z(1.0) @ perturbed[i, :, :3]
        prediction = WindowPrediction(
            names=[names[i] for i in frames],
            images=images,
            extrinsic=perturbed,
            intrinsic=intrinsic[list(frames)] * np.array([[1.05], [1.05], [1.0]]),
            original_sizes=np.array([[224, 168]] * len(frames)),
            depth=depth[list(frames)],
            depth_conf=np.full(depth[list(frames)].shape, 10.0, np.float32),
        )
        job = WindowJob(sequence, window_index=0, batch_index=0, frame_indices=frames)
        settings = FinishSettings(self.output, ReconstructionOptions(max_query_pts=512), {"model_source": "gt"})
        outcome = finish_window(job, prediction, settings)

        self.assertEqual((outcome.status, outcome.ba), ("ok", "ok"), outcome.reason)
        folder = self.output / outcome.folder
        record = json.loads((folder / "window.json").read_text())
        self.assertEqual(record["ba"], "ok")
        self.assertLess(record["metrics"]["reproj_error_per_observation_px"], 0.5)
        self.assertGreater(outcome.timings["ba_s"], 0)  # the run's records have the timings, the folder has not
        self.assertNotIn("timings", record)
        model = pycolmap.Reconstruction(str(folder / "sparse"))
        self.assertEqual(len(model.cameras), 1)  # --shared-camera is on by default
        camera = next(iter(model.cameras.values()))
        self.assertEqual(camera.model.name, "SIMPLE_PINHOLE")
        np.testing.assert_allclose(camera.params[1:], [112.0, 84.0], atol=1e-6)  # COLMAP centre of 224x168
        self.assertAlmostEqual(camera.params[0], intrinsic[0, 0, 0], delta=0.01 * intrinsic[0, 0, 0])
        errors = []
        for image in model.images.values():
            truth = extrinsic[names.index(image.name), :, :3]
            rotation = image.cam_from_world().rotation.matrix()
            errors.append(np.degrees(np.arccos(np.clip((np.trace(rotation.T @ truth) - 1) / 2, -1, 1))))
        self.assertLess(np.mean(errors), 0.1)  # from 1 degree
        self.assertLess(np.max(errors), 0.25)


if __name__ == "__main__":
    unittest.main()
