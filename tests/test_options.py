"""Each setting declared once: the command line, defaults, checks and the output-affecting set all come from the
fields of ``PipelineOptions`` and ``ReconstructionOptions``."""

from __future__ import annotations

import dataclasses
import unittest
from pathlib import Path

from vae_pipeline import declare
from vae_pipeline.cli import build_parser, options_from_args
from vae_pipeline.options import OptionsError, PipelineOptions, Shard
from vae_pipeline.reconstruct import ReconstructionOptions


class DeclarationTest(unittest.TestCase):
    def test_every_field_is_declared(self) -> None:
        names = [f.name for f, _ in declare.declarations(PipelineOptions)]
        self.assertEqual(len(names), len(set(names)))  # flat names: flags and fingerprint keys are unique
        expected = {f.name for f in dataclasses.fields(PipelineOptions)} - {"reconstruction"}
        expected |= {f.name for f in dataclasses.fields(ReconstructionOptions)}
        self.assertEqual(set(names), expected)

        @dataclasses.dataclass
        class Undeclared:
            size: int = 1

        with self.assertRaises(TypeError):
            declare.declarations(Undeclared)

    def test_command_line_defaults_are_the_dataclass_defaults(self) -> None:
        args = build_parser().parse_args(["--input-dir", "in", "--output-dir", "out"])
        self.assertEqual(options_from_args(args), PipelineOptions(Path("in"), Path("out")))

    def test_flags_reach_their_fields(self) -> None:
        args = build_parser().parse_args([
            "--input-dir", "in", "--output-dir", "out", "--window-batch-size", "auto", "--no-use-ba",
            "--tracker", "sift", "--shard", "1/3", "--keep", "good", "--compile", "--max-reproj-error", "2.5",
        ])
        options = options_from_args(args)
        self.assertIsNone(options.window_batch_size)
        self.assertEqual((options.shard, options.keep, options.compile), (Shard(1, 3), "good", True))
        self.assertEqual(options.reconstruction,
                         ReconstructionOptions(use_ba=False, tracker="sift", max_reproj_error=2.5))

    def test_checks_name_the_flag(self) -> None:
        cases = {
            "--window-size must be at least 1, got 0": dict(window_size=0),
            "--shard needs 0 <= I < N, got 2/2": dict(shard=Shard(2, 2)),
            "--vis-thresh must be within [0, 1], got 1.5": dict(reconstruction=ReconstructionOptions(vis_thresh=1.5)),
            "--tracker must be one of klt, sift, vggt, got 'orb'": dict(
                reconstruction=ReconstructionOptions(tracker="orb")),
            "--keep must be one of good, poor, all, got 'best'": dict(keep="best"),
        }
        for message, values in cases.items():
            with self.subTest(message), self.assertRaises(OptionsError) as caught:
                PipelineOptions(Path("in"), Path("out"), **values).validate()
            self.assertEqual(str(caught.exception), message)

    def test_ray_options_go_together(self) -> None:
        cases = {
            "--ray-address is for --executor ray": dict(ray_address="auto"),
            "--device cuda:1 names one GPU of this machine": dict(executor="ray", device="cuda:1"),
        }
        for message, values in cases.items():
            with self.subTest(message), self.assertRaises(OptionsError) as caught:
                PipelineOptions(Path("in"), Path("out"), **values).validate()
            self.assertTrue(str(caught.exception).startswith(message), caught.exception)
        args = build_parser().parse_args(["--input-dir", "in", "--output-dir", "out", "--executor", "ray",
                                          "--ray-address", "10.0.0.1:6379"])
        options = options_from_args(args)
        self.assertEqual((options.executor, options.ray_address), ("ray", "10.0.0.1:6379"))
        options.validate()

    def test_output_affecting_settings(self) -> None:
        settings = PipelineOptions(Path("in"), Path("out"), window_batch_size=None).output_settings()
        self.assertEqual(set(settings), {
            "frame_step", "keep", "colmap_text", "save_depth", "window_size", "window_stride", "window_batch_size",
            "model", "checkpoint", "resize_mode", *(f.name for f in dataclasses.fields(ReconstructionOptions)
                                                    if f.name != "window_id"),
        })
        self.assertEqual(settings["window_batch_size"], 4)  # auto names folders as 4 does
        self.assertEqual(PipelineOptions.describe("use_ba", False), "--no-use-ba")
        self.assertEqual(PipelineOptions.describe("window_size", 4), "--window-size 4")


if __name__ == "__main__":
    unittest.main()
