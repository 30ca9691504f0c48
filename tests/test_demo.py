"""demo_batch_processing.py on the CPU: the serial loop and the overlapped batched run (with a worker process)
write the same results, and the table ends in the lines users and scripts read."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import demo_batch_processing  # noqa: E402


class DemoTest(unittest.TestCase):
    def test_serial_and_overlapped_runs_agree(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            report_path = Path(tmp) / "demo.json"
            stdout = io.StringIO()
            with contextlib.redirect_stdout(stdout):
                code = demo_batch_processing.main([
                    "--output-dir", str(Path(tmp) / "runs"), "--json", str(report_path), "--no-use-ba",
                    "--conf-thres-value", "0", "--max-points", "2000", "--window-size", "4",
                    "--window-stride", "2", "--window-batch-size", "2", "--num-workers", "1",
                ])
            lines = stdout.getvalue().strip().splitlines()
            self.assertEqual(code, 0, stdout.getvalue())
            self.assertEqual(lines[-2], "same results: yes")
            self.assertRegex(lines[-1], r"^speedup: \d+\.\d\dx$")
            report = json.loads(report_path.read_text())
            self.assertTrue(report["same_results"])
            self.assertEqual([run["windows"] for run in report["runs"]], [5, 5])
            self.assertEqual([run["forward_passes"] for run in report["runs"]], [5, 3])
            for run in report["runs"]:
                self.assertGreater(run["device_busy"], 0)
                self.assertLessEqual(run["device_busy"], 1)


if __name__ == "__main__":
    unittest.main()
