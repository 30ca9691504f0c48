"""Everything a run is told, in one dataclass; each field is the single declaration of its setting (``declare``).

The CLI's flags, their defaults and checks, provenance and the run state's fingerprint come from these fields.
Whether a setting affects output decides whether a rerun with another value may keep finished windows:

- output-affecting: the windows (``--window-size``, ``--window-stride``, and ``--window-batch-size`` as folder
  names use it, ``auto`` counting as 4), the model (by its weights' fingerprint), ``--resize-mode``,
  ``--frame-step``, ``--keep``, ``--colmap-text``, ``--save-depth`` and every reconstruction flag (``--seed``
  included);
- not output-affecting: ``--input-dir`` (the frames themselves are fingerprinted, so a moved input folder is the
  same input), ``--output-dir``, ``--overwrite``, ``--num-workers``, ``--shard``, ``--compile`` (the same
  arithmetic), ``--executor`` and ``--ray-address`` (every executor runs the same stages on the same batches),
  ``-v``/``-q``, and ``--device``: another device gives the same model's results within numerical
  precision, and refusing to resume on ``cuda:1`` what ``cuda:0`` started would break shared output folders on
  mixed clusters (the device is recorded in the run's summary.json).
"""

from __future__ import annotations

import argparse
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import declare
from .declare import at_least, nested, setting
from .reconstruct import VERDICTS, ReconstructionOptions

DEFAULT_MODEL = "facebook/VGGT-1B"
FOLDER_BATCH_SIZE_FOR_AUTO = 4
RESIZE_MODES = ("aspect", "square")
KEEP_CHOICES = ("good", "poor", "all")
EXECUTORS = ("local", "ray")

GROUP_TITLES = {
    "io": "input and output",
    "windows": "windows and batches",
    "model": "model",
    "execution": "execution",
    "reconstruction": "reconstruction",
}


class OptionsError(ValueError):
    """A flag value that makes no sense (window size 0, negative stride, ...)."""


def default_num_workers() -> int:
    """Every core but two (the device's feeder thread and the frame loaders) reconstructs windows."""
    return max(1, (os.cpu_count() or 2) - 2)


def _batch_size(value: str) -> int | None:
    if value == "auto":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'auto', got {value!r}") from None


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``: the windows whose id hashes to ``index`` (a split that never changes)."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> "Shard":
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected I/N such as 0/4, got {text!r}") from None
        return cls(index, count)

    def takes(self, item_id: str) -> bool:
        # crc32, not hash(): Python salts str hashes per process, and every process must agree on the split.
        return zlib.crc32(item_id.encode()) % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def _shard_problem(shard: Shard) -> str | None:
    if shard.count < 1 or not 0 <= shard.index < shard.count:
        return "needs 0 <= I < N"
    return None


def keeps(keep: str, verdict: str) -> bool:
    """Whether a window with ``verdict`` gets a folder under ``--keep keep``."""
    return keep == "all" or VERDICTS.index(verdict) <= VERDICTS.index(keep)


@dataclass
class PipelineOptions:
    input_dir: Path = setting(
        affects_output=False, parse=Path, group="io",
        help="Folder of frames (jpg/png/...), a folder of such folders (one sequence each), or video files "
        "(.mp4/.mov/.mkv/.avi).")
    output_dir: Path = setting(
        affects_output=False, parse=Path, group="io",
        help="Where window folders, manifest.jsonl, summary.json and the run state are written.")
    frame_step: int = setting(
        1, affects_output=True, check=at_least(1), group="io", help="Use every N-th frame of each sequence.")
    overwrite: bool = setting(
        False, affects_output=False, group="io",
        help="Redo finished windows and remove window folders the new settings do not plan (by default a rerun "
        "skips finished windows, and stops if output-affecting flags or the model differ).")
    keep: str = setting(
        "poor", affects_output=True, choices=KEEP_CHOICES, group="io",
        help="Lowest verdict that gets a window folder; windows below it are recorded in the manifest as dropped.")
    colmap_text: bool = setting(
        False, affects_output=True, group="io", help="Also write the COLMAP model as text files.")
    report: bool = setting(
        False, affects_output=False, group="io",
        help="At the end of the run, write OUT/report/index.html (python -m vae_pipeline.report), with the "
        "accuracy of OUT/evaluation.json when one is there.")
    save_depth: bool = setting(
        False, affects_output=True, group="io",
        help="Also write per-frame depth and confidence maps (float16 .npz) in depth/.")
    shard: Shard | None = setting(
        None, affects_output=False, parse=Shard.parse, check=_shard_problem, group="io", metavar="I/N",
        help="Take only shard I of N of the windows (a stable split by window), for array jobs sharing one "
        "output folder.")
    window_size: int = setting(
        8, affects_output=True, check=at_least(1), group="windows", help="Frames per window.")
    window_stride: int = setting(
        4, affects_output=True, check=at_least(1), group="windows",
        help="Frames between the starts of two windows.")
    window_batch_size: int | None = setting(
        4, affects_output=True, parse=_batch_size, check=at_least(1), group="windows",
        fingerprint_as=lambda size: size or FOLDER_BATCH_SIZE_FOR_AUTO,
        help="Windows per forward pass; 'auto' picks the largest that fits the device memory (folders are then "
        "named as with 4).")
    model: str = setting(
        DEFAULT_MODEL, affects_output=True, group="model",
        help="Hugging Face model id (facebook/VGGT-1B or facebook/VGGT-1B-Commercial), a local checkpoint file, or "
        "a folder laid out like the hub repository.")
    checkpoint: Path | None = setting(
        None, affects_output=True, parse=Path, group="model",
        help="Local checkpoint (.pt/.pth/.safetensors or folder); overrides --model.")
    device: str = setting(
        "auto", affects_output=False, group="model",
        help="Torch device: auto (CUDA if present), cuda, cuda:1, cpu.")
    resize_mode: str = setting(
        "aspect", affects_output=True, choices=RESIZE_MODES, group="model",
        help="aspect: long side 518, the other side scaled to keep the frame's shape (no padding: wide video needs "
        "fewer tokens); square: the official demo's pad-to-square at 518x518.")
    compile: bool = setting(
        False, affects_output=False, negatable=True, group="model",
        help="torch.compile the model on CUDA (pays off on long runs; costs start-up time).")
    num_workers: int = setting(
        affects_output=False, default_factory=default_num_workers, check=at_least(0), group="execution",
        help="CPU worker processes for reconstruction and export (0: in the main process); --executor local.")
    executor: str = setting(
        "local", affects_output=False, choices=EXECUTORS, group="execution",
        help="local: this process, its device and --num-workers CPU processes; ray: the same stages on a Ray "
        "cluster (decoding and reconstruction as CPU tasks, the forward pass in one actor per GPU), from the "
        "package's [ray] extra.")
    ray_address: str | None = setting(
        None, affects_output=False, group="execution", metavar="ADDRESS",
        help="--executor ray: the cluster to join ('auto': the one `ray start` runs on this machine, or "
        "host:port); by default a running local Ray, else one started for this run and stopped after it.")
    reconstruction: ReconstructionOptions = nested(ReconstructionOptions, group="reconstruction")

    @property
    def model_source(self) -> str:
        return str(self.checkpoint) if self.checkpoint is not None else self.model

    @property
    def folder_batch_size(self) -> int:
        """The batch size that names folders: the requested one, or 4 with ``auto``."""
        return self.window_batch_size or FOLDER_BATCH_SIZE_FOR_AUTO

    def validate(self) -> None:
        """Raise ``OptionsError`` naming the first flag whose value cannot work."""
        problem = declare.first_problem(self)
        if problem:
            raise OptionsError(problem)
        if self.window_stride > self.window_size:
            raise OptionsError(
                f"--window-stride {self.window_stride} is larger than --window-size {self.window_size}: frames "
                "between windows would be dropped"
            )
        if self.ray_address is not None and self.executor != "ray":
            raise OptionsError("--ray-address is for --executor ray; add --executor ray or leave it out")
        if self.executor == "ray" and ":" in self.device:
            raise OptionsError(
                f"--device {self.device} names one GPU of this machine; with --executor ray every actor has a GPU "
                "of its own: use --device cuda, auto or cpu"
            )
        input_dir, output_dir = Path(self.input_dir).resolve(), Path(self.output_dir).resolve()
        if output_dir.is_relative_to(input_dir):
            raise OptionsError(
                f"--output-dir {self.output_dir} is inside --input-dir {self.input_dir}: its frames would be read "
                "as input by the next run; choose an output folder outside the input"
            )

    def as_record(self) -> dict[str, Any]:
        """Every setting as plain JSON values, for provenance."""
        return declare.as_record(self)

    def output_settings(self) -> dict[str, Any]:
        """The output-affecting settings (flat, by field name), as the run state's fingerprint records them."""
        return declare.output_settings(self)

    @staticmethod
    def describe(name: str, value: Any) -> str:
        """A setting's value as a flag: ``--window-size 4``."""
        return declare.describe(PipelineOptions, name, value)
