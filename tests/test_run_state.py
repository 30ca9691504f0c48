"""The output folder as run state: real CLI runs (in this process, or as processes at once) sharing one output
folder, reruns with other settings, claims of crashed runs, shards, unreadable inputs and --keep."""

from __future__ import annotations

import collections
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from test_pipeline import FAST, FRAMES, REPO, PipelineTestCase, last_run_log, run_cli
from tiny_model import write_checkpoint

from vae_pipeline.export.compare import read_manifest
from vae_pipeline.frames import discover_sequences
from vae_pipeline.options import PipelineOptions
from vae_pipeline.pipeline import plan_jobs
from vae_pipeline.run_state import ClaimedJobs, RunState


def run_logs(output_dir: Path) -> list[list[dict]]:
    return [[json.loads(line) for line in path.read_text().splitlines()]
            for path in sorted((output_dir / "runs").iterdir())]


def window_folders(output_dir: Path) -> list[str]:
    return sorted(p.relative_to(output_dir).as_posix() for p in output_dir.glob("**/batch_*/window_*"))


def dead_pid() -> int:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(finished.stdout)


class SharedOutputTest(PipelineTestCase):
    def long_frames(self, name: str, count: int) -> Path:
        folder = self.tmp / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        sources = sorted(FRAMES.iterdir())
        for i in range(count):
            shutil.copy(sources[i % len(sources)], folder / f"{i:04d}.png")
        return folder

    def test_two_runs_at_once_share_the_work(self) -> None:
        frames = self.long_frames("shared_frames", 12)  # 11 windows of 2
        out = self.output("shared_out")
        command = [sys.executable, str(REPO / "vae_data_pipeline_batch.py"), "--input-dir", str(frames),
                   "--output-dir", str(out), "--checkpoint", str(self.checkpoint), *FAST, "--window-size", "2",
                   "--window-stride", "1", "--window-batch-size", "1"]
        processes = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        results = [(process.wait(timeout=300), process.stderr.read()) for process in processes]
        for process in processes:
            process.stderr.close()
        for code, stderr in results:
            self.assertEqual((code, stderr), (0, ""))

        logs = run_logs(out)
        self.assertEqual(len(logs), 2)
        computed = [[line["window_id"] for line in log if line["status"] == "ok"] for log in logs]
        self.assertTrue(all(computed), "each run should have done part of the work")
        every_window = [f"window_{i:03d}" for i in range(11)]
        self.assertEqual(sorted(computed[0] + computed[1]), every_window)  # each window computed once
        for log in logs:
            self.assertEqual({line["status"] for line in log} - {"ok", "skipped", "claimed_elsewhere"}, set())
        manifest = read_manifest(out)
        self.assertEqual(sorted(manifest), every_window)
        self.assertEqual({line["status"] for line in manifest.values()}, {"ok"})
        summary = json.loads((out / "summary.json").read_text())
        self.assertEqual((summary["windows"], summary["written"], summary["failed"], summary["pending"]),
                         (11, 11, 0, 0))
        self.assertEqual(list((out / ".state" / "claims").rglob("*.json")), [])

    def test_rerun_with_other_settings_stops_unless_overwrite(self) -> None:
        frames = self.frames_copy("settings_frames", 6)
        out = self.output("settings_out")
        self.run_ok(frames, out, "--window-size", "2", "--window-stride", "2")  # 3 windows
        self.assertEqual(len(window_folders(out)), 3)

        other_model = write_checkpoint(self.tmp / "other_checkpoint", seed=1)
        for args, named in ((["--window-size", "4"], "--window-size 4 differs from 2 used for"),
                            (["--window-size", "2", "--window-stride", "2", "--keep", "all"],
                             "--keep all differs from poor"),
                            (["--window-size", "2", "--window-stride", "2", "--checkpoint", other_model],
                             f"--model {other_model} (weights")):
            with self.subTest(named):
                code, stderr = run_cli("--input-dir", frames, "--output-dir", out, "--checkpoint", self.checkpoint,
                                       *FAST, *args)
                self.assertEqual(code, 2, stderr)
                self.assertEqual(len(stderr.strip().splitlines()), 1, stderr)
                self.assertIn(named, stderr)
                self.assertIn("--overwrite", stderr)
        self.assertEqual(len(window_folders(out)), 3)

        self.run_ok(frames, out, "--window-size", "4", "--overwrite")  # windows 0-3 and 2-5
        self.assertEqual(window_folders(out), ["batch_000/window_000", "batch_000/window_001"])
        for window, first in (("window_000", 0), ("window_001", 2)):
            record = json.loads((out / "batch_000" / window / "window.json").read_text())
            self.assertEqual([f["name"] for f in record["frames"]],
                             [f"{i:04d}.png" for i in range(first, first + 4)])
            self.assertEqual(record["fingerprint"], read_manifest(out)[window]["fingerprint"])
        self.assertEqual(sorted(read_manifest(out)), ["window_000", "window_001"])
        self.run_ok(frames, out, "--window-size", "4")  # the new settings are the folder's now
        self.assertEqual([line["status"] for line in last_run_log(out)], ["skipped", "skipped"])

    def test_a_changed_frame_redoes_only_its_windows(self) -> None:
        frames = self.frames_copy("changed_frames", 4)
        out = self.output("changed_out")
        self.run_ok(frames, out, "--window-size", "2", "--window-stride", "2")
        changed = frames / "0003.png"
        shutil.copy(frames / "0002.png", changed)
        os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
        self.run_ok(frames, out, "--window-size", "2", "--window-stride", "2")
        self.assertEqual({line["window_id"]: line["status"] for line in last_run_log(out)},
                         {"window_000": "skipped", "window_001": "ok"})

    def test_claims_of_crashed_runs_are_taken_over_and_live_ones_are_left(self) -> None:
        frames = self.frames_copy("claims_frames", 6)  # 3 windows of 2
        out = self.output("claims_out")
        claims, leases = out / ".state" / "claims", out / ".state" / "leases"
        claims.mkdir(parents=True)
        leases.mkdir(parents=True)
        host, gone = socket.gethostname(), dead_pid()

        def claim(window: str, run_id: str, claim_host: str, pid: int, lease_expires: float | None) -> Path:
            (claims / f"{window}.json").write_text(json.dumps({"run_id": run_id, "host": claim_host, "pid": pid}))
            if lease_expires is not None:
                (leases / f"{run_id}.json").write_text(json.dumps(
                    {"run_id": run_id, "host": claim_host, "pid": pid, "expires_at": lease_expires}))
            return claims / f"{window}.json"

        # A process on this machine that is gone: stale at once, whatever its lease says.
        claim("window_000", "crashed-here", host, gone, time.time() + 3600)
        # A process on another machine whose lease ran out.
        claim("window_001", "crashed-there", "another-host", 1, time.time() - 1)
        # A process on another machine that is alive: its window is left to it.
        live = claim("window_002", "alive-there", "another-host", 1, time.time() + 3600)

        self.run_ok(frames, out, "--window-size", "2", "--window-stride", "2")
        statuses = {line["window_id"]: line["status"] for line in last_run_log(out)}
        self.assertEqual(statuses, {"window_000": "ok", "window_001": "ok", "window_002": "claimed_elsewhere"})
        self.assertIn("alive-there", next(line["reason"] for line in last_run_log(out)
                                          if line["window_id"] == "window_002"))
        self.assertEqual(sorted(read_manifest(out)), ["window_000", "window_001"])
        summary = json.loads((out / "summary.json").read_text())
        self.assertEqual((summary["written"], summary["failed"], summary["pending"]), (2, 0, 1))
        self.assertEqual([p.name for p in claims.rglob("*.json")], [live.name])
        self.assertEqual(sorted(p.name for p in leases.iterdir()), ["alive-there.json"])

        live.unlink()  # the live run went away without a trace: the next run takes its window
        self.run_ok(frames, out, "--window-size", "2", "--window-stride", "2")
        self.assertEqual({line["window_id"]: line["status"] for line in last_run_log(out)},
                         {"window_000": "skipped", "window_001": "skipped", "window_002": "ok"})

    def test_shards_cover_every_window_once(self) -> None:
        frames = self.frames_copy("shard_frames", 10)
        out = self.output("shard_out")
        args = ("--window-size", "2", "--window-stride", "2")  # 5 windows
        self.run_ok(frames, out, *args, "--shard", "0/2")
        first = {line["window_id"] for line in last_run_log(out)}
        summary = json.loads((out / "summary.json").read_text())
        self.assertEqual((summary["windows"], summary["written"], summary["pending"]), (5, len(first), 5 - len(first)))
        self.run_ok(frames, out, *args, "--shard", "1/2")
        second = {line["window_id"] for line in last_run_log(out)}
        self.assertEqual(first & second, set())
        self.assertEqual(sorted(first | second), [f"window_{i:03d}" for i in range(5)])
        self.assertTrue(first and second)
        summary = json.loads((out / "summary.json").read_text())
        self.assertEqual((summary["written"], summary["pending"]), (5, 0))


class InputFailureTest(PipelineTestCase):
    def test_an_unreadable_video_fails_alone(self) -> None:
        root = self.tmp / "mixed_inputs"
        shutil.rmtree(root, ignore_errors=True)
        (root / "good").mkdir(parents=True)
        for source in sorted(FRAMES.iterdir())[:2]:
            shutil.copy(source, root / "good" / source.name)
        (root / "empty.mp4").write_bytes(b"")
        out = self.output("mixed_out")
        code, stderr = run_cli("--input-dir", root, "--output-dir", out, "--checkpoint", self.checkpoint, *FAST,
                               "--window-size", "2", "--window-stride", "2")
        self.assertEqual(code, 1, stderr)
        self.assertNotIn("Traceback", stderr)
        manifest = read_manifest(out)
        self.assertEqual(manifest["good/window_000"]["status"], "ok")
        self.assertTrue((out / "good" / "batch_000" / "window_000" / "window.json").is_file())
        line = manifest["empty"]
        self.assertEqual((line["status"], line["window"], line["folder"]), ("failed", None, None))
        self.assertIn("empty.mp4", line["reason"])
        self.assertEqual(line["source"], str(root / "empty.mp4"))
        summary = json.loads((out / "summary.json").read_text())
        self.assertEqual((summary["written"], summary["sequences_failed"], summary["run_failed"]), (1, 1, 1))

        (root / "empty.mp4").unlink()  # gone: the next run forgets its failure
        self.run_ok(root, out, "--window-size", "2", "--window-stride", "2")
        self.assertEqual(sorted(read_manifest(out)), ["good/window_000"])


class KeepTest(PipelineTestCase):
    def test_keep_good_drops_poor_windows(self) -> None:
        frames = self.frames_copy("keep_frames", 4)
        out = self.output("keep_out")
        # Without bundle adjustment nothing has checked the geometry: every window is at best poor.
        self.run_ok(frames, out, "--window-size", "2", "--window-stride", "2", "--keep", "good")
        self.assertEqual(window_folders(out), [])
        manifest = read_manifest(out)
        self.assertEqual(sorted(manifest), ["window_000", "window_001"])  # frames 0-1 and 2-3
        for line in manifest.values():
            self.assertEqual((line["status"], line["verdict"], line["folder"]), ("dropped", "poor", None))
            self.assertIn("below --keep good", line["reason"])
            self.assertTrue(line["verdict_reason"])
            self.assertGreater(line["metrics"]["points"], 0)
        summary = json.loads((out / "summary.json").read_text())
        self.assertEqual((summary["written"], summary["dropped"], summary["failed"]), (0, 2, 0))
        self.run_ok(frames, out, "--window-size", "2", "--window-stride", "2", "--keep", "good")  # dropped windows are finished
        self.assertEqual(collections.Counter(line["status"] for line in last_run_log(out)), {"skipped": 2})


class ClaimedBatchesTest(PipelineTestCase):
    def test_a_batch_holds_windows_of_one_sequence_whatever_the_executor(self) -> None:
        root = self.tmp / "two_folders"
        shutil.rmtree(root, ignore_errors=True)
        sources = sorted(FRAMES.iterdir())
        for folder, chosen in (("a", sources[:6]), ("b", sources[6:10])):
            (root / folder).mkdir(parents=True)
            for source in chosen:
                shutil.copy(source, root / folder / source.name)
        options = PipelineOptions(root, self.output("batches_out"), window_size=2, window_stride=2)
        jobs = plan_jobs(discover_sequences(root), options)  # a: 3 windows, b: 2
        with RunState(options.output_dir) as state:
            source = ClaimedJobs(state, jobs)
            batches = []
            while (taken := source.take(4)).claimed:
                batches.append([job.window_id for job in taken.claimed])
                self.assertEqual(source.pass_ended, len(batches) == 2)
        self.assertEqual(batches, [["a/window_000", "a/window_001", "a/window_002"], ["b/window_000", "b/window_001"]])
