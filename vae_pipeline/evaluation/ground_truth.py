"""Ground-truth cameras of a sequence: where they are and how to read them.

Two formats, told apart by the files present in a ``gt/`` folder:
- ``poses.txt``: ``name qw qx qy qz tx ty tz`` per image (COLMAP convention: camera-from-world, x_cam = R(q)
  x_world + t, OpenCV axes), and optionally ``intrinsics.txt``: one line ``width height fx fy cx cy`` (pinhole,
  pixels) for every image. Lines starting with ``#`` are comments.
- a COLMAP model (``cameras`` and ``images``, ``.bin`` or ``.txt``) in ``gt/``, ``gt/sparse/`` or ``gt/sparse/0/``.

For a sequence whose frames were in folder F of the pipeline's input, its ground truth is ``GT/F/gt/`` or, when
the frames sit in an ``images/`` folder beside ``gt/``, ``GT/<parent of F>/gt/``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path, PurePosixPath

import numpy as np
import pycolmap

from .cameras import CameraPoses, read_colmap_cameras

GT_FOLDER = "gt"
POSES_FILE = "poses.txt"
INTRINSICS_FILE = "intrinsics.txt"
MODEL_SUBFOLDERS = (".", "sparse", "sparse/0")


class GroundTruthError(ValueError):
    """A ground-truth file exists but cannot be read; the message names the file and what is wrong."""


def ground_truth_candidates(gt_dir: Path, sequence: str) -> list[Path]:
    """The ``gt/`` folders that may hold the ground truth of ``sequence`` (its frames' folder relative to the
    pipeline's input folder, ``"."`` for the input folder itself), in the order they are tried."""
    folder = PurePosixPath(sequence)
    return list(dict.fromkeys([gt_dir / folder / GT_FOLDER, gt_dir / folder.parent / GT_FOLDER]))


def has_ground_truth(folder: Path) -> bool:
    """Whether ``folder`` holds ``poses.txt`` or a COLMAP model."""
    return (folder / POSES_FILE).is_file() or _model_folder(folder) is not None


def locate_ground_truth(gt_dir: Path, sequence: str) -> Path | None:
    """The first of ``ground_truth_candidates`` that holds ground truth, or None."""
    return next((folder for folder in ground_truth_candidates(gt_dir, sequence) if has_ground_truth(folder)), None)


def read_ground_truth(folder: Path) -> CameraPoses:
    """The cameras in the ``gt/`` folder ``folder``: ``poses.txt`` (with ``intrinsics.txt`` when present) where
    there is one, else the COLMAP model. Raises GroundTruthError naming the file that cannot be read."""
    if (folder / POSES_FILE).is_file():
        return read_pose_files(folder)
    model = _model_folder(folder)
    if model is None:
        raise GroundTruthError(f"{folder}: neither {POSES_FILE} nor a COLMAP model (cameras and images files)")
    try:
        return read_colmap_cameras(model)
    except ValueError as exc:
        raise GroundTruthError(str(exc)) from None


def read_pose_files(folder: Path) -> CameraPoses:
    """``folder/poses.txt`` and, when present, ``folder/intrinsics.txt`` (see the module docstring).

    The calibration keeps the file's principal point as it is (COLMAP's convention when the files follow it).
    """
    path = folder / POSES_FILE
    names, poses = [], []
    for line_number, fields in _data_lines(path):
        if len(fields) != 8:
            raise GroundTruthError(
                f"{path}, line {line_number}: expected 8 fields 'name qw qx qy qz tx ty tz', got {len(fields)}"
            )
        values = _numbers(fields[1:], path, line_number)
        norm = np.linalg.norm(values[:4])
        if not norm > 0:
            raise GroundTruthError(f"{path}, line {line_number}: the quaternion qw qx qy qz is zero")
        qw, qx, qy, qz = values[:4] / norm
        pose = np.eye(4)
        pose[:3, :3] = pycolmap.Rotation3d(np.array([qx, qy, qz, qw])).matrix()
        pose[:3, 3] = values[4:]
        names.append(fields[0])
        poses.append(pose)
    if not names:
        raise GroundTruthError(f"{path}: no poses (only comments or blank lines)")
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    if repeated:
        raise GroundTruthError(f"{path}: {repeated[0]} has more than one pose")

    calibration = sizes = None
    intrinsics_path = folder / INTRINSICS_FILE
    if intrinsics_path.is_file():
        lines = _data_lines(intrinsics_path)
        if len(lines) != 1 or len(lines[0][1]) != 6:
            raise GroundTruthError(f"{intrinsics_path}: expected one line 'width height fx fy cx cy'")
        width, height, fx, fy, cx, cy = _numbers(lines[0][1], intrinsics_path, lines[0][0])
        if not (fx > 0 and fy > 0):
            raise GroundTruthError(f"{intrinsics_path}: focal lengths must be positive, got fx={fx} fy={fy}")
        camera = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        calibration = np.repeat(camera[None], len(names), axis=0)
        sizes = np.repeat([[width, height]], len(names), axis=0)
    return CameraPoses(names=tuple(names), cam_from_world=np.stack(poses), calibration=calibration, sizes=sizes)


def _model_folder(folder: Path) -> Path | None:
    for sub in MODEL_SUBFOLDERS:
        candidate = folder / sub
        if any((candidate / f"cameras{ext}").is_file() and (candidate / f"images{ext}").is_file()
               for ext in (".bin", ".txt")):
            return candidate
    return None


def _data_lines(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, whitespace-split fields) of the lines that are neither blank nor ``#`` comments."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise GroundTruthError(f"{path}: cannot be read ({exc.__class__.__name__}: {exc})") from None
    return [
        (number, line.split())
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]


def _numbers(fields: list[str], path: Path, line_number: int) -> np.ndarray:
    try:
        values = np.array([float(field) for field in fields])
    except ValueError:
        raise GroundTruthError(f"{path}, line {line_number}: expected numbers, got {' '.join(fields)!r}") from None
    if not np.all(np.isfinite(values)):
        raise GroundTruthError(f"{path}, line {line_number}: values must be finite, got {' '.join(fields)!r}")
    return values
