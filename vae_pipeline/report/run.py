"""What a run left in its output folder, read into typed records: the manifest's lines, ``summary.json``, each
window's ``window.json``, and an evaluation JSON when there is one.

Readers are strict about the fields they use (a wrong type is an error naming the file, line and field) and
tolerant of fields they do not know, so a run written by a newer or older pipeline still reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..evaluation.results import Evaluation, WindowEvaluation, read_evaluation
from ..evaluation.windows import WINDOW_RECORD
from ..jobs import WindowOutcome

MANIFEST = "manifest.jsonl"
SUMMARY = "summary.json"
EVALUATION = "evaluation.json"  # where the report looks for an evaluation when none is named


class ReportInputError(ValueError):
    """The output folder cannot be reported on; the message is one line naming the file and the problem."""


def _get(data: dict[str, Any], name: str, types: tuple[type, ...], where: str, required: bool = False) -> Any:
    """``data[name]`` checked against ``types`` (None allowed unless ``required``); bool is not a number here."""
    if name not in data or data[name] is None:
        if required:
            raise ReportInputError(f"{where}: no '{name}'")
        return None
    value = data[name]
    if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
        expected = " or ".join(t.__name__ for t in types)
        raise ReportInputError(f"{where}: '{name}' must be {expected}, got {type(value).__name__}")
    return value


def _numbers(data: dict[str, Any], name: str, where: str) -> dict[str, float]:
    values = _get(data, name, (dict,), where) or {}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ReportInputError(f"{where}: '{name}.{key}' must be a number, got {type(value).__name__}")
    return dict(values)


def manifest_line(data: Any, where: str) -> WindowOutcome:
    """One line of ``manifest.jsonl`` as the outcome the pipeline recorded: a window (``window`` set) or a whole
    sequence that could not be read (``window`` None; its ``window_id`` is the sequence's name when the line gives
    none). Every field the report uses is checked; ``finished_at`` stays None when the line has none."""
    if not isinstance(data, dict):
        raise ReportInputError(f"{where}: expected a JSON object, got {type(data).__name__}")
    sequence = _get(data, "sequence", (str,), where, required=True)
    frames = _get(data, "frames", (list,), where) or []
    if not all(isinstance(name, str) for name in frames):
        raise ReportInputError(f"{where}: 'frames' must be a list of file names")
    finished_at = _get(data, "finished_at", (str, int, float), where)
    return WindowOutcome(
        window_id=_get(data, "window_id", (str,), where) or sequence,
        sequence=sequence,
        window=_get(data, "window", (int,), where),
        batch=_get(data, "batch", (int,), where),
        folder=_get(data, "folder", (str,), where),
        frames=list(frames),
        status=_get(data, "status", (str,), where, required=True),
        reason=_get(data, "reason", (str,), where),
        ba=_get(data, "ba", (str,), where),
        ba_reason=_get(data, "ba_reason", (str,), where),
        verdict=_get(data, "verdict", (str,), where),
        verdict_reason=_get(data, "verdict_reason", (str,), where),
        metrics=_numbers(data, "metrics", where),
        timings=_numbers(data, "timings", where),
        fingerprint=_get(data, "fingerprint", (str,), where),
        run_id=_get(data, "run_id", (str,), where),
        finished_at=None if finished_at is None else str(finished_at),
        source=_get(data, "source", (str,), where),
    )


def read_manifest(output_dir: Path) -> list[WindowOutcome]:
    """Every line of ``output_dir/manifest.jsonl``; a window listed twice keeps its last line (the latest)."""
    path = output_dir / MANIFEST
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ReportInputError(f"{path}: not found; is {output_dir} the output folder of a pipeline run?") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportInputError(f"{path}: cannot be read ({exc})") from None
    lines: dict[tuple[str, int | None], WindowOutcome] = {}
    for number, text_line in enumerate(text.splitlines(), start=1):
        if not text_line.strip():
            continue
        where = f"{path} line {number}"
        try:
            data = json.loads(text_line)
        except json.JSONDecodeError as exc:
            raise ReportInputError(f"{where}: not JSON ({exc.msg})") from None
        line = manifest_line(data, where)
        lines[(line.window_id, line.window)] = line
    return list(lines.values())


@dataclass(frozen=True)
class RunTotals:
    """What the report shows of ``summary.json``: how long the run took and how fast it went. Every field is None
    when the file does not hold it (a run that did not finish writes none)."""

    windows: int | None = None
    written: int | None = None
    failed: int | None = None
    elapsed_s: float | None = None
    windows_per_s: float | None = None
    device: str | None = None
    device_busy_share: float | None = None
    forward_passes: int | None = None
    package_version: str | None = None
    model_source: str | None = None
    flags: dict[str, Any] = field(default_factory=dict)


def read_summary(output_dir: Path) -> RunTotals | None:
    """``output_dir/summary.json``, or None when the run wrote none."""
    path = output_dir / SUMMARY
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportInputError(f"{path}: cannot be read ({exc})") from None
    if not isinstance(data, dict):
        raise ReportInputError(f"{path}: expected a JSON object")
    where = str(path)
    provenance = _get(data, "provenance", (dict,), where) or {}
    number = (int, float)
    return RunTotals(
        windows=_get(data, "windows", (int,), where),
        written=_get(data, "written", (int,), where),
        failed=_get(data, "failed", (int,), where),
        elapsed_s=_get(data, "elapsed_s", number, where),
        windows_per_s=_get(data, "windows_per_s", number, where),
        device=_get(data, "device", (str,), where),
        device_busy_share=_get(data, "device_busy_share", number, where),
        forward_passes=_get(data, "forward_passes", (int,), where),
        package_version=_get(provenance, "package_version", (str,), f"{where} provenance"),
        model_source=_get(provenance, "model_source", (str,), f"{where} provenance"),
        flags=_get(provenance, "flags", (dict,), f"{where} provenance") or {},
    )


@dataclass(frozen=True)
class FrameRecord:
    """One frame of a window as ``window.json`` lists it: its name in ``images/`` and its size on disk."""

    name: str
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class WindowRecord:
    """What the report uses of a window's ``window.json``."""

    window_id: str
    frames: tuple[FrameRecord, ...]
    ba: str | None = None
    ba_reason: str | None = None
    verdict: str | None = None
    verdict_reason: str | None = None
    tracker: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def read_window_record(folder: Path) -> WindowRecord:
    path = folder / WINDOW_RECORD
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportInputError(f"{path}: cannot be read ({exc})") from None
    if not isinstance(data, dict):
        raise ReportInputError(f"{path}: expected a JSON object")
    where = str(path)
    frames = []
    for i, frame in enumerate(_get(data, "frames", (list,), where) or []):
        frame_where = f"{where} frames[{i}]"
        if not isinstance(frame, dict):
            raise ReportInputError(f"{frame_where}: expected an object")
        frames.append(FrameRecord(
            name=_get(frame, "name", (str,), frame_where, required=True),
            width=_get(frame, "width", (int,), frame_where),
            height=_get(frame, "height", (int,), frame_where),
        ))
    return WindowRecord(
        window_id=_get(data, "window_id", (str,), where, required=True),
        frames=tuple(frames),
        ba=_get(data, "ba", (str,), where),
        ba_reason=_get(data, "ba_reason", (str,), where),
        verdict=_get(data, "verdict", (str,), where),
        verdict_reason=_get(data, "verdict_reason", (str,), where),
        tracker=_get(data, "tracker", (str,), where),
        metrics=_numbers(data, "metrics", where),
    )


# How a window is shown (its colour, its label), from the most telling thing known about it: a window the run
# could not finish is "error", one judged below the kept verdict is "dropped", otherwise its verdict.
STATES = ("good", "poor", "failed", "error", "dropped", "unjudged")


@dataclass(frozen=True)
class WindowEntry:
    """One window of the run: its manifest line, its folder's record when it has a folder, and its evaluation.

    ``problem`` says why a folder the manifest names could not be read. ``first_frame``/``last_frame`` are frame
    indices in the sequence (None when the line lists no frames).
    """

    line: WindowOutcome
    folder: Path | None
    record: WindowRecord | None
    problem: str | None
    evaluation: WindowEvaluation | None
    first_frame: int | None
    last_frame: int | None

    @property
    def window_id(self) -> str:
        return self.line.window_id

    def _outcome(self, name: str) -> str | None:
        """An outcome field from the manifest line, else from the folder's window.json (older lines lack it)."""
        return getattr(self.line, name) or (getattr(self.record, name) if self.record else None)

    @property
    def verdict(self) -> str | None:
        return self._outcome("verdict")

    @property
    def verdict_reason(self) -> str | None:
        return self._outcome("verdict_reason")

    @property
    def ba(self) -> str | None:
        return self._outcome("ba")

    @property
    def ba_reason(self) -> str | None:
        return self._outcome("ba_reason")

    @property
    def metrics(self) -> dict[str, float]:
        """The folder's metrics (the full set) over the manifest's (the main ones)."""
        return {**self.line.metrics, **(self.record.metrics if self.record else {})}

    @property
    def state(self) -> str:
        if self.line.status == "failed":
            return "error"
        if self.line.status == "dropped":
            return "dropped"
        return self.verdict if self.verdict in ("good", "poor", "failed") else "unjudged"


@dataclass(frozen=True)
class SequenceEntry:
    """A sequence's frames in order (as its windows list them) and its windows in window order."""

    name: str
    frames: tuple[str, ...]
    windows: tuple[WindowEntry, ...]


@dataclass(frozen=True)
class RunReport:
    """Everything the page shows about one output folder."""

    output_dir: Path
    sequences: tuple[SequenceEntry, ...]
    sequence_failures: tuple[WindowOutcome, ...]
    totals: RunTotals | None
    evaluation: Evaluation | None
    evaluation_path: Path | None

    @property
    def windows(self) -> list[WindowEntry]:
        return [window for sequence in self.sequences for window in sequence.windows]


def read_run(output_dir: Path, evaluation: Path | None = None) -> RunReport:
    """Read an output folder; ``evaluation`` names an evaluation JSON (default: ``output_dir/evaluation.json``
    when it exists)."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        raise ReportInputError(f"{output_dir}: no such folder")
    lines = read_manifest(output_dir)
    evaluation_path = evaluation if evaluation is not None else output_dir / EVALUATION
    evaluated = None
    if evaluation is not None or evaluation_path.exists():
        evaluated = _read_evaluation(evaluation_path)
    by_window = {window.window_id: window for window in evaluated.windows} if evaluated else {}

    sequence_lines: dict[str, list[WindowOutcome]] = {}
    failures = []
    for line in lines:
        if line.window is None:
            failures.append(line)
        else:
            sequence_lines.setdefault(line.sequence, []).append(line)
    sequences = []
    for name in sorted(sequence_lines):
        ordered = sorted(sequence_lines[name], key=lambda line: line.window)
        frames = _frame_order(ordered)
        index = {frame: i for i, frame in enumerate(frames)}
        windows = tuple(_window_entry(output_dir, line, index, by_window.get(line.window_id)) for line in ordered)
        sequences.append(SequenceEntry(name, frames, windows))
    return RunReport(
        output_dir=output_dir,
        sequences=tuple(sequences),
        sequence_failures=tuple(sorted(failures, key=lambda line: line.sequence)),
        totals=read_summary(output_dir),
        evaluation=evaluated,
        evaluation_path=evaluation_path if evaluated else None,
    )


def _read_evaluation(path: Path) -> Evaluation:
    try:
        return read_evaluation(path)
    except FileNotFoundError:
        raise ReportInputError(f"{path}: evaluation JSON not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ReportInputError(
            f"{path}: not an evaluation JSON of python -m vae_pipeline.evaluate ({type(exc).__name__}: {exc})"
        ) from None


def _frame_order(lines: list[WindowOutcome]) -> tuple[str, ...]:
    """The sequence's frames in order: windows are consecutive frames in window order, so the first time each
    name appears, walking the windows in order, is its place."""
    seen: dict[str, None] = {}
    for line in lines:
        seen.update(dict.fromkeys(line.frames))
    return tuple(seen)


def _window_entry(
    output_dir: Path, line: WindowOutcome, frame_index: dict[str, int], evaluation: WindowEvaluation | None
) -> WindowEntry:
    folder, record, problem = None, None, None
    if line.folder is not None and line.status in ("ok", "skipped"):
        candidate = output_dir / line.folder
        if (candidate / WINDOW_RECORD).exists():
            folder = candidate
            try:
                record = read_window_record(candidate)
            except ReportInputError as exc:
                problem = str(exc)
        else:
            problem = f"{candidate / WINDOW_RECORD}: not found"
    indices = [frame_index[name] for name in line.frames]
    return WindowEntry(
        line=line,
        folder=folder,
        record=record,
        problem=problem,
        evaluation=evaluation,
        first_frame=min(indices) if indices else None,
        last_frame=max(indices) if indices else None,
    )
