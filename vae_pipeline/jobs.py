"""Plain data about windows: what to compute (``WindowJob``) and what happened (``WindowOutcome``).

No torch here: CPU worker processes import this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .frames import Sequence


@dataclass(frozen=True)
class WindowJob:
    """One window of one sequence: which frames, and where its folder goes."""

    sequence: "Sequence"
    window_index: int
    batch_index: int
    frame_indices: tuple[int, ...]

    @property
    def window_id(self) -> str:
        return (PurePosixPath(self.sequence.name) / f"window_{self.window_index:03d}").as_posix()

    @property
    def frame_names(self) -> list[str]:
        return [self.sequence.frames[i].name for i in self.frame_indices]

    def folder(self, output_dir: Path) -> Path:
        return output_dir / self.sequence.name / f"batch_{self.batch_index:03d}" / f"window_{self.window_index:03d}"


@dataclass
class WindowOutcome:
    """What happened to one window; one line of ``manifest.jsonl``."""

    window_id: str
    sequence: str
    window: int
    batch: int
    folder: str
    frames: list[str]
    status: str  # "ok" | "failed" | "skipped"
    reason: str | None = None
    ba: str | None = None
    verdict: str | None = None
    verdict_reason: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def for_job(cls, job: WindowJob, output_dir: Path, status: str, **extra: Any) -> "WindowOutcome":
        return cls(
            window_id=job.window_id,
            sequence=job.sequence.name,
            window=job.window_index,
            batch=job.batch_index,
            folder=str(job.folder(output_dir).relative_to(output_dir)),
            frames=job.frame_names,
            status=status,
            **extra,
        )


class WindowFailure(Exception):
    """A window that cannot be finished; the message is the reason recorded in the manifest."""


def describe_error(exc: BaseException) -> str:
    """One line: the exception's type and message (which file, what went wrong)."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


FRAME_COPIES_FOLDER = "frames"


def frame_copies_dir(output_dir: Path, sequence_name: str) -> Path:
    """Where frames that cannot be linked as they are on disk are written once per sequence, decoded, for every
    window to link to: video frames, and images whose EXIF orientation or transparency another reader would
    show differently from what the cameras saw."""
    return output_dir / sequence_name / FRAME_COPIES_FOLDER
