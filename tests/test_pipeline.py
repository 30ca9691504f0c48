"""End to end: the CLI on testdata frames with a small random-weight checkpoint that the tests write."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import cv2
import numpy as np
import pycolmap
import torch
from PIL import Image
from tiny_model import write_checkpoint

from vae_pipeline.cli import main
from vae_pipeline.export.compare import compare_models, compare_outputs, read_manifest
from ply_reader import read_ply
from vae_pipeline.frames import discover_sequences
from vae_pipeline.model import load_vggt
from vae_pipeline.options import PipelineOptions
from vae_pipeline.pipeline import plan_jobs, process_window_batch
from vae_pipeline.reconstruct import ReconstructionOptions
from vae_pipeline.forward import ForwardStats

REPO = Path(__file__).resolve().parents[1]
FRAMES = REPO / "testdata" / "scene_arc" / "images"  # 12 frames, 224x168
FAST = ["--no-use-ba", "--conf-thres-value", "0", "--max-points", "2000", "--num-workers", "0", "-q"]


def read_classic_model(sparse: Path) -> tuple[dict[int, tuple], dict[str, tuple]]:
    """cameras.bin and images.bin parsed as the classic COLMAP format that nerfstudio's and gsplat's own readers
    parse (no pycolmap): cameras by id as (model_id, width, height, params), images by name as
    (qvec wxyz, tvec, camera_id, number of 2D points)."""
    param_counts = {0: 3, 1: 4, 2: 4, 4: 8}  # SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, OPENCV
    data, cameras = (sparse / "cameras.bin").read_bytes(), {}
    (count,), offset = struct.unpack_from("<Q", data), 8
    for _ in range(count):
        camera_id, model_id, width, height = struct.unpack_from("<IiQQ", data, offset)
        offset += 24
        params = struct.unpack_from(f"<{param_counts[model_id]}d", data, offset)
        offset += 8 * param_counts[model_id]
        cameras[camera_id] = (model_id, width, height, params)
    data, images = (sparse / "images.bin").read_bytes(), {}
    (count,), offset = struct.unpack_from("<Q", data), 8
    for _ in range(count):
        _, qw, qx, qy, qz, tx, ty, tz, camera_id = struct.unpack_from("<I7dI", data, offset)
        offset += 64
        end = data.index(b"\0", offset)
        name = data[offset:end].decode()
        (num_points,) = struct.unpack_from("<Q", data, end + 1)
        offset = end + 9 + 24 * num_points
        images[name] = ((qw, qx, qy, qz), (tx, ty, tz), camera_id, num_points)
    return cameras, images


def last_run_log(output_dir: Path) -> list[dict]:
    """The lines of the latest run's own log, ``OUT/runs/<run id>.jsonl``."""
    latest = max((output_dir / "runs").iterdir(), key=lambda path: path.stat().st_mtime_ns)
    return [json.loads(line) for line in latest.read_text().splitlines()]


def run_cli(*args: str) -> tuple[int, str]:
    """Run the CLI in this process; returns the exit code and what it printed on stderr."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = main([str(a) for a in args])
    return code, stderr.getvalue()


class PipelineTestCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = Path(tempfile.mkdtemp(prefix="vae_pipeline_test_"))
        cls.checkpoint = write_checkpoint(cls.tmp / "checkpoint")

    @classmethod
    def tearDownClass(cls) -> None:
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def output(self, name: str) -> Path:
        path = self.tmp / name
        shutil.rmtree(path, ignore_errors=True)
        return path

    def frames_copy(self, name: str, count: int = 12) -> Path:
        folder = self.tmp / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        for path in sorted(FRAMES.iterdir())[:count]:
            shutil.copy(path, folder / path.name)
        return folder

    def run_ok(self, input_dir: Path, output_dir: Path, *extra: str) -> None:
        code, stderr = run_cli("--input-dir", input_dir, "--output-dir", output_dir,
                               "--checkpoint", self.checkpoint, *FAST, *extra)
        self.assertEqual(code, 0, stderr)


class OutputLayoutTest(PipelineTestCase):
    def check_window(self, folder: Path, frame_names: list[str], size: tuple[int, int]) -> pycolmap.Reconstruction:
        for name in ("window.json", "window_info.txt", "sparse/points.ply", "sparse/cameras.bin",
                     "sparse/images.bin", "sparse/points3D.bin"):
            self.assertTrue((folder / name).is_file(), f"{folder / name} missing")
        model = pycolmap.Reconstruction(str(folder / "sparse"))
        self.assertEqual(sorted(image.name for image in model.images.values()), sorted(frame_names))
        for camera in model.cameras.values():
            self.assertEqual((camera.width, camera.height), size)
        for name in frame_names:
            linked = folder / "images" / name
            self.assertTrue(linked.is_symlink(), f"{linked} should link to the input frame")
            self.assertEqual(cv2.imread(str(linked)).shape[:2], (size[1], size[0]))
        cameras, classic_images = read_classic_model(folder / "sparse")
        self.assertEqual(sorted(classic_images), sorted(frame_names))
        for name, (qvec, tvec, camera_id, _) in classic_images.items():
            image = next(i for i in model.images.values() if i.name == name)
            rigid = image.cam_from_world()
            np.testing.assert_allclose(tvec, rigid.translation, atol=1e-9)
            np.testing.assert_allclose(np.abs(np.dot(qvec, np.roll(rigid.rotation.quat, 1))), 1.0, atol=1e-9)
            self.assertEqual(cameras[camera_id][1:3], size)
        xyz, rgb = read_ply(folder / "sparse" / "points.ply")
        self.assertEqual(len(xyz), len(model.points3D))
        # Every point is observed where its camera projects it, in the original frame's pixels.
        images = model.images
        for point in list(model.points3D.values())[:200]:
            for element in point.track.elements:
                image = images[element.image_id]
                observed = image.points2D[element.point2D_idx].xy
                projected = image.project_point(point.xyz)
                self.assertLess(np.abs(projected - observed).max(), 1e-2)
        return model

    def test_aspect_mode_tree_manifest_and_summary(self) -> None:
        out = self.output("aspect")
        self.run_ok(FRAMES, out, "--window-size", "4", "--window-stride", "4", "--window-batch-size", "2",
                    "--colmap-text", "--save-depth")
        names = sorted(p.name for p in FRAMES.iterdir())
        expected = {"batch_000/window_000": names[0:4], "batch_000/window_001": names[4:8],
                    "batch_001/window_002": names[8:12]}
        for folder, frames in expected.items():
            self.check_window(out / folder, frames, (224, 168))
            self.assertTrue((out / folder / "sparse" / "cameras.txt").is_file())
            depth = np.load(out / folder / "depth" / f"{Path(frames[0]).stem}.npz")
            self.assertEqual(depth["depth"].dtype, np.float16)
            self.assertEqual(depth["depth"].shape, (392, 518))
        record = json.loads((out / "batch_000/window_001/window.json").read_text())
        self.assertEqual(record["status"], "ok")
        self.assertEqual(record["ba"], "off")
        self.assertEqual([f["name"] for f in record["frames"]], names[4:8])
        self.assertEqual(record["provenance"]["flags"]["window_size"], 4)
        self.assertTrue(record["provenance"]["model_fingerprint"])
        # Only what the fingerprint covers: nothing of the run that computed the window.
        self.assertNotIn("num_workers", record["provenance"]["flags"])
        for run_specific in ("run_id", "timings"):
            self.assertNotIn(run_specific, record)
        self.assertNotIn("timings", (out / "batch_000/window_001/window_info.txt").read_text())
        manifest = read_manifest(out)
        self.assertEqual(sorted(m["folder"] for m in manifest.values()), sorted(expected))
        summary = json.loads((out / "summary.json").read_text())
        self.assertEqual((summary["written"], summary["failed"], summary["skipped"]), (3, 0, 0))
        self.assertEqual(summary["forward_passes"], 2)
        self.assertEqual(list(out.glob("**/.*partial*")), [])

    def test_square_mode_cameras_in_original_pixels(self) -> None:
        out = self.output("square")
        frames = self.frames_copy("square_frames", 4)
        self.run_ok(frames, out, "--window-size", "4", "--resize-mode", "square")
        model = self.check_window(out / "batch_000/window_000", sorted(p.name for p in frames.iterdir()),
                                  (224, 168))
        # VGGT puts the principal point at (W/2, H/2) of the 518x518 input in OpenCV pixels, i.e. 259.5 in COLMAP's;
        # the 224x168 frame was padded by 28 rows above and scaled by 224/518.
        scale = 224 / 518
        for camera in model.cameras.values():  # PINHOLE: fx, fy, cx, cy
            np.testing.assert_allclose(camera.params[2:4], [259.5 * scale, 259.5 * scale - 28], atol=1e-4)

    def test_rerun_skips_finished_windows_and_overwrite_redoes_them(self) -> None:
        out = self.output("rerun")
        frames = self.frames_copy("rerun_frames", 8)
        self.run_ok(frames, out, "--window-size", "4", "--window-stride", "4")
        stamp = (out / "batch_000/window_000/window.json").stat().st_mtime_ns
        self.run_ok(frames, out, "--window-size", "4", "--window-stride", "4")
        self.assertEqual((out / "batch_000/window_000/window.json").stat().st_mtime_ns, stamp)
        self.assertEqual({m["status"] for m in read_manifest(out).values()}, {"ok"})
        self.assertEqual([line["status"] for line in last_run_log(out)], ["skipped", "skipped"])
        self.assertEqual(json.loads((out / "summary.json").read_text())["forward_passes"], 0)
        self.run_ok(frames, out, "--window-size", "4", "--window-stride", "4", "--overwrite")
        self.assertNotEqual((out / "batch_000/window_000/window.json").stat().st_mtime_ns, stamp)
        self.assertEqual({m["status"] for m in read_manifest(out).values()}, {"ok"})
        self.assertEqual(len(list((out / "runs").iterdir())), 3)  # each run kept its own log


    def test_rerun_removes_what_a_crash_left_half_written(self) -> None:
        out = self.output("crashed")
        frames = self.frames_copy("crashed_frames", 4)
        finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                                  text=True)
        dead_pid = int(finished.stdout)
        host = socket.gethostname()
        stale = out / "batch_000" / f".window_000.partial-{host}-{dead_pid}"
        elsewhere = out / "batch_000" / f".window_000.partial-another-host-{dead_pid}"
        running = out / "batch_000" / f".window_000.partial-{host}-{os.getppid()}"
        for folder in (stale, elsewhere, running):
            (folder / "sparse").mkdir(parents=True)
        stale_frame = out / "frames" / f".0000.png.1234.partial-{host}-{dead_pid}"
        stale_state = out / ".state" / f".settings.json.1234.partial-{host}-{dead_pid}"
        for path in (stale_frame, stale_state):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"half")
        self.run_ok(frames, out, "--window-size", "4")
        self.assertFalse(stale.exists() or stale_frame.exists() or stale_state.exists())
        self.assertTrue(elsewhere.exists() and running.exists())
        self.assertTrue((out / "batch_000" / "window_000" / "window.json").is_file())


class BatchingTest(PipelineTestCase):
    def test_batch_size_does_not_change_results(self) -> None:
        frames = self.frames_copy("batching_frames", 10)
        one, three = self.output("bs1"), self.output("bs3")
        args = ("--window-size", "4", "--window-stride", "2")
        self.run_ok(frames, one, *args, "--window-batch-size", "1")
        self.run_ok(frames, three, *args, "--window-batch-size", "3")
        self.assertEqual(compare_outputs(one, three), [])
        self.assertEqual(len(read_manifest(one)), 4)

    def test_auto_batch_size_names_folders_as_batches_of_4(self) -> None:
        out = self.output("auto")
        self.run_ok(FRAMES, out, "--window-size", "2", "--window-stride", "2", "--window-batch-size", "auto")
        self.assertEqual(sorted(m["folder"] for m in read_manifest(out).values()),
                         [f"batch_{i // 4:03d}/window_{i:03d}" for i in range(6)])

    def test_out_of_memory_splits_the_batch_and_changes_nothing(self) -> None:
        frames = self.frames_copy("oom_frames", 10)
        settings = dict(window_size=4, window_stride=2, window_batch_size=4, num_workers=0,
                        checkpoint=self.checkpoint,
                        reconstruction=ReconstructionOptions(use_ba=False, conf_thres_value=0, max_points=2000))
        options = PipelineOptions(frames, self.output("oom"), **settings)
        reference = PipelineOptions(frames, self.output("oom_reference"), **settings)
        model = load_vggt(self.checkpoint)
        jobs = plan_jobs(discover_sequences(frames), options)
        options.output_dir.mkdir()
        reference.output_dir.mkdir()

        original_run_heads = model.run_heads

        def run_heads_out_of_memory(images, **kwargs):
            if images.shape[0] > 1:
                raise torch.OutOfMemoryError("CUDA out of memory (injected by the test)")
            return original_run_heads(images, **kwargs)

        stats = ForwardStats()
        model.run_heads = run_heads_out_of_memory  # the error is injected where the forward pass starts
        outcomes = process_window_batch(model, jobs, 0, options, stats=stats)
        del model.run_heads
        self.assertEqual([o.status for o in outcomes], ["ok"] * 4)
        self.assertGreater(stats.oom_splits, 0)
        self.assertEqual(stats.forward_passes, 4)
        reference_outcomes = process_window_batch(model, jobs, 0, reference)
        self.assertEqual([o.folder for o in outcomes], [o.folder for o in reference_outcomes])
        for outcome in outcomes:
            self.assertEqual(compare_models(options.output_dir / outcome.folder / "sparse",
                                            reference.output_dir / outcome.folder / "sparse"), [])


class InputTest(PipelineTestCase):
    def test_natural_sort(self) -> None:
        folder = self.tmp / "natural"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        sources = sorted(FRAMES.iterdir())
        for number, source in zip((1, 2, 10, 11), sources):
            shutil.copy(source, folder / f"frame{number}.PNG")
        out = self.output("natural_out")
        self.run_ok(folder, out, "--window-size", "4")
        record = json.loads((out / "batch_000/window_000/window.json").read_text())
        self.assertEqual([f["name"] for f in record["frames"]], ["frame1.PNG", "frame2.PNG", "frame10.PNG",
                                                                 "frame11.PNG"])

    def test_folder_of_folders_is_mirrored_per_sequence(self) -> None:
        root = self.tmp / "nested"
        shutil.rmtree(root, ignore_errors=True)
        sources = sorted(FRAMES.iterdir())
        for folder, chosen in (("a", sources[:4]), ("b/c", sources[4:8])):
            (root / folder).mkdir(parents=True)
            for source in chosen:
                shutil.copy(source, root / folder / source.name)
        out = self.output("nested_out")
        self.run_ok(root, out, "--window-size", "4")
        self.assertEqual(sorted(m["folder"] for m in read_manifest(out).values()),
                         ["a/batch_000/window_000", "b/c/batch_000/window_000"])
        record = json.loads((out / "b/c/batch_000/window_000/window.json").read_text())
        self.assertEqual([f["name"] for f in record["frames"]], [p.name for p in sources[4:8]])

    def test_exif_rotated_frames_are_decoded_once_and_linked_upright(self) -> None:
        folder = self.tmp / "rotated"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        for source in sorted(FRAMES.iterdir())[:6]:
            image = Image.open(source)
            exif = image.getexif()
            exif[0x0112] = 6  # stored landscape, shown rotated 90 degrees clockwise: portrait
            image.save(folder / f"{source.stem}.jpg", exif=exif, quality=95)
        out = self.output("rotated_out")
        self.run_ok(folder, out, "--window-size", "4", "--window-stride", "2")
        for window in ("batch_000/window_000", "batch_000/window_001"):
            model = pycolmap.Reconstruction(str(out / window / "sparse"))
            self.assertEqual({(c.width, c.height) for c in model.cameras.values()}, {(168, 224)})
            for linked in (out / window / "images").iterdir():
                self.assertEqual(linked.resolve().parent, (out / "frames").resolve())
                self.assertEqual(cv2.imread(str(linked), cv2.IMREAD_IGNORE_ORIENTATION | cv2.IMREAD_COLOR).shape,
                                 (224, 168, 3))
        self.assertEqual(len(list((out / "frames").iterdir())), 6)

    def test_one_frame_of_another_orientation_gets_its_own_exact_camera(self) -> None:
        folder = self.frames_copy("one_rotated", 6)
        odd = sorted(folder.iterdir())[2]
        image = Image.open(odd)
        exif = image.getexif()
        exif[0x0112] = 6  # shown rotated: a portrait frame among landscape ones
        image.save(odd, exif=exif)
        out = self.output("one_rotated_out")
        self.run_ok(folder, out, "--window-size", "4", "--window-stride", "2")
        for window in ("batch_000/window_000", "batch_000/window_001"):
            model = pycolmap.Reconstruction(str(out / window / "sparse"))
            sizes = {image.name: (model.cameras[image.camera_id].width, model.cameras[image.camera_id].height)
                     for image in model.images.values()}
            self.assertEqual(sizes.pop(odd.name), (168, 224))
            self.assertEqual(set(sizes.values()), {(224, 168)})

    def test_report_at_the_end_of_the_run(self) -> None:
        out = self.output("report_out")
        self.run_ok(self.frames_copy("report_frames", 6), out, "--window-size", "4", "--window-stride", "2",
                    "--report")
        page = (out / "report" / "index.html").read_text()
        for window_id in read_manifest(out):
            self.assertIn(window_id, page)

    def test_video_with_frame_step(self) -> None:
        videos = self.tmp / "videos"
        shutil.rmtree(videos, ignore_errors=True)
        videos.mkdir()
        writer = cv2.VideoWriter(str(videos / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (224, 168))
        for path in sorted(FRAMES.iterdir()):
            writer.write(cv2.imread(str(path)))
        writer.release()
        out = self.output("video_out")
        self.run_ok(videos, out, "--window-size", "4", "--window-stride", "4", "--frame-step", "2")
        window = out / "clip" / "batch_000" / "window_000"
        record = json.loads((window / "window.json").read_text())
        names = ["frame_000000.png", "frame_000002.png", "frame_000004.png", "frame_000006.png"]
        self.assertEqual([f["name"] for f in record["frames"]], names)
        for name in names:
            linked = window / "images" / name
            self.assertTrue(linked.is_symlink())
            self.assertEqual(linked.resolve(), (out / "clip" / "frames" / name).resolve())
            self.assertEqual(cv2.imread(str(linked)).shape, (168, 224, 3))
        self.assertEqual(len(read_manifest(out)), 2)  # 6 frames: windows 0-3 and 2-5


class FailureTest(PipelineTestCase):
    def test_a_bad_frame_fails_only_its_windows(self) -> None:
        frames = self.frames_copy("bad_frames", 12)
        broken = sorted(frames.iterdir())[10]
        broken.write_bytes(broken.read_bytes()[:300])
        out = self.output("bad_out")
        code, stderr = run_cli("--input-dir", frames, "--output-dir", out, "--checkpoint", self.checkpoint,
                               *FAST, "--window-size", "4", "--window-stride", "4")
        self.assertEqual(code, 1, stderr)
        manifest = read_manifest(out)
        self.assertEqual(manifest["window_002"]["status"], "failed")
        self.assertIn(broken.name, manifest["window_002"]["reason"])
        self.assertEqual([manifest[w]["status"] for w in ("window_000", "window_001")], ["ok", "ok"])
        self.assertFalse((out / "batch_000/window_002").exists())
        self.assertNotIn("Traceback", stderr)
        shutil.copy(FRAMES / broken.name, broken)  # repaired: a rerun retries only the failed window
        self.run_ok(frames, out, "--window-size", "4", "--window-stride", "4")
        self.assertEqual({w: m["status"] for w, m in read_manifest(out).items()},
                         {"window_000": "ok", "window_001": "ok", "window_002": "ok"})
        self.assertEqual({line["window_id"]: line["status"] for line in last_run_log(out)},
                         {"window_000": "skipped", "window_001": "skipped", "window_002": "ok"})

    def test_usage_errors_exit_2_with_one_line(self) -> None:
        empty = self.tmp / "empty"
        empty.mkdir(exist_ok=True)
        blocker = self.tmp / "not_a_folder"
        blocker.write_text("")
        garbage = self.tmp / "garbage.safetensors"
        garbage.write_bytes(b"\x00" * 100)
        out = self.tmp / "usage_out"
        cases = {
            "missing input": ["--input-dir", self.tmp / "nowhere", "--output-dir", out],
            "empty input": ["--input-dir", empty, "--output-dir", out],
            "window size 0": ["--input-dir", FRAMES, "--output-dir", out, "--window-size", "0"],
            "negative stride": ["--input-dir", FRAMES, "--output-dir", out, "--window-stride", "-1"],
            "batch size 0": ["--input-dir", FRAMES, "--output-dir", out, "--window-batch-size", "0"],
            "frame step 0": ["--input-dir", FRAMES, "--output-dir", out, "--frame-step", "0"],
            "shard out of range": ["--input-dir", FRAMES, "--output-dir", out, "--shard", "2/2"],
            "unwritable output": ["--input-dir", FRAMES, "--output-dir", blocker / "out"],
            "output inside input": ["--input-dir", FRAMES.parent, "--output-dir", FRAMES.parent / "out"],
            "ray address without ray": ["--input-dir", FRAMES, "--output-dir", out, "--ray-address", "auto"],
            "missing checkpoint": ["--input-dir", FRAMES, "--output-dir", out, "--checkpoint",
                                   self.tmp / "missing.pt"],
            "unloadable checkpoint": ["--input-dir", FRAMES, "--output-dir", out, "--checkpoint", garbage],
        }
        for name, args in cases.items():
            with self.subTest(name):
                if "--checkpoint" not in args:
                    args = [*args, "--checkpoint", self.checkpoint]
                code, stderr = run_cli(*args, "-q")
                self.assertEqual(code, 2, stderr)
                self.assertTrue(stderr.startswith("error: "), stderr)
                self.assertEqual(len(stderr.strip().splitlines()), 1, stderr)

    def test_script_entry_point_never_prints_a_traceback(self) -> None:
        result = subprocess.run(
            [sys.executable, str(REPO / "vae_data_pipeline_batch.py"), "--input-dir", str(self.tmp / "nowhere"),
             "--output-dir", str(self.tmp / "x")],
            capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        self.assertEqual(result.returncode, 2)
        self.assertNotIn("Traceback", result.stderr)
        self.assertIn("nowhere", result.stderr)


if __name__ == "__main__":
    unittest.main()
