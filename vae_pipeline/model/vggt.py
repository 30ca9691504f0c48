"""VGGT: the aggregator trunk plus camera, depth, point and track heads (docs/model.md, section 1)."""

from __future__ import annotations

import torch
from torch import nn

from .aggregator import Aggregator
from .camera_head import CameraHead
from .config import VGGTConfig
from .dpt_head import DPTHead
from .patch_embed import build_patch_embed
from .track_head import TrackHead


class VGGT(nn.Module):
    """Visual Geometry Grounded Transformer; state-dict keys and shapes equal the official model's.

    Heads that ``config`` disables are absent (``None``) and have no keys.
    """

    def __init__(self, config: VGGTConfig | None = None) -> None:
        super().__init__()
        config = config or VGGTConfig()
        self.config = config
        self.aggregator = Aggregator(
            build_patch_embed(config),
            patch_size=config.patch_size,
            embed_dim=config.embed_dim,
            depth=config.depth,
            num_heads=config.num_heads,
            mlp_ratio=config.mlp_ratio,
            num_register_tokens=config.num_register_tokens,
            qk_norm=config.qk_norm,
            rope_freq=config.rope_freq,
        )
        dim_in = config.head_dim_in
        self.camera_head = (
            CameraHead(
                dim_in,
                trunk_depth=config.camera_trunk_depth,
                num_heads=config.camera_num_heads,
                mlp_ratio=config.camera_mlp_ratio,
                num_iterations=config.camera_iterations,
            )
            if config.enable_camera
            else None
        )
        self.point_head = _dpt_head(config, "point", 4, "inv_log") if config.enable_point else None
        self.depth_head = _dpt_head(config, "depth", 2, "exp") if config.enable_depth else None
        self.track_head = (
            TrackHead(
                dim_in,
                patch_size=config.patch_size,
                features=config.track_features,
                iters=config.track_iters,
                stride=config.track_stride,
                corr_levels=config.track_corr_levels,
                corr_radius=config.track_corr_radius,
                hidden_size=config.track_hidden_size,
                out_channels=config.track_out_channels,
                layers=config.track_layers,
                depth=config.track_depth,
                num_heads=config.track_num_heads,
                num_virtual_tracks=config.track_num_virtual_tracks,
                mlp_ratio=config.track_mlp_ratio,
                max_scale=config.track_max_scale,
            )
            if config.enable_track
            else None
        )

    def forward(
        self, images: torch.Tensor, query_points: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """Run every enabled head (the track head only with query points).

        Args:
            images: ``[B, S, 3, H, W]`` or ``[S, 3, H, W]`` in [0, 1]; H and W multiples of the patch size.
            query_points: ``[B, N, 2]`` or ``[N, 2]`` (x, y) pixels in the first frame of each sequence.

        Returns:
            ``pose_enc`` ``[B, S, 9]`` and ``pose_enc_list`` (one per camera iteration), ``depth`` ``[B, S, H, W, 1]``,
            ``depth_conf`` ``[B, S, H, W]``, ``world_points`` ``[B, S, H, W, 3]``, ``world_points_conf``
            ``[B, S, H, W]``, with query points ``track`` ``[B, S, N, 2]``, ``vis`` and ``conf`` ``[B, S, N]``,
            and in eval mode ``images`` (the input with its batch axis).
        """
        if images.dim() == 4:
            images = images[None]
        if query_points is not None and query_points.dim() == 2:
            query_points = query_points[None]
        predictions = self.run_heads(
            images,
            camera=self.camera_head is not None,
            depth=self.depth_head is not None,
            points=self.point_head is not None,
            query_points=query_points if self.track_head is not None else None,
        )
        if not self.training:
            predictions["images"] = images
        return predictions

    def layers_needed(self, *, camera: bool, depth: bool, points: bool, track: bool) -> tuple[int, ...]:
        """Aggregator layers the requested heads read (the camera head reads the last one)."""
        layers = set()
        if camera:
            layers.add(self.config.depth - 1)
        if depth:
            layers.update(self.config.depth_layers)
        if points:
            layers.update(self.config.point_layers)
        if track:
            layers.update(self.config.track_layers)
        return tuple(sorted(layers))

    def run_heads(
        self,
        images: torch.Tensor,
        *,
        camera: bool,
        depth: bool,
        points: bool,
        query_points: torch.Tensor | None = None,
        dpt_frames_chunk: int | None = None,
        dense_batch: int | None = None,
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """Compute only the requested outputs; the aggregator keeps only the layers those heads read.

        ``images`` ``[B, S, 3, H, W]``, ``query_points`` ``[B, N, 2]`` (None: no tracks). Keys as in ``forward``
        (without ``images``). ``dpt_frames_chunk`` bounds how many frames the DPT heads decode at once (memory
        only; the results are the same). ``dense_batch``: the camera, depth and point heads run on the first
        ``dense_batch`` elements only (the others are there for the track head alone). The camera, depth and point
        heads run with autocast disabled, as the official model does; the track head runs under the caller's
        autocast.
        """
        requested = {"camera": camera, "depth": depth, "points": points, "track": query_points is not None}
        modules = {
            "camera": self.camera_head,
            "depth": self.depth_head,
            "points": self.point_head,
            "track": self.track_head,
        }
        disabled = [name for name, wanted in requested.items() if wanted and modules[name] is None]
        if disabled:
            raise ValueError(f"requested heads {disabled} are disabled in this model's config")

        tokens = self.aggregator(images, keep_layers=self.layers_needed(**requested))
        start = self.aggregator.patch_start_idx
        dense_tokens = [None if t is None else t[:dense_batch] for t in tokens]
        dense_images = images[:dense_batch]
        predictions: dict[str, torch.Tensor | list[torch.Tensor]] = {}
        with torch.autocast(device_type=images.device.type, enabled=False):
            if camera:
                pose_enc_list = self.camera_head(dense_tokens)
                predictions["pose_enc"] = pose_enc_list[-1]
                predictions["pose_enc_list"] = pose_enc_list
            if depth:
                predictions["depth"], predictions["depth_conf"] = self.depth_head(
                    dense_tokens, dense_images, start, frames_chunk_size=dpt_frames_chunk
                )
            if points:
                predictions["world_points"], predictions["world_points_conf"] = self.point_head(
                    dense_tokens, dense_images, start, frames_chunk_size=dpt_frames_chunk
                )
        if query_points is not None:
            track_list, predictions["vis"], predictions["conf"] = self.track_head(
                tokens, images, start, query_points, frames_chunk_size=dpt_frames_chunk
            )
            predictions["track"] = track_list[-1]
        return predictions


def _dpt_head(config: VGGTConfig, head: str, output_dim: int, activation: str) -> DPTHead:
    """The depth or point head: a DPT with ``config``'s ``{head}_features``, ``_out_channels`` and ``_layers``."""
    return DPTHead(
        config.head_dim_in,
        patch_size=config.patch_size,
        output_dim=output_dim,
        activation=activation,
        conf_activation="expp1",
        features=getattr(config, f"{head}_features"),
        out_channels=getattr(config, f"{head}_out_channels"),
        layers=getattr(config, f"{head}_layers"),
    )
