"""Fingerprints of what decides a window's content: its input frames, the model, every output-affecting setting.

A rerun keeps a finished window only when its fingerprint is the same. Frames are identified cheaply, by path
relative to the input folder, size and modification time (a video by its file and the indices of the window's
frames in it), so that planning a run over thousands of clips reads no pixels; the model by its weights'
fingerprint (``checkpoint_fingerprint``: the same files reached by hub id or by path are the same model).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .jobs import WindowJob
from .options import PipelineOptions

FileIdentity = tuple[str, int, int] | None


def run_settings(options: PipelineOptions, model_fingerprint: str) -> dict[str, Any]:
    """The output-affecting settings as runs sharing an output folder must agree on them.

    ``--model`` and ``--checkpoint`` are how the model was named; its weights' fingerprint stands for both.
    """
    settings = options.output_settings()
    del settings["model"], settings["checkpoint"]
    return {"model": model_fingerprint, **settings}


class Fingerprints:
    """Window fingerprints under one set of ``settings``; each input file is looked at (``stat``) once."""

    def __init__(self, settings: dict[str, Any], input_dir: Path):
        self._settings = json.dumps(settings, sort_keys=True)
        self._input_dir = Path(input_dir)
        self._files: dict[Path, FileIdentity] = {}

    def of(self, job: WindowJob) -> str:
        frames = [job.sequence.frames[i] for i in job.frame_indices]
        if job.sequence.is_video:
            inputs: Any = {"video": self._file(job.sequence.source), "frames": [f.video_index for f in frames]}
        else:
            inputs = [self._file(f.path) for f in frames]
        text = json.dumps({"settings": self._settings, "window": job.window_id, "inputs": inputs}, sort_keys=True)
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    def _file(self, path: Path) -> FileIdentity:
        if path not in self._files:
            try:
                stat = os.stat(path)
                relative = os.path.relpath(path, self._input_dir)
                self._files[path] = (Path(relative).as_posix(), stat.st_size, stat.st_mtime_ns)
            except OSError:
                self._files[path] = None  # gone since discovery; loading the window will say so
        return self._files[path]
