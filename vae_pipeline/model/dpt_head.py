"""DPT dense prediction head of VGGT: depth and point maps, and the track head's feature maps (docs/model.md,
section 7).

Four aggregator layers are read as patch-token maps, brought to four scales (4x, 2x, 1x and 1/2x the patch
grid), fused coarse to fine by RefineNet-style blocks and upsampled to the image resolution. Module and
parameter names follow the official checkpoint (``projects``, ``resize_layers``, ``scratch.*``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

# The positional embedding enters at a tenth of its unit amplitude.
POS_EMBED_SCALE = 0.1
# Base of the geometric frequency ladder of the positional embedding.
POS_EMBED_BASE = 100.0


def _inverse_log(values: torch.Tensor) -> torch.Tensor:
    """Inverse of sign(x) * log(1 + |x|): lets the network predict coordinates spanning orders of magnitude."""
    return torch.sign(values) * torch.expm1(values.abs())


def _exp_plus_one(values: torch.Tensor) -> torch.Tensor:
    """Confidence bounded below by 1."""
    return 1.0 + torch.exp(values)


VALUE_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "exp": torch.exp,
    "inv_log": _inverse_log,
}
CONF_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "expp1": _exp_plus_one,
}


def _sincos(positions: torch.Tensor, channels: int) -> torch.Tensor:
    """``[n]`` float32 positions -> ``[n, channels]``: sines then cosines of ``channels / 2`` frequencies.

    Frequencies are ``POS_EMBED_BASE ** (-m / (channels / 2))``; the products are taken in float64, as the
    official head does, and the result is cast back to float32.
    """
    half = channels // 2
    omega = POS_EMBED_BASE ** -(torch.arange(half, dtype=torch.float64, device=positions.device) / half)
    angles = positions.double()[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def dpt_position_embedding(
    channels: int, height: int, width: int, aspect_ratio: float, device: torch.device | None = None
) -> torch.Tensor:
    """Sinusoidal embedding of normalised pixel-centre coordinates: ``[channels, height, width]`` float32.

    The map's pixel centres are placed on a grid spanning the image, scaled so that the image corners would lie
    on the unit circle (x span ``a / sqrt(a^2 + 1)``, y span ``1 / sqrt(a^2 + 1)`` for ``a = W / H``). Channels:
    x-sines, x-cosines, y-sines, y-cosines, ``channels / 4`` each. Not yet multiplied by ``POS_EMBED_SCALE``.
    """
    if channels % 4:
        raise ValueError(f"positional embedding needs a multiple of 4 channels, got {channels}")
    diagonal = math.sqrt(aspect_ratio**2 + 1.0)
    span_x, span_y = aspect_ratio / diagonal, 1.0 / diagonal
    xs = torch.linspace(-span_x * (width - 1) / width, span_x * (width - 1) / width, width, device=device)
    ys = torch.linspace(-span_y * (height - 1) / height, span_y * (height - 1) / height, height, device=device)
    # Each half depends on one axis only, so it is computed on a line and broadcast over the other axis.
    x_embed = _sincos(xs, channels // 2).T[:, None, :].expand(-1, height, -1)
    y_embed = _sincos(ys, channels // 2).T[:, :, None].expand(-1, -1, width)
    return torch.cat([x_embed, y_embed], dim=0)


def _add_position_embedding(x: torch.Tensor, aspect_ratio: float) -> torch.Tensor:
    """``x`` ``[F, C, h, w]`` plus the scaled embedding of its own size, the same for every frame."""
    embed = dpt_position_embedding(x.shape[1], x.shape[2], x.shape[3], aspect_ratio, x.device)
    return x + (embed * POS_EMBED_SCALE).to(x.dtype)


class ResidualConvUnit(nn.Module):
    """Two 3x3 convolutions with a skip connection: ``[F, C, h, w] -> [F, C, h, w]``.

    The skip adds the rectified input ReLU(x), not x: the official unit rectifies in place before its branch,
    so the trained weights expect the rectified skip.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        return self.conv2(F.relu(self.conv1(x))) + x


class FeatureFusionBlock(nn.Module):
    """Merges a coarse path with a lateral feature map, then resizes: ``[F, C, h, w] -> [F, C, *size]``.

    ``y = path + RCU1(lateral)`` (the coarsest block has no lateral input and no ``resConfUnit1``), then
    ``RCU2``, a bilinear resize (align_corners) and a 1x1 ``out_conv``.
    """

    def __init__(self, channels: int, has_lateral: bool = True) -> None:
        super().__init__()
        if has_lateral:
            self.resConfUnit1 = ResidualConvUnit(channels)
        self.resConfUnit2 = ResidualConvUnit(channels)
        self.out_conv = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, path: torch.Tensor, lateral: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor:
        if lateral is not None:
            path = path + self.resConfUnit1(lateral)
        path = self.resConfUnit2(path)
        path = F.interpolate(path, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(path)


class FusionDecoder(nn.Module):
    """The convolutional part after the token projections (the checkpoint's ``scratch`` module).

    Args:
        in_channels: channels of the four scale levels (finest first).
        features: width of the fused maps.
        output_conv1_channels: output width of ``output_conv1``.
        output_dim: channels of the prediction; None for a feature-only head (no ``output_conv2``).
    """

    def __init__(
        self, in_channels: Sequence[int], features: int, output_conv1_channels: int, output_dim: int | None
    ) -> None:
        super().__init__()
        self.layer1_rn = nn.Conv2d(in_channels[0], features, kernel_size=3, padding=1, bias=False)
        self.layer2_rn = nn.Conv2d(in_channels[1], features, kernel_size=3, padding=1, bias=False)
        self.layer3_rn = nn.Conv2d(in_channels[2], features, kernel_size=3, padding=1, bias=False)
        self.layer4_rn = nn.Conv2d(in_channels[3], features, kernel_size=3, padding=1, bias=False)
        self.refinenet1 = FeatureFusionBlock(features)
        self.refinenet2 = FeatureFusionBlock(features)
        self.refinenet3 = FeatureFusionBlock(features)
        self.refinenet4 = FeatureFusionBlock(features, has_lateral=False)
        self.output_conv1 = nn.Conv2d(features, output_conv1_channels, kernel_size=3, padding=1)
        if output_dim is not None:
            self.output_conv2 = nn.Sequential(
                nn.Conv2d(output_conv1_channels, 32, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.Conv2d(32, output_dim, kernel_size=1),
            )

    def fuse(self, levels: Sequence[torch.Tensor]) -> torch.Tensor:
        """Four maps at 4x, 2x, 1x, 1/2x the patch grid ``[F, in_k, ..]`` -> ``output_conv1`` map at 8x."""
        lateral1 = self.layer1_rn(levels[0])
        lateral2 = self.layer2_rn(levels[1])
        lateral3 = self.layer3_rn(levels[2])
        lateral4 = self.layer4_rn(levels[3])
        path = self.refinenet4(lateral4, None, size=lateral3.shape[2:])
        path = self.refinenet3(path, lateral3, size=lateral2.shape[2:])
        path = self.refinenet2(path, lateral2, size=lateral1.shape[2:])
        height, width = lateral1.shape[2:]
        path = self.refinenet1(path, lateral1, size=(2 * height, 2 * width))
        return self.output_conv1(path)


class DPTHead(nn.Module):
    """Dense prediction from aggregator tokens (docs/model.md, section 7).

    Args:
        dim_in: width of the aggregator output (2 * embed_dim).
        patch_size: pixels per patch side.
        output_dim: prediction channels, the last of which is the confidence.
        activation: activation of the value channels (``exp`` for depth, ``inv_log`` for points).
        conf_activation: activation of the confidence channel.
        features: width of the fused maps.
        out_channels: channels of the four projected token maps.
        layers: absolute aggregator layer read by each of the four levels.
        pos_embed: add the sinusoidal positional embedding (after each projection and at full resolution).
        feature_only: return the ``features``-channel map instead of a prediction (the track head's extractor).
        down_ratio: the feature map is ``1 / down_ratio`` of the image resolution.
    """

    def __init__(
        self,
        dim_in: int,
        patch_size: int = 14,
        output_dim: int = 4,
        activation: str = "inv_log",
        conf_activation: str = "expp1",
        features: int = 256,
        out_channels: Sequence[int] = (256, 512, 1024, 1024),
        layers: Sequence[int] = (4, 11, 17, 23),
        pos_embed: bool = True,
        feature_only: bool = False,
        down_ratio: int = 1,
    ) -> None:
        super().__init__()
        if len(out_channels) != 4 or len(layers) != 4:
            raise ValueError("a DPT head reads exactly four levels (out_channels and layers of length 4)")
        if not feature_only and (activation not in VALUE_ACTIVATIONS or conf_activation not in CONF_ACTIVATIONS):
            raise ValueError(
                f"unknown activation {activation!r} / {conf_activation!r}; "
                f"supported: {sorted(VALUE_ACTIVATIONS)} / {sorted(CONF_ACTIVATIONS)}"
            )
        self.patch_size = patch_size
        self.layers = tuple(layers)
        self.pos_embed = pos_embed
        self.feature_only = feature_only
        self.down_ratio = down_ratio
        self.activation = activation
        self.conf_activation = conf_activation

        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList(nn.Conv2d(dim_in, channels, kernel_size=1) for channels in out_channels)
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(out_channels[0], out_channels[0], kernel_size=4, stride=4),
                nn.ConvTranspose2d(out_channels[1], out_channels[1], kernel_size=2, stride=2),
                nn.Identity(),
                nn.Conv2d(out_channels[3], out_channels[3], kernel_size=3, stride=2, padding=1),
            ]
        )
        self.scratch = FusionDecoder(
            out_channels,
            features,
            output_conv1_channels=features if feature_only else features // 2,
            output_dim=None if feature_only else output_dim,
        )

    def forward(
        self,
        aggregated_tokens: Sequence[torch.Tensor | None],
        images: torch.Tensor,
        patch_start_idx: int,
        frames_chunk_size: int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Predict per-pixel values and confidence.

        Args:
            aggregated_tokens: aggregator outputs by absolute layer, each ``[B, S, P, dim_in]`` (None where not
                kept; the layers this head reads must be present).
            images: ``[B, S, 3, H, W]``; only its size is used.
            patch_start_idx: number of special tokens before the patch tokens of each frame.
            frames_chunk_size: frames decoded together (None: all B*S at once); bounds peak memory only.

        Returns:
            ``(values [B, S, H, W, output_dim - 1], conf [B, S, H, W])``, or for a feature-only head the map
            ``[B, S, features, H / down_ratio, W / down_ratio]``.
        """
        batch, frames, _, height, width = images.shape
        grid_hw = (height // self.patch_size, width // self.patch_size)
        tokens = []
        for layer in self.layers:
            if aggregated_tokens[layer] is None:
                raise ValueError(f"DPT head needs aggregator layer {layer}, which was not kept")
            tokens.append(aggregated_tokens[layer].flatten(0, 1))  # [B*S, P, dim_in]
        total = batch * frames
        chunk = total if frames_chunk_size is None else frames_chunk_size
        outputs = [
            self._decode([t[start : start + chunk, patch_start_idx:] for t in tokens], grid_hw, width / height)
            for start in range(0, total, chunk)
        ]
        out = torch.cat(outputs) if len(outputs) > 1 else outputs[0]  # [B*S, C, H', W']
        if self.feature_only:
            return out.view(batch, frames, *out.shape[1:])
        out = out.permute(0, 2, 3, 1).reshape(batch, frames, height, width, -1)
        values = VALUE_ACTIVATIONS[self.activation](out[..., :-1])
        conf = CONF_ACTIVATIONS[self.conf_activation](out[..., -1])
        return values, conf

    def _decode(self, tokens: Sequence[torch.Tensor], grid_hw: tuple[int, int], aspect_ratio: float) -> torch.Tensor:
        """Patch tokens of F frames, ``[F, h*w, dim_in]`` per level -> ``[F, C, H', W']`` before activation."""
        grid_h, grid_w = grid_hw
        levels = []
        for level_tokens, project, resize in zip(tokens, self.projects, self.resize_layers):
            x = self.norm(level_tokens)
            x = x.transpose(1, 2).reshape(x.shape[0], x.shape[2], grid_h, grid_w)
            x = project(x)
            if self.pos_embed:
                x = _add_position_embedding(x, aspect_ratio)
            levels.append(resize(x))
        out = self.scratch.fuse(levels)
        out_hw = (int(grid_h * self.patch_size / self.down_ratio), int(grid_w * self.patch_size / self.down_ratio))
        out = F.interpolate(out, size=out_hw, mode="bilinear", align_corners=True)
        if self.pos_embed:
            out = _add_position_embedding(out, aspect_ratio)
        if self.feature_only:
            return out
        return self.scratch.output_conv2(out)
