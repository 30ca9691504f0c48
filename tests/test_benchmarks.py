"""The benchmark scripts run end to end on the CPU with the small architecture (scale.py on a local Ray, where
the [ray] extra is installed), and the analytic FLOP count matches a hand count and PyTorch's own FLOP counter."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
import tempfile
import unittest
from dataclasses import replace
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import gpu_model, gpu_throughput, scale  # noqa: E402
from benchmarks.gpu_model import aggregator_flops  # noqa: E402
from vae_pipeline.model import VGGTConfig  # noqa: E402
from vae_pipeline.model.random_weights import SMALL_CONFIG, random_vggt  # noqa: E402

TINY_SIZES = ["--small", "--device", "cpu", "--frames", "2", "--repeats", "1", "--warmup", "0"]

# Patch 2, width 8, one layer, MLP 16 wide, one register token.
TINY_CONFIG = VGGTConfig(
    patch_embed="conv", patch_size=2, embed_dim=8, depth=1, num_heads=2, mlp_ratio=2.0, num_register_tokens=1,
    depth_layers=(0, 0, 0, 0), point_layers=(0, 0, 0, 0), track_layers=(0, 0, 0, 0),
)


def run_main(main, argv: list[str]) -> str:
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        status = main(argv)
    if status != 0:
        raise AssertionError(f"exit status {status}:\n{output.getvalue()}")
    return output.getvalue()


class AggregatorFlopsTest(unittest.TestCase):
    def test_hand_count_of_a_tiny_config(self) -> None:
        # B=1, S=2, 4x4 frames: 4 patches and 1 + 1 + 4 = 6 tokens per frame, 12 per sequence.
        patch_conv = 2 * (2 * 4 * 12 * 8)  # frames * 2 * patches * (3 * 2 * 2 inputs) * 8 outputs = 1536
        linears_per_token = 2 * 8 * 24 + 2 * 8 * 8 + 2 * 8 * 16 + 2 * 16 * 8  # qkv, proj, fc1, fc2 = 1024
        frame_blocks = 2 * (6 * linears_per_token + 2 * (2 * 6 * 6 * 8))  # QK^T and AV per frame = 14592
        global_block = 12 * linears_per_token + 2 * (2 * 12 * 12 * 8)  # = 16896
        self.assertEqual(aggregator_flops(TINY_CONFIG, 1, 2, 4, 4), patch_conv + frame_blocks + global_block)
        self.assertEqual(aggregator_flops(TINY_CONFIG, 1, 2, 4, 4), 33024)
        self.assertEqual(aggregator_flops(TINY_CONFIG, 3, 2, 4, 4), 3 * 33024)

    def test_dinov2_blocks_are_counted(self) -> None:
        dino = replace(TINY_CONFIG, patch_embed="dinov2", patch_embed_depth=1,
                       patch_embed_mlp_ratio=2.0, patch_embed_num_register_tokens=1)
        # One DINOv2 block per frame on cls + 1 register + 4 patches: the same 6 tokens as a frame block.
        self.assertEqual(aggregator_flops(dino, 1, 2, 4, 4), 33024 + 14592)

    def test_matches_pytorchs_flop_counter(self) -> None:
        model = random_vggt(SMALL_CONFIG)
        images = torch.rand(2, 3, 3, 28, 42)
        # The math attention backend decomposes into matmuls, which the counter sees.
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model.aggregator(images, keep_layers=(SMALL_CONFIG.depth - 1,))
        self.assertEqual(aggregator_flops(SMALL_CONFIG, 2, 3, 28, 42), counter.get_total_flops())


class GpuModelScriptTest(unittest.TestCase):
    def test_small_run_prints_the_table_and_writes_json(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            report_path = Path(tmp) / "model.json"
            text = run_main(gpu_model.main, TINY_SIZES + [
                "--height", "140", "--width", "140", "--batch-sizes", "1,2", "--dtype", "bfloat16",
                "--json", str(report_path),
            ])
            report = json.loads(report_path.read_text())
        lines = text.splitlines()
        self.assertIn("torch " + torch.__version__, lines[0])
        self.assertTrue(any(line.startswith("input: S=2 frames of 140x140; aggregator:") for line in lines))
        for recipe in ("official", "ours"):
            for batch in (1, 2):
                self.assertTrue(any(line.split()[:2] == [recipe, str(batch)] for line in lines), (recipe, batch))
        self.assertTrue(any(line.startswith("speed-up (official ms / ours ms): B=1") for line in lines))
        # bf16 trunk weights compute what autocast computes: the errors match the official recipe's.
        self.assertIn("numerics: PASS", text)

        self.assertEqual(len(report["cases"]), 4)
        self.assertEqual({(c["recipe"], c["batch"]) for c in report["cases"]},
                         {("official", 1), ("official", 2), ("ours", 1), ("ours", 2)})
        for case in report["cases"]:
            self.assertGreater(case["ms_per_pass"], 0)
            self.assertIsNone(case["peak_memory_gib"])
        self.assertEqual(set(report["numerics_b1"]["ours"]), {"depth", "depth_conf", "pose_enc"})
        self.assertEqual(report["numerics_b1"]["verdict"], "PASS")


class GpuThroughputScriptTest(unittest.TestCase):
    def test_small_run_prints_every_figure_and_writes_json(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            frames = Path(tmp) / "frames"
            frames.mkdir()
            for source in sorted((REPO / "testdata" / "scene_arc" / "images").glob("*.png"))[:4]:
                shutil.copy(source, frames / source.name)
            report_path = Path(tmp) / "throughput.json"
            text = run_main(gpu_throughput.main, TINY_SIZES + [
                "--size", "140", "--batch", "2", "--window-stride", "2", "--input-dir", str(frames),
                "--num-workers", "1", "--json", str(report_path),
            ])
            report = json.loads(report_path.read_text())
        for name in ("forward per window, B=2 S=2 140x140", "peak memory, B=2 S=2 140x140",
                     "frames/s, 16:9 aspect mode 84x140", "device busy, end to end, overlapped",
                     "windows/s, end to end, overlapped"):
            line = next((line for line in text.splitlines() if line.startswith(name)), None)
            self.assertIsNotNone(line, name)
            self.assertTrue(line.endswith("n/a"), line)  # targets are for VGGT-1B on a GPU
        self.assertIn("targets: n/a", text)

        self.assertEqual(len(report["figures"]), 5)
        self.assertEqual(set(report["forward"]), {"official square", "ours square", "ours wide"})
        self.assertEqual((report["forward"]["ours wide"]["height"], report["forward"]["ours wide"]["width"]), (84, 140))
        for run in ("serial", "overlapped"):
            self.assertEqual(report["end_to_end"][run]["written"], 2, run)
            self.assertEqual(report["end_to_end"][run]["failed"], 0, run)


class ThroughputHelpersTest(unittest.TestCase):
    def test_judge(self) -> None:
        at_most_90 = lambda ms: ms <= 90  # noqa: E731
        self.assertEqual(gpu_throughput.judge(85.0, at_most_90, applies=True), "PASS")
        self.assertEqual(gpu_throughput.judge(95.0, at_most_90, applies=True), "FAIL")
        self.assertEqual(gpu_throughput.judge(85.0, at_most_90, applies=False), "n/a")
        self.assertEqual(gpu_throughput.judge(None, at_most_90, applies=True), "n/a")

    def test_stage_frames_sweeps_back_and_forth(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "source"
            source.mkdir()
            for name in ("a1.png", "a2.png", "a10.png"):
                (source / name).write_text(name)
            staged = gpu_throughput.stage_frames(source, Path(tmp) / "staged", repeat=3, limit=8)
            contents = [path.read_text() for path in sorted(staged.iterdir())]
        self.assertEqual(contents, ["a1.png", "a2.png", "a10.png", "a10.png", "a2.png", "a1.png", "a1.png",
                                    "a2.png"])


try:
    import ray
except ImportError:
    ray = None


@unittest.skipIf(ray is None, "Ray is not installed (pip install -e .[ray])")
class ScaleScriptTest(unittest.TestCase):
    def test_small_run_prints_both_executors_and_the_ratio(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            report_path = Path(tmp) / "scale.json"
            text = run_main(scale.main, ["--repeat-frames", "1", "--max-frames", "4", "--window-size", "2",
                                         "--window-stride", "2", "--no-use-ba", "--json", str(report_path)])
            report = json.loads(report_path.read_text())
        rows = {line.split()[0]: line.split() for line in text.splitlines() if line.split()[:1] in (["local"], ["ray"])}
        self.assertEqual(sorted(rows), ["local", "ray"])
        for executor in ("local", "ray"):
            self.assertEqual(rows[executor][1:3], ["4", "0"])  # 2 windows in each of the 2 sequences, none failed
            self.assertGreater(report["runs"][executor]["windows_per_s"], 0)
        self.assertIn("ratio ray / local (windows/s):", text)
        self.assertIn("same window folders: yes", text)
        self.assertAlmostEqual(report["ratio_ray_over_local"],
                               report["runs"]["ray"]["windows_per_s"] / report["runs"]["local"]["windows_per_s"])
        self.assertFalse(ray.is_initialized())  # the script stops the Ray it started


SHARED_DATA = REPO.parent / "shared" / "data"


@unittest.skipUnless(SHARED_DATA.is_dir(), f"the CPU finish benchmark needs {SHARED_DATA} (real frames with ground truth)")
class CpuFinishBenchmarkTest(unittest.TestCase):
    def test_one_window_beside_colmap(self):
        from benchmarks import cpu_finish

        with tempfile.TemporaryDirectory() as tmp:
            figures = Path(tmp) / "figures.json"
            printed = run_main(cpu_finish.main, ["--sequences", "strecha_fountain_p11", "--max-windows", "1",
                                                 "--json", str(figures)])
            result = json.loads(figures.read_text())
        self.assertIn("strecha_fountain_p11/window_000", printed)
        self.assertIn("ratio", printed)
        (window,) = result["windows"]
        self.assertEqual((window["ours_ba"], window["ours_verdict"]), ("ok", "good"))
        self.assertLess(window["ours"]["rotation_max_deg"], 2.0)
        self.assertEqual(window["colmap"]["registered"], 8)
        self.assertGreater(result["summary"]["cpu_ratio_colmap_over_ours"], 1.0)


if __name__ == "__main__":
    unittest.main()
