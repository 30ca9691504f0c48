"""Do two runs agree? The same windows succeed, and every camera agrees within 1e-4 in
rotation and translation and 1e-3 px in its intrinsics. (Float32 batching moves results by about 1e-6, so
bit-identity is not the test between runs with other batch sizes or devices.)

``compare_window_files`` is the strict test, for runs that must agree to the byte: the same input, settings and
batches through another executor.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pycolmap

POSE_TOLERANCE = 1e-4
INTRINSICS_TOLERANCE_PX = 1e-3


def read_manifest(output_dir: Path) -> dict[str, dict]:
    """``manifest.jsonl`` of a run, by window id."""
    lines = (output_dir / "manifest.jsonl").read_text().splitlines()
    return {entry["window_id"]: entry for entry in map(json.loads, lines)}


def compare_outputs(a: Path, b: Path) -> list[str]:
    """Differences between the runs written to ``a`` and ``b`` beyond the tolerance; empty when they agree."""
    manifest_a, manifest_b = read_manifest(a), read_manifest(b)
    differences = []
    if set(manifest_a) != set(manifest_b):
        differences.append(f"different windows: {sorted(set(manifest_a) ^ set(manifest_b))}")
    for window_id in sorted(set(manifest_a) & set(manifest_b)):
        entry_a, entry_b = manifest_a[window_id], manifest_b[window_id]
        if entry_a["status"] != entry_b["status"]:
            differences.append(f"{window_id}: {entry_a['status']} in one run, {entry_b['status']} in the other")
        elif entry_a["folder"] is not None and entry_b["folder"] is not None:
            differences += [
                f"{window_id}: {d}"
                for d in compare_models(a / entry_a["folder"] / "sparse", b / entry_b["folder"] / "sparse")
            ]
    return differences


def compare_models(a: Path, b: Path) -> list[str]:
    """Camera differences between two COLMAP models of the same images."""
    model_a, model_b = pycolmap.Reconstruction(str(a)), pycolmap.Reconstruction(str(b))
    images_a = {image.name: image for image in model_a.images.values()}
    images_b = {image.name: image for image in model_b.images.values()}
    if set(images_a) != set(images_b):
        return [f"different images: {sorted(set(images_a) ^ set(images_b))}"]
    differences = []
    for name in sorted(images_a):
        pose_a = images_a[name].cam_from_world().matrix()
        pose_b = images_b[name].cam_from_world().matrix()
        pose_error = float(np.abs(pose_a - pose_b).max())
        if pose_error > POSE_TOLERANCE:
            differences.append(f"{name}: pose differs by {pose_error:.2e}")
        camera_a = model_a.cameras[images_a[name].camera_id]
        camera_b = model_b.cameras[images_b[name].camera_id]
        if camera_a.model != camera_b.model or len(camera_a.params) != len(camera_b.params):
            differences.append(f"{name}: camera models differ ({camera_a.model.name} vs {camera_b.model.name})")
            continue
        params_error = float(np.abs(camera_a.params - camera_b.params).max())
        if params_error > INTRINSICS_TOLERANCE_PX:
            differences.append(f"{name}: intrinsics differ by {params_error:.2e} px")
    return differences


def window_files(output_dir: Path) -> dict[str, tuple[str, bytes | str]]:
    """Every file under every window folder of ``output_dir``, by relative path: ``("file", its bytes)``, or
    ``("link", its target)`` for a link (the frames in ``images/``)."""
    found = {}
    for folder in sorted(output_dir.glob("**/batch_*/window_*")):
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(output_dir).as_posix()
            if path.is_symlink():
                found[relative] = ("link", os.readlink(path))
            elif path.is_file():
                found[relative] = ("file", path.read_bytes())
    return found


def compare_window_files(a: Path, b: Path) -> list[str]:
    """Files of the window folders of ``a`` and ``b`` that are not byte for byte the same (or exist in one only)."""
    files_a, files_b = window_files(a), window_files(b)
    return [f"{name}: only under {a if name in files_a else b}" for name in sorted(set(files_a) ^ set(files_b))] + [
        f"{name}: differs" for name in sorted(set(files_a) & set(files_b)) if files_a[name] != files_b[name]
    ]
