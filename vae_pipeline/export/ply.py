"""Binary PLY point clouds (x, y, z as float32, colours as uchar), the layout COLMAP, Open3D and gsplat read."""

from __future__ import annotations

from pathlib import Path

import numpy as np

_VERTEX = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])


def write_ply(path: Path, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """Write points ``xyz`` [N, 3] with colours ``rgb`` [N, 3] (uint8) as a binary little-endian PLY."""
    xyz = np.asarray(xyz, dtype=np.float32).reshape(-1, 3)
    rgb = np.asarray(rgb, dtype=np.uint8).reshape(-1, 3)
    if len(xyz) != len(rgb):
        raise ValueError(f"{len(xyz)} points but {len(rgb)} colours")
    vertices = np.empty(len(xyz), dtype=_VERTEX)
    for i, axis in enumerate("xyz"):
        vertices[axis] = xyz[:, i]
    for i, channel in enumerate(("red", "green", "blue")):
        vertices[channel] = rgb[:, i]
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {len(xyz)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\n"
        "end_header\n"
    )
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(vertices.tobytes())


def read_ply(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read what ``write_ply`` writes: ``xyz`` float32 [N, 3] and ``rgb`` uint8 [N, 3]."""
    data = Path(path).read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    if header[1] != "format binary_little_endian 1.0":
        raise ValueError(f"{path}: only binary little-endian PLY is supported")
    count = next(int(line.split()[2]) for line in header if line.startswith("element vertex"))
    vertices = np.frombuffer(data, dtype=_VERTEX, count=count, offset=end)
    xyz = np.stack([vertices[a] for a in "xyz"], axis=1)
    rgb = np.stack([vertices[c] for c in ("red", "green", "blue")], axis=1)
    return xyz, rgb
