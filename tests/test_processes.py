"""Processes and signals, with real CLI runs and real signals: worker processes end with the main process (kill -9
included) and never load torch; Ctrl-C and SIGTERM stop a run with one line and their exit codes; a worker that
dies prints no native stack dump; the next run cleans up and finishes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import unittest
from pathlib import Path

from test_pipeline import FRAMES, REPO, PipelineTestCase

from vae_pipeline.export.compare import read_manifest

WITH_WORKERS = ["--no-use-ba", "--conf-thres-value", "0", "--max-points", "2000", "--num-workers", "2", "-q",
                "--window-size", "2", "--window-stride", "2", "--window-batch-size", "1"]
WINDOWS = 6  # of the 12 frames


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for a parent to reap it is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def children(pid: int) -> dict[int, str]:
    """Child processes of ``pid`` and their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found[int(entry.name)] = command
    return found


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@unittest.skipUnless(Path("/proc/self/stat").exists(), "needs Linux's /proc to find worker processes")
class ProcessTest(PipelineTestCase):
    frames = FRAMES

    def start(self, out: Path, *, new_session: bool = False) -> subprocess.Popen:
        """A real CLI run with two worker processes (the pool starts the second when the first is busy), returned
        once two windows are written."""
        command = [sys.executable, str(REPO / "vae_data_pipeline_batch.py"), "--input-dir", str(self.frames),
                   "--output-dir", str(out), "--checkpoint", str(self.checkpoint), *WITH_WORKERS]
        process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=new_session)
        self.addCleanup(lambda: process.poll() is None and process.kill())

        def started() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"the run ended early: {process.stderr.read()}")
            return len(self.workers(process.pid)) >= 1 and len(list(out.glob("batch_*/window_*"))) >= 2

        wait_for(started, 120, "a worker and two finished windows")
        return process

    @staticmethod
    def workers(pid: int) -> list[int]:
        return [child for child, command in children(pid).items() if "spawn_main" in command]

    def assert_stopped(self, process: subprocess.Popen, signum: int, code: int, word: str) -> None:
        """Signal the run (the whole process group, as a terminal's Ctrl-C does) and check how it ends."""
        workers = self.workers(process.pid)
        os.killpg(process.pid, signum)
        _, stderr = process.communicate(timeout=60)
        self.assertEqual(process.returncode, code, stderr)
        self.assertEqual(len(stderr.strip().splitlines()), 1, stderr)
        self.assertIn(word, stderr)
        wait_for(lambda: not any(map(running, workers)), 10, "the workers to end")

    def test_kill_9_of_the_main_process_ends_its_workers_and_the_next_run_finishes(self) -> None:
        out = self.output("killed")
        process = self.start(out)
        children_of_main = children(process.pid)
        for worker in self.workers(process.pid):
            maps = Path(f"/proc/{worker}/maps").read_text()
            self.assertNotIn("libtorch", maps, "a worker process loaded torch")
        process.kill()
        process.wait()
        wait_for(lambda: not any(map(running, children_of_main)), 10,
                 f"the main process's children {children_of_main} to end")
        process.stderr.close()

        self.run_ok(self.frames, out, *WITH_WORKERS)
        manifest = read_manifest(out)
        self.assertEqual(len(manifest), WINDOWS)
        self.assertEqual({line["status"] for line in manifest.values()}, {"ok"})
        self.assertEqual(list((out / ".state" / "claims").rglob("*.json")), [])
        self.assertEqual(list(out.glob("**/.*partial*")), [])

    def test_ctrl_c_stops_the_run_with_one_line(self) -> None:
        out = self.output("interrupted")
        self.assert_stopped(self.start(out, new_session=True), signal.SIGINT, 130, "interrupted")
        summary = json.loads((out / "summary.json").read_text())
        self.assertGreaterEqual(summary["written"], 2)
        self.assertEqual(summary["failed"], 0)

    def test_sigterm_stops_the_run_with_one_line(self) -> None:
        out = self.output("terminated")
        self.assert_stopped(self.start(out, new_session=True), signal.SIGTERM, 143, "terminated")
        finished = [line for line in read_manifest(out).values() if line["status"] == "ok"]
        self.assertGreaterEqual(len(finished), 2)
        self.assertLess(len(finished), WINDOWS)

    def test_a_worker_killed_mid_run_prints_no_stack_dump(self) -> None:
        out = self.output("worker_killed")
        process = self.start(out)
        os.kill(self.workers(process.pid)[0], signal.SIGKILL)
        _, stderr = process.communicate(timeout=120)
        self.assertEqual(process.returncode, 0, stderr)
        for noise in ("stack trace", "SIGTERM", "Aborted", "Traceback"):
            self.assertNotIn(noise, stderr)
        self.assertEqual(len(read_manifest(out)), WINDOWS)


if __name__ == "__main__":
    unittest.main()
