"""Patch embeddings of the aggregator: a single strided convolution, or a DINOv2 ViT with registers.

docs/model.md, section 5.1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import VGGTConfig
from .layers import Block


class ConvPatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` convolution: ``[N, 3, H, W] -> [N, h * w, dim]``, tokens in row-major order."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {self.patch_size}")
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoVisionTransformer(nn.Module):
    """DINOv2 ViT with register tokens; returns the final-normed patch tokens (``x_norm_patchtokens``).

    ``[N, 3, H, W] -> [N, h * w, dim]``. The cls and register tokens take part in attention and are dropped at
    the end. The positional table is trained for ``img_size`` and resized to other patch grids.

    Args:
        img_size: image side the positional table was trained for (a square of ``img_size / patch_size`` cells).
        patch_size: patch side in pixels.
        embed_dim, depth, num_heads, mlp_ratio: transformer width, blocks, heads and MLP ratio.
        num_register_tokens: registers inserted after the cls token (they carry no positional embedding).
    """

    def __init__(
        self,
        img_size: int,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        num_register_tokens: int = 4,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.num_register_tokens = num_register_tokens
        self.patch_embed = ConvPatchEmbed(patch_size, embed_dim)
        grid = img_size // patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, embed_dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))  # a training-time input; kept for the checkpoint
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, norm_eps=1e-6, init_value=1.0) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.normal_(self.register_tokens, std=1e-6)

    def positional_embedding(self, grid_h: int, grid_w: int, dtype: torch.dtype) -> torch.Tensor:
        """``[1, 1 + grid_h * grid_w, dim]``: the cls entry plus the patch table resized to ``grid_h x grid_w``."""
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        trained = int(patch_pos.shape[1] ** 0.5)
        if (grid_h, grid_w) != (trained, trained):
            # Antialiased bicubic, computed in float32: what the checkpoint was trained and evaluated with.
            table = patch_pos.float().reshape(1, trained, trained, -1).permute(0, 3, 1, 2)
            table = F.interpolate(table, size=(grid_h, grid_w), mode="bicubic", antialias=True, align_corners=False)
            patch_pos = table.permute(0, 2, 3, 1).flatten(1, 2)
        return torch.cat([cls_pos.float(), patch_pos.float()], dim=1).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid_h, grid_w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.positional_embedding(grid_h, grid_w, x.dtype)
        registers = self.register_tokens.expand(x.shape[0], -1, -1)
        x = torch.cat([x[:, :1], registers, x[:, 1:]], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 1 + self.num_register_tokens :]


def build_patch_embed(config: VGGTConfig) -> nn.Module:
    """The patch embedding ``config.patch_embed`` names: ``[N, 3, H, W] -> [N, h * w, embed_dim]``."""
    if config.patch_embed == "conv":
        return ConvPatchEmbed(config.patch_size, config.embed_dim)
    return DinoVisionTransformer(
        img_size=config.img_size,
        patch_size=config.patch_size,
        embed_dim=config.embed_dim,
        depth=config.patch_embed_depth,
        num_heads=config.patch_embed_num_heads,
        mlp_ratio=config.patch_embed_mlp_ratio,
        num_register_tokens=config.patch_embed_num_register_tokens,
    )
