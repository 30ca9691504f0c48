"""The fault corpus: each faulty input, checkpoint, output folder or disk is built for real, the real CLI runs on
it, and the outcome is checked: the exit code, the one-line message (which file, what is wrong) and that nothing
valid was lost (the good windows are written, the finished ones kept).

Covered elsewhere and not repeated here: absurd flag values (``test_pipeline.FailureTest.
test_usage_errors_exit_2_with_one_line``, ``test_options``); images of every pixel format, corrupt, zero-byte and
missing files at decoding, symlink loops (``test_frames``); Ctrl-C, SIGTERM, kill -9 and crashing workers
(``test_processes``); what COLMAP's own readers make of a text model (``test_clients``).

The full and read-only disks are real file systems (a small tmpfs): mounting one needs root, and those tests skip
with that reason elsewhere.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path

import cv2
import pycolmap
import torch
from PIL import Image
from test_pipeline import FAST, FRAMES, REPO, PipelineTestCase, last_run_log, run_cli

from vae_pipeline import __version__
from vae_pipeline.export.compare import read_manifest

SCRIPT = REPO / "vae_data_pipeline_batch.py"
WIDE_FRAMES = REPO / "testdata" / "scene_forward" / "images"  # 256x144
SMALL_WINDOWS = ["--window-size", "3", "--window-stride", "3"]
ENOSPC = "No space left on device (ENOSPC)"


def run_script(*args: object, timeout: float = 300) -> subprocess.CompletedProcess:
    """The CLI as a user starts it, in a process of its own (so everything it prints can be checked)."""
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def mount_tmpfs(test: unittest.TestCase, size: str, *, read_only: bool = False) -> Path:
    """A real file system of ``size`` bytes (tmpfs), unmounted when ``test`` ends, pass or fail; the test skips
    where this machine does not let it mount one."""
    if os.geteuid() != 0:
        test.skipTest("mounting a small file system (tmpfs) to fill needs root")
    folder = Path(tempfile.mkdtemp(prefix="faults_disk_"))
    test.addCleanup(folder.rmdir)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        test.skipTest(f"cannot mount a tmpfs here: {mounted.stderr.strip() or f'mount exited {mounted.returncode}'}")
    test.addCleanup(subprocess.run, ["umount", "--lazy", str(folder)], check=True)  # runs before the rmdir
    return folder


def fill_up(folder: Path) -> Path:
    """Fill the file system holding ``folder`` to its last byte, as another program writing there would; returns
    the file to delete to free it again."""
    filler = folder / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    chunk = b"\0" * (1 << 16)
    try:
        while True:
            os.write(descriptor, chunk)  # a short write takes what is left; the next one fails
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    finally:
        os.close(descriptor)
    return filler


def copy_frames(folder: Path, count: int, names: list[str] | None = None) -> list[Path]:
    """``count`` frames of ``testdata/scene_arc`` (224x168) copied into ``folder``, under ``names`` if given."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted(FRAMES.iterdir())[:count]
    copies = [folder / (name or source.name) for name, source in zip(names or [None] * count, sources)]
    for source, copy in zip(sources, copies):
        shutil.copyfile(source, copy)
    return copies


def write_video(path: Path, count: int) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (224, 168))
    for source in sorted(FRAMES.iterdir())[:count]:
        writer.write(cv2.imread(str(source)))
    writer.release()


def single_line(test: unittest.TestCase, stderr: str) -> str:
    """The one line ``stderr`` must consist of."""
    lines = stderr.strip().splitlines()
    test.assertEqual(len(lines), 1, stderr)
    test.assertNotIn("Traceback", stderr)
    return lines[0]


class InputCorpusTest(PipelineTestCase):
    """One run over an input folder holding a sequence per fault, beside good ones: each fault's windows fail (or
    its frames are left out) with the file named, every other window is written, and each warning prints once."""

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        root = cls.corpus = cls.tmp / "corpus"

        mixed = copy_frames(root / "mixed", 4)
        cls.rotated, cls.wide = mixed[1], mixed[3]
        image = Image.open(cls.rotated)
        exif = image.getexif()
        exif[0x0112] = 6  # shown turned a quarter: a portrait frame among landscape ones
        image.save(cls.rotated, exif=exif)
        shutil.copyfile(sorted(WIDE_FRAMES.iterdir())[0], cls.wide)  # 256x144: another camera's frame

        damaged = copy_frames(root / "damaged", 9)
        cls.tiny, cls.truncated = damaged[4], damaged[7]
        Image.new("RGB", (1, 1)).save(cls.tiny)
        cls.truncated.write_bytes(cls.truncated.read_bytes()[:300])

        cls.linked = copy_frames(root / "linked", 3)
        cls.broken_link = root / "linked" / "0001b.png"
        cls.broken_link.symlink_to(root / "gone" / "0001b.png")

        cls.unicode_names = ["кадр_1.png", "フレーム_2.png", "ñandú_3.png"]
        copy_frames(root / "unicode", 3, cls.unicode_names)

        cls.short_video = root / "short.avi"
        write_video(cls.short_video, 8)
        cls.short_video.write_bytes(cls.short_video.read_bytes()[:len(cls.short_video.read_bytes()) * 45 // 100])
        cls.empty_video = root / "empty.mp4"
        cls.empty_video.write_bytes(b"")

        cls.out = cls.tmp / "corpus_out"
        cls.result = run_script("--input-dir", root, "--output-dir", cls.out, "--checkpoint", cls.checkpoint, *FAST,
                                *SMALL_WINDOWS, "--keep", "all")
        cls.manifest = read_manifest(cls.out)
        cls.summary = json.loads((cls.out / "summary.json").read_text())

    def window(self, window_id: str) -> pycolmap.Reconstruction:
        line = self.manifest[window_id]
        self.assertEqual(line["status"], "ok", line)
        return pycolmap.Reconstruction(str(self.out / line["folder"] / "sparse"))

    def test_the_run_reports_failures_with_exit_1_and_each_warning_once(self) -> None:
        self.assertEqual(self.result.returncode, 1, self.result.stderr)
        self.assertNotIn("Traceback", self.result.stderr)
        lines = [re.sub(r"^\d\d:\d\d:\d\d ", "", line) for line in self.result.stderr.splitlines()]
        self.assertEqual(len(lines), len(set(lines)), self.result.stderr)
        for fault in (self.broken_link, self.short_video, self.empty_video, self.tiny, self.truncated):
            self.assertEqual(len([line for line in lines if str(fault) in line]), 1, f"{fault}:\n{self.result.stderr}")

    def test_frames_of_another_orientation_or_size_get_their_own_exact_cameras(self) -> None:
        own_sizes = {self.rotated.name: (168, 224), self.wide.name: (256, 144)}
        for window_id in ("mixed/window_000", "mixed/window_001"):  # the EXIF-rotated frame; it and the wide one
            model = self.window(window_id)
            self.assertEqual(model.num_images(), 3)
            for image in model.images.values():
                camera = model.cameras[image.camera_id]
                self.assertEqual((camera.width, camera.height), own_sizes.get(image.name, (224, 168)), image.name)
        upright = self.out / self.manifest["mixed/window_000"]["folder"] / "images" / self.rotated.name
        self.assertEqual(cv2.imread(str(upright), cv2.IMREAD_IGNORE_ORIENTATION | cv2.IMREAD_COLOR).shape[:2],
                         (224, 168))

    def test_a_1x1_frame_fails_only_its_windows_naming_it(self) -> None:
        reason = self.manifest["damaged/window_001"]["reason"]
        self.assertEqual(self.manifest["damaged/window_001"]["status"], "failed")
        self.assertIn(str(self.tiny), reason)
        self.assertIn("1x1 pixels, too small", reason)
        self.assertEqual(self.window("damaged/window_000").num_images(), 3)

    def test_an_undecodable_frame_fails_only_its_windows_naming_it(self) -> None:
        reason = self.manifest["damaged/window_002"]["reason"]
        self.assertEqual(self.manifest["damaged/window_002"]["status"], "failed")
        self.assertIn(f"cannot decode image {self.truncated}", reason)
        self.assertIn("truncated", reason)
        self.assertFalse((self.out / "damaged" / "batch_000" / "window_002").exists())

    def test_a_broken_link_is_left_out_warned_about_and_listed(self) -> None:
        model = self.window("linked/window_000")
        self.assertEqual(sorted(image.name for image in model.images.values()), [p.name for p in self.linked])
        (notice,) = [n for n in self.summary["input_notices"] if n["path"] == str(self.broken_link)]
        self.assertIn("which does not exist: left out", notice["message"])

    def test_a_truncated_video_is_warned_about_listed_and_its_frames_used(self) -> None:
        (notice,) = [n for n in self.summary["input_notices"] if n["path"] == str(self.short_video)]
        decoded = int(re.search(r"announces 8 frames but only (\d+) decode", notice["message"])[1])
        self.assertLess(decoded, 8)
        windows = [line for line in self.manifest.values() if line["sequence"] == "short"]
        self.assertEqual({line["status"] for line in windows}, {"ok"})
        self.assertEqual(max(int(name[6:12]) for line in windows for name in line["frames"]), decoded - 1)

    def test_a_zero_byte_video_fails_alone(self) -> None:
        line = self.manifest["empty"]
        self.assertEqual((line["status"], line["window"]), ("failed", None))
        self.assertIn(f"cannot read video {self.empty_video}", line["reason"])
        self.assertEqual(self.summary["sequences_failed"], 1)
        self.assertEqual(self.summary["failed"], 2)  # the windows of the bad frames; every other one is written
        self.assertEqual(self.summary["written"], self.summary["windows"] - 2)

    def test_unicode_names_are_kept_exactly(self) -> None:
        model = self.window("unicode/window_000")
        self.assertEqual(sorted(image.name for image in model.images.values()), sorted(self.unicode_names))
        images = self.out / self.manifest["unicode/window_000"]["folder"] / "images"
        self.assertEqual(sorted(path.name for path in images.iterdir() if path.resolve().is_file()),
                         sorted(self.unicode_names))


class EarlyErrorTest(PipelineTestCase):
    """Errors found before the run starts: exit 2, one line saying what is wrong, and no output folder."""

    def checkpoint_file(self, name: str, content: object) -> Path:
        path = self.tmp / name
        torch.save(content, path)
        return path

    def test_early_errors_create_nothing(self) -> None:
        empty = self.tmp / "no_frames"
        empty.mkdir()
        spaced = copy_frames(self.tmp / "spaced", 3, ["a.png", "frame 01.png", "b.png"])[1]
        garbage = self.tmp / "garbage.safetensors"
        garbage.write_bytes(b"\0" * 100)
        payload = self.checkpoint_file("payload.pt", {"weights": _Payload()})
        foreign = self.checkpoint_file("foreign.pt", {"head.weight": torch.zeros(2, 2)})
        out = self.tmp / "never" / "out"
        cases = {
            "a flag value that cannot work": ([FRAMES, "--window-size", "0"], "--window-size"),
            "a missing input folder": ([self.tmp / "nowhere"], "nowhere does not exist"),
            "no frames": ([empty], f"no frames found in {empty}"),
            "a missing checkpoint": ([FRAMES, "--checkpoint", self.tmp / "missing.pt"], "missing.pt does not exist"),
            "a checkpoint that is not one": ([FRAMES, "--checkpoint", garbage], f"{garbage} is truncated or not"),
            "a pickled payload": ([FRAMES, "--checkpoint", payload], f"{payload} holds pickled objects other than"),
            "another architecture": ([FRAMES, "--checkpoint", foreign], f"{foreign} does not match"),
            "--colmap-text with a space in a name": ([spaced.parent, "--colmap-text"], f"name of {spaced}:"),
        }
        if not torch.cuda.is_available():
            cases["a CUDA device that is not there"] = ([FRAMES, "--device", "cuda"], "no CUDA device")
        for case, (args, expected) in cases.items():
            with self.subTest(case):
                if "--checkpoint" not in args:
                    args = [*args, "--checkpoint", self.checkpoint]
                code, stderr = run_cli("--input-dir", *args, "--output-dir", out, *FAST)
                self.assertEqual(code, 2, stderr)
                line = single_line(self, stderr)
                self.assertTrue(line.startswith("error: "), line)
                self.assertIn(expected, line)
                self.assertNotIn("weights_only", line)  # torch's advice would run the payload
                self.assertFalse(out.parent.exists(), f"{case} left {out.parent}")

    def test_colmap_text_refusal_says_why(self) -> None:
        spaced = copy_frames(self.tmp / "spaced_why", 3, ["a.png", "frame 01.png", "frame 02.png"])
        code, stderr = run_cli("--input-dir", spaced[0].parent, "--output-dir", self.tmp / "spaced_out",
                               "--checkpoint", self.checkpoint, "--colmap-text", *FAST)
        self.assertEqual(code, 2, stderr)
        self.assertEqual(single_line(self, stderr), (
            f"error: --colmap-text cannot keep the name of {spaced[1]} (and 1 more frames): COLMAP's text format "
            "ends an image name at the first whitespace, so its readers would look for 'frame'; rename the files "
            "without spaces or leave out --colmap-text (the binary model keeps every name)"))


class _Payload:
    """What a malicious checkpoint pickles: a call that unpickling would make."""

    def __reduce__(self):
        return print, ("the payload ran",)


class OutputStorageTest(PipelineTestCase):
    """The output folder's disk: unwritable, full before the run, filling during it."""

    def test_an_output_folder_under_a_file_is_refused_and_nothing_is_created(self) -> None:
        blocker = self.tmp / "a_file"
        blocker.write_text("")
        out = blocker / "out"
        code, stderr = run_cli("--input-dir", FRAMES, "--output-dir", out, "--checkpoint", self.checkpoint, *FAST)
        self.assertEqual(code, 2, stderr)
        self.assertEqual(single_line(self, stderr), f"error: cannot write {out}: Not a directory (ENOTDIR); part of "
                         "that path is a file, not a folder: choose another --output-dir")

    def test_a_read_only_disk_is_refused_and_nothing_is_created(self) -> None:
        disk = mount_tmpfs(self, "1m", read_only=True)
        out = disk / "out"
        code, stderr = run_cli("--input-dir", FRAMES, "--output-dir", out, "--checkpoint", self.checkpoint, *FAST)
        self.assertEqual(code, 2, stderr)
        self.assertEqual(single_line(self, stderr), f"error: cannot write {out}: Read-only file system (EROFS); "
                         "that file system is read-only: choose another --output-dir")

    def test_a_full_disk_before_the_run_stops_it_with_one_line_only(self) -> None:
        disk = mount_tmpfs(self, "256k")
        fill_up(disk)
        out = disk / "runs" / "out"
        result = run_script("--input-dir", FRAMES, "--output-dir", out, "--checkpoint", self.checkpoint,
                            "--no-use-ba", "--num-workers", "0")  # no -q: nothing else may be printed either
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertEqual(result.stderr, f"error: cannot write {out}: {ENOSPC}; free space on that disk or choose "
                         "another --output-dir\n")
        self.assertEqual(sorted(path.name for path in disk.iterdir()), ["filler"])

    def test_a_disk_that_fills_during_the_run_stops_it_and_keeps_the_finished_windows(self) -> None:
        disk = mount_tmpfs(self, "16m")
        out = disk / "out"
        args = ["--input-dir", FRAMES, "--output-dir", out, "--checkpoint", self.checkpoint, *FAST,
                "--window-size", "2", "--window-stride", "2", "--window-batch-size", "1",  # 6 windows
                "--num-workers", "1"]  # the window folders are written in a worker process, as by default
        filled: list[Path] = []

        def fill_after_two_windows() -> None:
            deadline = time.monotonic() + 240
            while not (out / ".state" / "outcomes" / "window_001.json").exists() and time.monotonic() < deadline:
                time.sleep(0.005)
            filled.append(fill_up(disk))

        filler = threading.Thread(target=fill_after_two_windows, daemon=True)
        filler.start()
        result = run_script(*args)
        filler.join()
        self.assertEqual(result.returncode, 2, result.stderr)
        line = single_line(self, result.stderr)
        self.assertRegex(line, rf"^error: cannot write {re.escape(str(out))}/\S+: {re.escape(ENOSPC)}; free space ")
        self.assertTrue(line.endswith("The run stopped; the windows it finished are kept, and the same command "
                                      "continues it"), line)
        for window in (0, 1):  # batches of one window
            folder = out / f"batch_{window:03d}" / f"window_{window:03d}"
            self.assertEqual(pycolmap.Reconstruction(str(folder / "sparse")).num_images(), 2)
            self.assertEqual(json.loads((folder / "window.json").read_text())["status"], "ok")
        self.assertEqual(list(out.glob("**/.*partial*")), [])
        self.assertEqual(list((out / ".state" / "claims").iterdir()), [])

        filled[0].unlink()  # room again: the same command finishes the run, keeping what was finished
        code, stderr = run_cli(*args)
        self.assertEqual(code, 0, stderr)
        log = {line["window_id"]: line["status"] for line in last_run_log(out)}
        self.assertEqual((log["window_000"], log["window_001"]), ("skipped", "skipped"))
        self.assertEqual({line["status"] for line in read_manifest(out).values()}, {"ok"})
        self.assertEqual(len(read_manifest(out)), 6)

    def test_a_frame_copy_that_does_not_fit_stops_the_run_instead_of_blaming_the_frame(self) -> None:
        videos = self.tmp / "copy_video"
        videos.mkdir()
        write_video(videos / "clip.avi", 4)
        disk = mount_tmpfs(self, "48k")  # the run state fits; a decoded frame (~70 kB as PNG) does not
        out = disk / "out"
        code, stderr = run_cli("--input-dir", videos, "--output-dir", out, "--checkpoint", self.checkpoint, *FAST,
                               *SMALL_WINDOWS)
        self.assertEqual(code, 2, stderr)
        self.assertRegex(single_line(self, stderr), rf"^error: cannot write {re.escape(str(out))}/clip/frames/"
                         rf"frame_00000\d\.png: {re.escape(ENOSPC)}; .* The run stopped")
        self.assertNotIn("cannot read frame", stderr)


class CommandLineTest(unittest.TestCase):
    """The program names itself as it was started, and says its version."""

    CONSOLE_SCRIPT = shutil.which("vae-pipeline", path=str(Path(sys.executable).parent))

    def test_version(self) -> None:
        result = run_script("--version")
        self.assertEqual((result.returncode, result.stdout), (0, f"vae_pipeline {__version__}\n"), result.stderr)

    @unittest.skipIf(CONSOLE_SCRIPT is None, "the vae-pipeline console script is not installed (pip install -e .)")
    def test_console_script_names_itself_and_says_its_version(self) -> None:
        version = subprocess.run([self.CONSOLE_SCRIPT, "--version"], capture_output=True, text=True)
        self.assertEqual((version.returncode, version.stdout), (0, f"vae_pipeline {__version__}\n"), version.stderr)
        usage = subprocess.run([self.CONSOLE_SCRIPT, "--help"], capture_output=True, text=True)
        self.assertEqual(usage.returncode, 0, usage.stderr)
        self.assertTrue(usage.stdout.startswith("usage: vae-pipeline "), usage.stdout[:200])


if __name__ == "__main__":
    unittest.main()
