"""2D rotary position embedding of the aggregator's attention (docs/model.md, section 5.3).

Every frame holds ``num_prefix`` special tokens at position (0, 0), where the rotation is the identity, followed
by its ``grid_h * grid_w`` patch tokens in row-major order at positions (row + 1, col + 1). The first half of each
head's channels is rotated by the row, the second half by the column; within a half, channel ``m`` is paired with
channel ``m + half / 2`` ("rotate half" pairing).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import torch
from torch import nn


class RopeTables(NamedTuple):
    """cos and sin of every token's rotation angles, both ``[N, head_dim]``, in the dtype of the rotated q/k."""

    cos: torch.Tensor
    sin: torch.Tensor


def apply_rope(x: torch.Tensor, tables: RopeTables) -> torch.Tensor:
    """Rotate ``x`` ``[..., N, head_dim]`` by the angles of ``tables`` (each ``[N, head_dim]``)."""
    # Channels are (axis, pair half, frequency); within each axis the halves (a, b) become (-b, a).
    first, second = x.unflatten(-1, (2, 2, -1)).unbind(-2)
    rotated = torch.stack((-second, first), dim=-2).flatten(-3)
    return x * tables.cos + rotated * tables.sin


class RotaryPositionEmbedding2D(nn.Module):
    """Applies 2D RoPE with cos/sin tables cached per layout, device and dtype; no parameters, no state-dict entries.

    Args:
        head_dim: channels per attention head, a multiple of 4 (two axes, each split into rotation pairs).
        base: frequency base; axis channel pair ``m`` turns at ``base ** (-m / (head_dim / 4))`` per position.
        max_cached: number of table sets kept; one image size needs two (frame and global attention).
    """

    def __init__(self, head_dim: int, base: float = 100.0, max_cached: int = 8) -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"2D RoPE needs a head dim divisible by 4, got {head_dim}")
        self.head_dim = head_dim
        self.base = base
        self.max_cached = max_cached
        self._cache: OrderedDict[tuple, RopeTables] = OrderedDict()

    def forward(self, x: torch.Tensor, grid_h: int, grid_w: int, num_prefix: int, num_frames: int) -> torch.Tensor:
        """Rotate ``x`` ``[..., num_frames * P, head_dim]``, tokens of ``num_frames`` frames one after the other."""
        return apply_rope(x, self.tables(grid_h, grid_w, num_prefix, num_frames, x.device, x.dtype))

    def tables(
        self,
        grid_h: int,
        grid_w: int,
        num_prefix: int,
        num_frames: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> RopeTables:
        """Tables for ``num_frames`` frames laid out one after the other: each ``[num_frames * P, head_dim]``.

        ``P = num_prefix + grid_h * grid_w``; every frame reuses the same positions (no frame index is encoded).
        """
        key = (grid_h, grid_w, num_prefix, num_frames, torch.device(device), dtype)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        frame = self._frame_tables(grid_h, grid_w, num_prefix, device)
        tables = RopeTables(*(t.repeat(num_frames, 1).to(dtype) for t in frame))
        self._cache[key] = tables
        if len(self._cache) > self.max_cached:
            self._cache.popitem(last=False)
        return tables

    def _frame_tables(self, grid_h: int, grid_w: int, num_prefix: int, device: torch.device) -> RopeTables:
        """float32 tables of one frame, ``[P, head_dim]`` each."""
        rows = torch.arange(1, grid_h + 1, device=device, dtype=torch.float32)
        cols = torch.arange(1, grid_w + 1, device=device, dtype=torch.float32)
        rows, cols = torch.meshgrid(rows, cols, indexing="ij")
        prefix = torch.zeros(num_prefix, 2, device=device)
        positions = torch.cat([prefix, torch.stack([rows.flatten(), cols.flatten()], dim=-1)])  # [P, 2] (y, x)

        axis_dim = self.head_dim // 2
        exponents = torch.arange(0, axis_dim, 2, device=device, dtype=torch.float32) / axis_dim
        frequencies = 1.0 / (self.base**exponents)  # [axis_dim / 2]
        angles = positions[:, :, None] * frequencies  # [P, 2, axis_dim / 2]
        angles = torch.cat([angles, angles], dim=-1).flatten(1)  # [P, head_dim]: (axis, pair half, frequency)
        return RopeTables(angles.cos(), angles.sin())
