"""The aggregator: patch tokens of every frame plus special tokens, through alternating frame and global attention.

Each frame's token sequence is ``[camera (1), registers (R), patches (h * w)]``; frame 0 of every sequence gets
its own camera/register vectors (slot 0), all other frames share slot 1. Layer ``l`` runs ``frame_blocks[l]``
(attention within each frame) then ``global_blocks[l]`` (attention over all tokens of the sequence) and outputs
both results concatenated along channels. docs/model.md, sections 5.2-5.4.
"""

from __future__ import annotations

from collections.abc import Collection
from functools import partial

import torch
from torch import nn

from .layers import Block
from .rope import RotaryPositionEmbedding2D

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Aggregator(nn.Module):
    """Alternating-attention trunk of VGGT.

    Args:
        patch_embed: module mapping normalised frames ``[N, 3, H, W]`` to tokens ``[N, h * w, embed_dim]``.
        patch_size: pixels per patch side (H and W must be multiples of it).
        embed_dim: token width C.
        depth: number of (frame block, global block) layers.
        num_heads, mlp_ratio, qk_norm: settings of every block.
        num_register_tokens: register tokens per frame, after the camera token.
        rope_freq: base frequency of the 2D RoPE.
    """

    def __init__(
        self,
        patch_embed: nn.Module,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        num_register_tokens: int = 4,
        qk_norm: bool = True,
        rope_freq: float = 100.0,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.depth = depth
        self.patch_embed = patch_embed
        self.rope = RotaryPositionEmbedding2D(embed_dim // num_heads, base=rope_freq)
        self.frame_blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qk_norm=qk_norm) for _ in range(depth)
        )
        self.global_blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qk_norm=qk_norm) for _ in range(depth)
        )
        # Slot 0 is for the first frame of each sequence, slot 1 for every other frame.
        self.camera_token = nn.Parameter(torch.randn(1, 2, 1, embed_dim) * 1e-6)
        self.register_token = nn.Parameter(torch.randn(1, 2, num_register_tokens, embed_dim) * 1e-6)
        self.patch_start_idx = 1 + num_register_tokens
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor, keep_layers: Collection[int]) -> list[torch.Tensor | None]:
        """Run the trunk up to the last layer in ``keep_layers``.

        Args:
            images: ``[B, S, 3, H, W]`` in [0, 1].
            keep_layers: absolute layer indices whose outputs are returned.

        Returns:
            ``depth`` entries indexed by layer: ``[B, S, P, 2C]`` (frame tokens then global tokens, P =
            ``patch_start_idx + h * w``) for the layers in ``keep_layers``, None for the others.
        """
        if any(not 0 <= i < self.depth for i in keep_layers):
            raise ValueError(f"keep_layers {sorted(keep_layers)} must index layers 0..{self.depth - 1}")
        batch, frames, _, height, width = images.shape
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {self.patch_size}")
        grid_h, grid_w = height // self.patch_size, width // self.patch_size

        images = (images - self.image_mean) / self.image_std
        patches = self.patch_embed(images.flatten(0, 1))  # [B*S, h*w, C]
        tokens = torch.cat([self._special_tokens(batch, frames), patches], dim=1)
        num_tokens, channels = tokens.shape[1:]
        layout = dict(grid_h=grid_h, grid_w=grid_w, num_prefix=self.patch_start_idx)
        frame_rope = partial(self.rope, **layout, num_frames=1)
        global_rope = partial(self.rope, **layout, num_frames=frames)

        outputs: list[torch.Tensor | None] = [None] * self.depth
        last_layer = max(keep_layers, default=-1)
        for layer in range(last_layer + 1):
            tokens = self.frame_blocks[layer](tokens.view(batch * frames, num_tokens, channels), frame_rope)
            frame_tokens = tokens.view(batch, frames, num_tokens, channels)
            tokens = self.global_blocks[layer](tokens.view(batch, frames * num_tokens, channels), global_rope)
            if layer in keep_layers:
                outputs[layer] = torch.cat([frame_tokens, tokens.view(batch, frames, num_tokens, channels)], dim=-1)
        return outputs

    def _special_tokens(self, batch: int, frames: int) -> torch.Tensor:
        """``[B*S, 1 + R, C]``: camera and register tokens, slot 0 for frame 0 and slot 1 for the others."""
        special = torch.cat([self.camera_token, self.register_token], dim=2)  # [1, 2, 1+R, C]
        first, others = special[:, :1], special[:, 1:]
        per_frame = torch.cat([first, others.expand(-1, frames - 1, -1, -1)], dim=1)  # [1, S, 1+R, C]
        return per_frame.expand(batch, -1, -1, -1).flatten(0, 1)
