"""Plain data about windows: what to compute (``WindowJob``) and what happened (``WindowOutcome``, one line of
``manifest.jsonl`` and of a run's log).

No torch here: CPU worker processes import this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .frames import Sequence

# Statuses of manifest lines (a window's latest outcome) ...
OK, FAILED, DROPPED = "ok", "failed", "dropped"
# ... and what a run's own log may also say about a window it did not compute.
SKIPPED, CLAIMED_ELSEWHERE = "skipped", "claimed_elsewhere"
FINISHED = (OK, DROPPED)


def window_folder(sequence: str, batch: int, window: int) -> str:
    """A window's folder relative to the output folder: ``<sequence>/batch_NNN/window_NNN``."""
    return (PurePosixPath(sequence) / f"batch_{batch:03d}" / f"window_{window:03d}").as_posix()


@dataclass(frozen=True)
class WindowJob:
    """One window of one sequence: which frames, where its folder goes, and the fingerprint of everything that
    decides its content (empty when no run state is kept)."""

    sequence: "Sequence"
    window_index: int
    batch_index: int
    frame_indices: tuple[int, ...]
    fingerprint: str = ""

    @property
    def window_id(self) -> str:
        return (PurePosixPath(self.sequence.name) / f"window_{self.window_index:03d}").as_posix()

    @property
    def frame_names(self) -> list[str]:
        return [self.sequence.frames[i].name for i in self.frame_indices]

    @property
    def relative_folder(self) -> str:
        return window_folder(self.sequence.name, self.batch_index, self.window_index)

    def folder(self, output_dir: Path) -> Path:
        return output_dir / self.relative_folder


def iso_utc(timestamp: float | None = None) -> str:
    """ISO 8601 in UTC (``2025-01-31T12:00:00.000Z``) of ``timestamp`` (seconds since the epoch), or of now."""
    moment = datetime.now(timezone.utc) if timestamp is None else datetime.fromtimestamp(timestamp, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class WindowOutcome:
    """What happened to one window (or, with ``window`` None, to a sequence that yields no windows).

    status: "ok" (folder written), "failed" (with ``reason``), "dropped" (verdict below ``--keep``: no folder),
    and in a run's own log also "skipped" (finished earlier with the same fingerprint) and "claimed_elsewhere"
    (another process holds its claim; ``reason`` names it). docs/run-state.md describes every field.
    """

    window_id: str
    sequence: str
    window: int | None
    batch: int | None
    folder: str | None
    frames: list[str]
    status: str
    reason: str | None = None
    ba: str | None = None
    ba_reason: str | None = None
    verdict: str | None = None
    verdict_reason: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    fingerprint: str | None = None
    run_id: str | None = None
    finished_at: str | None = field(default_factory=iso_utc)
    source: str | None = None

    @classmethod
    def for_job(cls, job: WindowJob, status: str, **extra: Any) -> "WindowOutcome":
        return cls(
            window_id=job.window_id,
            sequence=job.sequence.name,
            window=job.window_index,
            batch=job.batch_index,
            folder=job.relative_folder if status == OK else None,
            frames=job.frame_names,
            status=status,
            fingerprint=job.fingerprint or None,
            source=str(job.sequence.source),
            **extra,
        )

    @classmethod
    def failed(cls, job: WindowJob, reason: str) -> "WindowOutcome":
        return cls.for_job(job, FAILED, reason=reason)

    @classmethod
    def unreadable_sequence(cls, name: str, source: Path, reason: str) -> "WindowOutcome":
        """A sequence that cannot be read at all: a line of its own, with no window."""
        return cls(window_id=name, sequence=name, window=None, batch=None, folder=None, frames=[], status=FAILED,
                   reason=reason, source=str(source))


@dataclass
class Taken:
    """What a job source hands out for one batch: ``claimed`` windows to compute now; ``passed`` windows that
    will not be loaded now (their frames need not be kept for them); ``outcomes`` for the run's log (windows
    finished elsewhere, or claimed by another process)."""

    claimed: list[WindowJob]
    passed: list[WindowJob] = field(default_factory=list)
    outcomes: list[WindowOutcome] = field(default_factory=list)


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
