"""Stage 3 in worker processes: a window whose worker dies is found and recorded as failed; the others are
written. The crash is real: the window's prediction kills the process that unpickles it. And workers never
import torch."""

from __future__ import annotations

import os
import shutil
import tempfile
import unittest
from pathlib import Path

import numpy as np
from worker_probe import threads_while_finishing, torch_is_loaded

from vae_pipeline.finish import FinishSettings
from vae_pipeline.frames import decode_image, discover_sequences
from vae_pipeline.jobs import WindowJob
from vae_pipeline.options import PipelineOptions
from vae_pipeline.pipeline import window_provenance
from vae_pipeline.reconstruct import ReconstructionOptions, WindowPrediction
from vae_pipeline.synthetic import read_ground_truth
from vae_pipeline.workers import CRASH_REASON, FinishPool, submit, worker_pool

SCENE = Path(__file__).resolve().parents[1] / "testdata" / "scene_arc"


class KillsItsWorker(WindowPrediction):
    """Unpickling this prediction ends the process that does it, as a fault in native code would."""

    def __reduce__(self):
        return os._exit, (3,)


class FinishPoolTest(unittest.TestCase):
    def setUp(self) -> None:
        self.output = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.output)

    def window(self, index: int, prediction_type: type = WindowPrediction) -> tuple[WindowJob, WindowPrediction]:
        sequence = discover_sequences(SCENE / "images")[0]
        frames = (index, index + 1, index + 2)
        names, extrinsic, intrinsic = read_ground_truth(SCENE)
        depth = np.load(SCENE / "gt" / "depth.npz")["depth"][list(frames)].astype(np.float32)
        prediction = prediction_type(
            names=[names[i] for i in frames],
            images=np.stack([decode_image(sequence.frames[i].path) for i in frames]),
            extrinsic=extrinsic[list(frames)],
            intrinsic=intrinsic[list(frames)],
            original_sizes=np.array([[224, 168]] * 3),
            depth=depth,
            depth_conf=np.full(depth.shape, 10.0, np.float32),
        )
        return WindowJob(sequence, index, 0, frames), prediction

    def test_a_crashing_window_fails_alone(self) -> None:
        settings = FinishSettings(self.output, ReconstructionOptions(use_ba=False, max_points=500), {})
        outcomes = []
        pool = FinishPool(2, settings, outcomes.append)
        try:
            for index in range(5):
                pool.submit(*self.window(index, KillsItsWorker if index == 2 else WindowPrediction))
            pool.drain()
        finally:
            pool.close()
        status = {o.window: (o.status, o.reason) for o in outcomes}
        self.assertEqual(sorted(status), [0, 1, 2, 3, 4])
        self.assertEqual(status[2], ("failed", CRASH_REASON))
        for index in (0, 1, 3, 4):
            self.assertEqual(status[index][0], "ok", status[index])
            self.assertTrue((self.output / f"batch_000/window_{index:03d}/window.json").is_file())

    def test_workers_do_not_import_torch(self) -> None:
        job, prediction = self.window(0)
        options = PipelineOptions(SCENE / "images", self.output)
        settings = FinishSettings(self.output, options.reconstruction, window_provenance(options))  # as a run makes them
        pool = worker_pool(1)
        try:
            loaded = pool.submit(torch_is_loaded, job, prediction, settings).result()
        finally:
            pool.shutdown()
        self.assertFalse(loaded)

    def test_a_window_is_finished_on_one_thread(self) -> None:
        # Each worker is one window on one core: a BLAS pool as large as the machine in every worker would run
        # cores x workers threads.
        pool = worker_pool(1)
        try:
            threads = submit(pool, threads_while_finishing).result()
        finally:
            pool.shutdown()
        self.assertIn("opencv", threads)
        self.assertTrue(any("blas" in name for name in threads), threads)
        self.assertEqual(set(threads.values()), {1}, threads)


if __name__ == "__main__":
    unittest.main()
