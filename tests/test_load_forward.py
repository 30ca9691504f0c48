"""The forward stage: VGGT's own tracks for several query frames (reordered windows as extra batch elements), the
same bits whatever the process's thread count, and frame loading that decodes each frame once."""

from __future__ import annotations

import unittest
from pathlib import Path

import numpy as np
import torch

from vae_pipeline.frames import discover_sequences
from vae_pipeline.model.random_weights import SMALL_CONFIG, random_vggt
from vae_pipeline.options import PipelineOptions
from vae_pipeline.pipeline import plan_jobs
from vae_pipeline.reconstruct import ReconstructionOptions
from vae_pipeline.forward import ForwardStats, forward_windows, plan_vggt_queries
from vae_pipeline.load import FrameStore

FRAMES = Path(__file__).resolve().parents[1] / "testdata" / "scene_arc" / "images"


class VggtTracksTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        options = PipelineOptions(FRAMES, Path("unused"), window_size=4, window_stride=2, resize_mode="square")
        jobs = plan_jobs(discover_sequences(FRAMES), options)[:2]
        store = FrameStore(jobs, options.resize_mode)
        cls.inputs = [store.prepare_window(job) for job in jobs]
        cls.model = random_vggt(SMALL_CONFIG)
        cls.options = ReconstructionOptions(tracker="vggt", query_frame_num=2, max_query_pts=16)
        cls.stats = ForwardStats()
        cls.predictions = forward_windows(cls.model, cls.inputs, cls.options, cls.stats)

    def test_one_forward_pass_holds_the_reordered_windows(self) -> None:
        self.assertEqual(self.stats.forward_passes, 1)

    def test_every_query_frame_is_tracked_from_its_own_points(self) -> None:
        for inputs, prediction in zip(self.inputs, self.predictions):
            plan = plan_vggt_queries(inputs, self.options)
            self.assertEqual(plan.frames, (0, 3))
            self.assertEqual(prediction.tracks.shape, (4, sum(len(p) for p in plan.points), 2))
            self.assertEqual(prediction.track_vis.shape, prediction.tracks.shape[:2])
            start = 0
            for frame, points in zip(plan.frames, plan.points):
                # The track head returns a query frame's points unchanged: they show where each block landed.
                np.testing.assert_allclose(prediction.tracks[frame, start : start + len(points)], points, atol=1e-4)
                np.testing.assert_array_equal(prediction.track_query_frame[start : start + len(points)], frame)
                start += len(points)

    def test_query_points_avoid_square_padding(self) -> None:
        plan = plan_vggt_queries(self.inputs[0], self.options)
        # 224x168 padded to a square: the content spans rows 28..196 of 224, i.e. 64.75..453.25 of 518.
        for points in plan.points:
            self.assertTrue(np.all((points[:, 1] > 64) & (points[:, 1] < 454)))

    def test_cameras_match_a_plain_forward_pass(self) -> None:
        plain = forward_windows(self.model, self.inputs, ReconstructionOptions(use_ba=False))
        for with_tracks, without in zip(self.predictions, plain):
            np.testing.assert_allclose(with_tracks.extrinsic, without.extrinsic, atol=1e-5)
            np.testing.assert_allclose(with_tracks.depth, without.depth, rtol=1e-4, atol=1e-5)


class CpuThreadsTest(unittest.TestCase):
    def test_predictions_do_not_depend_on_the_process_thread_count(self) -> None:
        # torch's CPU kernels split reductions by thread count; this model's camera head shows it in the last bits
        # when the pass runs with the process's own count (all cores locally, one per CPU in a Ray worker).
        options = PipelineOptions(FRAMES, Path("unused"), window_size=4)
        jobs = plan_jobs(discover_sequences(FRAMES), options)[:1]
        inputs = [FrameStore(jobs, options.resize_mode).prepare_window(jobs[0])]
        model = random_vggt(SMALL_CONFIG)
        before = torch.get_num_threads()
        predictions = {}
        try:
            for threads in (1, 2):
                torch.set_num_threads(threads)
                predictions[threads] = forward_windows(model, inputs, ReconstructionOptions(use_ba=False))[0]
                self.assertEqual(torch.get_num_threads(), threads)  # the pass leaves the process as it was
        finally:
            torch.set_num_threads(before)
        for name in ("extrinsic", "intrinsic", "depth", "depth_conf"):
            np.testing.assert_array_equal(getattr(predictions[1], name), getattr(predictions[2], name), name)


class FrameStoreTest(unittest.TestCase):
    def test_each_frame_is_prepared_once_and_released(self) -> None:
        options = PipelineOptions(FRAMES, Path("unused"), window_size=4, window_stride=2)
        jobs = plan_jobs(discover_sequences(FRAMES), options)
        store = FrameStore(jobs, options.resize_mode)
        calls: list[int] = []
        original = store._prepare

        def counting(sequence, frame, image):
            calls.append(frame.name)
            return original(sequence, frame, image)

        store._prepare = counting
        for job in jobs:
            self.assertEqual(store.prepare_window(job).pixels.shape, (4, 3, 392, 518))
        self.assertEqual(sorted(calls), sorted(p.name for p in FRAMES.iterdir()))


if __name__ == "__main__":
    unittest.main()
