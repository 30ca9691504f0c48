"""The window folders a pipeline run wrote: where they are and the cameras each one holds."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .cameras import CameraPoses, read_colmap_cameras

WINDOW_RECORD = "window.json"
MODEL_FOLDER = "sparse"
# Run-level folders beside the sequences that never hold windows (run history, the HTML report).
RUN_FOLDERS = ("runs", "report")


class WindowReadError(ValueError):
    """A window folder whose record or model cannot be read; the message names the file."""


@dataclass(frozen=True)
class WindowModel:
    """One window folder: its identity, its frames in window order, and the cameras its model registered."""

    window_id: str
    sequence: str
    folder: Path
    frames: tuple[str, ...]
    cameras: CameraPoses


def find_window_folders(output_dir: Path) -> list[Path]:
    """Every folder under ``output_dir`` that holds a ``window.json``, in path order.

    Hidden folders (window folders being assembled, run state) and the run-level folders are skipped, and the
    search does not descend into a window folder.
    """
    found = []
    for root, dirs, files in os.walk(output_dir):
        if WINDOW_RECORD in files:
            found.append(Path(root))
            dirs.clear()
            continue
        top_level = Path(root) == output_dir
        dirs[:] = [d for d in dirs if not d.startswith(".") and not (top_level and d in RUN_FOLDERS)]
    return sorted(found)


def read_window(folder: Path) -> WindowModel:
    """``folder/window.json`` (``window_id``, ``sequence``, ``frames``) and the model in ``folder/sparse``."""
    path = folder / WINDOW_RECORD
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WindowReadError(f"{path}: cannot be read ({type(exc).__name__}: {exc})") from None
    if not isinstance(record, dict) or not isinstance(record.get("window_id"), str):
        raise WindowReadError(f"{path}: no 'window_id'")
    if not isinstance(record.get("sequence"), str):
        raise WindowReadError(f"{path}: no 'sequence'")
    try:
        cameras = read_colmap_cameras(folder / MODEL_FOLDER)
    except ValueError as exc:
        raise WindowReadError(str(exc)) from None
    try:
        frames = tuple(frame["name"] for frame in record.get("frames", []))
    except (TypeError, KeyError):
        raise WindowReadError(f"{path}: 'frames' must be a list of objects with a 'name'") from None
    return WindowModel(record["window_id"], record["sequence"], folder, frames or cameras.names, cameras)
