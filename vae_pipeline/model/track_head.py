"""VGGT's track head (docs/model.md, section 8): a feature-only DPT head feeding the iterative tracker."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .dpt_head import DPTHead
from .tracker import Tracker


class TrackHead(nn.Module):
    """Tracks query points of frame 0 through all frames of each sequence.

    Args:
        dim_in: width of the aggregator output (2 * embed_dim).
        patch_size: pixels per patch side.
        features: channels of the tracking feature maps (the tracker's latent width).
        iters: tracker refinement iterations.
        stride: the feature maps are ``1 / stride`` of the image resolution.
        corr_levels, corr_radius: correlation pyramid levels and window radius.
        hidden_size: width of the tracker's update transformer.
        out_channels, layers: the feature extractor's token projections and the aggregator layers it reads.
        depth, num_heads, num_virtual_tracks, mlp_ratio, max_scale: update transformer settings.
    """

    def __init__(
        self,
        dim_in: int,
        patch_size: int = 14,
        features: int = 128,
        iters: int = 4,
        stride: int = 2,
        corr_levels: int = 7,
        corr_radius: int = 4,
        hidden_size: int = 384,
        out_channels: Sequence[int] = (256, 512, 1024, 1024),
        layers: Sequence[int] = (4, 11, 17, 23),
        depth: int = 6,
        num_heads: int = 8,
        num_virtual_tracks: int = 64,
        mlp_ratio: float = 4.0,
        max_scale: float = 518,
    ) -> None:
        super().__init__()
        self.iters = iters
        self.feature_extractor = DPTHead(
            dim_in,
            patch_size=patch_size,
            features=features,
            out_channels=out_channels,
            layers=layers,
            pos_embed=False,
            feature_only=True,
            down_ratio=stride,
        )
        self.tracker = Tracker(
            latent_dim=features,
            stride=stride,
            corr_levels=corr_levels,
            corr_radius=corr_radius,
            hidden_size=hidden_size,
            depth=depth,
            num_heads=num_heads,
            num_virtual_tracks=num_virtual_tracks,
            mlp_ratio=mlp_ratio,
            max_scale=max_scale,
        )

    def forward(
        self,
        aggregated_tokens: Sequence[torch.Tensor | None],
        images: torch.Tensor,
        patch_start_idx: int,
        query_points: torch.Tensor,
        iters: int | None = None,
        frames_chunk_size: int | None = None,
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Track ``query_points`` ``[B, N, 2]`` ((x, y) pixels of frame 0) through ``images`` ``[B, S, 3, H, W]``.

        ``aggregated_tokens`` holds the aggregator outputs by absolute layer (``[B, S, P, dim_in]`` or None);
        ``images`` is only read for its size. ``frames_chunk_size`` bounds memory (None: all frames at once).

        Returns:
            ``(tracks, vis, conf)``: ``iters`` track estimates ``[B, S, N, 2]`` in image pixels (the last is the
            final one; frame 0 equals the queries), visibility and confidence ``[B, S, N]`` in (0, 1).
        """
        feature_maps = self.feature_extractor(aggregated_tokens, images, patch_start_idx, frames_chunk_size)
        return self.tracker(
            query_points, feature_maps, self.iters if iters is None else iters, frames_chunk_size=frames_chunk_size
        )
