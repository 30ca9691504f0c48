"""A reader of binary PLY point clouds (x, y, z float32, red, green, blue uchar) written independently of the
package, as a client would read ``sparse/points.ply``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

_VERTEX = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])


def read_ply(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``xyz`` float32 [N, 3] and ``rgb`` uint8 [N, 3] of a binary little-endian PLY with that vertex layout."""
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
