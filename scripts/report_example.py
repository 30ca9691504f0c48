"""Write an example run of real frames and its report (the README's screenshot, docs/report.png).

Without the VGGT weights, the output folder is put together from two real sources, both through the pipeline's
own code:
- the CLI with a small random-weight model on ``vggsfm_cake`` (real frames, one of them damaged on purpose):
  nonsense cameras, so no point survives (verdict failed), and a window the run cannot finish (run failed);
- every window of the sequences with ground truth, its cameras the truth disturbed by about VGGT's own errors
  (``benchmarks/gt_windows.py``), reconstructed and written by the CPU workers' ``finish_window`` (bundle
  adjustment, verdict, export), also every third frame of ``tum_fr3_office_1hz`` (wide baselines);
then evaluated against the ground truth and reported.

    python scripts/report_example.py --data DATA --output-dir /tmp/example
    chromium --headless --screenshot=docs/report.png --window-size=1280,1500 /tmp/example/report/index.html

Run from the repository root; the screenshot is then reduced to a palette to stay small.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from benchmarks.gt_windows import gt_windows  # noqa: E402
from tiny_model import write_checkpoint  # noqa: E402
from vae_pipeline.cli import main as pipeline_main  # noqa: E402
from vae_pipeline.evaluation import evaluate_output  # noqa: E402
from vae_pipeline.reconstruct import ReconstructionOptions  # noqa: E402
from vae_pipeline.report import write_report  # noqa: E402

GT_SEQUENCES = (("tum_fr3_office_1hz", 1), ("middlebury_templering", 1), ("strecha_fountain_p11", 1),
                ("tum_fr3_office_1hz", 3))
RANDOM_MODEL_SEQUENCE = "vggsfm_cake"
DAMAGED_FRAME = 7


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data",
                        help="folder of the real sequences named above, each images/ beside gt/ as docs/formats.md describes "
                        "(default: shared/data beside the repository)")
    parser.add_argument("--output-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.output_dir.exists():
        shutil.rmtree(args.output_dir)
    with tempfile.TemporaryDirectory(prefix="report_example_") as tmp:
        frames = Path(tmp) / "input" / RANDOM_MODEL_SEQUENCE
        frames.mkdir(parents=True)
        for i, path in enumerate(sorted((args.data / RANDOM_MODEL_SEQUENCE / "images").iterdir())):
            data = path.read_bytes()
            (frames / path.name).write_bytes(data[: len(data) // 3] if i == DAMAGED_FRAME else data)
        pipeline_main(["--input-dir", str(frames.parent), "--output-dir", str(args.output_dir),
                       "--checkpoint", str(write_checkpoint(Path(tmp) / "checkpoint")), "--num-workers", "0",
                       "--window-size", "4", "--window-stride", "2", "-q"])
    with open(args.output_dir / "manifest.jsonl", "a") as manifest:
        for name, step in GT_SEQUENCES:
            for window in gt_windows(args.data / name, frame_step=step):
                outcome = window.finish(args.output_dir, ReconstructionOptions())
                manifest.write(json.dumps(dataclasses.asdict(outcome)) + "\n")
                print(f"{window.name}: {outcome.verdict} {outcome.verdict_reason or ''}")
    evaluate_output(args.output_dir, args.data).write_json(args.output_dir / "evaluation.json")
    print(write_report(args.output_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
