"""``python -m vae_pipeline.evaluate --output-dir OUT --gt-dir GT [--json FILE]``: accuracy of a run's windows
against ground-truth cameras, as a table on stdout and optionally as JSON.

Exit codes: 0 evaluated (windows without ground truth are listed, not fatal), 2 bad input (missing folder, no
windows, unreadable ground truth, unwritable JSON): a one-line message on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .evaluation import Evaluation, EvaluationInputError, GroundTruthError, evaluate_output
from .evaluation.results import AccuracyFigures

EXIT_OK, EXIT_USAGE = 0, 2

COLUMNS = ("frames", "pairs", "RRA mean", "RRA med", "RTA mean", "RTA med", "AUC@30", "AUC@5", "ATE", "focal err")
LEGEND = (
    "RRA/RTA: relative rotation / translation-direction error over frame pairs, degrees; AUC@30/AUC@5: area under\n"
    "the accuracy curve of max(RRA, RTA) up to 30 / 5 degrees; ATE: camera-centre RMSE after a similarity\n"
    "alignment, as a fraction of the window's extent; focal err: mean |f - f_gt| / f_gt."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vae_pipeline.evaluate",
        description="Compare every window a pipeline run wrote with ground-truth cameras. Ground truth per "
        "sequence (frames in folder F of the input): GT/F/gt/ or GT/<parent of F>/gt/, as poses.txt (+ "
        "intrinsics.txt) or a COLMAP model.",
    )
    parser.add_argument("--output-dir", type=Path, required=True, help="the pipeline's output folder")
    parser.add_argument("--gt-dir", type=Path, required=True, help="ground truth, laid out like the input folder")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures to this JSON file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        evaluation = evaluate_output(args.output_dir, args.gt_dir)
    except (EvaluationInputError, GroundTruthError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(format_evaluation(evaluation))
    if args.json is not None:
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            evaluation.write_json(args.json)
        except OSError as exc:
            print(f"error: --json {args.json}: cannot write ({exc.strerror or exc})", file=sys.stderr)
            return EXIT_USAGE
    return EXIT_OK


def format_evaluation(evaluation: Evaluation) -> str:
    """The table (one row per window, then the overall row) and what could not be matched."""
    rows = [(window.window_id, window.figures) for window in evaluation.windows]
    if evaluation.overall is not None:
        count = len(evaluation.windows)
        rows.append((f"overall ({count} window{'s' if count != 1 else ''})", evaluation.overall))
    table = [["window", *COLUMNS], *([name, *_cells(figures)] for name, figures in rows)]
    widths = [max(len(row[column]) for row in table) for column in range(len(COLUMNS) + 1)]
    lines = [
        f"{row[0]:<{widths[0]}}" + "".join(f"  {cell:>{width}}" for cell, width in zip(row[1:], widths[1:]))
        for row in table
    ]
    if evaluation.overall is None:
        lines.append("no window could be evaluated")
    lines += ["", LEGEND]

    for label, attribute in (("frames without ground truth", "frames_without_gt"),
                             ("frames not registered in the model", "frames_not_in_model")):
        listed = [(window.window_id, getattr(window, attribute)) for window in evaluation.windows]
        listed = [(window_id, names) for window_id, names in listed if names]
        if listed:
            lines.append(f"{label}:")
            lines.extend(f"  {window_id}: {', '.join(names)}" for window_id, names in listed)
    if evaluation.unmatched_windows:
        lines.append(f"windows not evaluated ({len(evaluation.unmatched_windows)}):")
        lines.extend(
            f"  {window.window_id or window.folder}: {window.reason}" for window in evaluation.unmatched_windows
        )
    return "\n".join(lines)


def _cells(figures: AccuracyFigures) -> list[str]:
    def number(value: float | None, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    return [
        str(figures.frames_matched),
        str(figures.pairs),
        number(figures.rra_mean_deg, 2),
        number(figures.rra_median_deg, 2),
        number(figures.rta_mean_deg, 2),
        number(figures.rta_median_deg, 2),
        number(figures.auc30, 3),
        number(figures.auc5, 3),
        number(figures.ate, 4),
        number(figures.focal_error, 4),
    ]


if __name__ == "__main__":
    sys.exit(main())
