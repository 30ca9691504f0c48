"""Everything a run is told, in one dataclass; the CLI fills it and the pipeline reads it."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .reconstruct import ReconstructionOptions

DEFAULT_MODEL = "facebook/VGGT-1B"
FOLDER_BATCH_SIZE_FOR_AUTO = 4
RESIZE_MODES = ("aspect", "square")


class OptionsError(ValueError):
    """A flag value that makes no sense (window size 0, negative stride, ...)."""


def default_num_workers() -> int:
    """Every core but two (the device's feeder thread and the frame loaders) reconstructs windows."""
    return max(1, (os.cpu_count() or 2) - 2)


@dataclass
class PipelineOptions:
    input_dir: Path
    output_dir: Path
    window_size: int = 8
    window_stride: int = 4
    window_batch_size: int | None = 4  # None: the largest batch that fits the device
    model: str = DEFAULT_MODEL
    checkpoint: Path | None = None
    device: str = "auto"
    resize_mode: str = "aspect"
    frame_step: int = 1
    overwrite: bool = False
    colmap_text: bool = False
    save_depth: bool = False
    num_workers: int = field(default_factory=default_num_workers)
    compile: bool = False
    reconstruction: ReconstructionOptions = field(default_factory=ReconstructionOptions)

    @property
    def model_source(self) -> str:
        return str(self.checkpoint) if self.checkpoint is not None else self.model

    @property
    def folder_batch_size(self) -> int:
        """The batch size that names folders: the requested one, or 4 with ``auto`` (DESIGN.md)."""
        return self.window_batch_size or FOLDER_BATCH_SIZE_FOR_AUTO

    def validate(self) -> None:
        """Raise ``OptionsError`` naming the first flag whose value cannot work."""
        checks = [
            (self.window_size >= 1, f"--window-size must be at least 1, got {self.window_size}"),
            (self.window_stride >= 1, f"--window-stride must be at least 1, got {self.window_stride}"),
            (
                self.window_stride <= self.window_size,
                f"--window-stride {self.window_stride} is larger than --window-size {self.window_size}: "
                "frames between windows would be dropped",
            ),
            (
                self.window_batch_size is None or self.window_batch_size >= 1,
                f"--window-batch-size must be at least 1 or 'auto', got {self.window_batch_size}",
            ),
            (self.frame_step >= 1, f"--frame-step must be at least 1, got {self.frame_step}"),
            (self.num_workers >= 0, f"--num-workers must be 0 or more, got {self.num_workers}"),
            (self.resize_mode in RESIZE_MODES, f"--resize-mode must be one of {RESIZE_MODES}"),
        ]
        rec = self.reconstruction
        checks += [
            (rec.max_reproj_error > 0, f"--max-reproj-error must be positive, got {rec.max_reproj_error}"),
            (0 <= rec.vis_thresh <= 1, f"--vis-thresh must be within [0, 1], got {rec.vis_thresh}"),
            (rec.query_frame_num >= 1, f"--query-frame-num must be at least 1, got {rec.query_frame_num}"),
            (rec.max_query_pts >= 1, f"--max-query-pts must be at least 1, got {rec.max_query_pts}"),
            (rec.max_points >= 1, f"--max-points must be at least 1, got {rec.max_points}"),
            (rec.conf_thres_value >= 0, f"--conf-thres-value must be 0 or more, got {rec.conf_thres_value}"),
        ]
        input_dir, output_dir = Path(self.input_dir).resolve(), Path(self.output_dir).resolve()
        checks.append((
            not output_dir.is_relative_to(input_dir),
            f"--output-dir {self.output_dir} is inside --input-dir {self.input_dir}: its frames would be read as "
            "input by the next run; choose an output folder outside the input",
        ))
        for ok, message in checks:
            if not ok:
                raise OptionsError(message)

    def as_record(self) -> dict[str, Any]:
        """Every flag as plain JSON values, for provenance."""
        record = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "reconstruction"
        }
        record["reconstruction"] = dataclasses.asdict(self.reconstruction)
        return {k: str(v) if isinstance(v, Path) else v for k, v in record.items()}
