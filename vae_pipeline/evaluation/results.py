"""What an evaluation finds, per window and overall, and its JSON form (what the report reads back)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class AccuracyFigures:
    """Accuracy of cameras against ground truth: of one window, or of all windows pooled.

    Angles in degrees over the frame pairs i < j; ``auc30``/``auc5`` in [0, 1] (higher is better); ``ate`` and
    ``max_centre_error`` as fractions of the window's extent (pooled: the mean of the windows' ATE, the largest
    centre error); ``focal_error`` the mean relative focal-length error over frames. None where undefined: ATE when
    the ground-truth cameras share one centre, focal error without ground-truth intrinsics.
    """

    frames_matched: int
    pairs: int
    rra_mean_deg: float
    rra_median_deg: float
    rta_mean_deg: float
    rta_median_deg: float
    max_rra_deg: float
    max_rta_deg: float
    auc30: float
    auc5: float
    ate: float | None
    max_centre_error: float | None
    focal_error: float | None


@dataclass(frozen=True)
class WindowEvaluation:
    """One window compared with its sequence's ground truth.

    ``folder`` is relative to the output folder; ``ground_truth`` the ``gt/`` folder used. Frames of the window
    that could not take part: ``frames_without_gt`` (in the model, no ground-truth pose) and
    ``frames_not_in_model`` (in ``window.json``, not registered in the model).
    """

    window_id: str
    sequence: str
    folder: str
    ground_truth: str
    figures: AccuracyFigures
    frames_without_gt: tuple[str, ...] = ()
    frames_not_in_model: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "window_id": self.window_id,
            "sequence": self.sequence,
            "folder": self.folder,
            **dataclasses.asdict(self.figures),
            "ground_truth": self.ground_truth,
            "frames_without_gt": list(self.frames_without_gt),
            "frames_not_in_model": list(self.frames_not_in_model),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WindowEvaluation:
        return cls(
            window_id=data["window_id"],
            sequence=data["sequence"],
            folder=data["folder"],
            ground_truth=data["ground_truth"],
            figures=_figures(data),
            frames_without_gt=tuple(data["frames_without_gt"]),
            frames_not_in_model=tuple(data["frames_not_in_model"]),
        )


@dataclass(frozen=True)
class UnmatchedWindow:
    """A window folder that could not be evaluated, and why. ``window_id``/``sequence`` are None when its
    ``window.json`` could not be read."""

    folder: str
    reason: str
    window_id: str | None = None
    sequence: str | None = None


@dataclass(frozen=True)
class Evaluation:
    """Every window folder of an output folder: evaluated ones, unmatched ones, and the pooled figures (None when
    no window could be evaluated)."""

    output_dir: str
    gt_dir: str
    windows: tuple[WindowEvaluation, ...]
    unmatched_windows: tuple[UnmatchedWindow, ...]
    overall: AccuracyFigures | None

    def to_dict(self) -> dict[str, Any]:
        overall = None if self.overall is None else {"windows": len(self.windows), **dataclasses.asdict(self.overall)}
        return {
            "output_dir": self.output_dir,
            "gt_dir": self.gt_dir,
            "windows": [window.to_dict() for window in self.windows],
            "overall": overall,
            "unmatched_windows": [dataclasses.asdict(window) for window in self.unmatched_windows],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evaluation:
        return cls(
            output_dir=data["output_dir"],
            gt_dir=data["gt_dir"],
            windows=tuple(WindowEvaluation.from_dict(window) for window in data["windows"]),
            unmatched_windows=tuple(UnmatchedWindow(**window) for window in data["unmatched_windows"]),
            overall=None if data["overall"] is None else _figures(data["overall"]),
        )

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def read_evaluation(path: Path) -> Evaluation:
    """An evaluation JSON written by ``Evaluation.write_json``."""
    return Evaluation.from_dict(json.loads(Path(path).read_text()))


def _figures(data: dict[str, Any]) -> AccuracyFigures:
    return AccuracyFigures(**{field.name: data[field.name] for field in dataclasses.fields(AccuracyFigures)})
