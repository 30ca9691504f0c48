"""``python -m vae_pipeline.report --output-dir OUT [--evaluation FILE] [--max-windows N]``: write
``OUT/report/index.html`` for a pipeline run.

Exit codes: 0 written, 2 bad input (no such folder, no manifest, an unreadable manifest, summary or evaluation,
an unwritable report folder): a one-line message on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .page import DEFAULT_MAX_WINDOWS, write_report
from .run import EVALUATION, ReportInputError

EXIT_OK, EXIT_USAGE = 0, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vae_pipeline.report",
        description="Write OUT/report/index.html: one self-contained page on a pipeline run (summary, failures, "
        "windows by verdict over each sequence, per-window frames, cameras, points and metrics).",
    )
    parser.add_argument("--output-dir", type=Path, required=True, help="the pipeline's output folder")
    parser.add_argument("--evaluation", type=Path, metavar="FILE",
                        help=f"evaluation JSON of python -m vae_pipeline.evaluate (default: OUT/{EVALUATION} "
                        "when it exists)")
    parser.add_argument("--max-windows", type=int, default=DEFAULT_MAX_WINDOWS, metavar="N",
                        help="draw at most N windows in detail (every window is listed in the table)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_windows < 0:
        parser.error(f"--max-windows must be 0 or more, got {args.max_windows}")
    try:
        path = write_report(args.output_dir, args.evaluation, max_windows=args.max_windows)
    except ReportInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"error: cannot write the report in {args.output_dir}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    print(path)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
