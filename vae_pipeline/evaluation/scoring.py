"""Score every window folder of a pipeline run against the ground truth of its sequence.

Steps: find the window folders, read each one's cameras, locate and read its sequence's ground truth (once per
sequence), match frames by file name, compute the errors of the matched frames, summarise per window and pooled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cameras import CameraPoses
from .ground_truth import ground_truth_candidates, locate_ground_truth, read_ground_truth
from .metrics import (
    absolute_trajectory_error,
    auc,
    centre_errors,
    focal_errors,
    relative_pose_errors,
)
from .results import AccuracyFigures, Evaluation, UnmatchedWindow, WindowEvaluation
from .windows import WindowModel, WindowReadError, find_window_folders, read_window


class EvaluationInputError(ValueError):
    """The output or ground-truth folder cannot be evaluated at all; the message is one line for the user."""


@dataclass(frozen=True)
class FrameMatch:
    """The window's frames by what can be done with them: ``matched`` (in the model and in the ground truth, in
    window order), ``without_gt`` (in the model only) and ``not_in_model`` (listed by the window, not registered)."""

    matched: tuple[str, ...]
    without_gt: tuple[str, ...]
    not_in_model: tuple[str, ...]


@dataclass(frozen=True)
class WindowErrors:
    """Raw errors of one window's N matched frames: ``rra_deg``/``rta_deg`` [P] per pair i < j,
    ``centre_errors`` [N] as fractions of the extent (NaN when it is 0), ``focal_errors`` [N] or None."""

    rra_deg: np.ndarray
    rta_deg: np.ndarray
    centre_errors: np.ndarray
    focal_errors: np.ndarray | None


def match_frames(window: WindowModel, gt: CameraPoses) -> FrameMatch:
    """Pair the window's registered images with ground-truth poses by file name."""
    in_model, in_gt = set(window.cameras.names), set(gt.names)
    listed = set(window.frames)
    ordered = [name for name in window.frames if name in in_model]
    ordered += [name for name in window.cameras.names if name not in listed]
    return FrameMatch(
        matched=tuple(name for name in ordered if name in in_gt),
        without_gt=tuple(name for name in ordered if name not in in_gt),
        not_in_model=tuple(name for name in window.frames if name not in in_model),
    )


def window_errors(pred: CameraPoses, gt: CameraPoses) -> WindowErrors:
    """Errors of ``pred`` against ``gt``: the same images in the same order.

    Focal lengths compare in the prediction's pixels: a ground truth given for another image size is scaled by
    the ratio of the widths.
    """
    rra, rta = relative_pose_errors(pred.cam_from_world, gt.cam_from_world)
    focal = None
    if pred.focal is not None and gt.focal is not None:
        gt_focal = gt.focal
        if pred.sizes is not None and gt.sizes is not None:
            gt_focal = gt_focal * pred.sizes[:, 0] / gt.sizes[:, 0]
        focal = focal_errors(pred.focal, gt_focal)
    return WindowErrors(rra, rta, centre_errors(pred.centres, gt.centres), focal)


def summarize(windows: Sequence[WindowErrors]) -> AccuracyFigures:
    """Figures of one window, or of several pooled: pair and frame errors pooled, ATE averaged over windows."""
    rra = np.concatenate([window.rra_deg for window in windows])
    rta = np.concatenate([window.rta_deg for window in windows])
    pair_errors = np.maximum(rra, rta)
    defined_centre_errors = [w.centre_errors for w in windows if not np.isnan(w.centre_errors).any()]
    focal = [window.focal_errors for window in windows if window.focal_errors is not None]
    return AccuracyFigures(
        frames_matched=sum(len(window.centre_errors) for window in windows),
        pairs=len(rra),
        rra_mean_deg=float(np.mean(rra)),
        rra_median_deg=float(np.median(rra)),
        rta_mean_deg=float(np.mean(rta)),
        rta_median_deg=float(np.median(rta)),
        max_rra_deg=float(np.max(rra)),
        max_rta_deg=float(np.max(rta)),
        auc30=auc(pair_errors, 30),
        auc5=auc(pair_errors, 5),
        ate=(
            float(np.mean([absolute_trajectory_error(errors) for errors in defined_centre_errors]))
            if defined_centre_errors else None
        ),
        max_centre_error=(
            float(max(np.max(errors) for errors in defined_centre_errors)) if defined_centre_errors else None
        ),
        focal_error=float(np.mean(np.concatenate(focal))) if focal else None,
    )


def evaluate_output(output_dir: Path, gt_dir: Path) -> Evaluation:
    """Every window folder under ``output_dir`` against the ground truth under ``gt_dir``.

    Raises EvaluationInputError when either folder is missing or holds no windows, GroundTruthError when a
    ground-truth file cannot be read. A window that cannot be read, has no ground truth, or shares fewer than two
    frames with it is listed in ``unmatched_windows`` with the reason.
    """
    output_dir, gt_dir = Path(output_dir), Path(gt_dir)
    if not output_dir.is_dir():
        raise EvaluationInputError(f"--output-dir {output_dir}: no such folder")
    if not gt_dir.is_dir():
        raise EvaluationInputError(f"--gt-dir {gt_dir}: no such folder")
    folders = find_window_folders(output_dir)
    if not folders:
        raise EvaluationInputError(
            f"--output-dir {output_dir}: no window folders (no window.json below it); give the folder a pipeline "
            "run wrote"
        )

    ground_truths: dict[Path, CameraPoses] = {}
    evaluated: list[tuple[WindowEvaluation, WindowErrors]] = []
    unmatched: list[UnmatchedWindow] = []
    for folder in folders:
        relative = folder.relative_to(output_dir).as_posix()
        try:
            window = read_window(folder)
        except WindowReadError as exc:
            unmatched.append(UnmatchedWindow(relative, str(exc)))
            continue
        gt_folder = locate_ground_truth(gt_dir, window.sequence)
        if gt_folder is None:
            tried = " or ".join(str(path) for path in ground_truth_candidates(gt_dir, window.sequence))
            reason = f"no ground truth for sequence {window.sequence!r} (looked in {tried})"
            unmatched.append(UnmatchedWindow(relative, reason, window.window_id, window.sequence))
            continue
        if gt_folder not in ground_truths:
            ground_truths[gt_folder] = read_ground_truth(gt_folder)
        gt = ground_truths[gt_folder]
        match = match_frames(window, gt)
        if len(match.matched) < 2:
            reason = (
                f"{len(match.matched)} of its {len(window.cameras)} registered frames "
                f"{'has' if len(match.matched) == 1 else 'have'} a ground-truth pose in {gt_folder}; "
                "at least 2 are needed"
            )
            unmatched.append(UnmatchedWindow(relative, reason, window.window_id, window.sequence))
            continue
        errors = window_errors(window.cameras.select(match.matched), gt.select(match.matched))
        result = WindowEvaluation(
            window_id=window.window_id,
            sequence=window.sequence,
            folder=relative,
            ground_truth=str(gt_folder),
            figures=summarize([errors]),
            frames_without_gt=match.without_gt,
            frames_not_in_model=match.not_in_model,
        )
        evaluated.append((result, errors))

    evaluated.sort(key=lambda item: (item[0].sequence, item[0].window_id))
    return Evaluation(
        output_dir=str(output_dir),
        gt_dir=str(gt_dir),
        windows=tuple(result for result, _ in evaluated),
        unmatched_windows=tuple(unmatched),
        overall=summarize([errors for _, errors in evaluated]) if evaluated else None,
    )
