"""Iterative point tracker of VGGT's track head (docs/model.md, section 8.2).

Given dense feature maps of every frame and query points in frame 0, the tracker refines a track per query
over a fixed number of iterations: it looks up multi-scale correlations around the current estimate, embeds the
motion so far, and lets a transformer that attends along time and (through a few virtual tracks) across tracks
predict coordinate and feature updates. Names follow the official checkpoint (``updateformer.virual_tracks`` is
spelled as there).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Mlp

# Motion embedding frequencies are linear in the channel index: lambda_m = 2m * MOTION_FREQ_SCALE / channels.
MOTION_FREQ_SCALE = 1000.0
# Base of the geometric frequencies of the 2D sin/cos table over the feature grid.
GRID_EMBED_BASE = 10000.0


def sample_bilinear(maps: torch.Tensor, points: torch.Tensor, padding_mode: str) -> torch.Tensor:
    """Sample maps at pixel coordinates, pixel centres at integers (the align_corners convention).

    Args:
        maps: ``[M, C, H, W]``.
        points: ``[M, K, 2]`` (x, y) in pixels of ``maps``.
        padding_mode: ``"zeros"`` or ``"border"``.

    Returns:
        ``[M, K, C]``.
    """
    height, width = maps.shape[-2:]
    # A one-pixel axis maps every coordinate onto its single pixel (the official scale guard does the same).
    scale = points.new_tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)])
    grid = (points * scale - 1.0)[:, :, None, :]  # [M, K, 1, 2]
    sampled = F.grid_sample(maps, grid.to(maps.dtype), mode="bilinear", padding_mode=padding_mode, align_corners=True)
    return sampled[..., 0].transpose(1, 2)


def grid_sincos_table(channels: int, height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """Fixed sinusoidal table over a ``height x width`` pixel grid: ``[channels, height, width]`` float32.

    The first half encodes the column index, the second the row index; each half is sines then cosines of
    ``channels / 4`` frequencies ``GRID_EMBED_BASE ** (-m / (channels / 4))``, computed in float64.
    """
    if channels % 4:
        raise ValueError(f"the grid table needs a multiple of 4 channels, got {channels}")
    quarter = channels // 4
    omega = GRID_EMBED_BASE ** -(torch.arange(quarter, dtype=torch.float64, device=device) / quarter)

    def embed(positions: torch.Tensor) -> torch.Tensor:  # [n] -> [channels / 2, n]
        angles = positions[None, :] * omega[:, None]
        return torch.cat([angles.sin(), angles.cos()], dim=0)

    columns = embed(torch.arange(width, dtype=torch.float64, device=device))[:, None, :].expand(-1, height, -1)
    rows = embed(torch.arange(height, dtype=torch.float64, device=device))[:, :, None].expand(-1, -1, width)
    return torch.cat([columns, rows], dim=0).float()


def motion_embedding(offsets: torch.Tensor, channels: int, max_scale: float) -> torch.Tensor:
    """Embed track displacements: ``[..., 2]`` (x, y) -> ``[..., 2 * channels + 4]``.

    Per axis, ``channels`` interleaved sin/cos values with linear frequencies (channel 2m = sin(f * lambda_m),
    2m + 1 = cos(f * lambda_m)); the x block, the y block, then the displacement divided by ``max_scale`` twice.
    """
    freqs = torch.arange(0, channels, 2, dtype=torch.float32, device=offsets.device) * (MOTION_FREQ_SCALE / channels)
    blocks = []
    for axis in range(2):
        angles = offsets[..., axis : axis + 1] * freqs  # [..., channels / 2]
        blocks.append(torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2))
    scaled = offsets / max_scale
    return torch.cat([*blocks, scaled, scaled], dim=-1)


class MultiHeadAttention(nn.Module):
    """Multi-head attention with ``nn.MultiheadAttention``'s parameter layout.

    ``in_proj_weight`` ``[3D, D]`` stacks the q, k and v projections (rows in that order); ``out_proj`` merges
    the heads. ``query`` ``[M, Tq, D]`` attends to ``context`` ``[M, Tk, D]`` (itself when None).
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, query: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if context is None:
            q, k, v = F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        else:
            w_q, w_kv = self.in_proj_weight.split([query.shape[-1], 2 * query.shape[-1]])
            b_q, b_kv = self.in_proj_bias.split([query.shape[-1], 2 * query.shape[-1]])
            q = F.linear(query, w_q, b_q)
            k, v = F.linear(context, w_kv, b_kv).chunk(2, dim=-1)
        batch, tokens, dim = q.shape
        q, k, v = (t.unflatten(-1, (self.num_heads, -1)).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)  # [M, heads, Tq, D / heads]
        return self.out_proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class SelfAttentionBlock(nn.Module):
    """``x <- LN1(x); x <- x + MHA(x); x <- x + MLP(LN2(x))``: ``[M, T, D] -> [M, T, D]``.

    The attention residual starts from the normalised x, as in the official tracker.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        x = x + self.attn(x)
        return x + self.mlp(self.norm2(x))


class CrossAttentionBlock(nn.Module):
    """``x <- LN1(x); x <- x + MHA(x, LN_ctx(ctx)); x <- x + MLP(LN2(x))``: ``[M, T, D] -> [M, T, D]``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.cross_attn = MultiHeadAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        x = x + self.cross_attn(x, self.norm_context(context))
        return x + self.mlp(self.norm2(x))


class UpdateTransformer(nn.Module):
    """Transformer over a grid of (track, frame) tokens: ``[B, N, S, in_dim] -> [B, N, S, out_dim]``.

    Each of ``depth`` rounds attends along time within every track, then, per frame, lets a few learned
    virtual tracks gather from the real tracks, attend among themselves, and hand the result back. This keeps
    the cross-track cost linear in the number of tracks.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_size: int,
        out_dim: int,
        depth: int,
        num_heads: int,
        num_virtual_tracks: int,
        mlp_ratio: float,
    ) -> None:
        super().__init__()
        self.input_norm = nn.LayerNorm(in_dim)
        self.input_transform = nn.Linear(in_dim, hidden_size)
        self.virual_tracks = nn.Parameter(torch.randn(1, num_virtual_tracks, 1, hidden_size))
        self.time_blocks = nn.ModuleList(SelfAttentionBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth))
        self.space_virtual_blocks = nn.ModuleList(
            SelfAttentionBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)
        )
        self.space_point2virtual_blocks = nn.ModuleList(
            CrossAttentionBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)
        )
        self.space_virtual2point_blocks = nn.ModuleList(
            CrossAttentionBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)
        )
        self.output_norm = nn.LayerNorm(hidden_size)
        self.flow_head = nn.Linear(hidden_size, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, num_tracks, frames, _ = x.shape
        x = self.input_transform(self.input_norm(x))  # [B, N, S, D]
        virtual = self.virual_tracks.expand(batch, -1, frames, -1)
        tokens = torch.cat([x, virtual], dim=1)  # [B, N + V, S, D]
        total, dim = tokens.shape[1], tokens.shape[3]
        for time_block, virtual_self, point_from_virtual, virtual_from_point in zip(
            self.time_blocks,
            self.space_virtual_blocks,
            self.space_point2virtual_blocks,
            self.space_virtual2point_blocks,
        ):
            tokens = time_block(tokens.reshape(batch * total, frames, dim))
            tokens = tokens.view(batch, total, frames, dim).transpose(1, 2).reshape(batch * frames, total, dim)
            points, virtual = tokens[:, :num_tracks], tokens[:, num_tracks:]
            virtual = virtual_from_point(virtual, points)
            virtual = virtual_self(virtual)
            points = point_from_virtual(points, virtual)
            tokens = torch.cat([points, virtual], dim=1)
            tokens = tokens.view(batch, frames, total, dim).transpose(1, 2)
        out = tokens[:, :num_tracks] + x
        return self.flow_head(self.output_norm(out))


class Tracker(nn.Module):
    """Refines tracks of query points through a video's feature maps (the official ``BaseTrackerPredictor``).

    Args:
        latent_dim: channels of the feature maps (L).
        stride: image pixels per feature-map pixel.
        corr_levels: levels of the correlation pyramid (each a 2x2 average pool of the previous).
        corr_radius: the correlation window is ``2r + 1`` cells square.
        hidden_size: width of the update transformer and of the correlation MLP.
        depth, num_heads, num_virtual_tracks, mlp_ratio: update transformer settings.
        max_scale: divisor of the raw displacements appended to the motion embedding.
    """

    def __init__(
        self,
        latent_dim: int = 128,
        stride: int = 2,
        corr_levels: int = 7,
        corr_radius: int = 4,
        hidden_size: int = 384,
        depth: int = 6,
        num_heads: int = 8,
        num_virtual_tracks: int = 64,
        mlp_ratio: float = 4.0,
        max_scale: float = 518,
    ) -> None:
        super().__init__()
        if latent_dim % 4:
            raise ValueError(f"latent_dim must be a multiple of 4, got {latent_dim}")
        self.latent_dim = latent_dim
        self.stride = stride
        self.corr_levels = corr_levels
        self.corr_radius = corr_radius
        self.max_scale = max_scale
        window = 2 * corr_radius + 1
        # Motion embedding (2 * L/2 + 4), correlation features (L) and track features (L).
        self.input_dim = latent_dim + 4 + 2 * latent_dim

        self.corr_mlp = Mlp(corr_levels * window**2, hidden_size, latent_dim)
        self.query_ref_token = nn.Parameter(torch.randn(1, 2, self.input_dim))
        self.updateformer = UpdateTransformer(
            self.input_dim, hidden_size, 2 + latent_dim, depth, num_heads, num_virtual_tracks, mlp_ratio
        )
        self.fmap_norm = nn.LayerNorm(latent_dim)
        self.ffeat_norm = nn.GroupNorm(1, latent_dim)
        self.ffeat_updater = nn.Sequential(nn.Linear(latent_dim, latent_dim), nn.GELU())
        self.vis_predictor = nn.Sequential(nn.Linear(latent_dim, 1))
        self.conf_predictor = nn.Sequential(nn.Linear(latent_dim, 1))
        # Window cell (i, j) sits at x offset i - r and y offset j - r, cells in i-major order: the transpose of
        # the usual row-major window, which the trained correlation MLP expects.
        offsets = torch.arange(-corr_radius, corr_radius + 1, dtype=torch.float32)
        x_offsets, y_offsets = torch.meshgrid(offsets, offsets, indexing="ij")
        window_offsets = torch.stack([x_offsets, y_offsets], dim=-1).view(-1, 2)
        self.register_buffer("window_offsets", window_offsets, persistent=False)

    def forward(
        self,
        query_points: torch.Tensor,
        feature_maps: torch.Tensor,
        iters: int,
        frames_chunk_size: int | None = None,
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Track the query points through every frame.

        Args:
            query_points: ``[B, N, 2]`` (x, y) image pixels in frame 0.
            feature_maps: ``[B, S, L, H / stride, W / stride]``.
            iters: refinement iterations.
            frames_chunk_size: frames whose correlations are looked up together (None: all); memory only.

        Returns:
            ``(tracks, vis, conf)``: one ``[B, S, N, 2]`` track estimate in image pixels per iteration (frame 0
            equals the query points), visibility and confidence ``[B, S, N]`` in (0, 1).
        """
        batch, frames, latent, map_h, map_w = feature_maps.shape
        num_tracks = query_points.shape[1]
        queries = query_points / self.stride  # [B, N, 2] feature-map pixels
        fmaps = self.fmap_norm(feature_maps.permute(0, 1, 3, 4, 2)).permute(0, 1, 4, 2, 3)
        pyramid = [fmaps.flatten(0, 1)]  # [B*S, L, h_l, w_l] per level
        for _ in range(self.corr_levels - 1):
            pyramid.append(F.avg_pool2d(pyramid[-1], kernel_size=2, stride=2))

        query_feats = sample_bilinear(fmaps[:, 0], queries, padding_mode="border")  # [B, N, L]
        track_feats = query_feats[:, None].expand(-1, frames, -1, -1)  # [B, S, N, L]
        table = grid_sincos_table(self.input_dim, map_h, map_w, device=queries.device)
        position = sample_bilinear(table[None].expand(batch, -1, -1, -1), queries, padding_mode="border")
        # Frame 0 gets reference slot 0, every other frame slot 1.
        reference = torch.cat(
            [self.query_ref_token[:, :1], self.query_ref_token[:, 1:].expand(-1, frames - 1, -1)], dim=1
        )
        token_bias = position[:, None] + reference[:, :, None]  # [B, S, N, input_dim]

        coords = queries[:, None].expand(-1, frames, -1, -1)  # [B, S, N, 2]
        tracks = []
        for _ in range(iters):
            corr = self._correlate(pyramid, track_feats, coords, frames_chunk_size)
            motion = motion_embedding(coords - coords[:, :1], self.latent_dim // 2, self.max_scale)
            tokens = torch.cat([motion, self.corr_mlp(corr), track_feats], dim=-1) + token_bias
            update = self.updateformer(tokens.transpose(1, 2)).transpose(1, 2)  # [B, S, N, 2 + L]
            feat_update = self.ffeat_norm(update[..., 2:].reshape(-1, latent)).view(batch, frames, num_tracks, latent)
            track_feats = track_feats + self.ffeat_updater(feat_update)
            coords = coords + update[..., :2]
            # The query frame is never moved: frame 0 is pinned to the queries after every update.
            coords = torch.cat([queries[:, None], coords[:, 1:]], dim=1)
            tracks.append(coords * self.stride)

        vis = torch.sigmoid(self.vis_predictor(track_feats)[..., 0])
        conf = torch.sigmoid(self.conf_predictor(track_feats)[..., 0])
        return tracks, vis, conf

    def _correlate(
        self,
        pyramid: list[torch.Tensor],
        track_feats: torch.Tensor,
        coords: torch.Tensor,
        frames_chunk_size: int | None,
    ) -> torch.Tensor:
        """Correlation windows around every track estimate: ``[B, S, N, levels * (2r + 1)^2]``.

        A window cell is the bilinear sample (zero padding) of the map of dot products between a track's feature
        and every pixel of its frame's pyramid level, divided by sqrt(L). Sampling is linear, so the features are
        sampled at the window cells and dotted with the track feature instead: the same numbers without building
        the full ``N x h x w`` correlation volume.
        """
        batch, frames, num_tracks, latent = track_feats.shape
        feats = track_feats.flatten(0, 1)  # [B*S, N, L]
        centres = coords.flatten(0, 1)  # [B*S, N, 2]
        total = feats.shape[0]
        chunk = total if frames_chunk_size is None else frames_chunk_size
        window = self.window_offsets.shape[0]
        chunks = []
        for start in range(0, total, chunk):
            stop = start + chunk
            levels = []
            for level, fmap in enumerate(pyramid):
                points = centres[start:stop, :, None] / 2**level + self.window_offsets  # [F, N, K, 2]
                sampled = sample_bilinear(fmap[start:stop], points.flatten(1, 2), padding_mode="zeros")
                sampled = sampled.view(-1, num_tracks, window, latent)  # [F, N, K, L]
                levels.append(torch.einsum("fnkc,fnc->fnk", sampled, feats[start:stop].to(sampled.dtype)))
            chunks.append(torch.cat(levels, dim=-1))
        corr = torch.cat(chunks) if len(chunks) > 1 else chunks[0]
        return corr.view(batch, frames, num_tracks, -1) / math.sqrt(latent)
