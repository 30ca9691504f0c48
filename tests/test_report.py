"""The run report on a real run: the tiny random-weight model through the real CLI (poor windows and a window
whose frame cannot be read), plus windows finished from exact ground truth by the pipeline's own finish stage
(good ones, and one written without points: failed), evaluated against that ground truth. The page must be
self-contained, list every window and every failure reason, show the evaluation's numbers, and load in a real
headless Chromium without errors (skipped where none is installed)."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.gt_windows import gt_windows  # noqa: E402
from headless_chromium import find_chromium, load_page  # noqa: E402
from tiny_model import write_checkpoint  # noqa: E402
from vae_pipeline.cli import main as pipeline_main  # noqa: E402
from vae_pipeline.evaluation import evaluate_output  # noqa: E402
from vae_pipeline.reconstruct import ReconstructionOptions  # noqa: E402
from vae_pipeline.report import ReportInputError, read_run, render_page, write_report  # noqa: E402
from vae_pipeline.report.__main__ import main as report_main  # noqa: E402
from vae_pipeline.report.figures import stack_rows, window_anchor  # noqa: E402
from vae_pipeline.report.scene import WindowScene  # noqa: E402

TESTDATA = REPO / "testdata"
FAST = ["--no-use-ba", "--conf-thres-value", "0", "--max-points", "2000", "--num-workers", "0", "-q",
        "--window-size", "4", "--window-stride", "2"]
BROKEN_FRAME = "0004.png"


def run_report(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vae_pipeline.report", *args], check=False, capture_output=True,
                          text=True, cwd=REPO, timeout=300)


class PageParser(HTMLParser):
    """Every tag with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def parse(page: str) -> PageParser:
    parser = PageParser()
    parser.feed(page)
    return parser


def manifest_lines(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "manifest.jsonl").read_text().splitlines()]


def detail_section(page: str, window_id: str) -> str:
    start = page.index(f'id="{window_anchor(window_id)}"')
    return page[start:page.index("</section>", start)]


class ReportTestCase(unittest.TestCase):
    """One real run, built once for every test class that derives from this one: the CLI on two sequences, then
    three ground-truth windows added to its folder."""

    @classmethod
    def setUpClass(cls) -> None:
        if "output" not in ReportTestCase.__dict__:
            ReportTestCase.build_run()

    @classmethod
    def build_run(cls) -> None:
        cls.tmp = Path(tempfile.mkdtemp(prefix="vae_report_test_"))
        unittest.addModuleCleanup(shutil.rmtree, cls.tmp, ignore_errors=True)
        inputs = cls.tmp / "input"
        arc, broken = inputs / "arc" / "images", inputs / "broken" / "images"
        arc.mkdir(parents=True)
        broken.mkdir(parents=True)
        for path in sorted((TESTDATA / "scene_arc" / "images").iterdir())[:8]:
            shutil.copy(path, arc / path.name)
        for path in sorted((TESTDATA / "scene_forward" / "images").iterdir())[:6]:
            shutil.copy(path, broken / path.name)
        (broken / BROKEN_FRAME).write_bytes((broken / BROKEN_FRAME).read_bytes()[:300])

        cls.output = cls.tmp / "out"
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            code = pipeline_main(["--input-dir", str(inputs), "--output-dir", str(cls.output),
                                  "--checkpoint", str(write_checkpoint(cls.tmp / "checkpoint")), *FAST])
        assert code == 1, f"the run should fail one window: exit {code}\n{stderr.getvalue()}"

        # Windows of exact ground truth finished as the workers finish them: two with BA (good), one exported
        # feed-forward from a prediction without depth (no points: failed). Their outcomes join the manifest.
        windows = gt_windows(TESTDATA / "scene_forward", window_size=4, stride=4)
        with open(cls.output / "manifest.jsonl", "a") as manifest:
            for window, use_ba in zip(windows, (True, True, False)):
                outcome = window.finish(cls.output, ReconstructionOptions(use_ba=use_ba), keep="all")
                manifest.write(json.dumps(dataclasses.asdict(outcome)) + "\n")
        cls.lines = manifest_lines(cls.output)

        # Without an evaluation first, then with the evaluation JSON beside the run (found by default).
        cls.page_without_evaluation = write_report(cls.output).read_text()
        gt = cls.tmp / "gt"
        for sequence, source in (("arc", "scene_arc"), ("scene_forward", "scene_forward")):
            (gt / sequence).mkdir(parents=True)
            (gt / sequence / "gt").symlink_to(TESTDATA / source / "gt")
        cls.evaluation = evaluate_output(cls.output, gt)
        cls.evaluation.write_json(cls.output / "evaluation.json")
        cls.process = run_report("--output-dir", str(cls.output))
        cls.page_path = cls.output / "report" / "index.html"
        cls.page = cls.page_path.read_text()


class ReportPageTest(ReportTestCase):
    def test_the_run_has_every_kind_of_window(self) -> None:
        self.assertEqual(self.process.returncode, 0, self.process.stderr)
        self.assertEqual(self.process.stdout.strip(), str(self.page_path))
        states = {window.state for window in read_run(self.output).windows}
        self.assertEqual(states, {"good", "poor", "failed", "error"})

    def test_page_is_self_contained(self) -> None:
        parsed = parse(self.page)
        images = [attrs for tag, attrs in parsed.tags if tag == "img"]
        self.assertGreater(len(images), 0)
        for attrs in images:
            self.assertRegex(attrs["src"], r"^data:image/(png|jpeg);base64,")
        for tag, attrs in parsed.tags:
            for name in ("src", "href", "xlink:href"):
                value = attrs.get(name)
                if value is not None and tag != "img":
                    self.assertTrue(value.startswith("#"), f"<{tag} {name}={value!r}> leaves the page")
            self.assertNotIn(tag, ("link", "iframe", "object", "embed"))
        ids = [attrs["id"] for _, attrs in parsed.tags if "id" in attrs]
        self.assertEqual(len(ids), len(set(ids)), "ids repeat on the page")
        self.assertNotRegex(self.page, r"https?://")
        self.assertNotIn("@import", self.page)
        self.assertNotRegex(self.page, r"url\((?!#)")
        for match in re.finditer(r"data:image/(png|jpeg);base64,([A-Za-z0-9+/=]+)", self.page):
            with Image.open(io.BytesIO(base64.b64decode(match.group(2)))) as image:
                image.load()
                self.assertEqual(image.format.lower(), match.group(1))

    def test_every_window_and_every_failure_reason_is_listed(self) -> None:
        rows = re.findall(r'<tr data-state="([a-z]+)">(.*?)</tr>', self.page, re.S)
        self.assertEqual(len(rows), len(self.lines))
        listed = "".join(row for _, row in rows)
        for line in self.lines:
            self.assertIn(f">{escape(line['window_id'])}<", listed)
        failed = [line for line in self.lines if line["status"] == "failed"]
        self.assertEqual(len(failed), 1)
        self.assertIn(BROKEN_FRAME, failed[0]["reason"])
        judged_failed = [line for line in self.lines if line["verdict"] == "failed"]
        self.assertEqual(len(judged_failed), 1)
        failures = self.page[self.page.index("<h2>Failures"):self.page.index("<h2>Windows over")]
        for reason in (failed[0]["reason"], judged_failed[0]["verdict_reason"]):
            self.assertIn(escape(reason), failures)  # in full
        for line in self.lines:
            for reason in (line["reason"], line["verdict_reason"]):
                if reason:
                    self.assertIn(escape(reason), self.page)

    def test_summary_counts_and_throughput(self) -> None:
        counts = {state: 0 for state in ("good", "poor", "failed", "error")}
        for window in read_run(self.output).windows:
            counts[window.state] += 1
        self.assertEqual(counts, {"good": 2, "poor": 4, "failed": 1, "error": 1})
        summary = self.page[self.page.index("<h2>Summary"):self.page.index("<h2>Failures")]
        for label, count in (("good", 2), ("poor", 4), ("failed", 1), ("run failed", 1)):
            self.assertRegex(summary, rf'<div class="n">{count}</div><div class="k">{label} \(')
        windows_per_s = json.loads((self.output / "summary.json").read_text())["windows_per_s"]
        self.assertIn(f'<div class="n">{windows_per_s:,.3f}</div><div class="k">windows per second', summary)

    def test_each_sequence_has_a_timeline_linked_to_its_windows(self) -> None:
        timelines = self.page[self.page.index("<h2>Windows over"):self.page.index("<h2>All windows")]
        self.assertEqual(timelines.count("<svg"), 3)
        targets = re.findall(r'<a xlink:href="#([^"]+)"', timelines)
        with_folder = [line for line in self.lines if line["status"] == "ok"]
        self.assertEqual(sorted(targets), sorted(window_anchor(line["window_id"]) for line in with_folder))
        for target in targets:
            self.assertIn(f'id="{target}"', self.page)

    def test_window_details_show_frames_cameras_and_metrics(self) -> None:
        for line in self.lines:
            if line["status"] != "ok":
                self.assertNotIn(f'id="{window_anchor(line["window_id"])}"', self.page)
                continue
            section = detail_section(self.page, line["window_id"])
            strip, views = re.findall(r'src="data:image/(?:jpeg|png);base64,([^"]+)"', section)
            with Image.open(io.BytesIO(base64.b64decode(strip))) as image:
                self.assertGreater(image.width, 3 * image.height)  # four frames side by side
            with Image.open(io.BytesIO(base64.b64decode(views))) as image:
                self.assertGreater(np.asarray(image.convert("L")).std(), 5)
            metrics = json.loads((self.output / line["folder"] / "window.json").read_text())["metrics"]
            self.assertIn(f"{metrics['points']:,}", section)
            self.assertIn(f"{metrics['reproj_error_per_point_px']:.3f} px", section)
            self.assertIn(f"{metrics['triangulation_angle_median_deg']:.2f}\u00b0", section)
            if line["verdict_reason"]:
                self.assertIn(escape(line["verdict_reason"]), section)

    def test_evaluation_numbers_appear_per_window_and_overall(self) -> None:
        self.assertNotIn("Against ground truth", self.page_without_evaluation)
        self.assertIn("Accuracy against ground truth", self.page)
        self.assertGreaterEqual(len(self.evaluation.windows), 6)
        for window in self.evaluation.windows:
            section = detail_section(self.page, window.window_id)
            figures = window.figures
            self.assertIn("Against ground truth", section)
            for value in (f"{figures.rra_mean_deg:.2f}\u00b0", f"{figures.rta_median_deg:.2f}\u00b0",
                          f"{figures.auc30:.3f}", f"{figures.auc5:.3f}", f"{figures.ate:.4f}"):
                self.assertIn(value, section)
        overall = self.evaluation.overall
        self.assertIn(f'<div class="n">{overall.auc30:.3f}</div>', self.page)
        for unmatched in self.evaluation.unmatched_windows:
            self.assertIn(escape(unmatched.reason), self.page)

    def test_a_rerun_takes_the_verdicts_of_skipped_windows_from_their_folders(self) -> None:
        # A rerun records finished windows as "skipped", without verdict or metrics: window.json has them.
        rerun = self.tmp / "rerun"
        rerun.mkdir()
        for child in self.output.iterdir():
            if child.is_dir() and child.name != "report":
                (rerun / child.name).symlink_to(child)
        skipped = [{**line, "status": "skipped", "reason": "finished in an earlier run", "ba": None, "verdict": None,
                    "verdict_reason": None, "metrics": {}, "timings": {}}
                   for line in self.lines if line["status"] == "ok"]
        (rerun / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in skipped))
        before = {window.window_id: (window.state, window.metrics) for window in read_run(self.output).windows}
        after = {window.window_id: (window.state, window.metrics) for window in read_run(rerun).windows}
        self.assertEqual(after, {window_id: before[window_id] for window_id in after})
        self.assertEqual(len(after), 7)

    def test_max_windows_caps_the_details_not_the_table(self) -> None:
        page = render_page(read_run(self.output), max_windows=2)
        self.assertEqual(page.count('<section class="window"'), 2)
        self.assertIn("The first 2 of 7 windows with a folder", page)
        self.assertEqual(len(re.findall(r'<tr data-state="', page)), len(self.lines))
        targets = re.findall(r'<a (?:xlink:)?href="#([^"]+)"', page)
        self.assertEqual(len(set(targets)), 2)  # links only to the windows drawn
        for target in targets:
            self.assertIn(f'id="{target}"', page)


class ReportInBrowserTest(ReportTestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.chromium = find_chromium()
        if cls.chromium is None:
            raise unittest.SkipTest("no Chromium installed (Debian: apt-get install chromium)")
        super().setUpClass()

    def test_page_loads_in_headless_chromium_without_errors(self) -> None:
        loaded = load_page(self.chromium, self.page_path, 1280, 2000, evaluate={
            "images": "document.images.length",
            "unloaded": "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length",
            "rows_shown_for_good": "document.querySelector('.filters button[data-filter=good]').click();"
                                   "document.querySelectorAll('tr[data-state]:not(.hidden)').length",
        })
        self.assertEqual(loaded.errors, [])
        self.assertEqual(loaded.facts["images"], self.page.count("<img "))
        self.assertEqual(loaded.facts["unloaded"], 0)
        self.assertEqual(loaded.facts["rows_shown_for_good"], 2)
        # REPORT_SCREENSHOT=FILE keeps the screenshot, to look at the page as the test saw it.
        screenshot = Path(os.environ.get("REPORT_SCREENSHOT", self.tmp / "report.png"))
        screenshot.write_bytes(loaded.screenshot)
        with Image.open(screenshot) as image:
            self.assertEqual(image.size, (1280, 2000))
            pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
        self.assertGreater(pixels.std(), 20)  # not a blank page
        coloured = (pixels.max(axis=2) - pixels.min(axis=2)) > 80
        self.assertGreater(coloured.mean(), 0.005)  # verdict colours, frames and plots are drawn


class ReportInputTest(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="vae_report_input_"))
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def write_manifest(self, *lines: dict | str, name: str = "out") -> Path:
        output = self.tmp / name
        output.mkdir()
        text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
        (output / "manifest.jsonl").write_text(text)
        return output

    def test_dropped_windows_sequence_failures_and_new_fields(self) -> None:
        # Lines as the finalised manifest writes them: a window dropped below --keep (no folder), a sequence that
        # could not be read (no window), and the run-state fields.
        output = self.write_manifest(
            {"window_id": "clip/window_000", "sequence": "clip", "window": 0, "batch": 0, "folder": None,
             "frames": ["a.png", "b.png"], "status": "dropped", "reason": None, "ba": "ok", "ba_reason": None,
             "verdict": "poor", "verdict_reason": "too few points: 12 (at least 100)", "metrics": {"points": 12},
             "timings": {}, "fingerprint": "f00d", "run_id": "r1", "finished_at": "2026-01-01T00:00:00Z"},
            {"window_id": "bad_video", "sequence": "bad_video", "window": None, "batch": None, "folder": None,
             "frames": [], "status": "failed", "reason": "cannot open video bad_video.mp4: no frames",
             "verdict": None, "metrics": {}, "timings": {}},
        )
        run = read_run(output)
        self.assertEqual([w.state for w in run.windows], ["dropped"])
        self.assertEqual(run.sequence_failures[0].reason, "cannot open video bad_video.mp4: no frames")
        self.assertEqual(run.windows[0].line.run_id, "r1")
        page = write_report(output).read_text()
        self.assertIn("too few points: 12 (at least 100)", page)
        self.assertIn("cannot open video bad_video.mp4: no frames", page)
        self.assertIn(">dropped<", page)
        self.assertIn("No summary.json", page)

    def test_bad_input_is_one_line_and_exit_code_2(self) -> None:
        line = {"window_id": "s/window_000", "sequence": "s", "window": 0, "status": "ok"}
        wrong_type = self.write_manifest({**line, "window": "0"}, name="wrong_type")
        with self.assertRaisesRegex(ReportInputError, r"manifest.jsonl line 1: 'window' must be int, got str"):
            read_run(wrong_type)
        not_json = self.write_manifest(line, "{not json", name="not_json")
        valid = self.write_manifest(line, name="valid")
        (self.tmp / "empty").mkdir()
        (self.tmp / "eval.json").write_text('{"windows": []}')
        cases = [
            (["--output-dir", str(self.tmp / "missing")], "no such folder"),
            (["--output-dir", str(self.tmp / "empty")], "manifest.jsonl: not found"),
            (["--output-dir", str(not_json)], "manifest.jsonl line 2: not JSON"),
            (["--output-dir", str(wrong_type)], "'window' must be int"),
            (["--output-dir", str(valid), "--evaluation", str(self.tmp / "nothing.json")], "not found"),
            (["--output-dir", str(valid), "--evaluation", str(self.tmp / "eval.json")], "not an evaluation JSON"),
        ]
        for args, message in cases:
            stderr = io.StringIO()
            with contextlib.redirect_stderr(stderr):
                code = report_main(args)
            self.assertEqual(code, 2, (args, stderr.getvalue()))
            self.assertIn(message, stderr.getvalue())
            self.assertEqual(len(stderr.getvalue().strip().splitlines()), 1, stderr.getvalue())
        result = run_report(*cases[2][0])  # and as a process of its own: no traceback, exit code 2
        self.assertEqual((result.returncode, result.stdout), (2, ""))
        self.assertEqual(result.stderr.strip().splitlines(), [f"error: {not_json / 'manifest.jsonl'} line 2: "
                                                              "not JSON (Expecting property name enclosed in double "
                                                              "quotes)"])


class LayoutTest(unittest.TestCase):
    def test_overlapping_windows_stack_in_rows(self) -> None:
        self.assertEqual(stack_rows([(0, 7), (4, 11), (8, 15), (12, 19)]), [0, 1, 0, 1])
        self.assertEqual(stack_rows([(0, 3), (4, 7), (8, 11)]), [0, 0, 0])
        self.assertEqual(stack_rows([(0, 9), (1, 9), (2, 9)]), [0, 1, 2])

    def test_views_follow_the_cameras_whatever_the_world_frame(self) -> None:
        # Two cameras looking along world +x, image up along world +z, side by side along world -y.
        rotation = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])  # camera from world
        centres = np.array([[0.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
        corners = np.array([[-0.5, -0.4, 1.0], [0.5, -0.4, 1.0], [-0.5, 0.4, 1.0], [0.5, 0.4, 1.0]])
        frusta = np.stack([np.vstack([c, corners @ rotation + c]) for c in centres])
        scene = WindowScene(("a", "b"), centres, frusta, np.zeros((0, 3)), np.zeros((0, 3), np.uint8), 0)
        right, forward, up = scene.viewing_frame()
        np.testing.assert_allclose(right, [0.0, -1.0, 0.0], atol=1e-12)
        np.testing.assert_allclose(forward, [1.0, 0.0, 0.0], atol=1e-12)
        np.testing.assert_allclose(up, [0.0, 0.0, 1.0], atol=1e-12)


if __name__ == "__main__":
    unittest.main()
