"""Write one finished window as a folder that COLMAP, nerfstudio and gsplat open as it is.

Layout: ``sparse/`` (COLMAP binary model, text too on request), ``sparse/points.ply``, ``images/``
(the window's frames, relative symlinks to the input files where possible), ``window_info.txt``,
``window.json`` and, on request, ``depth/``. The folder is assembled under a temporary name and renamed when
complete, so a window folder that exists is always whole.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pycolmap

from ..storage import writing


def write_window_folder(
    folder: Path,
    reconstruction: pycolmap.Reconstruction,
    frames: list[tuple[str, Path]],
    record: dict[str, Any],
    *,
    colmap_text: bool = False,
    depth: np.ndarray | None = None,
    depth_conf: np.ndarray | None = None,
) -> None:
    """Assemble the window under a temporary sibling name, then rename it to ``folder``.

    The model's points go to ``sparse/points.ply`` (pycolmap's export); ``record`` is what
    ``window.json`` holds; ``frames`` (name, file) are linked into ``images/``; ``depth``/``depth_conf``
    [S, h, w] go to ``depth/`` as float16 when given. An existing ``folder`` (an earlier run's, made with other
    inputs or settings) is replaced; the run state makes sure no other process is writing this window.

    A failure of the storage (a full disk, ...) raises ``OutputError`` naming ``folder``. pycolmap's writers do
    not report one (they leave short files), but ``window.json`` is written after them, with Python, and a disk
    that filled while pycolmap wrote is still full then: the folder is never published with a cut model.
    """
    staging = folder.parent / f".{folder.name}.partial-{owner()}"
    try:
        with writing(folder):
            folder.parent.mkdir(parents=True, exist_ok=True)
            if staging.exists():
                shutil.rmtree(staging)
            _fill(staging, reconstruction, frames, record, colmap_text, depth, depth_conf)
            _publish(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _fill(
    staging: Path,
    reconstruction: pycolmap.Reconstruction,
    frames: list[tuple[str, Path]],
    record: dict[str, Any],
    colmap_text: bool,
    depth: np.ndarray | None,
    depth_conf: np.ndarray | None,
) -> None:
    sparse = staging / "sparse"
    sparse.mkdir(parents=True)
    reconstruction.write(str(sparse))
    if colmap_text:
        reconstruction.write_text(str(sparse))
    reconstruction.export_PLY(str(sparse / "points.ply"))

    images = staging / "images"
    images.mkdir()
    for name, path in frames:
        _link_or_copy(path, images / name)

    if depth is not None:
        depth_dir = staging / "depth"
        depth_dir.mkdir()
        for i, (name, _) in enumerate(frames):
            arrays = {"depth": depth[i].astype(np.float16)}
            if depth_conf is not None:
                arrays["confidence"] = depth_conf[i].astype(np.float16)
            np.savez_compressed(depth_dir / f"{Path(name).stem}.npz", **arrays)

    (staging / "window.json").write_text(json.dumps(record, indent=2, default=_jsonable) + "\n")
    (staging / "window_info.txt").write_text(format_window_info(record))


def _link_or_copy(source: Path, target: Path) -> None:
    """A relative symlink (valid after the rename: the staging folder sits beside the final one), else a copy."""
    try:
        target.symlink_to(os.path.relpath(source.resolve(), target.parent.resolve()))
    except OSError:
        shutil.copyfile(source, target)


PUBLISH_ATTEMPTS = 5


def _publish(staging: Path, folder: Path) -> None:
    """Rename ``staging`` to ``folder``, retiring the folder that is there.

    Two processes may publish the same window at once: a task that a cluster retried because its worker was
    lost, while the first attempt still ran. They write the same bytes, so whichever lands last is as good; this
    only has to not fail when the other one's rename comes between ours.
    """
    for _ in range(PUBLISH_ATTEMPTS):
        try:
            os.replace(staging, folder)  # atomic; fails only when a non-empty folder is in the way
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        retired = folder.parent / f".{folder.name}.old-{owner()}"
        try:
            os.replace(folder, retired)
        except FileNotFoundError:
            continue  # the other publisher retired it first
        shutil.rmtree(retired, ignore_errors=True)
    os.replace(staging, folder)


def remove_window_folder(folder: Path) -> None:
    """Remove a finished window's folder (renamed away first, so no reader ever sees it half-deleted)."""
    if folder.exists():
        retired = folder.parent / f".{folder.name}.old-{owner()}"
        os.replace(folder, retired)
        shutil.rmtree(retired, ignore_errors=True)


def owner() -> str:
    """Who is assembling a file or folder: this machine and process (several machines may share an output
    folder). Temporary names end in ``.partial-<owner>`` or ``.old-<owner>`` so a later run can tell whose they
    are and remove them once that process is gone."""
    return f"{socket.gethostname()}-{os.getpid()}"


_TEMPORARY = re.compile(r"^\..+\.(partial|old)-(?P<host>.+)-(?P<pid>\d+)$")
_WINDOW_FOLDER = re.compile(r"^window_\d+$")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_staging(output_dir: Path) -> list[Path]:
    """Delete what processes on this machine that are gone left half-written: window folders being assembled or
    retired, frames being written once per sequence, run-state files being replaced. Returns what was removed.

    Anything of a live process, or of another machine, is left alone. Finished window folders are not searched.
    """
    host = socket.gethostname()
    removed = []
    for folder, subfolders, files in os.walk(output_dir):
        subfolders[:] = [name for name in subfolders if not _WINDOW_FOLDER.match(name)]
        for name in sorted([*subfolders, *files]):
            match = _TEMPORARY.match(name)
            if match and match["host"] == host and not pid_alive(int(match["pid"])):
                path = Path(folder) / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed.append(path)
        subfolders[:] = [name for name in subfolders if (Path(folder) / name).exists()]
    return removed


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in window.json")


def format_window_info(record: dict[str, Any]) -> str:
    """The human-readable summary beside ``window.json``."""
    metrics = record.get("metrics", {})
    provenance = record.get("provenance", {})
    lines = [
        f"window: {record.get('window_id')}",
        f"status: {record.get('status')}",
        f"bundle adjustment: {record.get('ba')}" + (f" ({record['ba_reason']})" if record.get("ba_reason") else ""),
        f"verdict: {record.get('verdict')}" + (f" ({record['verdict_reason']})" if record.get("verdict_reason") else ""),
        f"frames ({len(record.get('frames', []))}):",
        *(f"  {f['name']}  {f['width']}x{f['height']}  <- {f['source']}" for f in record.get("frames", [])),
        "metrics:",
        *(f"  {k}: {v}" for k, v in metrics.items()),
        f"model: {provenance.get('model_source')} ({provenance.get('model_fingerprint')})",
        f"vae_pipeline {provenance.get('package_version')}",
        f"fingerprint: {record.get('fingerprint')}",
    ]
    return "\n".join(lines) + "\n"
