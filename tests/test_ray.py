"""``--executor ray`` on a real local Ray (CPU only, two CPUs, started once for this module) with a small
random-weight model: the window folders are byte-identical to ``--executor local``'s on the same input, though a
Ray worker is killed while it finishes a window (which is neither lost nor recorded twice), a rerun skips
finished windows, and without Ray installed ``--executor ray`` stops with exit code 2 and one line."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from collections.abc import Iterator
from pathlib import Path

from test_pipeline import FRAMES, REPO, PipelineTestCase, last_run_log, run_cli
from test_processes import running, wait_for

from vae_pipeline.export.compare import compare_window_files, read_manifest, window_files

try:
    import ray
except ImportError:
    ray = None

SCENES = REPO / "testdata"
FINISH_TASK = "ray::MapBatches(finish_windows)"


def setUpModule() -> None:
    if ray is not None:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)


def tearDownModule() -> None:
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def finish_workers() -> list[int]:
    """Ray worker processes running a finish task now (Ray names a busy worker after its task)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().split(b"\0")[0].decode()
            except OSError:
                continue
            if command.startswith(FINISH_TASK):
                found.append(int(entry.name))
    return found


@contextlib.contextmanager
def killing_a_finish_worker() -> Iterator[list[int]]:
    """SIGKILL the first Ray worker seen finishing a window while the block runs; yields the killed pid, once
    there is one."""
    killed: list[int] = []
    stop = threading.Event()

    def kill() -> None:
        while not stop.is_set():
            busy = finish_workers()
            if busy:
                os.kill(busy[0], signal.SIGKILL)
                killed.append(busy[0])
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill, daemon=True)
    killer.start()
    try:
        yield killed
    finally:
        stop.set()
        killer.join()


@unittest.skipIf(ray is None, "Ray is not installed (pip install -e .[ray])")
class RayExecutorTest(PipelineTestCase):
    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        # Two sequences of different frame sizes (518x392 and 518x294 at the model), two windows each.
        cls.two_sequences = cls.tmp / "two_sequences"
        for scene in ("scene_arc", "scene_forward"):
            shutil.copytree(SCENES / scene / "images", cls.two_sequences / scene)

    def run_default(self, output_dir: Path, *extra: str) -> None:
        """Default flags (bundle adjustment on), every verdict kept: random weights make poor geometry."""
        code, stderr = run_cli("--input-dir", self.two_sequences, "--output-dir", output_dir,
                               "--checkpoint", self.checkpoint, "--keep", "all", "-q", *extra)
        self.assertEqual(code, 0, stderr)

    def test_same_bytes_as_local_though_a_worker_dies_and_a_rerun_skips_every_window(self) -> None:
        local, on_ray = self.output("local"), self.output("on_ray")
        self.run_default(local)
        with killing_a_finish_worker() as killed:
            self.run_default(on_ray, "--executor", "ray")
        self.assertTrue(killed, "the Ray run ended before a window was being finished")
        wait_for(lambda: not running(killed[0]), 10, "the killed worker to end")

        # Ray ran the killed worker's window again: every window once, none lost, none recorded twice.
        windows = ["scene_arc/window_000", "scene_arc/window_001", "scene_forward/window_000",
                   "scene_forward/window_001"]
        manifest = read_manifest(on_ray)
        self.assertEqual(sorted(manifest), windows)
        self.assertEqual({line["status"] for line in manifest.values()}, {"ok"})
        self.assertEqual(sorted(line["window_id"] for line in last_run_log(on_ray)), windows)
        self.assertEqual(list((on_ray / ".state" / "claims").rglob("*.json")), [])
        summary = json.loads((on_ray / "summary.json").read_text())
        self.assertEqual((summary["written"], summary["failed"], summary["forward_passes"]), (4, 0, 2))
        self.assertEqual((summary["device"], summary["provenance"]["executor"]), ("ray: 1 x cpu", "ray"))

        # The same bytes as the local run, file by file (links by their target).
        self.assertEqual(len([name for name in window_files(on_ray) if name.endswith("/window.json")]), 4)
        self.assertEqual(compare_window_files(local, on_ray), [])

        stamps = {path: path.stat().st_mtime_ns for path in on_ray.glob("**/window.json")}
        self.run_default(on_ray, "--executor", "ray")
        self.assertEqual({line["status"] for line in last_run_log(on_ray)}, {"skipped"})
        self.assertEqual(json.loads((on_ray / "summary.json").read_text())["forward_passes"], 0)
        self.assertEqual({path: path.stat().st_mtime_ns for path in stamps}, stamps)

    def test_an_address_that_does_not_answer_stops_with_one_line(self) -> None:
        code, stderr = run_cli("--input-dir", FRAMES, "--output-dir", self.output("no_cluster"), "--checkpoint",
                               self.checkpoint, "--executor", "ray", "--ray-address", "127.0.0.1:1", "-q")
        self.assertEqual(code, 2, stderr)
        self.assertEqual(len(stderr.strip().splitlines()), 1, stderr)
        self.assertIn("--ray-address 127.0.0.1:1", stderr)


class WithoutRayTest(unittest.TestCase):
    """A Python whose ``import ray`` fails, as where the extra is not installed."""

    def run_without_ray(self, *args: str) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "sitecustomize.py").write_text(
                "import sys\n"
                "class NoRay:\n"
                "    def find_spec(self, name, path=None, target=None):\n"
                "        if name == 'ray' or name.startswith('ray.'):\n"
                "            raise ImportError(f'No module named {name!r} (blocked by the test)')\n"
                "sys.meta_path.insert(0, NoRay())\n"
            )
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [folder, os.environ.get("PYTHONPATH")]))}
            return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=REPO)

    def test_executor_ray_without_ray_stops_with_one_line(self) -> None:
        with tempfile.TemporaryDirectory() as out:
            result = self.run_without_ray("vae_data_pipeline_batch.py", "--input-dir", str(FRAMES), "--output-dir",
                                          out, "--executor", "ray", "-q")
            self.assertEqual(result.returncode, 2, result.stderr)
            self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
            self.assertIn("pip install -e .[ray]", result.stderr)
            self.assertEqual(list(Path(out).iterdir()), [])  # stopped before touching the output folder

    def test_the_package_imports_without_ray(self) -> None:
        result = self.run_without_ray("-c", "import vae_pipeline.pipeline, vae_pipeline.ray_executor, vae_pipeline.cli; "
                                            "import sys; print('ray' in sys.modules)")
        self.assertEqual((result.returncode, result.stdout.strip()), (0, "False"), result.stderr)


if __name__ == "__main__":
    unittest.main()
